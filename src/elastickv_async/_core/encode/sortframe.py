"""The encoder's external sort: records held as their framed bytes, merged in bulk.

Every record of an encode is sorted by its encoded key and written as ``LE u64 len ‖ key ‖
LE u64 len ‖ value header ‖ body``. :class:`FramedSorter` frames a record when it is added
and holds ``(key, frame)`` pairs, so the rest is C: the buffer is sorted by key, a spilled
run is written and read back as marshal'd chunks, and the output is the frames joined.
Runs are merged a round at a time instead of a record at a time through a heap: a round
takes, from every source's current chunk, the entries up to the smallest of the chunks'
last keys (no later chunk can hold a smaller one) and sorts them together, which timsort
does by merging the sorted pieces.

Deferred values (read only when written) and large ones (parked in a side file) keep the
general :class:`~elastickv_async._core.extsort.ExternalSorter`; its records join the
merge as one more source, framed as they come out of it (a long value is not copied into
its frame: it is written as it was read, after its frame's head).

The merge stays within the sorter's budget: the in-memory tail keeps at most half of it (a
larger one is spilled as the last run), the general sorter a quarter, and the runs' chunks
the last quarter. That quarter sets the chunk size and how many runs one merge reads (each
source holds one chunk, and as much again in the round joined for the writer); more runs
are merged beforehand, a group at a time (see
:func:`~elastickv_async._core.extsort.compaction_groups`). Runs are written through a page of
buffer (a chunk's bytes go to the file as they are).

Everything here blocks: add from the event loop (cheap), spill and merge in worker threads.
"""

from __future__ import annotations

import contextlib
import itertools
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterator, Sequence
from operator import eq, itemgetter
from pathlib import Path
from typing import Final, cast

from ..errors import DumpTreeError
from ..extsort import ENTRY_OVERHEAD, Deferred, ExternalSorter, compact_runs, fan_in
from ..snapshot.framing import TS_SIZE, VALUE_HEADER_SIZE
from ..sortedruns import Entry, merge_rounds, read_run, write_run
from .framing import KEY_LEN, VALUE_HEAD

__all__ = ["APART_BYTES", "CHUNK_BYTES", "FramedSorter"]

#: A chunk of a run (or taken from the in-memory tail or the general sorter) at most, and at
#: least, in the bytes its entries hold in memory (frame, key, :data:`ENTRY_OVERHEAD`); the
#: sorter's budget sets the size in between.
CHUNK_BYTES: Final = 256 << 10
#: A deferred or large value this long is written as it was read, not copied into its
#: frame (see :meth:`FramedSorter.blocks`).
APART_BYTES: Final = 64 << 10
_MIN_CHUNK: Final = 4 << 10
_KEY: Final = itemgetter(0)
_FRAME: Final = itemgetter(1)
#: A value written apart from its frame's head: the record's key, the head, the value.
_Apart = tuple[bytes, bytes, bytes]


def duplicate_key(key: bytes) -> DumpTreeError:
    """The error for two records with the encoded key ``key``."""
    return DumpTreeError(
        f"duplicate key in the dump tree: {key[:-TS_SIZE][:64]!r}",
        code="ErrEncodeDuplicateKey",
    )


def _frame(key: bytes, value: bytes) -> bytes:
    return KEY_LEN.pack(len(key)) + key + VALUE_HEAD.pack(len(value) + VALUE_HEADER_SIZE) + value


def _framed(records: Sequence[tuple[bytes, bytes]], suffix: bytes) -> list[Entry]:
    key_len, value_head = KEY_LEN.pack, VALUE_HEAD.pack
    if not suffix:
        return [
            (key, key_len(len(key)) + key + value_head(len(value) + VALUE_HEADER_SIZE) + value)
            for key, value in records
        ]
    return [
        (
            stamped := key + suffix,
            key_len(len(stamped)) + stamped + value_head(len(value) + VALUE_HEADER_SIZE) + value,
        )
        for key, value in records
    ]


def _cost(entry: Entry) -> int:
    """What ``entry`` holds in memory, as the sorter counts it."""
    return len(entry[0]) + len(entry[1]) + ENTRY_OVERHEAD


