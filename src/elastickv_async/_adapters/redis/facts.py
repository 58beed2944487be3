"""What the decoder remembers about a user key until every row of it has been seen.

The rows of one Redis key are spread over many prefix ranges (``!hs|`` fields sort before their
meta, ``!redis|ttl|`` sorts after hashes and lists but before sets, zsets and streams), and the
length-prefixed ranges are ordered by ``(len, key)`` rather than by key. So each row class is
reduced to a compact *fact* and spilled to an external sort keyed by
``<ordered user key><row class><arrival number>``; the merged stream then yields every fact of
one key together, in key order, and the key is assembled once (see :mod:`.assemble`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import msgspec
import msgspec.msgpack

from .values import CountMeta, ListMeta, StreamEntry, StreamMeta

__all__ = [
    "CREATING_ROWS",
    "ROW_KIND",
    "Kind",
    "Row",
    "SimpleFact",
    "fact_key",
    "ordered_key",
    "pack",
    "pack_count_meta",
    "pack_delta",
    "pack_entries",
    "pack_list_meta",
    "pack_simple",
    "pack_stream_meta",
    "pack_ttl",
    "split_fact_key",
    "unpack",
    "unpack_count_meta",
    "unpack_delta",
    "unpack_entries",
    "unpack_list_meta",
    "unpack_simple",
    "unpack_stream_meta",
    "unpack_ttl",
    "user_key_of",
]


class Row(IntEnum):
    """Row classes, numbered in snapshot key order of their prefixes (REFERENCE_NOTES §2.3)."""

    HASH_FIELD = 1  # !hs|fld|
    HASH_META = 2  # !hs|meta|
    HASH_DELTA = 3  # !hs|meta|d|
    LIST_ITEM = 4  # !lst|itm|
    LIST_META = 5  # !lst|meta|
    LIST_DELTA = 6  # !lst|meta|d|
    HASH_LEGACY = 7  # !redis|hash|
    HLL = 8  # !redis|hll|
    SET_LEGACY = 9  # !redis|set|
    STREAM_LEGACY = 10  # !redis|stream|
    STRING = 11  # !redis|str|
    TTL = 12  # !redis|ttl|
    ZSET_LEGACY = 13  # !redis|zset|
    STREAM_ENTRY = 14  # !stream|entry|
    STREAM_META = 15  # !stream|meta|
    SET_MEMBER = 16  # !st|mem|
    SET_META = 17  # !st|meta|
    SET_DELTA = 18  # !st|meta|d|
    ZSET_MEMBER = 19  # !zs|mem|
    ZSET_META = 20  # !zs|meta|
    ZSET_DELTA = 21  # !zs|meta|d|


class Kind(IntEnum):
    """Redis types; collections in the reference's flush order (hashes … streams)."""

    HASH = 0
    LIST = 1
    SET = 2
    ZSET = 3
    STREAM = 4
    STRING = 5
    HLL = 6


ROW_KIND: Final = {
    Row.HASH_FIELD: Kind.HASH,
    Row.HASH_META: Kind.HASH,
    Row.HASH_DELTA: Kind.HASH,
    Row.HASH_LEGACY: Kind.HASH,
    Row.LIST_ITEM: Kind.LIST,
    Row.LIST_META: Kind.LIST,
    Row.LIST_DELTA: Kind.LIST,
    Row.HLL: Kind.HLL,
    Row.SET_LEGACY: Kind.SET,
    Row.SET_MEMBER: Kind.SET,
    Row.SET_META: Kind.SET,
    Row.SET_DELTA: Kind.SET,
    Row.STREAM_LEGACY: Kind.STREAM,
    Row.STREAM_ENTRY: Kind.STREAM,
    Row.STREAM_META: Kind.STREAM,
    Row.STRING: Kind.STRING,
    Row.ZSET_LEGACY: Kind.ZSET,
    Row.ZSET_MEMBER: Kind.ZSET,
    Row.ZSET_META: Kind.ZSET,
    Row.ZSET_DELTA: Kind.ZSET,
}

#: Rows that bring a key of their type into existence (delta rows only adjust a length, and
#: the reference ignores them).
CREATING_ROWS: Final = frozenset(ROW_KIND) - {
    Row.HASH_DELTA,
    Row.LIST_DELTA,
    Row.SET_DELTA,
    Row.ZSET_DELTA,
}

_ENCODE_ITEMS: Final = msgspec.msgpack.Encoder().encode
_DECODE_ITEMS: Final = msgspec.msgpack.Decoder(list[bytes]).decode
_SEQ: Final = struct.Struct(">Q")
#: Row class byte plus 8-byte arrival number after the ordered user key.
_SUFFIX_LEN: Final = 1 + _SEQ.size
_ESCAPED_NUL: Final = b"\x00\xff"
_KEY_END: Final = b"\x00\x01"
#: The ordered key's terminator and each row class byte.
_ROW_AFTER_KEY: Final = {row: _KEY_END + bytes((row,)) for row in Row}


def ordered_key(user_key: bytes) -> bytes:
    """Order-preserving, self-delimiting form of a user key (00 -> 00 FF, then 00 01)."""
    return user_key.replace(b"\x00", _ESCAPED_NUL) + _KEY_END


def fact_key(user_key: bytes, row: Row, arrival: int) -> bytes:
    """Sort key of a fact: by user key bytes, then row class, then arrival order."""
    # ordered_key inlined, its terminator joined to the row class byte: called per row.
    return user_key.replace(b"\x00", _ESCAPED_NUL) + _ROW_AFTER_KEY[row] + _SEQ.pack(arrival)


