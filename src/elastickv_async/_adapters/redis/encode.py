"""The Redis encoder: ``redis/db_0/`` -> store records (REFERENCE_NOTES §6.2, §6.3).

Records are the reference encoder's, byte for byte: strings in the new inline-TTL format (no
``!redis|ttl|`` row), HLLs as the raw sketch or a TTL envelope plus a ``!redis|ttl|`` row,
collections as wide-column rows with a count/list/stream meta that carries a non-zero TTL
inline, plus a ``!redis|ttl|`` row. Legacy blob layouts are never written.

Every file is opened through directory descriptors with ``O_NOFOLLOW`` and checked after the
open: a symlink, a special file or a file with more than one hard link is refused with a typed
error (the reference silently skips symlinked and special value files; refusing them keeps a
planted link from pulling outside data into the snapshot). All file I/O runs in worker threads,
a bounded slice at a time.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

import anyio.to_thread

from ..._core.dump.keymap import KEYMAP_FILE, load_keymap
from ..._core.dump.names import decode_segment
from ..._core.errors import ShaFallbackNeedsKeymap
from ..base import EncodeContext
from . import keys, layout
from .errors import (
    RedisEncodeHardLink,
    RedisEncodeMissingKeymap,
    RedisEncodeMultiDBUnsupported,
    RedisEncodeNotDir,
    RedisEncodeNotRegular,
)
from .values import (
    encode_count_meta,
    encode_hll_value,
    encode_list_meta,
    encode_score,
    encode_stream_entry,
    encode_stream_meta,
    encode_string_value,
    encode_ttl_value,
)

__all__ = ["RedisEncoder"]

Record = tuple[bytes, bytes]

_DB_NAME: Final = re.compile(r"db_(0|[1-9][0-9]*)")
_REDIS_DIR: Final = "redis"
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
#: Value files read per worker-thread hop, and bytes read per hop.
SLICE_FILES: Final = 256
SLICE_BYTES: Final = 8 << 20
_F64_BITS: Final = struct.Struct(">d")
_U64: Final = struct.Struct(">Q")


def _open_dir(parent: int | None, name: str, where: str) -> int | None:
    """Open a directory without following a symlink; ``None`` when it does not exist."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RedisEncodeNotDir(f"{where} is a symlink or not a directory") from None
        raise


def _read_file(dir_fd: int, name: str, where: str) -> bytes | None:
    """Read a regular, singly linked file; ``None`` when it does not exist.

    The entry is checked before the open (so a device or FIFO is never opened) and the open
    file again after it (so a swap in between is caught too).
    """
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(before.st_mode):
        raise RedisEncodeNotRegular(f"{where} is a symlink or not a regular file")
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise RedisEncodeNotRegular(f"{where} is a symlink or not a regular file") from None
        raise
    with open(fd, "rb", closefd=True) as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise RedisEncodeNotRegular(f"{where} changed into a non-regular file while opened")
        if st.st_nlink > 1:
            raise RedisEncodeHardLink(f"{where} has {st.st_nlink} hard links")
        return fh.read()


@dataclass(slots=True)
class _Tree:
    """What the scan of ``redis/db_0`` found: its directory fd, KEYMAP and per-type listings."""

    db_fd: int
    keymap: dict[str, bytes]
    listings: dict[str, tuple[int, list[str]]] = field(default_factory=dict)

    def close(self) -> None:
        for fd, _names in self.listings.values():
            os.close(fd)
        os.close(self.db_fd)


