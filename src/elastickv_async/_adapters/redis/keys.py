"""Redis key layouts in the elastickv store (REFERENCE_NOTES §3.3, live ``store/*_helpers.go``).

Simple types put the user key right after the prefix. Wide-column types (hash, set, zset,
stream) use ``<prefix><user key length u32 BE><user key>[<suffix>]``; lists have no length
prefix (``!lst|itm|<key><seq 8>``), while their delta and claim rows do. Every parser raises
the type's ``…Key`` error for a key that does not fit its layout.
"""

from __future__ import annotations

import struct
from typing import Final

from .errors import RecordCode, record_error

__all__ = [
    "DELTA_SUFFIX_LEN",
    "HASH_DELTA",
    "HASH_FIELD",
    "HASH_LEGACY",
    "HASH_META",
    "HLL",
    "INTERNAL_PREFIXES",
    "LIST_CLAIM",
    "LIST_DELTA",
    "LIST_ITEM",
    "LIST_META",
    "ROUTED_PREFIXES",
    "SET_DELTA",
    "SET_LEGACY",
    "SET_MEMBER",
    "SET_META",
    "STREAM_ENTRY",
    "STREAM_LEGACY",
    "STREAM_META",
    "STRING",
    "TTL",
    "ZSET_DELTA",
    "ZSET_LEGACY",
    "ZSET_MEMBER",
    "ZSET_META",
    "ZSET_SCORE",
    "decode_list_seq",
    "encode_list_seq",
    "list_item_key",
    "parse_delta_key",
    "parse_list_item_key",
    "parse_meta_key",
    "parse_stream_entry_key",
    "parse_wide_key",
    "route_key",
    "sortable_score",
    "stream_entry_key",
    "user_key",
    "wide_key",
]

# --- simple (one row per user key) ------------------------------------------------------------
STRING: Final = b"!redis|str|"
HLL: Final = b"!redis|hll|"
TTL: Final = b"!redis|ttl|"
# Legacy single-blob collections the live adapter still reads (the reference drops the first
# three as Unknown; it decodes only the zset one).
HASH_LEGACY: Final = b"!redis|hash|"
SET_LEGACY: Final = b"!redis|set|"
STREAM_LEGACY: Final = b"!redis|stream|"
ZSET_LEGACY: Final = b"!redis|zset|"

# --- wide-column ------------------------------------------------------------------------------
HASH_META: Final = b"!hs|meta|"
HASH_FIELD: Final = b"!hs|fld|"
HASH_DELTA: Final = b"!hs|meta|d|"
LIST_META: Final = b"!lst|meta|"
LIST_ITEM: Final = b"!lst|itm|"
LIST_DELTA: Final = b"!lst|meta|d|"
LIST_CLAIM: Final = b"!lst|claim|"
SET_META: Final = b"!st|meta|"
SET_MEMBER: Final = b"!st|mem|"
SET_DELTA: Final = b"!st|meta|d|"
ZSET_META: Final = b"!zs|meta|"
ZSET_MEMBER: Final = b"!zs|mem|"
ZSET_SCORE: Final = b"!zs|scr|"
ZSET_DELTA: Final = b"!zs|meta|d|"
STREAM_META: Final = b"!stream|meta|"
STREAM_ENTRY: Final = b"!stream|entry|"

#: Every prefix whose rows carry dump data (delta rows only correct the declared lengths).
ROUTED_PREFIXES: Final = (
    STRING,
    HLL,
    TTL,
    HASH_LEGACY,
    SET_LEGACY,
    STREAM_LEGACY,
    ZSET_LEGACY,
    HASH_META,
    HASH_FIELD,
    HASH_DELTA,
    LIST_META,
    LIST_ITEM,
    LIST_DELTA,
    SET_META,
    SET_MEMBER,
    SET_DELTA,
    ZSET_META,
    ZSET_MEMBER,
    ZSET_DELTA,
    STREAM_META,
    STREAM_ENTRY,
)