def split_fact_key(key: bytes) -> tuple[bytes, Row, int]:
    """The ``(ordered user key, row class, arrival)`` of a fact's sort key."""
    return key[:-_SUFFIX_LEN], Row(key[-_SUFFIX_LEN]), int(_SEQ.unpack_from(key, len(key) - 8)[0])


def user_key_of(ordered: bytes) -> bytes:
    """Invert the ordered form returned by :func:`split_fact_key`."""
    return ordered[:-2].replace(b"\x00\xff", b"\x00")


def pack(items: Sequence[bytes]) -> bytes:
    """Byte strings as one value (a MessagePack array: framed and parsed in C, where a run
    of a collection's rows would otherwise cost a Python step per row both ways)."""
    return _ENCODE_ITEMS(items)


def unpack(data: bytes) -> list[bytes]:
    """Invert :func:`pack`."""
    return _DECODE_ITEMS(data)


# --- fact values ------------------------------------------------------------------------------

_META: Final = struct.Struct(">qBQ")
_STREAM_META: Final = struct.Struct(">QQQBQ")
_SIMPLE: Final = struct.Struct(">BQ")
_TTL: Final = struct.Struct(">Q")
_ID: Final = struct.Struct(">QQ")
_NEW_FORMAT: Final = 1
_TTL_FLAG: Final = 2
_DEFERRED: Final = 4
_OMITTED: Final = 8


def pack_count_meta(meta: CountMeta) -> bytes:
    """A hash/set/zset meta row as a fact."""
    return _META.pack(meta.declared_len, meta.inline, meta.ttl_ms)


def unpack_count_meta(data: bytes) -> CountMeta:
    """Invert :func:`pack_count_meta`."""
    declared, inline, ttl = _META.unpack(data)
    return CountMeta(declared, bool(inline), ttl)


def pack_list_meta(meta: ListMeta) -> bytes:
    """A list meta row as a fact."""
    return _META.pack(meta.declared_len, meta.inline, meta.ttl_ms)


def unpack_list_meta(data: bytes) -> ListMeta:
    """Invert :func:`pack_list_meta`."""
    declared, inline, ttl = _META.unpack(data)
    return ListMeta(declared, bool(inline), ttl)


def pack_stream_meta(meta: StreamMeta) -> bytes:
    """A stream meta row as a fact."""
    return _STREAM_META.pack(meta.length, meta.last_ms, meta.last_seq, meta.inline, meta.ttl_ms)


def unpack_stream_meta(data: bytes) -> StreamMeta:
    """Invert :func:`pack_stream_meta`."""
    length, last_ms, last_seq, inline, ttl = _STREAM_META.unpack(data)
    return StreamMeta(length, last_ms, last_seq, bool(inline), ttl)


def pack_delta(total: int) -> bytes:
    """The sum of a run of delta rows (decimal: a long run may leave the int64 range)."""
    return str(total).encode("ascii")


def unpack_delta(data: bytes) -> int:
    """Invert :func:`pack_delta`."""
    return int(data)


def pack_ttl(ttl_ms: int) -> bytes:
    """A ``!redis|ttl|`` row as a fact."""
    return _TTL.pack(ttl_ms)


def unpack_ttl(data: bytes) -> int:
    """Invert :func:`pack_ttl`."""
    return int(_TTL.unpack(data)[0])


@dataclass(frozen=True, slots=True)
class SimpleFact:
    """A string or HLL as the assembly needs it.

    ``body`` is set when the value could not be written on arrival (a legacy value whose TTL,
    still to come from ``!redis|ttl|``, decides whether it is expired); ``omitted`` marks a value
    already dropped as expired, which still owns the key's ``!redis|ttl|`` row.
    """

    new_format: bool
    ttl_flag: bool
    ttl_ms: int
    body: bytes | None = None
    omitted: bool = False


def pack_simple(fact: SimpleFact) -> bytes:
    """A string/HLL fact."""
    flags = (
        (_NEW_FORMAT if fact.new_format else 0)
        | (_TTL_FLAG if fact.ttl_flag else 0)
        | (_DEFERRED if fact.body is not None else 0)
        | (_OMITTED if fact.omitted else 0)
    )
    return _SIMPLE.pack(flags, fact.ttl_ms) + (fact.body or b"")


def unpack_simple(data: bytes) -> SimpleFact:
    """Invert :func:`pack_simple`."""
    flags, ttl = _SIMPLE.unpack_from(data)
    body = data[_SIMPLE.size :] if flags & _DEFERRED else None
    return SimpleFact(
        bool(flags & _NEW_FORMAT), bool(flags & _TTL_FLAG), ttl, body, bool(flags & _OMITTED)
    )


def pack_entries(entries: Sequence[StreamEntry]) -> bytes:
    """Stream entries (ID and UTF-8 fields) as one fact value."""
    return pack(
        [pack([_ID.pack(e.ms, e.seq), *(f.encode("utf-8") for f in e.fields)]) for e in entries]
    )


def unpack_entries(data: bytes) -> list[StreamEntry]:
    """Invert :func:`pack_entries`."""
    entries = []
    for blob in unpack(data):
        head, *fields = unpack(blob)
        ms, seq = _ID.unpack(head)
        entries.append(StreamEntry(ms, seq, tuple(f.decode("utf-8") for f in fields)))
    return entries
