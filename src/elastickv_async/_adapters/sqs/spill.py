"""Bounded-memory holding area for SQS output that must wait for its queue's meta record.

Message keys (``!sqs|msg|``) sort before queue meta (``!sqs|queue|``), so every message is
read before the decoder knows whether its queue exists and which generation is active.
Messages arrive in *runs*: the messages of one rendered chunk that belong to one queue and
generation, sorted and packed into one byte string (:func:`pack_run`) where the chunk was
rendered, so that holding, spilling and reading them back costs no Python work per message.
Runs and side-record lines are held in memory up to a byte budget shared by all queues; past
it, every held run and side line is written as it is into one scratch file (side lines as
scratch records, in arrival order).

At the end each queue is put in order. When its runs fit the budget once unpacked, they are
unpacked together and sorted at once (the sort merges the sorted runs in C). A larger queue
takes two passes: groups of runs that fit are sorted into longer runs, written in blocks,
which are then merged holding one block of each at a time. Memory stays bounded by
the budget whatever the queue sizes. Queues are independent: callers may flush several at
once.

What is SQS's own here is the message order (the reference's send time, sequence number,
message id, then arrival) as a byte key; generations are kept apart, so that the messages of
the generation that is not active are dropped without being read.

The methods that touch files are synchronous: callers run them in a worker thread.
"""

from __future__ import annotations

import itertools
import os
import struct
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Final

import msgspec

from ..._core.errors import OutputError
from ..._core.scratch import Record, iter_records, write_records

__all__ = ["DEFAULT_BUDGET", "MessageSpill", "message_key", "pack_run", "right_sized"]

#: Default byte budget of the in-memory buffers (all queues together).
DEFAULT_BUDGET: Final = 64 << 20

# Sort key: send time (signed, offset to sort unsigned), sequence, then the message id and the
# arrival index (which keeps the sort stable and the keys unique).
_ORDER: Final = struct.Struct(">QQ")
_ARRIVAL: Final = struct.Struct(">Q")
_SIGN: Final = 1 << 63
#: What a held run costs beyond its bytes (the bytes object, its list slot, its count).
_RUN_OVERHEAD: Final = 96
#: What an unpacked message costs beyond its key and line: the tuple and two bytes headers,
#: and its slot in the sorted list.
_UNPACKED_OVERHEAD: Final = 160
_SIDE_OVERHEAD: Final = 96
_WRITE_CHUNK: Final = 1 << 20
#: Messages joined into one write of the output (some 1-2 MiB of lines).
_WRITE_RECORDS: Final = 4096
_BY_KEY: Final = itemgetter(0)
_LINE: Final = itemgetter(1)
_PACK: Final = msgspec.msgpack.Encoder()
_UNPACK: Final = msgspec.msgpack.Decoder(list[tuple[bytes, bytes]])
_READ_FLAGS: Final = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


def message_key(send_ms: int, sequence: int, message_id: bytes, arrival: int) -> bytes:
    """A byte string that sorts like ``(send_ms, sequence, message_id, arrival)``.

    The id is escaped (NUL as NUL 0xFF) and ends in NUL NUL, so a shorter id sorts first
    whatever follows it, as in a tuple comparison.
    """
    return (
        _ORDER.pack(send_ms + _SIGN, sequence)
        + message_id.replace(b"\x00", b"\x00\xff")
        + b"\x00\x00"
        + _ARRIVAL.pack(arrival)
    )


def pack_run(records: list[Record]) -> bytes:
    """``records`` (``(message_key(...), line)``, keys unique) as one run: sorted by key
    (in place) and packed."""
    records.sort(key=_BY_KEY)
    return _PACK.encode(records)


def right_sized(data: bytes) -> bytes:
    """A copy of ``data`` in an allocation of its own size.

    orjson returns its output in a buffer of at least 4 KiB; kept as is, a buffered 300-byte
    line would cost ten times what the budget accounts for.
    """
    return memoryview(data).tobytes()


@dataclass(frozen=True, slots=True)
class _Section:
    path: Path
    offset: int
    length: int


@dataclass(slots=True)
class _Run:
    """One packed run: in memory (``data``) until it is spilled (``section``)."""

    count: int
    size: int
    data: bytes | None
    section: _Section | None = None