#: Live Redis-side rows with no client-visible data (adapter/redis_txn.go,
#: adapter/redis_compat_types.go): transaction fences, routing keys, the read-fence marker,
#: list pop claims and the zset score index (derived from ``!zs|mem|``).
INTERNAL_PREFIXES: Final = (
    b"!redis|txn-wide-hash|",
    b"!redis|txn-wide-set|",
    b"!redis|txn-wide-list|",
    b"!redis|txn-wide-zset|",
    b"!redis|read-fence-route-changed",
    b"!redis|route|",
    LIST_CLAIM,
    ZSET_SCORE,
)

_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_ID: Final = struct.Struct(">QQ")
_LEN_SIZE: Final = 4
_SEQ_SIZE: Final = 8
_SIGN_BIT: Final = 1 << 63
#: ``<commitTS u64><seqInTxn u32>`` after the user key of every delta row.
DELTA_SUFFIX_LEN: Final = 12


def _short(key: bytes) -> str:
    return repr(key[:80]) + ("…" if len(key) > 80 else "")


def parse_wide_key(key: bytes, prefix: bytes, code: RecordCode) -> tuple[bytes, bytes]:
    """Split ``<prefix><len u32><user key><tail>`` into ``(user key, tail)``."""
    rest = key[len(prefix) :]
    if len(rest) < _LEN_SIZE:
        raise record_error(code, f"key {_short(key)} has no user-key length", key=key)
    (length,) = _U32.unpack_from(rest)
    end = _LEN_SIZE + length
    if len(rest) < end:
        raise record_error(
            code, f"key {_short(key)} is shorter than its user-key length {length}", key=key
        )
    return rest[_LEN_SIZE:end], rest[end:]


def parse_meta_key(key: bytes, prefix: bytes, code: RecordCode) -> bytes:
    """The user key of ``<prefix><len u32><user key>`` with nothing after it."""
    user_key, tail = parse_wide_key(key, prefix, code)
    if tail:
        raise record_error(
            code, f"meta key {_short(key)} has {len(tail)} bytes after its user key", key=key
        )
    return user_key


def parse_delta_key(key: bytes, prefix: bytes, code: RecordCode) -> bytes:
    """The user key of a ``…|meta|d|<len><key><commitTS 8><seq 4>`` delta row."""
    user_key, tail = parse_wide_key(key, prefix, code)
    if len(tail) != DELTA_SUFFIX_LEN:
        raise record_error(
            code,
            f"delta key {_short(key)} does not end in a 12-byte commit/sequence suffix",
            key=key,
        )
    return user_key


def decode_list_seq(raw: bytes) -> int:
    """A list item's sequence number from its order-preserving 8-byte form (sign bit flipped)."""
    return int(_U64.unpack(raw)[0]) - _SIGN_BIT


def encode_list_seq(seq: int) -> bytes:
    """The order-preserving 8-byte form of a list sequence number."""
    return _U64.pack(seq + _SIGN_BIT)


def parse_list_item_key(key: bytes) -> tuple[bytes, int]:
    """Split ``!lst|itm|<user key><seq 8>`` into ``(user key, seq)``."""
    rest = key[len(LIST_ITEM) :]
    if len(rest) < _SEQ_SIZE:
        raise record_error(
            "ErrRedisInvalidListKey", f"item key {_short(key)} is shorter than its sequence number"
        )
    return rest[:-_SEQ_SIZE], decode_list_seq(rest[-_SEQ_SIZE:])


def parse_stream_entry_key(key: bytes) -> tuple[bytes, int, int]:
    """Split ``!stream|entry|<len><user key><ms 8><seq 8>`` into ``(user key, ms, seq)``."""
    user_key, tail = parse_wide_key(key, STREAM_ENTRY, "ErrRedisInvalidStreamKey")
    if len(tail) != _ID.size:
        raise record_error(
            "ErrRedisInvalidStreamKey", f"entry key {_short(key)} does not end in a 16-byte ID"
        )
    ms, seq = _ID.unpack(tail)
    return user_key, ms, seq


def wide_key(prefix: bytes, user_key: bytes, suffix: bytes = b"") -> bytes:
    """Build ``<prefix><len u32><user key><suffix>``."""
    return b"".join((prefix, _U32.pack(len(user_key)), user_key, suffix))


