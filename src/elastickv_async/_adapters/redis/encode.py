"""The Redis encoder: ``redis/db_0/`` -> store records (REFERENCE_NOTES §6.2, §6.3).

Records are the reference encoder's, byte for byte: strings in the new inline-TTL format (no
``!redis|ttl|`` row), HLLs as the raw sketch or a TTL envelope plus a ``!redis|ttl|`` row,
collections as wide-column rows with a count/list/stream meta that carries a non-zero TTL
inline, plus a ``!redis|ttl|`` row. Legacy blob layouts are never written.

The tree is read through the context's :class:`~elastickv_async._core.dump.tree.DumpTree`: a
symlink, a special file or a hard-linked file is refused (the reference silently skips
symlinked and special value files; refusing them keeps a planted link from pulling outside
data into the snapshot). All file I/O runs in worker threads, a bounded slice at a time.
"""

from __future__ import annotations

import re
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from ..._core.dump.keymap import KEYMAP_FILE, load_keymap
from ..._core.dump.names import decode_segment
from ..._core.dump.tree import MAX_BODY_FILE, MAX_RECORD_FILE, DumpTree, TreeDir, TreeEntry
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
#: Value files read per worker-thread hop, and bytes read per hop.
SLICE_FILES: Final = 256
SLICE_BYTES: Final = 8 << 20
_F64_BITS: Final = struct.Struct(">d")
_U64: Final = struct.Struct(">Q")


@dataclass(slots=True)
class _Tree:
    """What the scan of ``redis/db_0`` found: the open directory, KEYMAP and type listings."""

    db: TreeDir
    keymap: dict[str, bytes]
    listings: dict[str, tuple[TreeDir, list[TreeEntry]]] = field(default_factory=dict)

    def close(self) -> None:
        for directory, _entries in self.listings.values():
            directory.close()
        self.db.close()


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
    except BaseException:
        db.close()
        raise
    try:
        for directory, ext in _TYPE_DIRS:
            sub = db.subdir(directory)
            if sub is not None:
                found.listings[directory] = (sub, [])  # closed with the others from here on
                found.listings[directory] = (
                    sub,
                    [e for e in sub.entries() if e.name.endswith(ext)],
                )
    except BaseException:
        found.close()
        raise
    return found


def _sidecar(tree: _Tree, name: str, shift_ms: int) -> dict[str, int]:
    raw = tree.db.read(name, limit=None)
    ttls = {} if raw is None else layout.parse_ttl_sidecar(raw, name)
    return {segment: shifted_ttl(ttl, shift_ms) or 0 for segment, ttl in ttls.items()}


class RedisEncoder:
    """Yields the store records of ``redis/db_0/`` (an :class:`EncodeAdapter`)."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._tree = ctx.tree
        self._shift_ms = ctx.time_shift_ms
        self._log = ctx.log
        #: Warnings found by the worker threads, logged on the event loop after each slice.
        self._notes: list[tuple[str, dict[str, object]]] = []

    async def records(self) -> AsyncIterator[Record]:
        """Every record of the Redis subtree, type by type in the reference's order."""
        found = await self._tree.run(_scan, self._tree)
        if found is None:
            return
        try:
            for directory, ext in _TYPE_DIRS:
                builder = await self._tree.run(self._builder, found, directory)
                if directory not in found.listings:
                    continue
                sub, entries = found.listings[directory]
                pending = iter(entries)
                while batch := await self._tree.run(
                    self._slice, found, directory, ext, sub, pending, builder
                ):
                    for event, fields in self._notes:
                        self._log.warning(event, **fields)
                    self._notes.clear()
                    for record in batch:
                        yield record
        finally:
            # Closing directory descriptors never blocks; doing it inline keeps the generator's
            # cleanup free of awaits when it is closed early.
            found.close()

    # --- worker-thread side ------------------------------------------------------------------

    def _builder(self, tree: _Tree, directory: str) -> Callable[[bytes, bytes, str], list[Record]]:
        # The reference reads a TTL sidecar even when its value directory is absent.
        shift = self._shift_ms
        if directory == layout.STRINGS:
            ttls = _sidecar(tree, layout.STRINGS_TTL, shift)
            return lambda user_key, data, segment: _string(user_key, data, ttls.get(segment, 0))
        if directory == layout.HLL:
            hll_ttls = _sidecar(tree, layout.HLL_TTL, shift)
            return lambda user_key, data, segment: _hll(user_key, data, hll_ttls.get(segment, 0))
        if directory == layout.STREAMS:
            return lambda user_key, data, segment: _stream(
                user_key, data, f"stream {segment}", shift, self._notes
            )
        return lambda user_key, data, segment: _collection(
            directory, user_key, data, segment, shift
        )

    def _slice(
        self,
        tree: _Tree,
        directory: str,
        ext: str,
        sub: TreeDir,
        entries: Iterator[TreeEntry],
        build: Callable[[bytes, bytes, str], list[Record]],
    ) -> list[Record]:
        out: list[Record] = []
        size = 0
        limit = _LIMITS.get(directory, MAX_RECORD_FILE)
        for files, entry in enumerate(entries, 1):
            segment = entry.name[: -len(ext)]
            user_key = _resolve(tree.keymap, segment)
            with sub.open_file(entry) as file:
                data = file.read_all(limit)
            out.extend(build(user_key, data, segment))
            size += len(data)
            if files >= SLICE_FILES or size >= SLICE_BYTES:
                break
        return out


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
    user_key: bytes,
    data: bytes,
    where: str,
    shift_ms: int,
    notes: list[tuple[str, dict[str, object]]],
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
