"""The Redis encoder: ``redis/db_0/`` -> store records (REFERENCE_NOTES §6.2, §6.3).

Records are the reference encoder's, byte for byte: strings in the new inline-TTL format (no
``!redis|ttl|`` row), HLLs as the raw sketch or a TTL envelope plus a ``!redis|ttl|`` row,
collections as wide-column rows with a count/list/stream meta that carries a non-zero TTL
inline, plus a ``!redis|ttl|`` row. Legacy blob layouts are never written.

The tree is read through the context's :class:`~elastickv_async._core.dump.tree.DumpTree`: a
symlink, a special file or a hard-linked file is refused (the reference silently skips
symlinked and special value files; refusing them keeps a planted link from pulling outside
data into the snapshot).

The value files are read and turned into records a slice of a directory's names per call:
one call per worker process (``ctx.workers``) and one in a worker thread of the run's own
process at a time, since the event loop's process otherwise only lists directories and passes
records on.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

import anyio.to_thread

from ..._core.concurrency import task_group
from ..._core.dump.keymap import KEYMAP_FILE, load_keymap
from ..._core.dump.tree import DumpTree, TreeDir
from ..base import EncodeContext
from . import layout
from .errors import tree_error
from .slices import TYPE_DIRS, Built, Record, Slice, encode_slice
from .values import shifted_ttl

__all__ = ["RedisEncoder"]

_DB_NAME: Final = re.compile(r"db_(0|[1-9][0-9]*)")
#: Directory entries handed to one worker call; a call returns early once it has read
#: ``SLICE_BYTES`` (the rest goes to the next call).
SLICE_FILES: Final = 512
SLICE_BYTES: Final = 4 << 20


@dataclass(slots=True)
class _Tree:
    """What the scan of ``redis/db_0`` found: the open directory, KEYMAP and, per type
    directory, its entry names in byte order."""

    db: TreeDir
    keymap: dict[str, bytes]
    listings: dict[str, list[str]] = field(default_factory=dict)


def _db_dir(tree: DumpTree) -> TreeDir | None:
    """Open ``redis/db_0`` after the reference's DB enumeration (``enumerateRedisDBs``)."""
    redis_dir = tree.open_dir((layout.ROOT,))
    if redis_dir is None:
        return None
    with redis_dir:
        dbs: list[tuple[int, str]] = []
        for entry in redis_dir.entries():
            match = _DB_NAME.fullmatch(entry.name)
            if match is None:
                continue
            if not entry.is_dir:
                raise tree_error(
                    "ErrRedisEncodeNotDir",
                    f"{redis_dir.path(entry.name)} exists but is not a directory",
                )
            dbs.append((int(match.group(1)), entry.name))
        if not dbs:
            return None
        if len(dbs) > 1 or dbs[0][0] != 0:
            indices = sorted(i for i, _ in dbs)
            raise tree_error(
                "ErrRedisEncodeMultiDBUnsupported", f"redis encoder enumerated db indices {indices}"
            )
        return redis_dir.subdir(dbs[0][1])


def _scan(tree: DumpTree) -> _Tree | None:
    db = _db_dir(tree)
    if db is None:
        return None
    try:
        # KEYMAP is an index of every key, not one key's records: read without the cap.
        raw = db.read(KEYMAP_FILE, limit=None)
        keymap = {} if raw is None else load_keymap(raw, db.path(KEYMAP_FILE))
        found = _Tree(db, keymap)
        for directory, _ext in TYPE_DIRS:
            sub = db.subdir(directory)
            if sub is not None:
                with sub:
                    # Names only: each entry is checked where it is read (encode_slice), so
                    # the listing of a large directory costs no stat calls here.
                    found.listings[directory] = sorted(os.listdir(sub.fd), key=os.fsencode)
    except BaseException:
        db.close()
        raise
    return found


def _sidecar(db: TreeDir, name: str, shift_ms: int) -> dict[str, int]:
    raw = db.read(name, limit=None)
    ttls = {} if raw is None else layout.parse_ttl_sidecar(raw, name)
    return {segment: shifted_ttl(ttl, shift_ms) or 0 for segment, ttl in ttls.items()}


def _sidecar_of(db: TreeDir, directory: str, shift_ms: int) -> dict[str, int]:
    # The reference reads a TTL sidecar even when its value directory is absent.
    if directory == layout.STRINGS:
        return _sidecar(db, layout.STRINGS_TTL, shift_ms)
    if directory == layout.HLL:
        return _sidecar(db, layout.HLL_TTL, shift_ms)
    return {}


class RedisEncoder:
    """Yields the store records of ``redis/db_0/`` in lists (a ``BatchEncodeAdapter``)."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._tree = ctx.tree
        self._root = str(ctx.input_root)
        self._shift_ms = ctx.time_shift_ms
        self._log = ctx.log
        self._workers = ctx.workers

    async def batches(self) -> AsyncIterator[list[Record]]:
        """Every record of the Redis subtree, type by type in the reference's order, a built
        slice at a time."""
        found = await self._tree.run(_scan, self._tree)
        if found is None:
            return
        try:
            for directory, ext in TYPE_DIRS:
                ttls = await self._tree.run(_sidecar_of, found.db, directory, self._shift_ms)
                names = found.listings.get(directory, [])
                # Made as they are taken: each slice copies its names, KEYMAP and TTL entries.
                pending = (
                    self._slice(found, directory, ext, names[start : start + SLICE_FILES], ttls)
                    for start in range(0, len(names), SLICE_FILES)
                )
                while jobs := list(itertools.islice(pending, self._parallel)):
                    done = deque(zip(jobs, await self._build(jobs), strict=True))
                    while done:
                        job, built = done.popleft()
                        for event, fields in built.notes:
                            self._log.warning(event, **fields)
                        yield built.records
                        if built.done < len(job.names):
                            # Stopped by its byte budget: the names it left come before the
                            # next job's, whose records wait (bounded by the round's budget).
                            rest = dataclasses.replace(job, names=job.names[built.done :])
                            done.appendleft((rest, (await self._build([rest]))[0]))
        finally:
            # Closing a directory descriptor never blocks; doing it inline keeps the
            # generator's cleanup free of awaits when it is closed early.
            found.db.close()

    @property
    def _parallel(self) -> int:
        # One slice per worker process, and one read here in a worker thread: this process
        # only passes records on and would otherwise sit idle.
        return self._workers.processes + 1

    def _slice(
        self, found: _Tree, directory: str, ext: str, names: list[str], ttls: dict[str, int]
    ) -> Slice:
        segments = [name[: -len(ext)] for name in names if name.endswith(ext)]
        keymap = found.keymap
        return Slice(
            self._root,
            directory,
            names,
            {s: keymap[s] for s in segments if s in keymap} if keymap else {},
            {s: ttls[s] for s in segments if s in ttls} if ttls else {},
            self._shift_ms,
            SLICE_BYTES,
        )

    async def _build(self, jobs: list[Slice]) -> list[Built]:
        """Run ``jobs`` side by side, one in each worker process and one in a worker thread;
        the results in job order."""
        results: list[Built | None] = [None] * len(jobs)

        async def one(index: int) -> None:
            if index < self._workers.processes:
                results[index] = await self._workers.run(encode_slice, jobs[index])
            else:
                results[index] = await anyio.to_thread.run_sync(encode_slice, jobs[index])

        # The group is entered and left within this call, never across a yield.
        async with task_group() as tg:
            for index in range(len(jobs)):
                tg.start_soon(one, index)
        return [result for result in results if result is not None]
