"""Sorting ``(key, value)`` records by key with bounded memory (an external merge sort).

Shared by both directions: the encoder sorts every adapter's records before writing the
snapshot, adapter decoders sort what they must regroup (facts, KEYMAP and sidecar lines),
the self-test sorts the lines of files it compares as sets.

Records are buffered until their estimated footprint exceeds a budget; the buffer is then
sorted and spilled to a run (a :mod:`~elastickv_async._core.scratch` record file) under the
scratch directory. The final order is the scratch module's k-way :func:`~.scratch.merge` of
the runs plus the last in-memory buffer; when there are more runs than :data:`MERGE_FAN_IN`,
the oldest runs are merged into one first, so the number of open files and of entries held
at once stays bounded too. Everything here is synchronous: callers run
:meth:`ExternalSorter.spill` and iterate :meth:`ExternalSorter.merged` in worker threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Final

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


class ExternalSorter:
    """Collects ``(key, value)`` records and yields them sorted by key, spilling to ``spill_dir``.

    Equal keys are all kept, in the order they were added (the sort is stable); the caller
    decides what a duplicate means. Single use: :meth:`merged` may be iterated once;
    :meth:`close` removes the runs. ``spill_dir`` is created by the first spill.
    """

    def __init__(self, spill_dir: Path, budget: int = DEFAULT_SORT_BUDGET) -> None:
        self._dir = spill_dir
        self._budget = max(1, budget)
        self._buffer: list[Record] = []
        self._buffered = 0
        self._runs: list[Path] = []
        self._next_run = 0
        #: Records added so far, and how many runs were spilled (for the report).
        self.records = 0
        self.spills = 0

    @property
    def over_budget(self) -> bool:
        """True when the buffer should be spilled before more records are added."""
        return self._buffered >= self._budget

    def add(self, key: bytes, value: bytes) -> None:
        """Buffer one record (cheap: call from the event loop, spill in a thread)."""
        self._buffer.append((key, value))
        self._buffered += len(key) + len(value) + ENTRY_OVERHEAD
        self.records += 1

    def _new_run_path(self) -> Path:
        path = self._dir / f"run-{self._next_run:06d}"
        self._next_run += 1
        return path

    def spill(self) -> None:
        """Sort the buffer and write it as one run file (blocking)."""
        if not self._buffer:
            return
        buffer, self._buffer, self._buffered = self._buffer, [], 0
        buffer.sort(key=_by_key)
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._new_run_path()
        self._runs.append(path)
        create_record_file(path, buffer)
        self.spills += 1

    def _compact(self) -> None:
        # Keep one slot for the in-memory tail, so the last merge opens at most MERGE_FAN_IN runs.
        # The merged run takes the place of the oldest runs it replaces, which keeps it stable.
        while len(self._runs) >= MERGE_FAN_IN:
            group, rest = self._runs[:MERGE_FAN_IN], self._runs[MERGE_FAN_IN:]
            path = self._new_run_path()
            self._runs = [path, *rest]
            create_record_file(path, merge(map(iter_records, group)))
            for old in group:
                old.unlink()

    def merged(self) -> Iterator[Record]:
        """Every record, sorted by key (blocking: iterate in a worker thread)."""
        tail, self._buffer, self._buffered = self._buffer, [], 0
        tail.sort(key=_by_key)
        if not self._runs:
            yield from tail
            return
        self._compact()
        yield from merge([*map(iter_records, self._runs), tail])

    def close(self) -> None:
        """Drop the buffer and remove every run file (blocking)."""
        self._buffer = []
        self._buffered = 0
        for path in self._runs:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._runs = []
