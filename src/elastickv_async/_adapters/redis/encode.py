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
import os
import re
import struct
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio.to_thread

from ..._core.concurrency import task_group
from ..._core.dump.keymap import KEYMAP_FILE, load_keymap
from ..._core.dump.names import decode_segment
from ..._core.dump.tree import MAX_BODY_FILE, MAX_RECORD_FILE, DumpTree, TreeDir
from ..._core.errors import DumpTreeError
from ..base import EncodeContext
from . import keys, layout
from .errors import tree_error
from .values import (
    encode_count_meta,
    encode_hll_value,
    encode_list_meta,
    encode_score,
    encode_stream_entry,
    encode_stream_meta,
    encode_string_value,
    encode_ttl_value,
    shifted_ttl,
)

__all__ = ["RedisEncoder"]

Record = tuple[bytes, bytes]

_DB_NAME: Final = re.compile(r"db_(0|[1-9][0-9]*)")
#: Directory entries handed to one worker call; a call returns early once it has read
#: ``SLICE_BYTES`` (the rest goes to the next call).
SLICE_FILES: Final = 512
SLICE_BYTES: Final = 4 << 20
_F64_BITS: Final = struct.Struct(">d")
_U64: Final = struct.Struct(">Q")


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


_TYPE_DIRS: Final = (
    (layout.STRINGS, layout.BIN_EXT),
    (layout.HLL, layout.BIN_EXT),
    (layout.HASHES, layout.JSON_EXT),
    (layout.SETS, layout.JSON_EXT),
    (layout.LISTS, layout.JSON_EXT),
    (layout.ZSETS, layout.JSON_EXT),
    (layout.STREAMS, layout.JSONL_EXT),
)
#: Raw bodies may be as large as a snapshot value; parsed documents have the record cap.
_LIMITS: Final = {layout.STRINGS: MAX_BODY_FILE, layout.HLL: MAX_BODY_FILE}


def _scan(tree: DumpTree) -> _Tree | None:
    db = _db_dir(tree)
    if db is None:
        return None
    try:
        # KEYMAP is an index of every key, not one key's records: read without the cap.
        raw = db.read(KEYMAP_FILE, limit=None)
        keymap = {} if raw is None else load_keymap(raw, db.path(KEYMAP_FILE))
        found = _Tree(db, keymap)
        for directory, _ext in _TYPE_DIRS:
            sub = db.subdir(directory)
            if sub is not None:
                with sub:
                    # Names only: each entry is checked where it is read (_encode_slice), so
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


Note = tuple[str, dict[str, object]]


@dataclass(frozen=True, slots=True)
class _Slice:
    """One worker call's share of a type directory: consecutive entry names, with the KEYMAP
    records and TTLs of just those names."""

    root: str
    directory: str
    names: list[str]
    keymap: dict[str, bytes]
    ttls: dict[str, int]
    shift_ms: int


@dataclass(frozen=True, slots=True)
class _Built:
    """What a worker call returns: the records, how many names it got through (it stops
    early after ``SLICE_BYTES``) and the warnings to log."""

    records: list[Record]
    done: int
    notes: list[Note]


def _encode_slice(job: _Slice) -> _Built:
    """Read and encode the value files of ``job`` (runs in a worker process or thread).

    Each name is checked as :meth:`TreeDir.entries` would (a symlink, special file or hard
    link is refused even when its name is not a value file's) and opened only if it is still
    the file that check saw.
    """
    directory = job.directory
    ext = dict(_TYPE_DIRS)[directory]
    limit = _LIMITS.get(directory, MAX_RECORD_FILE)
    sub = DumpTree(Path(job.root)).open_dir((layout.ROOT, layout.DB_NAME, directory))
    if sub is None:
        raise DumpTreeError(
            f"{layout.ROOT}/{layout.DB_NAME}/{directory} was removed while the tree was read",
            code="ErrDumpTreeChanged",
            path=f"{layout.ROOT}/{layout.DB_NAME}/{directory}",
        )
    out: list[Record] = []
    notes: list[Note] = []
    size = 0
    done = 0
    with sub:
        for name in job.names:
            done += 1
            entry = sub.lookup(name)
            if entry is None or not name.endswith(ext):
                continue  # removed since the listing, or not a value file
            segment = name[: -len(ext)]
            try:
                user_key = _resolve(job.keymap, segment)
                with sub.open_file(entry) as file:
                    data = file.read_all(limit)
                out += _build(job, user_key, data, segment, notes)
            except DumpTreeError as exc:
                # Name the file: the error may surface far from this call.
                if exc.path is None:
                    exc.path = sub.path(name)
                raise
            size += len(data)
            if size >= SLICE_BYTES:
                break
    return _Built(out, done, notes)


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
            for directory, ext in _TYPE_DIRS:
                ttls = await self._tree.run(_sidecar_of, found.db, directory, self._shift_ms)
                names = found.listings.get(directory, [])
                pending = deque(
                    self._slice(found, directory, ext, names[start : start + SLICE_FILES], ttls)
                    for start in range(0, len(names), SLICE_FILES)
                )
                while pending:
                    jobs = [pending.popleft() for _ in range(min(self._parallel, len(pending)))]
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
    ) -> _Slice:
        segments = [name[: -len(ext)] for name in names if name.endswith(ext)]
        keymap = found.keymap
        return _Slice(
            self._root,
            directory,
            names,
            {s: keymap[s] for s in segments if s in keymap} if keymap else {},
            {s: ttls[s] for s in segments if s in ttls} if ttls else {},
            self._shift_ms,
        )

    async def _build(self, jobs: list[_Slice]) -> list[_Built]:
        """Run ``jobs`` side by side, one in each worker process and one in a worker thread;
        the results in job order."""
        results: list[_Built | None] = [None] * len(jobs)

        async def one(index: int) -> None:
            if index < self._workers.processes:
                results[index] = await self._workers.run(_encode_slice, jobs[index])
            else:
                results[index] = await anyio.to_thread.run_sync(_encode_slice, jobs[index])

        # The group is entered and left within this call, never across a yield.
        async with task_group() as tg:
            for index in range(len(jobs)):
                tg.start_soon(one, index)
        return [result for result in results if result is not None]


