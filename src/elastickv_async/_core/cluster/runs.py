"""Sorted runs: one group's resolved entries of one adapter, as a scratch record file.

A run holds exactly one version per key (the visible one, or a deletion marker) in the
group's stream order, as scratch records (:mod:`~elastickv_async._core.scratch`) whose key
is the encoded key ``key ‖ BE(^commit_ts)`` and whose value is the snapshot's value header
(flags, expiry) and body; so the merge orders runs of different groups by record key. Runs
always live in files: memory stays bounded however large a group is, and a partition reads
its runs back chunk by chunk.

A run also records where each partition *unit* (a table, bucket or queue; ``None`` for rows
that only the whole adapter may decode) has its entries: sections of whole records. A
unit's entries form a few contiguous stretches of the run (one per key family), and any
subsequence of a sorted run is sorted, so a partition reads just its units' sections, in
file order, as one sorted stream.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

import anyio
import anyio.to_thread

from ..scratch import Record, RecordReader, write_records
from ..snapshot.entry import Entry
from ..snapshot.framing import TOMBSTONE_FLAG

__all__ = ["FLUSH_AT", "RunFile", "RunReader", "RunWriter", "Unit"]

#: A partition unit: a table, bucket or queue name; ``None``: the adapter's whole keyspace.
Unit = bytes | None
#: ``(offset, end)`` byte sections of a run file.
Ranges = list[tuple[int, int]]

_TS: Final = struct.Struct(">Q")
_VALUE_HEAD: Final = struct.Struct("<BQ")
_TS_MASK: Final = (1 << 64) - 1
#: A record's framing: two 8-byte lengths.
_RECORD_OVERHEAD: Final = 16
#: Bytes of records a writer gathers before it writes them, by default (at most).
FLUSH_AT: Final = 1 << 20
_READ_CHUNK: Final = 256 << 10


def _record(entry: Entry) -> Record:
    flags = TOMBSTONE_FLAG if entry.tombstone else 0
    return (
        entry.key + _TS.pack(entry.commit_ts ^ _TS_MASK),
        _VALUE_HEAD.pack(flags, entry.expire_at) + entry.value,
    )


def _entry(record: Record) -> Entry:
    key, value = record
    flags, expire_at = _VALUE_HEAD.unpack_from(value)
    commit_ts = _TS.unpack_from(key, len(key) - 8)[0] ^ _TS_MASK
    return Entry(key[:-8], value[9:], commit_ts, expire_at, bool(flags & TOMBSTONE_FLAG))


@dataclass(frozen=True, slots=True)
class RunFile:
    """A finished run: its file, entry count and each unit's byte ranges (file order)."""

    path: Path
    entries: int
    segments: dict[Unit, Ranges] = field(default_factory=dict)


class RunWriter:
    """Writes entries into the run file ``path`` (new; written by worker threads), about
    ``flush_at`` bytes of records at a time."""

    def __init__(self, path: Path, flush_at: int = FLUSH_AT) -> None:
        self.path = path
        self._flush_at = max(1, flush_at)
        self.entries = 0
        self._file: BinaryIO | None = None
        self._pending: list[Record] = []
        self._pending_bytes = 0
        self._offset = 0
        self._segments: dict[Unit, Ranges] = {}
        self._unit: Unit = None
        self._start: int | None = None

    def _close_segment(self) -> None:
        if self._start is None or self._start == self._offset:
            return
        ranges = self._segments.setdefault(self._unit, [])
        if ranges and ranges[-1][1] == self._start:
            ranges[-1] = (ranges[-1][0], self._offset)
        else:
            ranges.append((self._start, self._offset))

    async def add(self, entry: Entry, unit: Unit) -> None:
        """Append one resolved entry of ``unit`` (callers add in stream order)."""
        if self._start is None or unit != self._unit:
            self._close_segment()
            self._unit, self._start = unit, self._offset
        record = _record(entry)
        size = _RECORD_OVERHEAD + len(record[0]) + len(record[1])
        self._pending.append(record)
        self._pending_bytes += size
        self._offset += size
        self.entries += 1
        if self._pending_bytes >= self._flush_at:
            await self._flush()

    def _write(self, records: list[Record]) -> None:
        if self._file is None:
            self._file = open(self.path, "xb")  # noqa: SIM115 - closed by finish/aclose
        write_records(self._file, records)

    async def _flush(self) -> None:
        records, self._pending, self._pending_bytes = self._pending, [], 0
        await anyio.to_thread.run_sync(self._write, records)

    async def finish(self) -> RunFile:
        """Flush and close the file; describe the run."""
        self._close_segment()
        await self._flush()
        await self.aclose()
        return RunFile(self.path, self.entries, self._segments)

    async def aclose(self) -> None:
        """Close the file (also after a failure; closing twice is harmless)."""
        if self._file is not None:
            # Forgotten only once closed: a cancelled close is retried by the next call.
            await anyio.to_thread.run_sync(self._file.close)
            self._file = None


class RunReader:
    """Reads a run back chunk by chunk; ``await next_batch()`` returns ``[]`` at the end.

    ``ranges`` (``(offset, end)`` sections of whole records, in file order) restricts it to
    those entries; ``None`` reads the whole run. No file stays open between calls.
    """

    def __init__(self, path: Path, ranges: Sequence[tuple[int, int]] | None = None) -> None:
        if ranges is None:
            self._sections = [RecordReader(path)]
        else:
            self._sections = [RecordReader(path, start, end - start) for start, end in ranges]
        self._next = 0

    def _chunk(self) -> list[Entry]:
        while self._next < len(self._sections):
            records = self._sections[self._next].next_chunk(_READ_CHUNK)
            if records:
                return [_entry(record) for record in records]
            self._next += 1
        return []

    async def next_batch(self) -> list[Entry]:
        """The next entries of the run (about 256 KiB of them); ``[]`` once exhausted."""
        return await anyio.to_thread.run_sync(self._chunk)