def _db_fd(root: str) -> int | None:
    """Open ``redis/db_0`` after the reference's DB enumeration (``enumerateRedisDBs``)."""
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        redis_fd = _open_dir(root_fd, _REDIS_DIR, "redis/")
    finally:
        os.close(root_fd)
    if redis_fd is None:
        return None
    try:
        dbs: list[tuple[int, str]] = []
        for name in os.listdir(redis_fd):
            match = _DB_NAME.fullmatch(name)
            if match is None:
                continue
            st = os.stat(name, dir_fd=redis_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise RedisEncodeNotDir(f"redis/{name} exists but is not a directory")
            dbs.append((int(match.group(1)), name))
        if not dbs:
            return None
        if len(dbs) > 1 or dbs[0][0] != 0:
            indices = sorted(i for i, _ in dbs)
            raise RedisEncodeMultiDBUnsupported(f"redis encoder enumerated db indices {indices}")
        return _open_dir(redis_fd, dbs[0][1], f"redis/{dbs[0][1]}")
    finally:
        os.close(redis_fd)


_TYPE_DIRS: Final = (
    (layout.STRINGS, layout.BIN_EXT),
    (layout.HLL, layout.BIN_EXT),
    (layout.HASHES, layout.JSON_EXT),
    (layout.SETS, layout.JSON_EXT),
    (layout.LISTS, layout.JSON_EXT),
    (layout.ZSETS, layout.JSON_EXT),
    (layout.STREAMS, layout.JSONL_EXT),
)


def _scan(root: str) -> _Tree | None:
    db_fd = _db_fd(root)
    if db_fd is None:
        return None
    try:
        where = f"{layout.DB_DIR}/{KEYMAP_FILE}"
        raw = _read_file(db_fd, KEYMAP_FILE, where)
        keymap = {} if raw is None else load_keymap(raw, where)
        tree = _Tree(db_fd, keymap)
    except BaseException:
        os.close(db_fd)
        raise
    try:
        for directory, ext in _TYPE_DIRS:
            fd = _open_dir(db_fd, directory, f"{layout.DB_DIR}/{directory}")
            if fd is not None:
                names = sorted(n for n in os.listdir(fd) if n.endswith(ext))
                tree.listings[directory] = (fd, names)
    except BaseException:
        tree.close()
        raise
    return tree


def _sidecar(tree: _Tree, name: str) -> dict[str, int]:
    raw = _read_file(tree.db_fd, name, f"{layout.DB_DIR}/{name}")
    return {} if raw is None else layout.parse_ttl_sidecar(raw, name)


class RedisEncoder:
    """Yields the store records of ``redis/db_0/`` (an :class:`EncodeAdapter`)."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._root = str(ctx.input_root)

    async def records(self) -> AsyncIterator[Record]:
        """Every record of the Redis subtree, type by type in the reference's order."""
        tree = await anyio.to_thread.run_sync(_scan, self._root)
        if tree is None:
            return
        try:
            for directory, ext in _TYPE_DIRS:
                builder = await anyio.to_thread.run_sync(self._builder, tree, directory)
                if directory not in tree.listings:
                    continue
                fd, names = tree.listings[directory]
                pending = iter(names)
                while batch := await anyio.to_thread.run_sync(
                    self._slice, tree, directory, ext, fd, pending, builder
                ):
                    for record in batch:
                        yield record
        finally:
            # Closing directory descriptors never blocks; doing it inline keeps the generator's
            # cleanup free of awaits when it is closed early.
            tree.close()

    # --- worker-thread side ------------------------------------------------------------------

    def _builder(self, tree: _Tree, directory: str) -> Callable[[bytes, bytes, str], list[Record]]:
        # The reference reads a TTL sidecar even when its value directory is absent.
        if directory == layout.STRINGS:
            ttls = _sidecar(tree, layout.STRINGS_TTL)
            return lambda user_key, data, segment: _string(user_key, data, ttls.get(segment, 0))
        if directory == layout.HLL:
            hll_ttls = _sidecar(tree, layout.HLL_TTL)
            return lambda user_key, data, segment: _hll(user_key, data, hll_ttls.get(segment, 0))
        if directory == layout.STREAMS:
            return lambda user_key, data, segment: _stream(user_key, data, f"stream {segment}")
        return lambda user_key, data, segment: _collection(directory, user_key, data, segment)

    def _slice(
        self,
        tree: _Tree,
        directory: str,
        ext: str,
        fd: int,
        names: Iterator[str],
        build: Callable[[bytes, bytes, str], list[Record]],
    ) -> list[Record]:
        out: list[Record] = []
        size = files = 0
        for name in names:
            segment = name[: -len(ext)]
            user_key = _resolve(tree.keymap, segment)
            data = _read_file(fd, name, f"{layout.DB_DIR}/{directory}/{name}")
            if data is None:
                continue  # removed since the listing
            out.extend(build(user_key, data, segment))
            size += len(data)
            files += 1
            if files >= SLICE_FILES or size >= SLICE_BYTES:
                break
        return out


def _resolve(keymap: dict[str, bytes], segment: str) -> bytes:
    try:
        return decode_segment(segment)
    except ShaFallbackNeedsKeymap:
        original = keymap.get(segment)
        if original is None:
            raise RedisEncodeMissingKeymap(f"no KEYMAP record for {segment!r}") from None
        return original


def _ttl_row(user_key: bytes, expire_at_ms: int | None) -> list[Record]:
    if not expire_at_ms:
        return []
    return [(keys.TTL + user_key, encode_ttl_value(expire_at_ms))]


def _string(user_key: bytes, body: bytes, ttl_ms: int) -> list[Record]:
    return [(keys.STRING + user_key, encode_string_value(body, ttl_ms))]


def _hll(user_key: bytes, sketch: bytes, ttl_ms: int) -> list[Record]:
    return [(keys.HLL + user_key, encode_hll_value(sketch, ttl_ms)), *_ttl_row(user_key, ttl_ms)]


def _collection(directory: str, user_key: bytes, data: bytes, segment: str) -> list[Record]:
    where = f"{directory} {segment}"
    doc = layout.parse_collection(data, directory, where)
    expire = doc.expire_at_ms
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


def _stream(user_key: bytes, data: bytes, where: str) -> list[Record]:
    doc = layout.parse_stream(data, where)
    out = [
        (keys.stream_entry_key(user_key, e.ms, e.seq), encode_stream_entry(e.entry_id, e.fields))
        for e in doc.entries
    ]
    meta = encode_stream_meta(doc.length, doc.last_ms, doc.last_seq, doc.expire_at_ms)
    out.append((keys.wide_key(keys.STREAM_META, user_key), meta))
    return out + _ttl_row(user_key, doc.expire_at_ms)
