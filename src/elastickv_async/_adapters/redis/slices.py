"""Encoding a slice of a Redis type directory: value files -> store records.

Pure computation and file reads, run in worker processes (and a worker thread) by
:class:`~.encode.RedisEncoder`: this module imports only what that needs, so that a worker
process starts quickly.
"""

from __future__ import annotations

import contextlib
import re
import struct
from codecs import escape_decode
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..._core.dump.names import BINARY_PREFIX, SEGMENT_MAX_BYTES, decode_segment
from ..._core.dump.tree import MAX_BODY_FILE, MAX_RECORD_FILE, DumpTree, TreeDir
from ..._core.errors import DumpTreeError
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

__all__ = ["TYPE_DIRS", "Built", "Note", "Record", "Slice", "encode_slice", "started"]

Record = tuple[bytes, bytes]

#: In names joined by "/": a character that is neither unreserved nor part of an escape,
#: and a "%" that does not start a %HH escape.
_NOT_PLAIN: Final = re.compile(r"[^A-Za-z0-9._%/-]")
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: Where a SHA-fallback name has its "__".
_SHA_SEPARATOR: Final = slice(32, 34)

_F64_BITS: Final = struct.Struct(">d")
_U64: Final = struct.Struct(">Q")

#: The type directories in the reference's encode order, with their value files' suffix.
TYPE_DIRS: Final = (
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


Note = tuple[str, dict[str, object]]


@dataclass(frozen=True, slots=True)
class Slice:
    """One worker call's share of a type directory: consecutive entry names, with the KEYMAP
    records and TTLs of just those names."""

    root: str
    directory: str
    names: list[str]
    #: Those of ``names`` the listing did not show as regular files (checked before a read).
    irregular: frozenset[str]
    keymap: dict[str, bytes]
    ttls: dict[str, int]
    shift_ms: int
    #: Bytes read after which the call returns early (the rest goes to the next call).
    budget: int


@dataclass(frozen=True, slots=True)
class Built:
    """What a worker call returns: the records, how many names it got through (it stops
    early after its ``budget``) and the warnings to log."""

    records: list[Record]
    done: int
    notes: list[Note]


def started() -> None:
    """Nothing: a lane's first call, which starts its worker process (and imports this
    module there) before the lane takes a slice."""


def encode_slice(job: Slice) -> Built:
    """Read and encode the value files of ``job`` (runs in a worker process or thread).

    A name the listing showed as a regular file is opened and checked then (see
    :meth:`TreeDir.read_listed`); any other name is checked as :meth:`TreeDir.entries` would
    (a symlink, special file or hard link is refused even when its name is not a value
    file's) and opened only if it is still the file that check saw.
    """
    directory = job.directory
    ext = dict(TYPE_DIRS)[directory]
    cut = -len(ext)
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
    keymap, irregular = job.keymap, job.irregular
    segments = [name[:cut] for name in job.names if name.endswith(ext)]
    plain = _plain_keys(segments)
    keys = dict(zip(segments, plain, strict=True)) if plain is not None else {}
    with sub:
        if plain is not None and not irregular and len(segments) == len(job.names):
            simple = _SIMPLE.get(directory)
            if simple is not None:
                return _simple_slice(job, sub, segments, plain, limit, simple)
        for name in job.names:
            done += 1
            valued = name.endswith(ext)
            try:
                if valued and name not in irregular:
                    user_key = keys.get(name[:cut])
                    if user_key is None:
                        user_key = _resolve(keymap, name[:cut])
                    data = sub.read_listed(name, limit)
                    if data is None:
                        continue  # removed since the listing
                else:
                    entry = sub.lookup(name)
                    if entry is None or not valued:
                        continue  # removed since the listing, or not a value file
                    user_key = _resolve(keymap, name[:cut])
                    with sub.open_file(entry) as file:
                        data = file.read_all(limit)
                out += _build(job, user_key, data, name[:cut], notes)
            except DumpTreeError as exc:
                # Name the file: the error may surface far from this call.
                if exc.path is None:
                    exc.path = sub.path(name)
                raise
            size += len(data)
            if size >= job.budget:
                break
    return Built(out, done, notes)


def _simple_slice(
    job: Slice,
    sub: TreeDir,
    segments: list[str],
    user_keys: list[bytes],
    limit: int,
    build: Callable[[bytes, bytes, int], list[Record]],
) -> Built:
    """:func:`encode_slice` of a strings or HLL slice whose names are all plain value files
    the listing saw as regular files: one loop, the reads' digests recorded together."""
    out: list[Record] = []
    size = 0
    done = 0
    ttls = job.ttls
    reads = sub.read_listed_many(job.names, limit)
    with contextlib.closing(reads):
        for (_name, data), user_key, segment in zip(reads, user_keys, segments, strict=True):
            done += 1
            if data is None:
                continue  # removed since the listing
            out += build(user_key, data, ttls.get(segment, 0) if ttls else 0)
            size += len(data)
            if size >= job.budget:
                break
    return Built(out, done, [])


def _plain_keys(segments: list[str]) -> list[bytes] | None:
    """The keys of ``segments`` when each is a plain percent-encoded name (within the
    length limit, neither the SHA-fallback nor the ``b64.`` form), validated at once and
    decoded in C; ``None`` otherwise, and :func:`decode_segment` then takes each in turn and
    names any problem."""
    if not segments or max(map(len, segments)) > SEGMENT_MAX_BYTES:
        return None
    # Checked on the slice's names joined (no name holds a "/"): each check is one C scan.
    joined = "/".join(segments)
    if _NOT_PLAIN.search(joined) is not None or _BAD_ESCAPE.search(joined) is not None:
        return None
    if ("__" in joined and any(s[_SHA_SEPARATOR] == "__" for s in segments)) or (
        BINARY_PREFIX in joined and any(s.startswith(BINARY_PREFIX) for s in segments)
    ):
        return None
    # Only unreserved ASCII and %HH escapes are left: as \xHH escapes, C decodes them, the
    # whole slice at once unless a key holds a "/" of its own.
    if "%2F" in joined or "%2f" in joined:
        return [escape_decode(s.replace("%", "\\x").encode("ascii"))[0] for s in segments]
    return escape_decode(joined.replace("%", "\\x").encode("ascii"))[0].split(b"/")


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
    job: Slice, user_key: bytes, data: bytes, segment: str, notes: list[Note]
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


#: The one-file-one-key types, and how a file becomes records.
_SIMPLE: Final[dict[str, Callable[[bytes, bytes, int], list[Record]]]] = {
    layout.STRINGS: _string,
    layout.HLL: _hll,
}


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
        # A wide key is its prefix, length and user key, then the suffix: built once.
        head = keys.wide_key(keys.HASH_FIELD, user_key)
        out += [(head + n, v) for n, v in doc.elements]
    elif directory == layout.SETS:
        out = [(keys.wide_key(keys.SET_META, user_key), encode_count_meta(count, expire))]
        head = keys.wide_key(keys.SET_MEMBER, user_key)
        out += [(head + m, b"") for m in doc.elements]
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
