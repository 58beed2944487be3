"""Sorting ``(key, value)`` records by key with bounded memory (an external merge sort).

Shared by both directions: the encoder sorts every adapter's records before writing the
snapshot, adapter decoders sort what they must regroup (facts, KEYMAP and sidecar lines),
the self-test sorts the lines of files it compares as sets.

Records are buffered until their estimated footprint exceeds a budget; the buffer is then
sorted and spilled to a run (a :mod:`~elastickv_async._core.scratch` record file) under the
scratch directory. The final order is the scratch module's k-way :func:`~.scratch.merge` of
the runs plus the last in-memory buffer; when there are more runs than :data:`MERGE_FAN_IN`,
the oldest runs are merged into one first, so the number of open files and of entries held
at once stays bounded too.

A sorter made with ``large_value`` keeps values of at least that many bytes out of the runs:
a spill appends them, unsorted, to one side file written once, and the buffer and the runs
hold only a reference ``(offset, length)`` to each. Sorting and merging then move keys and
small values only, and :meth:`ExternalSorter.merged` reads each large value back from the
side file when its turn comes. When those values are most of what was buffered, a spill moves
them to the side file and writes no run at all.

Everything here is synchronous: callers run :meth:`ExternalSorter.spill` and iterate
:meth:`ExternalSorter.merged` in worker threads.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO, Final, cast

from .errors import OutputError
from .scratch import Record, create_record_file, iter_records, merge

__all__ = ["DEFAULT_SORT_BUDGET", "MERGE_FAN_IN", "ExternalSorter"]

#: In-memory budget for buffered records before a run is spilled. The process pays about
#: 1.3 times this in RSS (allocator slack, the sort's key list); more, smaller runs cost
#: little, since one k-way merge reads them all.
DEFAULT_SORT_BUDGET: Final = 32 << 20
#: Runs merged at once (open files, and entries held during a merge).
MERGE_FAN_IN: Final = 64
#: Rough per-record cost of the Python objects around the key and value bytes.
ENTRY_OVERHEAD: Final = 160
_by_key = itemgetter(0)
_by_value = itemgetter(1)
_LEN: Final = struct.Struct("<Q")
_REF: Final = struct.Struct("<QQ")
#: Set in a run's value length when the value is a side-file reference (no value is that long).
_SIDE_FLAG: Final = 1 << 63
_RUN_BUFFER: Final = 256 << 10
_NEW_FLAGS: Final = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
)
_APPEND_FLAGS: Final = (
    os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
)
#: ``writev`` takes at most this many buffers at once.
_IOV_MAX: Final = 512


class _SideRef:
    """Where a large value waits in the side file."""

    __slots__ = ("length", "offset")

    def __init__(self, offset: int, length: int) -> None:
        self.offset = offset
        self.length = length


#: A buffered or spilled entry of a sorter with side values: the value, or where it waits.
_Entry = tuple[bytes, "bytes | _SideRef"]


def _write_run(path: Path, entries: Iterable[_Entry]) -> None:
    """Write ``entries`` as a new run: the record-file framing, references flagged."""
    pack = _LEN.pack
    fd = os.open(path, _NEW_FLAGS, 0o600)
    with open(fd, "wb", buffering=_RUN_BUFFER) as fh:
        write = fh.write
        for key, value in entries:
            if type(value) is bytes:
                write(pack(len(key)) + key + pack(len(value)) + value)
            else:
                assert isinstance(value, _SideRef)
                write(pack(len(key)) + key + _REF.pack(_SIDE_FLAG | value.length, value.offset))


def _torn(fh: BinaryIO) -> OutputError:
    return OutputError(f"scratch file {fh.name!r} is truncated")


def _iter_run(path: Path) -> Iterator[_Entry]:
    """The entries of a run written by :func:`_write_run`, streamed."""
    unpack = _LEN.unpack
    with open(path, "rb", buffering=_RUN_BUFFER) as fh:
        read = fh.read
        while head := read(8):
            try:
                key_len = unpack(head)[0]
                key = read(key_len)
                value_len = unpack(read(8))[0]
                if value_len & _SIDE_FLAG:
                    value: bytes | _SideRef = _SideRef(unpack(read(8))[0], value_len & ~_SIDE_FLAG)
                else:
                    value = read(value_len)
                    if len(value) != value_len:
                        raise _torn(fh)
            except struct.error:
                raise _torn(fh) from None
            if len(key) != key_len:
                raise _torn(fh)
            yield key, value


def _resolved(entries: Iterator[_Entry], side: Path) -> Iterator[Record]:
    """``entries`` with each reference replaced by its value, read from ``side``."""
    fd = os.open(side, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        pread = os.pread
        for key, value in entries:
            if type(value) is bytes:
                yield key, value
                continue
            assert isinstance(value, _SideRef)
            data = pread(fd, value.length, value.offset)
            if len(data) != value.length:
                raise OutputError(f"scratch file {str(side)!r} is truncated")
            yield key, data
    finally:
        os.close(fd)


class ExternalSorter:
    """Collects ``(key, value)`` records and yields them sorted by key, spilling to ``spill_dir``.

    Equal keys are all kept, in the order they were added (the sort is stable); the caller
    decides what a duplicate means. Single use: :meth:`merged` may be iterated once;
    :meth:`close` removes the runs. ``spill_dir`` is created by the first spill. Values of
    ``large_value`` bytes or more (when given) wait in a side file instead of the runs.
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
        self._runs: list[Path] = []
        self._next_run = 0
        #: Records added so far, how many runs were spilled, and the bytes of large values
        #: moved to the side file (for the report).
        self.records = 0
        self.spills = 0
        self.side_bytes = 0

    @property
    def over_budget(self) -> bool:
        """True when the buffer should be spilled before more records are added."""
        return self._buffered >= self._budget

    def add(self, key: bytes, value: bytes) -> None:
        """Buffer one record (cheap: call from the event loop, spill in a thread)."""
        if self._large is not None and len(value) >= self._large:
            self._waiting.append(len(self._buffer))
            self._waiting_bytes += len(value)
        self._buffer.append((key, value))
        self._buffered += len(key) + len(value) + ENTRY_OVERHEAD
        self.records += 1

    def add_many(self, records: list[Record]) -> None:
        """Buffer every record of ``records`` (cheap: call from the event loop)."""
        if not records:
            return
        sizes = list(map(len, map(_by_value, records)))
        start = len(self._buffer)
        self._buffer += records
        self._buffered += sum(sizes) + sum(map(len, map(_by_key, records)))
        self._buffered += ENTRY_OVERHEAD * len(records)
        self.records += len(records)
        large = self._large
        if large is not None and max(sizes) >= large:
            waiting = [start + i for i, size in enumerate(sizes) if size >= large]
            self._waiting += waiting
            self._waiting_bytes += sum(sizes[i - start] for i in waiting)

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
        if self._side is None:
            create_record_file(path, cast(list[Record], buffer))  # no references yet
        else:
            _write_run(path, buffer)
        self.spills += 1

    def _iter_run(self, path: Path) -> Iterator[_Entry]:
        if self._side is None:
            return cast(Iterator[_Entry], iter_records(path))
        return _iter_run(path)

    def _compact(self) -> None:
        # Keep one slot for the in-memory tail, so the last merge opens at most MERGE_FAN_IN runs.
        # The merged run takes the place of the oldest runs it replaces, which keeps it stable.
        while len(self._runs) >= MERGE_FAN_IN:
            group, rest = self._runs[:MERGE_FAN_IN], self._runs[MERGE_FAN_IN:]
            path = self._new_run_path()
            self._runs = [path, *rest]
            if self._side is None:
                create_record_file(path, merge(map(iter_records, group)))
            else:
                _write_run(path, merge(map(self._iter_run, group)))
            for old in group:
                old.unlink()

    def merged(self) -> Iterator[Record]:
        """Every record, sorted by key (blocking: iterate in a worker thread)."""
        tail, self._buffer, self._buffered = self._buffer, [], 0
        self._waiting, self._waiting_bytes = [], 0
        tail.sort(key=_by_key)
        if self._runs:
            self._compact()
            entries: Iterator[_Entry] = merge([*map(self._iter_run, self._runs), tail])
        else:
            entries = iter(tail)
        if self._side is None:
            yield from cast(Iterator[Record], entries)  # no references without a side file
        else:
            yield from _resolved(entries, self._side)

    def close(self) -> None:
        """Drop the buffer and remove every run file and the side file (blocking)."""
        self._buffer = []
        self._buffered = 0
        self._waiting, self._waiting_bytes = [], 0
        for path in [*self._runs, *([self._side] if self._side is not None else [])]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
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