def _resolve(keymap: dict[str, bytes], segment: str) -> bytes:
    try:
        return decode_segment(segment)
    except DumpTreeError as exc:
        if exc.code != "ErrShaFallbackNeedsKeymap":
            raise
        original = keymap.get(segment)
        if original is None:
            raise tree_error(
                "ErrRedisEncodeMissingKeymap", f"no KEYMAP record for {segment!r}"
            ) from None
        return original


def _build(
    job: _Slice, user_key: bytes, data: bytes, segment: str, notes: list[Note]
) -> list[Record]:
    directory = job.directory
    if directory == layout.STRINGS:
        return _string(user_key, data, job.ttls.get(segment, 0))
    if directory == layout.HLL:
        return _hll(user_key, data, job.ttls.get(segment, 0))
    if directory == layout.STREAMS:
        return _stream(user_key, data, f"stream {segment}", job.shift_ms, notes)
    return _collection(directory, user_key, data, segment, job.shift_ms)


def _ttl_row(user_key: bytes, expire_at_ms: int | None) -> list[Record]:
    if not expire_at_ms:
        return []
    return [(keys.TTL + user_key, encode_ttl_value(expire_at_ms))]


def _string(user_key: bytes, body: bytes, ttl_ms: int) -> list[Record]:
    return [(keys.STRING + user_key, encode_string_value(body, ttl_ms))]


def _hll(user_key: bytes, sketch: bytes, ttl_ms: int) -> list[Record]:
    return [(keys.HLL + user_key, encode_hll_value(sketch, ttl_ms)), *_ttl_row(user_key, ttl_ms)]


def _collection(
    directory: str, user_key: bytes, data: bytes, segment: str, shift_ms: int
) -> list[Record]:
    where = f"{directory} {segment}"
    doc = layout.parse_collection(data, directory, where)
    expire = shifted_ttl(doc.expire_at_ms, shift_ms)
    count = len(doc.elements)
    out: list[Record]
    if directory == layout.HASHES:
        out = [(keys.wide_key(keys.HASH_META, user_key), encode_count_meta(count, expire))]
        out += [(keys.wide_key(keys.HASH_FIELD, user_key, n), v) for n, v in doc.elements]
    elif directory == layout.SETS:
        out = [(keys.wide_key(keys.SET_META, user_key), encode_count_meta(count, expire))]
        out += [(keys.wide_key(keys.SET_MEMBER, user_key, m), b"") for m in doc.elements]
    elif directory == layout.LISTS:
        out = [(keys.LIST_META + user_key, encode_list_meta(count, expire))]
        out += [(keys.list_item_key(user_key, i), v) for i, v in enumerate(doc.elements)]
    else:
        out = [(keys.wide_key(keys.ZSET_META, user_key), encode_count_meta(count, expire))]
        for member, score in doc.elements:
            bits = _U64.unpack(_F64_BITS.pack(score))[0]
            out.append((keys.wide_key(keys.ZSET_MEMBER, user_key, member), encode_score(score)))
            index_suffix = keys.sortable_score(bits) + member
            out.append((keys.wide_key(keys.ZSET_SCORE, user_key, index_suffix), b""))
    return out + _ttl_row(user_key, expire)


def _stream(
    user_key: bytes, data: bytes, where: str, shift_ms: int, notes: list[Note]
) -> list[Record]:
    doc = layout.parse_stream(data, where)
    # Meta that disagrees with the entries is restored as it is: the decoder wrote it from the
    # snapshot, and every tree the decoder writes must encode (the reference refuses it).
    notes.extend((event, {"stream": where, **fields}) for event, fields in doc.inconsistencies())
    expire = shifted_ttl(doc.expire_at_ms, shift_ms)
    out = [
        (keys.stream_entry_key(user_key, e.ms, e.seq), encode_stream_entry(e.entry_id, e.fields))
        for e in doc.entries
    ]
    meta = encode_stream_meta(doc.length, doc.last_ms, doc.last_seq, expire)
    out.append((keys.wide_key(keys.STREAM_META, user_key), meta))
    return out + _ttl_row(user_key, expire)
