"""The Redis encoder: ``redis/db_0/`` -> store records (REFERENCE_NOTES §6.2, §6.3).

Records are the reference encoder's, byte for byte: strings in the new inline-TTL format (no
``!redis|ttl|`` row), HLLs as the raw sketch or a TTL envelope plus a ``!redis|ttl|`` row,
collections as wide-column rows with a count/list/stream meta that carries a non-zero TTL
inline, plus a ``!redis|ttl|`` row. Legacy blob layouts are never written.

The tree is read through the context's :class:`~elastickv_async._core.dump.tree.DumpTree`: a
symlink, a special file or a hard-linked file is refused (the reference silently skips
symlinked and special value files; refusing them keeps a planted link from pulling outside
data into the snapshot).

The value files are read and turned into records a slice of a directory's names per call,
in lanes: two per worker process (``ctx.workers``) and one in a worker thread of the run's
own process, each taking the next slice as soon as it is free, while the slices already
built are sent to the core in order. Beside worker processes the thread lane builds only
while they start (they start while the first directory is listed): afterwards this process
is busy sorting what was sent.

The encoder's memory share (``ctx.memory``) is cut in sixteenths: 14 for a directory's TTL
sidecar and its sorted names, held at once (the TTLs take at most half of it, the names what
the TTLs left), one for KEYMAP's records (past it, each directory merge-joins them sorted by
file name, as its TTLs) and one for the value bytes of the slices out at once.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Final

import anyio
import anyio.to_thread

from ..._core.concurrency import task_group
from ..._core.dump.listing import Listed, raw_name, sorted_listing
from ..._core.dump.tree import DumpTree, TreeDir
from ..._core.extsort import ExternalSorter
from ..base import EncodeContext, SendBatch
from . import layout
from .errors import tree_error
from .slices import TYPE_DIRS, Built, Slice, encode_slice, started
from .streams import SortedLookup, bounded_keymap, sorted_keymap, sorted_ttls

__all__ = ["RedisEncoder"]

_DB_NAME: Final = re.compile(r"db_(0|[1-9][0-9]*)")
#: Directory entries handed to one worker call; a call returns early once it has read
#: ``SLICE_BYTES`` (the rest goes to the next call).
SLICE_FILES: Final = 512
SLICE_BYTES: Final = 4 << 20
#: Slices per worker process or thread out at once in :meth:`RedisEncoder._slices`.
SLICES_PER_LANE: Final = 2
#: Lanes per worker process: the call it runs and the next, which it may hold meanwhile.
PROCESS_LANES: Final = 2


@dataclass(slots=True)
class _Tree:
    """What the scan of ``redis/db_0`` found: the open directory and KEYMAP."""

    db: TreeDir
    #: KEYMAP's records by encoded name; ``None`` when they do not fit in memory.
    keymap: dict[str, bytes] | None


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


def _scan(tree: DumpTree, keymap_memory: int) -> _Tree | None:
    db = _db_dir(tree)
    if db is None:
        return None
    try:
        # KEYMAP is an index of every key, not one key's records: read in blocks, uncapped.
        keymap = bounded_keymap(db, keymap_memory)
        # Open each type directory now: a symlinked or unreadable one fails before any file
        # is read. They are listed as they are reached.
        for directory, _ext in TYPE_DIRS:
            sub = db.subdir(directory)
            if sub is not None:
                sub.close()
    except BaseException:
        db.close()
        raise
    return _Tree(db, keymap)


#: The TTL sidecar of each type directory that has one. The reference reads it even when its
#: value directory is absent.
_SIDECARS: Final = {layout.STRINGS: layout.STRINGS_TTL, layout.HLL: layout.HLL_TTL}


def _discard(names: Generator[Listed, None, None] | None, *sorters: ExternalSorter | None) -> None:
    if names is not None:
        names.close()
    for sorter in sorters:
        if sorter is not None:
            sorter.close()


def _first(names: Iterator[Listed]) -> Listed | None:
    return next(names, None)


@dataclass(slots=True)
class _Planner:
    """Makes one type directory's slices in name order, from its sorted listing and its TTL
    sidecar (and KEYMAP, when it is not held by name) merge-joined by name (blocking: call
    :meth:`take` in a worker thread)."""

    root: str
    directory: str
    ext: str
    shift_ms: int
    keymap: dict[str, bytes] | SortedLookup
    listing: Iterator[Listed]
    ttls: SortedLookup | None
    #: Value bytes after which a slice's call returns early.
    slice_bytes: int

    def take(self, count: int) -> list[Slice]:
        """Up to ``count`` slices of the next names (none at the end of the listing)."""
        return [self._slice(*chunk) for chunk in itertools.islice(self.listing, count)]

    def _slice(self, names: list[str], irregular: frozenset[str]) -> Slice:
        ext, cut, keymap = self.ext, -len(self.ext), self.keymap
        found: dict[str, int] = {}
        last = raw_name(names[-1])
        if self.ttls is not None:
            ttls = self.ttls.take_through(last)
            if ttls:
                # Every sidecar key is a value file's name: a hit ends with ``ext``.
                found = {n[:cut]: int(t) for n in names if (t := ttls.get(n)) is not None}
        originals: dict[str, bytes] = {}
        if isinstance(keymap, SortedLookup):
            # Keyed by value file name too: a hit ends with ``ext``.
            if held := keymap.take_through(last):
                originals = {n[:cut]: o for n in names if (o := held.get(n)) is not None}
        elif keymap:
            originals = {
                s: keymap[s] for n in names if n.endswith(ext) and (s := n[:cut]) in keymap
            }
        return Slice(
            self.root,
            self.directory,
            names,
            irregular,
            originals,
            found,
            self.shift_ms,
            self.slice_bytes,
        )


@dataclass(slots=True)
class _Slot:
    """One slice on its way through the lanes, and what its call built."""

    job: Slice
    done: anyio.Event = dataclasses.field(default_factory=anyio.Event)
    built: Built | None = None


class _Waiting:
    """The slices no lane has taken yet: the rest of a slice stopped early first (the sender
    waits for it), then the new ones in order. Never more than the slices out at once."""

    def __init__(self) -> None:
        self._slots: deque[_Slot] = deque()
        self._ready = anyio.Event()
        self._closed = False

    def put(self, slot: _Slot, *, first: bool = False) -> None:
        """Queue ``slot`` (at the front with ``first``)."""
        if first:
            self._slots.appendleft(slot)
        else:
            self._slots.append(slot)
        self._ready.set()

    def close(self) -> None:
        """No slice will come: lanes waiting for one return."""
        self._closed = True
        self._ready.set()

    async def take(self) -> _Slot | None:
        """The next slice to build; ``None`` once closed and empty."""
        while not self._slots:
            if self._closed:
                return None
            if self._ready.is_set():
                self._ready = anyio.Event()
            await self._ready.wait()
        return self._slots.popleft()


class RedisEncoder:
    """Sends the store records of ``redis/db_0/`` in lists (a ``BatchEncodeAdapter``)."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._tree = ctx.tree
        self._root = str(ctx.input_root)
        self._shift_ms = ctx.time_shift_ms
        self._log = ctx.log
        self._workers = ctx.workers
        self._scratch = ctx.scratch
        sixteenth = max(1, ctx.memory // 16)
        self._names_memory = 14 * sixteenth
        self._keymap_memory = sixteenth
        self._slice_bytes = max(1, min(SLICE_BYTES, sixteenth // self._parallel))

    async def produce(self, send: SendBatch) -> None:
        """Send every record of the Redis subtree, type by type in the reference's order, a
        built slice at a time."""
        found = await self._tree.run(_scan, self._tree, self._keymap_memory)
        if found is None:
            return
        try:
            async with task_group() as tg:
                # The worker processes start while the first directory is listed and planned.
                warm = anyio.Event()
                tg.start_soon(self._workers.start_all, started, warm)
                for directory, ext in TYPE_DIRS:
                    await self._directory(found, directory, ext, send, warm)
        finally:
            found.db.close()

    async def _directory(
        self, found: _Tree, directory: str, ext: str, send: SendBatch, warm: anyio.Event
    ) -> None:
        sidecar = _SIDECARS.get(directory)
        ttls = None
        if sidecar is not None:
            ttls = await self._tree.run(
                sorted_ttls,
                found.db,
                sidecar,
                ext,
                self._shift_ms,
                self._scratch / f"ttl-{directory}",
                self._names_memory // 2,
            )
        names: Generator[Listed, None, None] | None = None
        listing: Iterator[Listed] = iter(())
        originals: ExternalSorter | None = None
        try:
            sub = await self._tree.run(found.db.subdir, directory)
            if sub is not None:
                # The names have what the TTLs, held meanwhile, left of their part.
                held = 0 if ttls is None else ttls.buffered
                scratch = self._scratch / f"names-{directory}"
                with sub:
                    names = sorted_listing(
                        sub, scratch, SLICE_FILES, max(1, self._names_memory - held)
                    )
                    # The first step lists the whole directory, while it is open.
                    head = await self._tree.run(_first, names)
                if head is not None:
                    listing = itertools.chain([head], names)
            # Their first records may come from spilled runs: made in a thread too.
            lookup = None if ttls is None else await self._tree.run(SortedLookup, ttls.merged())
            keymap: dict[str, bytes] | SortedLookup = found.keymap or {}
            if found.keymap is None and sub is not None:
                originals = await self._tree.run(
                    sorted_keymap,
                    found.db,
                    ext,
                    self._scratch / f"keymap-{directory}",
                    self._keymap_memory,
                )
                keymap = await self._tree.run(SortedLookup, originals.merged())
            planner = _Planner(
                self._root,
                directory,
                ext,
                self._shift_ms,
                keymap,
                listing,
                lookup,
                self._slice_bytes,
            )
            await self._slices(planner, send, warm)
        finally:
            # The spilled runs are removed even when the run is cancelled.
            with anyio.CancelScope(shield=True):
                await self._tree.run(_discard, names, ttls, originals)

    async def _slices(self, planner: _Planner, send: SendBatch, warm: anyio.Event) -> None:
        """Build ``planner``'s slices in lanes, in worker processes and in a worker thread,
        and send their records in slice order while the lanes build the next ones.

        At most :attr:`_parallel` slices are out at once (taken from the planner and not yet
        sent), so their value bytes stay within a sixteenth of the share. A slice stopped
        early is sent as far as it got; the names it left are the next slice to build.

        The process lanes start once their processes have (``warm``), :data:`PROCESS_LANES`
        per process, so that a process may hold its next call while it runs one. Beside
        worker processes, the thread lane builds only until then: building in this process
        while the core sorts what was sent holds the GIL that the sort, and the replies of the
        worker processes, wait for (measured against a thread lane that builds whenever the
        sender waits for a worker: slower in most runs).
        """
        permits = anyio.Semaphore(self._parallel)
        waiting = _Waiting()
        to_sender, for_sender = anyio.create_memory_object_stream[_Slot](self._parallel)

        async def feed() -> None:
            async with to_sender:
                while True:
                    await permits.acquire()
                    jobs = await self._tree.run(planner.take, 1)
                    if not jobs:
                        return
                    slot = _Slot(jobs[0])
                    await to_sender.send(slot)
                    waiting.put(slot)

        async def process_lane() -> None:
            await warm.wait()
            while (slot := await waiting.take()) is not None:
                slot.built = await self._workers.run(encode_slice, slot.job)
                slot.done.set()

        async def thread_lane() -> None:
            beside = self._workers.processes > 0
            while not (beside and warm.is_set()) and (slot := await waiting.take()) is not None:
                slot.built = await anyio.to_thread.run_sync(encode_slice, slot.job)
                slot.done.set()

        async def sender() -> None:
            async with for_sender:
                async for first in for_sender:
                    slot: _Slot | None = first
                    while slot is not None:
                        await slot.done.wait()
                        built, job = slot.built, slot.job
                        assert built is not None
                        for event, fields in built.notes:
                            self._log.warning(event, **fields)
                        await send(built.records)
                        slot = None
                        if built.done < len(job.names):
                            # Its permit passes to the rest of its names.
                            slot = _Slot(dataclasses.replace(job, names=job.names[built.done :]))
                            waiting.put(slot, first=True)
                    permits.release()
            waiting.close()

        async with task_group() as tg:
            for _ in range(PROCESS_LANES * self._workers.processes):
                tg.start_soon(process_lane)
            tg.start_soon(thread_lane)
            tg.start_soon(sender)
            tg.start_soon(feed)

    @property
    def _parallel(self) -> int:
        # Slices out at once: a few per lane, so that a free lane finds one to take while
        # the sender waits for an earlier one.
        return SLICES_PER_LANE * (self._workers.processes + 1)
