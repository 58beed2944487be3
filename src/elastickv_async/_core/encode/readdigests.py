"""The digests of the tree files an encode read, sorted by path in bounded memory.

The CHECKSUMS check of an encode's input compares the tree with its CHECKSUMS walking both
in path order, and takes a file's digest from this ledger when an encoder read the file (see
:func:`~elastickv_async._core.dump.tree.recording_reads`). Digests are held as ``(raw path,
digest)`` pairs in arrival order; past ``limit`` of them the buffer is sorted (C) and spilled
as a run of marshal'd chunks, and the runs are merged a round at a time as
:class:`~.sortframe.FramedSorter`'s are, instead of one record at a time through a heap.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterable, Iterator
from operator import eq, itemgetter
from pathlib import Path
from typing import Final

from ..extsort import MERGE_FAN_IN
from .sortframe import Entry, merge_rounds, read_run, write_run

__all__ = ["ReadDigests"]

_KEY: Final = itemgetter(0)
#: Entries per chunk of a run are ``limit`` over this: a merge of every run's current chunk
#: holds about as many digests as the buffer did.
_CHUNKS_PER_LIMIT: Final = MERGE_FAN_IN
#: Paths are file names joined with "/", so they hold no NUL byte: one encode for a batch.
_SEPARATOR: Final = "\0"


def _last_of_each(entries: list[Entry]) -> list[Entry]:
    """``entries`` (sorted stably by path) with only the last of each run of equal paths."""
    keys = list(map(_KEY, entries))
    if not any(map(eq, keys, itertools.islice(keys, 1, None))):
        return entries
    return [
        entry
        for entry, following in zip(entries, [*keys[1:], None], strict=True)
        if entry[0] != following
    ]


class ReadDigests:
    """The SHA-256 of every tree file read (a
    :class:`~elastickv_async._core.dump.tree.DigestRecorder`), given back sorted by raw path
    by :meth:`items`, the last digest recorded for a path winning.

    At most ``limit`` digests are held in memory; beyond that they are spilled as sorted runs
    under ``spill_dir``. Thread-safe: the encoders record from worker threads.
    """

    def __init__(self, spill_dir: Path, *, limit: int) -> None:
        self._dir = spill_dir
        self._limit = max(1, limit)
        self._chunk = max(1, self._limit // _CHUNKS_PER_LIMIT)
        self._paths: list[str] = []
        self._digests: list[bytes] = []
        self._runs: list[Path] = []
        self._next_run = 0
        self._lock = threading.Lock()
        #: Runs spilled so far.
        self.spills = 0

    def record(self, rel: str, digest: bytes) -> None:
        """Remember ``digest`` (32 raw bytes) as the content of the slash path ``rel``."""
        self.record_many([(rel, digest)])

    def record_many(self, digests: Iterable[tuple[str, bytes]]) -> None:
        """:meth:`record` each ``(rel, digest)`` in order (may spill: blocking)."""
        pairs = list(digests)
        if not pairs:
            return
        with self._lock:
            paths, values = zip(*pairs, strict=True)
            self._paths += paths
            self._digests += values
            if len(self._paths) >= self._limit:
                self._spill()

    def _buffered(self) -> list[Entry]:
        """The buffer as sorted ``(raw path, digest)`` pairs, one per path; emptied."""
        paths, digests = self._paths, self._digests
        self._paths, self._digests = [], []
        if not paths:
            return []
        raw = _SEPARATOR.join(paths).encode("utf-8", "surrogateescape").split(b"\0")
        entries = list(zip(raw, digests, strict=True))
        # Stable: of equal paths, the one recorded last stays last.
        entries.sort(key=_KEY)
        return _last_of_each(entries)

    def _spill(self) -> None:
        entries = self._buffered()
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._new_run_path()
        self._runs.append(path)
        write_run(path, self._chunks(entries))
        self.spills += 1
        self._compact()

    def _new_run_path(self) -> Path:
        path = self._dir / f"digests-{self._next_run:06d}"
        self._next_run += 1
        return path

    def _chunks(self, entries: list[Entry]) -> Iterator[list[Entry]]:
        size = self._chunk
        for start in range(0, len(entries), size):
            yield entries[start : start + size]

    def _compact(self) -> None:
        # Keep a slot for the in-memory tail.
        while len(self._runs) > MERGE_FAN_IN - 1:
            group, rest = self._runs[:MERGE_FAN_IN], self._runs[MERGE_FAN_IN:]
            path = self._new_run_path()
            self._runs = [path, *rest]
            write_run(path, self._merged([read_run(run) for run in group]))
            for old in group:
                old.unlink()

    def _merged(self, sources: list[Iterator[list[Entry]]]) -> Iterator[list[Entry]]:
        """The entries of ``sources`` (oldest first, each a path at most once) merged in
        sorted chunks, one per path, the newest source's digest winning."""
        last: Entry | None = None
        for entries in merge_rounds(sources):
            # A path is in one round in every source that holds it (merge_rounds cuts at a
            # key all the sources' chunks reach), so its copies meet here; a round's last
            # entry waits in case the next round starts with the same path.
            if last is not None:
                entries = [last, *entries]
            entries = _last_of_each(entries)
            last = entries.pop()
            if entries:
                yield entries
        if last is not None:
            yield [last]

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every recorded ``(raw path, digest)``, sorted bytewise by path, one per path.
        Consumes what is in memory: call once, at the end (blocking: iterate in a worker
        thread)."""
        with self._lock:
            tail = self._buffered()
        sources = [read_run(run) for run in self._runs]
        sources.append(self._chunks(tail))
        for entries in self._merged(sources):
            yield from entries

    def close(self) -> None:
        """Drop what is held and remove every run (blocking)."""
        with self._lock:
            self._paths, self._digests = [], []
            for path in self._runs:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            self._runs = []