def _chunk_ends(entries: list[Entry], chunk_bytes: int) -> list[int]:
    """Where to cut ``entries`` into chunks of about ``chunk_bytes`` (see :func:`_cost`)."""
    if not entries:
        return []
    sizes = list(itertools.accumulate(map(_cost, entries)))
    ends = []
    start = 0
    while start < len(entries):
        # The first entry past another chunk's worth of bytes, and at least one entry.
        target = (sizes[start - 1] if start else 0) + chunk_bytes
        end = max(start + 1, bisect_right(sizes, target - 1, lo=start) + 1)
        end = min(end, len(entries))
        ends.append(end)
        start = end
    return ends


def _chunks(entries: list[Entry], chunk_bytes: int) -> Iterator[list[Entry]]:
    start = 0
    for end in _chunk_ends(entries, chunk_bytes):
        yield entries[start:end]
        start = end


def _with_values_apart(
    entries: list[Entry], keys: list[bytes], apart: deque[_Apart]
) -> Iterator[tuple[bytes, int]]:
    """The blocks of a round (``entries``, their ``keys``) holding the heads of values
    waiting in ``apart``: each value is a block of its own (no records in it) after the
    block that ends with its head."""
    start = 0
    while apart and apart[0][0] <= keys[-1]:
        key, head, value = apart.popleft()
        at = bisect_left(keys, key, lo=start)
        # Keys are unique here (duplicates were refused): the entry is the one holding head.
        assert entries[at][1] is head
        yield b"".join(map(_FRAME, entries[start : at + 1])), at + 1 - start
        yield value, 0
        start = at + 1
    if start < len(entries):
        yield b"".join(map(_FRAME, entries[start:])), len(entries) - start


