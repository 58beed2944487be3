"""Sorting ``(key, value)`` records by key with bounded memory (an external merge sort).

Shared by both directions: the encoder sorts every adapter's records before writing the
snapshot, adapter decoders sort what they must regroup (facts, KEYMAP and sidecar lines),
the self-test sorts the lines of files it compares as sets.

Records are buffered until their estimated footprint exceeds a budget; the buffer is then
sorted and spilled to a run (a :mod:`~elastickv_async._core.scratch` record file) under the
scratch directory. The final order is the scratch module's k-way :func:`~.scratch.merge` of
the runs plus the last in-memory buffer; when there are more runs than the fan-in (at most
:data:`MERGE_FAN_IN`, fewer when half the budget cannot give each run a page of read
buffer), groups of runs are merged first, each into one (see :func:`compaction_groups`), so
the number of open files and of entries held at once stays bounded too. The files' read and
write buffers come out of the same budget: while runs are merged, the in-memory tail keeps
at most half of it (a larger one is spilled as the last run) and the runs' read buffers
share the other half; a spill's write buffer is kept free beside the records buffered.

Big values need not travel through the runs:

* a :class:`Deferred` value stays where it is (a file of the input, say) until its record
  comes out of :meth:`ExternalSorter.merged`, which then reads it from its
  :class:`ValueSource`; the buffer and the runs hold only its token;
* a sorter made with ``large_value`` moves values of at least that many bytes, at its next
  spill, to one side file written once, and keeps an ``(offset, length)`` reference instead.
  When those values were most of what was buffered, the spill writes no run at all.

Sorting and merging then move keys, small values and references only. Everything here is
synchronous: callers run :meth:`ExternalSorter.spill` and iterate
:meth:`ExternalSorter.merged` in worker threads.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO, Final, Protocol, cast

from .errors import OutputError
from .scratch import Record, create_record_file, iter_records, merge

__all__ = [
    "DEFAULT_SORT_BUDGET",
    "MERGE_FAN_IN",
    "Deferred",
    "ExternalSorter",
    "ValueSource",
    "compact_runs",
    "compaction_groups",
    "fan_in",
]

#: In-memory budget for buffered records before a run is spilled. The process pays about
#: 1.3 times this in RSS (allocator slack, the sort's key list); more, smaller runs cost
#: little, since one k-way merge reads them all.
DEFAULT_SORT_BUDGET: Final = 32 << 20
#: Runs merged at once at most (open files, and entries held during a merge).
MERGE_FAN_IN: Final = 64
#: Rough per-record cost of the Python objects around the key and value bytes.
ENTRY_OVERHEAD: Final = 160
_by_key = itemgetter(0)
_by_value = itemgetter(1)
_LEN: Final = struct.Struct("<Q")
_REF: Final = struct.Struct("<QQ")
#: Set in a run's value length when the value is a side-file reference, or a deferred value
#: (no value is that long).
_SIDE_FLAG: Final = 1 << 63
_DEFERRED_FLAG: Final = 1 << 62
_LENGTH_MASK: Final = _DEFERRED_FLAG - 1
#: A run file's read or write buffer at most, and at least (a page: the smallest budgets
#: may be passed by that much per open run).
_RUN_BUFFER: Final = 256 << 10
_MIN_RUN_BUFFER: Final = 4 << 10
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_NEW_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
_APPEND_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | _CLOEXEC
#: ``writev`` takes at most this many buffers at once.
_IOV_MAX: Final = 512


def compaction_groups(count: int, width: int, keep: int) -> list[tuple[int, int]]:
    """Which of ``count`` runs to merge so that at most ``keep`` are left, ``width`` at most
    into one: ``(start, stop)`` spans of consecutive runs, from the oldest, each merged run
    taking its group's place (which keeps a stable sort stable). The last group is only as
    wide as needed. One pass rewrites every run at most once; while more than ``keep`` are
    left, call again (so a run's records are rewritten a logarithmic number of times, not
    once per group as when every merge takes the previous one's output in).
    """
    spans = []
    excess, start = count - keep, 0
    while excess > 0 and count - start >= 2:
        size = min(width, excess + 1, count - start)
        spans.append((start, start + size))
        start += size
        excess -= size - 1
    return spans


def compact_runs(
    runs: list[Path], width: int, keep: int, merge_group: Callable[[list[Path]], Path]
) -> None:
    """Merge ``runs`` (oldest first; updated in place after each pass, so the owner can
    remove what is on disk if a merge fails) in :func:`compaction_groups` passes until at
    most ``keep`` are left: ``merge_group(group)`` writes a group's runs merged into a new
    run and returns its path; the group's runs are removed here. Each merged run takes its
    group's place, so what was recorded later still comes later."""
    while len(runs) > keep:
        merged: list[Path] = []
        at = 0
        for start, stop in compaction_groups(len(runs), width, keep):
            group = runs[start:stop]
            path = merge_group(group)
            for old in group:
                old.unlink()
            merged += [*runs[at:start], path]
            at = stop
        runs[:] = merged + runs[at:]


def fan_in(read_share: int, per_run: int) -> int:
    """How many runs one merge reads when ``read_share`` bytes pay for their reads and each
    run costs at least ``per_run``: :data:`MERGE_FAN_IN` at most, 3 at least (two runs
    merged into a third, or beside the in-memory tail). A smaller budget merges in more
    rounds; the floor may pass it by ``per_run`` a run."""
    return max(3, min(MERGE_FAN_IN, read_share // per_run))


class ValueSource(Protocol):
    """Reads deferred values back when their records are merged (in a worker thread).

    A source with a ``close()`` method (files it keeps open between reads) has it called when
    the sorter holding its values is closed.
    """

    def read(self, token: bytes, length: int) -> bytes:
        """The ``length`` bytes named by ``token`` (raise when they are no longer there)."""
        ...


class Deferred:
    """A value not read yet: ``length`` bytes that ``source.read(token, length)`` returns.

    ``len()`` is the value's length, so size checks see the real value.
    """

    __slots__ = ("length", "source", "token")

    def __init__(self, source: ValueSource, token: bytes, length: int) -> None:
        self.source = source
        self.token = token
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"Deferred({self.token!r}, {self.length})"


class _SideRef:
    """Where a large value waits in the side file."""

    __slots__ = ("length", "offset")

    def __init__(self, offset: int, length: int) -> None:
        self.offset = offset
        self.length = length


#: A value as the sorter holds it: the bytes, where they wait, or how to read them.
_Value = bytes | _SideRef | Deferred
_Entry = tuple[bytes, _Value]


def _torn(fh: BinaryIO) -> OutputError:
    return OutputError(f"scratch file {fh.name!r} is truncated")


class ExternalSorter:
    """Collects ``(key, value)`` records and yields them sorted by key, spilling to ``spill_dir``.

    Equal keys are all kept, in the order they were added (the sort is stable); the caller
    decides what a duplicate means. Single use: :meth:`merged` may be iterated once;
    :meth:`close` removes the runs. ``spill_dir`` is created by the first spill. Values of
    ``large_value`` bytes or more (when given) wait in a side file instead of the runs;
    :class:`Deferred` values are read when they are merged.
    """

    def __init__(
        self, spill_dir: Path, budget: int = DEFAULT_SORT_BUDGET, *, large_value: int | None = None
    ) -> None:
        self._dir = spill_dir
        self._budget = max(1, budget)
        self._large = large_value
        self._buffer: list[_Entry] = []
        self._buffered = 0
        #: Buffer positions of large values not yet in the side file, and their bytes.
        self._waiting: list[int] = []
        self._waiting_bytes = 0
        self._side: Path | None = None
        self._side_size = 0
        #: The sources of deferred values, numbered in the runs by their place here.
        self._sources: list[ValueSource] = []
        self._source_ids: dict[int, int] = {}
        #: Whether any value is a reference (runs then use the flagged framing).
        self._references = False
        self._runs: list[Path] = []
        self._next_run = 0
        #: Runs merged at once, and a spill's write buffer (a run's read buffer at that
        #: fan-in), of which the buffered records leave at most a quarter of the budget free.
        self.fan_in = fan_in(self._budget // 2, _MIN_RUN_BUFFER)
        self.write_buffer = self._io_buffer(self.fan_in)
        self._reserved = min(self.write_buffer, self._budget // 4)
        #: Records added so far, how many runs were spilled, and the bytes of large values
        #: moved to the side file (for the report).
        self.records = 0
        self.spills = 0
        self.side_bytes = 0

    @property
    def defers_reads(self) -> bool:
        """Whether some value is :class:`Deferred`: read only when :meth:`merged` yields it."""
        return bool(self._sources)

    @property
    def buffered(self) -> int:
        """The estimated bytes the buffer holds (what :attr:`over_budget` compares)."""
        return self._buffered

    @property
    def over_budget(self) -> bool:
        """True when the buffer should be spilled before more records are added (it leaves
        room for the spill's write buffer, a quarter of the budget at most)."""
        return self._buffered + self._reserved >= self._budget

    def add(self, key: bytes, value: bytes | Deferred) -> None:
        """Buffer one record (cheap: call from the event loop, spill in a thread)."""
        if type(value) is not bytes or (self._large is not None and len(value) >= self._large):
            self.add_many([(key, value)])
            return
        self._buffer.append((key, value))
        self._buffered += len(key) + len(value) + ENTRY_OVERHEAD
        self.records += 1

    def add_many(self, records: Sequence[tuple[bytes, bytes | Deferred]]) -> None:
        """Buffer every record of ``records`` (cheap: call from the event loop)."""
        if not records:
            return
        values = list(map(_by_value, records))
        sizes = list(map(len, values))
        start = len(self._buffer)
        self._buffer += records
        self._buffered += sum(sizes) + sum(map(len, map(_by_key, records)))
        self._buffered += ENTRY_OVERHEAD * len(records)
        self.records += len(records)
        large = self._large
        plain = set(map(type, values)) == {bytes}
        if plain and (large is None or max(sizes) < large):
            return
        for i, value in enumerate(values):
            if type(value) is Deferred:
                # Held as its token, not its bytes.
                self._buffered += len(value.token) + ENTRY_OVERHEAD - value.length
                self._references = True
                if id(value.source) not in self._source_ids:
                    self._source_ids[id(value.source)] = len(self._sources)
                    self._sources.append(value.source)
            elif large is not None and sizes[i] >= large:
                self._waiting.append(start + i)
                self._waiting_bytes += sizes[i]

    def _new_run_path(self) -> Path:
        path = self._dir / f"run-{self._next_run:06d}"
        self._next_run += 1
        return path

    def _park_large_values(self) -> None:
        """Append the buffer's waiting large values to the side file; reference them instead."""
        buffer, waiting = self._buffer, self._waiting
        if self._side is None:
            self._side = self._dir / "side-values"
        fd = os.open(self._side, _APPEND_FLAGS, 0o600)
        try:
            for start in range(0, len(waiting), _IOV_MAX):
                group = waiting[start : start + _IOV_MAX]
                values = [memoryview(cast(bytes, buffer[i][1])) for i in group]
                _writev_all(fd, values)
                for i, view in zip(group, values, strict=True):
                    buffer[i] = (buffer[i][0], _SideRef(self._side_size, len(view)))
                    self._side_size += len(view)
        finally:
            os.close(fd)
        self._references = True
        self._buffered -= self._waiting_bytes
        self.side_bytes += self._waiting_bytes
        self._waiting, self._waiting_bytes = [], 0

    def spill(self) -> None:
        """Sort the buffer and write it as one run file (blocking).

        With large values waiting, they go to the side file first; when that leaves less
        than half the budget buffered, the buffer stays in memory and no run is written.
        """
        if not self._buffer:
            return
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._waiting:
            self._park_large_values()
            if self._buffered < self._budget // 2:
                return
        buffer, self._buffer, self._buffered = self._buffer, [], 0
        buffer.sort(key=_by_key)
        path = self._new_run_path()
        self._runs.append(path)
        self._write_run(path, buffer, self.write_buffer)
        self.spills += 1

    def _write_run(self, path: Path, entries: Iterable[_Entry], buffering: int) -> None:
        """Write ``entries`` as a new run (through a ``buffering``-byte buffer): the
        record-file framing, references flagged."""
        if not self._references:
            create_record_file(path, cast(Iterable[Record], entries), buffering=buffering)
            return
        pack = _LEN.pack
        ids = self._source_ids
        fd = os.open(path, _NEW_FLAGS, 0o600)
        with open(fd, "wb", buffering=buffering) as fh:
            write = fh.write
            for key, value in entries:
                if type(value) is bytes:
                    write(pack(len(key)) + key + pack(len(value)) + value)
                elif type(value) is _SideRef:
                    write(pack(len(key)) + key + _REF.pack(_SIDE_FLAG | value.length, value.offset))
                else:
                    assert type(value) is Deferred
                    write(
                        pack(len(key))
                        + key
                        + pack(_DEFERRED_FLAG | value.length)
                        + _REF.pack(ids[id(value.source)], len(value.token))
                        + value.token
                    )

    def _io_buffer(self, files: int) -> int:
        """The buffer of each of ``files`` run files open at once: half the budget among
        them, within a page and :data:`_RUN_BUFFER`."""
        return max(_MIN_RUN_BUFFER, min(_RUN_BUFFER, self._budget // (2 * files)))

    def _iter_run(self, path: Path, buffering: int) -> Iterator[_Entry]:
        """The entries of a run written by :meth:`_write_run`, streamed."""
        if not self._references:
            return iter_records(path, buffering=buffering)
        return self._iter_flagged_run(path, buffering)

    def _iter_flagged_run(self, path: Path, buffering: int) -> Iterator[_Entry]:
        unpack = _LEN.unpack
        sources = self._sources
        with open(path, "rb", buffering=buffering) as fh:
            read = fh.read
            while head := read(8):
                try:
                    key_len = unpack(head)[0]
                    key = read(key_len)
                    value_len = unpack(read(8))[0]
                    value: _Value
                    if value_len & _SIDE_FLAG:
                        value = _SideRef(unpack(read(8))[0], value_len & _LENGTH_MASK)
                    elif value_len & _DEFERRED_FLAG:
                        source, token_len = _REF.unpack(read(16))
                        token = read(token_len)
                        if len(token) != token_len:
                            raise _torn(fh)
                        value = Deferred(sources[source], token, value_len & _LENGTH_MASK)
                    else:
                        value = read(value_len)
                        if len(value) != value_len:
                            raise _torn(fh)
                except struct.error:
                    raise _torn(fh) from None
                if len(key) != key_len:
                    raise _torn(fh)
                yield key, value

    def _compact(self) -> None:
        # Keep one slot for the in-memory tail, so the last merge opens at most fan_in runs;
        # a group's merge opens its runs and the merged one, fan_in files too.
        width = self.fan_in
        buffering = self._io_buffer(width)

        def merge_group(group: list[Path]) -> Path:
            path = self._new_run_path()
            self._write_run(path, merge(self._iter_run(run, buffering) for run in group), buffering)
            return path

        compact_runs(self._runs, width - 1, width - 1, merge_group)

    def merged(self) -> Iterator[Record]:
        """Every record, sorted by key (blocking: iterate in a worker thread)."""
        if self._runs and self._buffered > self._budget // 2:
            # The runs' read buffers take the other half.
            self.spill()
        tail, self._buffer, self._buffered = self._buffer, [], 0
        self._waiting, self._waiting_bytes = [], 0
        tail.sort(key=_by_key)
        if self._runs:
            self._compact()
            buffering = self._io_buffer(len(self._runs))
            runs = [self._iter_run(run, buffering) for run in self._runs]
            entries: Iterator[_Entry] = merge([*runs, tail])
        else:
            entries = iter(tail)
        if not self._references:
            yield from cast(Iterator[Record], entries)
            return
        side = None
        if self._side is not None:
            side = os.open(self._side, os.O_RDONLY | _CLOEXEC)
        try:
            for key, value in entries:
                if type(value) is bytes:
                    yield key, value
                elif type(value) is Deferred:
                    yield key, value.source.read(value.token, value.length)
                else:
                    assert type(value) is _SideRef and side is not None
                    data = os.pread(side, value.length, value.offset)
                    if len(data) != value.length:
                        raise OutputError(f"scratch file {str(self._side)!r} is truncated")
                    yield key, data
        finally:
            if side is not None:
                os.close(side)

    def close(self) -> None:
        """Drop the buffer and remove every run file and the side file (blocking)."""
        self._buffer = []
        self._buffered = 0
        self._waiting, self._waiting_bytes = [], 0
        for path in [*self._runs, *([self._side] if self._side is not None else [])]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for source in self._sources:
            release = getattr(source, "close", None)
            if release is not None:
                release()
        self._runs = []
        self._side = None


def _writev_all(fd: int, views: list[memoryview]) -> None:
    """Write every view in order (``writev`` may write less than asked)."""
    pending = [view for view in views if len(view)]
    while pending:
        written = os.writev(fd, pending)
        while written:
            if written >= len(pending[0]):
                written -= len(pending.pop(0))
            else:
                pending[0] = pending[0][written:]
                written = 0