def list_item_key(user_key: bytes, seq: int) -> bytes:
    """Build ``!lst|itm|<user key><seq 8>``."""
    return LIST_ITEM + user_key + encode_list_seq(seq)


def stream_entry_key(user_key: bytes, ms: int, seq: int) -> bytes:
    """Build ``!stream|entry|<len><user key><ms 8><seq 8>``."""
    return wide_key(STREAM_ENTRY, user_key, _ID.pack(ms, seq))


def sortable_score(score_bits: int) -> bytes:
    """The ``!zs|scr|`` form of a score's IEEE-754 bits: -0 as +0, then order-preserving."""
    if score_bits == _SIGN_BIT:  # -0.0 sorts with +0.0
        score_bits = 0
    if score_bits & _SIGN_BIT:
        score_bits ^= 0xFFFF_FFFF_FFFF_FFFF
    else:
        score_bits ^= _SIGN_BIT
    return _U64.pack(score_bits)


#: The store routes a Redis key's rows by the user key (``kv/shard_key.go`` ``routeKey``):
#: lists by the user key inside their meta, item, delta and claim keys, ``!redis|<kind>|``
#: rows by what follows the kind. Wide-column hash, set and zset rows are not normalised.
_ROUTE_DELTA_SUFFIX: Final = 8 + 4  # commit ts + sequence in the transaction
_ROUTE_SEQ: Final = 8
_REDIS_FAMILY: Final = b"!redis|"


def _length_prefixed(rest: bytes, suffix: int) -> bytes | None:
    """``<u32 BE length><user key>`` followed by ``suffix`` bytes (list deltas and claims)."""
    if len(rest) < 4:
        return None
    (size,) = _U32.unpack_from(rest)
    if len(rest) < 4 + size + suffix and len(rest) != 4 + size:
        return None
    return rest[4 : 4 + size]


def route_key(key: bytes) -> bytes | None:
    """The key the store routes ``key`` by, or ``None`` when no Redis rule applies."""
    if key.startswith(LIST_DELTA):
        return _length_prefixed(key[len(LIST_DELTA) :], _ROUTE_DELTA_SUFFIX) or key
    if key.startswith(LIST_CLAIM):
        return _length_prefixed(key[len(LIST_CLAIM) :], _ROUTE_SEQ) or key
    if key.startswith(LIST_META):
        return key[len(LIST_META) :]
    if key.startswith(LIST_ITEM):
        rest = key[len(LIST_ITEM) :]
        return rest[:-_ROUTE_SEQ] if len(rest) >= _ROUTE_SEQ else key
    if key.startswith(_REDIS_FAMILY):
        rest = key[len(_REDIS_FAMILY) :]
        sep = rest.find(b"|")
        return rest[sep + 1 :] if sep > 0 else key
    return None


#: Rows whose user key follows the prefix directly and runs to the end of the key.
_BARE: Final = (STRING, HLL, TTL, HASH_LEGACY, SET_LEGACY, STREAM_LEGACY, ZSET_LEGACY, LIST_META)


def user_key(prefix: bytes, key: bytes) -> bytes | None:
    """The Redis user key a row routed by ``prefix`` belongs to (``AdapterSpec.scope_unit``).

    Every family names it: simple and legacy rows, TTL rows and list metas after the
    prefix, list items before their 8-byte sequence, wide-column metas, members, fields,
    stream entries and every delta row length-prefixed. ``None`` for a key the decoder
    would reject (never raises).
    """
    if prefix in _BARE:
        return key[len(prefix) :]
    if prefix == LIST_ITEM:
        rest = key[len(prefix) :]
        return rest[:-_SEQ_SIZE] if len(rest) >= _SEQ_SIZE else None
    rest = key[len(prefix) :]
    if len(rest) < _LEN_SIZE:
        return None
    (length,) = _U32.unpack_from(rest)
    end = _LEN_SIZE + length
    return rest[_LEN_SIZE:end] if len(rest) >= end else None