class FramedSorter:
    """Collects ``(encoded_key, value)`` records and gives them back framed, sorted by key.

    The drop-in for :class:`~elastickv_async._core.extsort.ExternalSorter` in an encode:
    :meth:`add_many`, :attr:`over_budget` and :meth:`spill` alike, then :meth:`blocks`
    once (the framed stream, with duplicate keys refused) and :meth:`close`. Values of
    ``large_value`` bytes or more, and :class:`~elastickv_async._core.extsort.Deferred`
    values, go through an ``ExternalSorter`` under ``spill_dir`` and are framed when merged.
    """

    def __init__(self, spill_dir: Path, budget: int, *, large_value: int) -> None:
        self._dir = spill_dir
        self._budget = max(1, budget)
        self._large = large_value
        # The merge's shares (see the module docstring): the runs' chunks get a quarter,
        # each source a chunk and its part of the joined round.
        reads = self._budget // 4
        #: Sources merged at once, and the bytes of a chunk.
        self.fan_in = fan_in(reads, 2 * _MIN_CHUNK)
        self.chunk_bytes = min(CHUNK_BYTES, max(_MIN_CHUNK, reads // (2 * self.fan_in)))
        self._reserved = min(self.chunk_bytes, self._budget // 4)
        self._buffer: list[Entry] = []
        self._buffered = 0
        self._general: ExternalSorter | None = None
        self._runs: list[Path] = []
        self._next_run = 0
        #: Records added so far, and how many runs were spilled (the general sorter's too).
        self.records = 0
        self._spills = 0

    @property
    def spills(self) -> int:
        """Runs spilled so far."""
        return self._spills + (self._general.spills if self._general is not None else 0)

    @property
    def defers_reads(self) -> bool:
        """Whether some value is :class:`~elastickv_async._core.extsort.Deferred`: read only
        when :meth:`blocks` comes to it."""
        return self._general is not None and self._general.defers_reads

    @property
    def over_budget(self) -> bool:
        """True when the buffers should be spilled before more records are added (they
        leave room for a spill's chunk on its way to the file, or the general sorter's
        write buffer, no larger; a quarter of the budget at most)."""
        general = self._general.buffered if self._general is not None else 0
        return self._buffered + general + self._reserved >= self._budget

    def add_many(
        self, records: Sequence[tuple[bytes, bytes | Deferred]], suffix: bytes = b""
    ) -> None:
        """Frame and buffer every record of ``records``, ``suffix`` appended to each key
        (cheap: call from the event loop)."""
        if not records:
            return
        large = self._large
        values = list(map(itemgetter(1), records))
        if set(map(type, values)) != {bytes} or max(map(len, values)) >= large:
            plain = [r for r in records if type(r[1]) is bytes and len(r[1]) < large]
            if self._general is None:
                self._general = ExternalSorter(
                    self._dir / "general", max(1, self._budget // 4), large_value=large
                )
            self._general.add_many(
                [(k + suffix, v) for k, v in records if type(v) is not bytes or len(v) >= large]
            )
            self.records += len(records) - len(plain)
            records = plain
        entries = _framed(cast(Sequence[tuple[bytes, bytes]], records), suffix)
        self._buffer += entries
        self._buffered += (
            sum(map(len, map(_FRAME, entries)))
            + sum(map(len, map(_KEY, entries)))
            + ENTRY_OVERHEAD * len(entries)
        )
        self.records += len(entries)

    def spill(self) -> None:
        """Write the larger of the two buffers out (blocking), the other too if still over."""
        general = self._general
        if general is not None and general.buffered > self._buffered:
            general.spill()
            if not self.over_budget:
                return
        if self._buffer:
            self._spill_buffer()
        if general is not None and self.over_budget:
            general.spill()

    def _new_run_path(self) -> Path:
        path = self._dir / f"framed-{self._next_run:06d}"
        self._next_run += 1
        return path

    def _spill_buffer(self) -> None:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        buffer, self._buffer, self._buffered = self._buffer, [], 0
        buffer.sort(key=_KEY)
        path = self._new_run_path()
        self._runs.append(path)
        write_run(path, _chunks(buffer, self.chunk_bytes))
        self._spills += 1

    def _compact(self) -> None:
        # Keep slots for the in-memory tail and the general sorter. A round holds up to a
        # chunk of every source: it is cut again, so the merged run's chunks stay chunks.
        width, chunk_bytes = self.fan_in, self.chunk_bytes

        def merge_group(group: list[Path]) -> Path:
            path = self._new_run_path()
            rounds = merge_rounds([read_run(run) for run in group])
            write_run(path, (c for r in rounds for c in _chunks(r, chunk_bytes)))
            return path

        compact_runs(self._runs, width, width - 2, merge_group)

    def _general_chunks(
        self, general: ExternalSorter, apart: deque[_Apart]
    ) -> Iterator[list[Entry]]:
        """The general sorter's records, framed, in chunks of about :attr:`chunk_bytes`.

        A value of :data:`APART_BYTES` or more is not copied into its frame: the entry holds
        the frame's head only, and the value waits in ``apart`` (in key order) until
        :meth:`blocks` writes it after its head.
        """
        chunk: list[Entry] = []
        size = 0
        key_len, value_head = KEY_LEN.pack, VALUE_HEAD.pack
        for key, value in general.merged():
            if len(value) >= APART_BYTES:
                head = key_len(len(key)) + key + value_head(len(value) + VALUE_HEADER_SIZE)
                entry = (key, head)
                apart.append((key, head, value))
                size += len(value)
            else:
                entry = (key, _frame(key, value))
            chunk.append(entry)
            size += _cost(entry)
            if size >= self.chunk_bytes:
                yield chunk
                chunk, size = [], 0
        if chunk:
            yield chunk

    def blocks(self) -> Iterator[tuple[bytes, int]]:
        """Every record framed, sorted by key, as ``(bytes, records in them)`` blocks (a value
        of :data:`APART_BYTES` or more from the general sorter is a block of its own, with no
        records, after the one ending with its frame's head); a key equal to the one before
        raises ``ErrEncodeDuplicateKey`` (blocking: iterate in a worker thread)."""
        if (self._runs or self._general is not None) and self._buffered > self._budget // 2:
            # Beside other sources the tail keeps half the budget (see the module docstring).
            self._spill_buffer()
        tail, self._buffer, self._buffered = self._buffer, [], 0
        tail.sort(key=_KEY)
        self._compact()
        sources = [read_run(run) for run in self._runs]
        sources.append(_chunks(tail, self.chunk_bytes))
        apart: deque[_Apart] = deque()
        if self._general is not None:
            sources.append(self._general_chunks(self._general, apart))
        previous: bytes | None = None
        for entries in merge_rounds(sources):
            keys = list(map(_KEY, entries))
            if keys[0] == previous or any(map(eq, keys, itertools.islice(keys, 1, None))):
                if keys[0] == previous:
                    raise duplicate_key(keys[0])
                raise duplicate_key(next(a for a, b in itertools.pairwise(keys) if a == b))
            previous = keys[-1]
            if apart and apart[0][0] <= previous:
                yield from _with_values_apart(entries, keys, apart)
            else:
                yield b"".join(map(_FRAME, entries)), len(entries)

    def close(self) -> None:
        """Drop the buffer and remove every run (blocking)."""
        self._buffer = []
        self._buffered = 0
        for path in self._runs:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._runs = []
        if self._general is not None:
            self._general.close()