@dataclass(slots=True)
class _QueueBuffer:
    #: Runs by generation.
    runs: dict[int, list[_Run]] = field(default_factory=dict)
    message_count: int = 0
    #: ``(b"", line)`` in arrival order.
    sides: list[Record] = field(default_factory=list)
    side_runs: list[_Section] = field(default_factory=list)
    side_count: int = 0


class MessageSpill:
    """Per-queue message runs and side-record lines, held in memory up to ``budget`` bytes."""

    def __init__(self, scratch: Path, budget: int = DEFAULT_BUDGET) -> None:
        self._scratch = scratch
        self._budget = budget
        self._used = 0
        self._files = itertools.count()
        self._queues: dict[str, _QueueBuffer] = {}

    def _queue(self, queue: str) -> _QueueBuffer:
        buf = self._queues.get(queue)
        if buf is None:
            buf = self._queues[queue] = _QueueBuffer()
        return buf

    def _new_file(self, kind: str) -> Path:
        return self._scratch / f"sqs-{kind}-{next(self._files)}.rec"

    def add_run(self, queue: str, generation: int, run: bytes, count: int) -> None:
        """Hold a :func:`pack_run` of ``count`` messages of ``queue`` and ``generation``.
        Keys must be unique across runs (the arrival number sees to it): the order of the
        calls does not matter."""
        buf = self._queue(queue)
        buf.runs.setdefault(generation, []).append(_Run(count, len(run), run))
        buf.message_count += count
        self._used += len(run) + _RUN_OVERHEAD

    def add_side(self, queue: str, line: bytes) -> None:
        """Buffer one rendered side-record line of ``queue`` (kept in arrival order)."""
        buf = self._queue(queue)
        line = right_sized(line)
        buf.sides.append((b"", line))
        buf.side_count += 1
        self._used += len(line) + _SIDE_OVERHEAD

    def widen(self, budget: int) -> None:
        """Let the buffers and a queue's sort hold up to ``budget`` bytes from now on (never
        less than before)."""
        self._budget = max(self._budget, budget)

    @property
    def over_budget(self) -> bool:
        """Whether the buffers should be spilled now."""
        return self._used > self._budget

    def message_count(self, queue: str) -> int:
        """Messages buffered or spilled for ``queue``."""
        buf = self._queues.get(queue)
        return buf.message_count if buf else 0

    def side_count(self, queue: str) -> int:
        """Side records buffered or spilled for ``queue``."""
        buf = self._queues.get(queue)
        return buf.side_count if buf else 0

    def message_counts(self, queue: str, active_gen: int) -> tuple[int, int]:
        """``(kept, dropped)``: how many of ``queue``'s messages :meth:`message_lines` writes
        for ``active_gen`` (0 keeps every generation), and how many it drops."""
        buf = self._queues.get(queue)
        if buf is None:
            return 0, 0
        kept = sum(
            run.count
            for generation, runs in buf.runs.items()
            if not active_gen or generation == active_gen
            for run in runs
        )
        return kept, buf.message_count - kept

    # --- synchronous file work (worker threads only) ---------------------------------------------

    def spill(self) -> None:
        """Write every run and side line held in memory into a new scratch file."""
        path = self._new_file("run")
        with open(path, "xb", buffering=_WRITE_CHUNK) as out:
            for buf in self._queues.values():
                for runs in buf.runs.values():
                    for run in runs:
                        if run.data is not None:
                            run.section = _Section(path, out.tell(), run.size)
                            out.write(run.data)
                            run.data = None
                if buf.sides:
                    start = out.tell()
                    write_records(out, buf.sides)
                    buf.side_runs.append(_Section(path, start, out.tell() - start))
                    buf.sides = []
        self._used = 0

    def message_lines(self, queue: str, active_gen: int) -> Iterator[bytes]:
        """``queue``'s ``messages.jsonl`` content in order, in parts, without the messages of
        generations other than ``active_gen`` (0 keeps every generation); see
        :meth:`message_counts`. Releases the queue's runs: call it once per queue."""
        buf = self._queues[queue]
        runs = [
            run
            for generation, held in buf.runs.items()
            if not active_gen or generation == active_gen
            for run in held
        ]
        buf.runs = {}
        with _RunReader() as reader:
            if _unpacked_size(runs) <= self._budget:
                records = _sorted(reader, runs)
                for start in range(0, len(records), _WRITE_RECORDS):
                    yield b"".join(map(_LINE, records[start : start + _WRITE_RECORDS]))
                return
            for part in self._merge(reader, runs):
                yield b"".join(map(_LINE, part))

    def _merge(self, reader: _RunReader, runs: list[_Run]) -> Iterator[list[Record]]:
        """The records of ``runs``, too many to unpack at once, in order, in parts: groups of
        runs that fit the budget are sorted into one scratch file, a run of blocks each,
        which :func:`_merge_blocks` then merges holding one block of each at a time."""
        groups: list[list[_Run]] = [[]]
        size = 0
        for run in runs:
            cost = _unpacked_size((run,))
            if groups[-1] and size + cost > self._budget:
                groups.append([])
                size = 0
            groups[-1].append(run)
            size += cost
        # Half the budget for the blocks the merge holds, one per group.
        per_record = _unpacked_size(runs) / max(1, sum(run.count for run in runs))
        block = max(1, int(self._budget // (2 * len(groups) * per_record)))
        path = self._new_file("sorted")
        sorted_runs: list[list[_Section]] = []
        with open(path, "xb", buffering=_WRITE_CHUNK) as out:
            for group in groups:
                records = _sorted(reader, group)
                blocks = []
                for start in range(0, len(records), block):
                    data = _PACK.encode(records[start : start + block])
                    blocks.append(_Section(path, out.tell(), len(data)))
                    out.write(data)
                sorted_runs.append(blocks)
                del records
        return _merge_blocks(reader, sorted_runs)

    def write_sides(self, queue: str, dest: Path) -> None:
        """Write ``queue``'s side-record lines to ``dest`` in arrival order."""
        buf = self._queues[queue]
        with open(dest, "xb", buffering=_WRITE_CHUNK) as out:
            for section in buf.side_runs:
                out.writelines(
                    line for _, line in iter_records(section.path, section.offset, section.length)
                )
            out.writelines(line for _, line in buf.sides)


def _unpacked_size(runs: Iterable[_Run]) -> int:
    """What ``runs`` cost in memory once unpacked."""
    return sum(run.size + _UNPACKED_OVERHEAD * run.count for run in runs)


def _sorted(reader: _RunReader, runs: Iterable[_Run]) -> list[Record]:
    """The records of ``runs``, unpacked and sorted."""
    records: list[Record] = []
    for run in runs:
        records += _unpack(reader.read(run.data, run.section))
    records.sort(key=_BY_KEY)
    return records


def _merge_blocks(reader: _RunReader, sorted_runs: list[list[_Section]]) -> Iterator[list[Record]]:
    """Merge runs of sorted blocks a round at a time, in sorted parts.

    Each run holds its current block. Nothing after the smallest of the blocks' last keys
    can come before it, so every record up to that key is taken from every run and the part
    is sorted at once (in C); the run whose block it ended reads its next one. Each round
    costs a few Python steps per run rather than per record.
    """
    sections = [iter(blocks) for blocks in sorted_runs]
    held: list[list[Record]] = [[] for _ in sections]
    taken = [0] * len(sections)
    while True:
        for i, pending in enumerate(sections):
            if taken[i] == len(held[i]):
                section = next(pending, None)
                held[i] = [] if section is None else _unpack(reader.read(None, section))
                taken[i] = 0
        live = [i for i, block in enumerate(held) if block]
        if not live:
            return
        bound = min(held[i][-1][0] for i in live)
        part: list[Record] = []
        for i in live:
            cut = bisect_right(held[i], bound, taken[i], key=_BY_KEY)
            part += held[i][taken[i] : cut]
            taken[i] = cut
        part.sort(key=_BY_KEY)
        yield part


def _unpack(data: bytes) -> list[Record]:
    try:
        return _UNPACK.decode(data)
    except msgspec.DecodeError:
        raise OutputError("an SQS scratch file is damaged") from None


class _RunReader:
    """Reads spilled runs and blocks back, one descriptor per scratch file."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}

    def __enter__(self) -> _RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def read(self, data: bytes | None, section: _Section | None) -> bytes:
        """``data`` if the run is in memory, else its section's bytes."""
        if data is not None:
            return data
        assert section is not None, "a run is in memory or spilled"
        fd = self._fds.get(section.path)
        if fd is None:
            fd = self._fds[section.path] = os.open(section.path, _READ_FLAGS)
        got = os.pread(fd, section.length, section.offset)
        if len(got) != section.length:
            raise OutputError(f"scratch file {str(section.path)!r} is truncated")
        return got
