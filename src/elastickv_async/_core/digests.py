"""A ledger of file digests by path: the last digest recorded for a path wins, and they come
back sorted bytewise by raw path, in bounded memory.

A decode records the digest of every file it writes (``CHECKSUMS`` is made from them, see
:class:`~elastickv_async._core.dump.checksums.ChecksumLedger`); an encode records the
digest of every tree file it reads (its ``CHECKSUMS`` check takes them instead of reading
the files again, see :class:`~elastickv_async._core.encode.readdigests.ReadDigests`).
Digests are held as ``(path, digest)`` pairs in arrival order; past ``limit`` of them the
buffer is sorted (C) and spilled as a run (:mod:`~elastickv_async._core.sortedruns`), and
the runs are merged a round at a time instead of one record at a time through a heap.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from operator import eq, itemgetter
from pathlib import Path
from typing import Final

from .extsort import MERGE_FAN_IN, compact_runs
from .sortedruns import Entry, merge_rounds, read_run, write_run

__all__ = ["DigestLedger"]

_KEY: Final = itemgetter(0)
#: Digests of the buffer per run a merge reads at once: each open run costs about as much as
#: a few dozen digests held (its file, its reader, its chunk's list), so a small ledger
#: merges fewer runs at a time instead of passing its bound by the runs' fixed cost.
_ENTRIES_PER_RUN: Final = 32
#: Digests per chunk of a ledger that never spills.
_MEMORY_CHUNK: Final = 4096
#: Paths are file names joined with "/", so they hold no NUL byte: one encode for a batch
#: (a path that does hold one, say from a hand-edited CHECKSUMS, is encoded on its own).
_SEPARATOR: Final = "\0"


def _raw_paths(paths: Sequence[str]) -> list[bytes]:
    """``paths`` as raw bytes (``os.fsencode`` on Linux), in one encode when they allow."""
    raw = _SEPARATOR.join(paths).encode("utf-8", "surrogateescape").split(b"\0")
    if len(raw) != len(paths):
        raw = [path.encode("utf-8", "surrogateescape") for path in paths]
    return raw


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


class DigestLedger:
    """The SHA-256 (or any digest) of files by slash path; :meth:`items` gives them back
    sorted by raw path, the last digest recorded for a path winning.

    At most ``limit`` digests are held in memory; beyond that they are spilled as sorted runs
    under ``spill_dir`` (no ``spill_dir``: all are held). Thread-safe: writers and readers
    record from worker threads.
    """

    def __init__(self, spill_dir: Path | None, *, limit: int) -> None:
        self._dir = spill_dir
        self._limit = max(1, limit) if spill_dir is not None else sys.maxsize
        #: Runs one merge reads (3 at least: two merged beside the in-memory tail).
        self._fan_in = min(MERGE_FAN_IN, max(3, self._limit // _ENTRIES_PER_RUN))
        # A run's chunks are a share of half the limit: a merge of every run's current chunk
        # holds half as many digests as the buffer did, the in-memory tail the other half.
        self._chunk = (
            max(1, self._limit // (2 * self._fan_in)) if spill_dir is not None else _MEMORY_CHUNK
        )
        self._paths: list[bytes] = []
        self._digests: list[bytes] = []
        self._runs: list[Path] = []
        #: How many merges each run's digests went through (see :meth:`_merge_level`).
        self._levels: list[int] = []
        self._next_run = 0
        self._lock = threading.Lock()
        #: Runs spilled so far.
        self.spills = 0

    def record(self, rel: str, digest: bytes) -> None:
        """Remember ``digest`` as the content of the slash path ``rel``."""
        self.record_many([(rel, digest)])

    def record_many(self, digests: Iterable[tuple[str, bytes]]) -> None:
        """:meth:`record` each ``(rel, digest)`` in order (may spill: blocking).

        ``digests`` may be a long iterator: it is taken a buffer's room at a time."""
        source = iter(digests)
        with self._lock:
            while pairs := list(itertools.islice(source, self._limit - len(self._paths))):
                paths, values = zip(*pairs, strict=True)
                # Held as raw bytes, the form they are sorted and spilled in: smaller than
                # the str, and a spill converts nothing.
                self._paths += _raw_paths(paths)
                self._digests += values
                if len(self._paths) >= self._limit:
                    self._spill()

    def get(self, rel: str) -> bytes | None:
        """The digest last recorded for ``rel`` if it is still in memory, not spilled (a
        linear search: for tests and tools)."""
        raw = rel.encode("utf-8", "surrogateescape")
        with self._lock:
            paths = self._paths
            for i in range(len(paths) - 1, -1, -1):
                if paths[i] == raw:
                    return self._digests[i]
        return None

    def _buffered(self) -> list[Entry]:
        """The buffer as sorted ``(raw path, digest)`` pairs, one per path; emptied."""
        paths, digests = self._paths, self._digests
        self._paths, self._digests = [], []
        if not paths:
            return []
        entries = list(zip(paths, digests, strict=True))
        del paths, digests  # the lists go before the sort allocates its keys
        # Stable: of equal paths, the one recorded last stays last.
        entries.sort(key=_KEY)
        return _last_of_each(entries)

    def _spill(self) -> None:
        assert self._dir is not None
        entries = self._buffered()
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._new_run_path()
        self._runs.append(path)
        self._levels.append(0)
        write_run(path, self._chunks(entries))
        del entries  # before a merge reads every run's first chunk
        self.spills += 1
        self._merge_level()

    def _merge_level(self) -> None:
        # The newest runs merged into one as soon as enough of them share a level (a
        # binary-counter scheme, wider): the runs on disk stay few while recording, and each
        # digest is rewritten once per level, a logarithmic number of times.
        width = max(2, self._fan_in - 1)
        while len(self._levels) >= width and len(set(self._levels[-width:])) == 1:
            level = self._levels[-1]
            group = self._runs[-width:]
            path = self._merge_runs(group)
            for old in group:
                old.unlink()
            self._runs[-width:] = [path]
            self._levels[-width:] = [level + 1]

    def _merge_runs(self, group: list[Path]) -> Path:
        """A new run of ``group``'s runs merged (the newest digest of a path winning)."""
        path = self._new_run_path()
        merged = self._merged([read_run(run) for run in group])
        # A round can hold every source's chunk: cut back to chunks of one spill's size, so
        # a later merge of merged runs holds no more than the first ones did.
        write_run(path, (piece for chunk in merged for piece in self._chunks(chunk)))
        return path

    def _new_run_path(self) -> Path:
        assert self._dir is not None
        path = self._dir / f"digests-{self._next_run:06d}"
        self._next_run += 1
        return path

    def _chunks(self, entries: list[Entry]) -> Iterator[list[Entry]]:
        size = self._chunk
        if len(entries) <= size:
            yield entries
            return
        for start in range(0, len(entries), size):
            yield entries[start : start + size]

    def _compact(self) -> None:
        # Before the listing, what the levels left beyond the fan-in, in passes: each pass
        # rewrites a run at most once, and a merged run takes its group's place, so the
        # newest digest still wins. Keep a slot for the in-memory tail.
        compact_runs(self._runs, self._fan_in, self._fan_in - 1, self._merge_runs)
        self._levels = [0] * len(self._runs)  # levels only time the merges while recording

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

    def chunks(self) -> Iterator[list[Entry]]:
        """Every recorded ``(raw path, digest)``, sorted bytewise by path, one per path, in
        lists (none empty). Consumes what is in memory: call once, at the end (blocking: call
        and iterate in a worker thread; runs beyond the merge's fan-in are merged first)."""
        with self._lock:
            if self._runs and len(self._paths) > self._limit // 2:
                self._spill()  # the tail leaves half the limit to the runs' chunks
            tail = self._buffered()
        self._compact()
        sources = [read_run(run) for run in self._runs]
        sources.append(self._chunks(tail))
        return self._merged(sources)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """:meth:`chunks`, one ``(raw path, digest)`` at a time."""
        return itertools.chain.from_iterable(self.chunks())

    def close(self) -> None:
        """Drop what is held and remove every run (blocking)."""
        with self._lock:
            self._paths, self._digests = [], []
            for path in self._runs:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            self._runs, self._levels = [], []
