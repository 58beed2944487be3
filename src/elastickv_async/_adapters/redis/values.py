"""Redis value layouts in the elastickv store, both directions (REFERENCE_NOTES §3.3, §6.3).

All integers are big-endian. Millisecond TTLs read from string/HLL headers and ``!redis|ttl|``
rows are clamped to ``MaxInt64`` like the reference; the inline TTLs of collection metas are
taken as stored.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgspec

from .errors import RecordCode, record_error

# The protobuf runtime loads only where a blob is parsed or written: the tree layout, which
# every Redis run imports, takes its stream helpers from here.
if TYPE_CHECKING:
    from google.protobuf.message import Message

__all__ = [
    "MAX_INT64",
    "CountMeta",
    "ListMeta",
    "SimpleValue",
    "StreamEntry",
    "StreamMeta",
    "decode_count_delta",
    "decode_count_meta",
    "decode_hll_value",
    "decode_legacy_hash",
    "decode_legacy_set",
    "decode_legacy_stream",
    "decode_legacy_zset",
    "decode_list_delta",
    "decode_list_meta",
    "decode_score",
    "decode_stream_entry",
    "decode_stream_meta",
    "decode_string_value",
    "decode_ttl_value",
    "encode_count_meta",
    "encode_hll_value",
    "encode_list_meta",
    "encode_score",
    "encode_stream_entry",
    "encode_stream_meta",
    "encode_string_value",
    "encode_ttl_value",
    "is_list_meta_value",
    "parse_stream_id",
    "shifted_ttl",
]

MAX_INT64: Final = (1 << 63) - 1

# New-format simple values: magic, version, flags (bit 0 = an 8-byte TTL follows), body.
_HEADER_MAGIC: Final = 0xFF
_STRING_VERSION: Final = 0x01
_HLL_VERSION: Final = 0x02
_HAS_TTL: Final = 0x01
_BASE_HEADER: Final = 3

# Protobuf payload magics (adapter/redis_storage_codec.go).
HASH_BLOB_MAGIC: Final = b"\x00RH\x01"
SET_BLOB_MAGIC: Final = b"\x00RS\x01"
ZSET_BLOB_MAGIC: Final = b"\x00RZ\x01"
STREAM_BLOB_MAGIC: Final = b"\x00RX\x01"
STREAM_ENTRY_MAGIC: Final = b"\x00RXE\x01"

_U64: Final = struct.Struct(">Q")
_I64: Final = struct.Struct(">q")
_F64: Final = struct.Struct(">d")
_COUNT_META: Final = struct.Struct(">QQ")
_LIST_META: Final = struct.Struct(">qqQQ")
_LIST_DELTA: Final = struct.Struct(">qq")
_STREAM_META: Final = struct.Struct(">QQQQ")
_STREAM_HEAD: Final = struct.Struct(">QQQ")
_U64_SIZE: Final = 8
_COUNT_META_SIZES: Final = (8, 16)
_LIST_META_SIZES: Final = (24, 32)
_STREAM_META_SIZES: Final = (24, 32, 48)


_INT64_MAX: Final = (1 << 63) - 1


def shifted_ttl(expire_at_ms: int | None, shift_ms: int) -> int | None:
    """An expiry deadline moved by ``shift_ms`` (``encode --rebase-time``), kept within the
    live server's int64 milliseconds.

    No TTL (``None`` or 0) and the int64 maximum (the farthest deadline there is, which
    clients use for "never") stay as they are.
    """
    if not expire_at_ms or expire_at_ms >= _INT64_MAX:
        return expire_at_ms
    return min(max(expire_at_ms + shift_ms, 1), _INT64_MAX)


class SimpleValue(msgspec.Struct, frozen=True, gc=False):
    """A decoded string or HLL value.

    ``new_format`` values own their TTL (later ``!redis|ttl|`` rows are ignored); ``ttl_flag``
    says the header carries a TTL, which the live server honours even when it is 0.
    """

    body: bytes
    new_format: bool
    ttl_flag: bool
    ttl_ms: int


def _decode_simple(value: bytes, version: int, code: RecordCode) -> SimpleValue:
    if len(value) < 2 or value[0] != _HEADER_MAGIC or value[1] != version:
        return SimpleValue(value, False, False, 0)
    if len(value) < _BASE_HEADER:
        raise record_error(code, "new-format header truncated")
    if not value[2] & _HAS_TTL:
        return SimpleValue(value[_BASE_HEADER:], True, False, 0)
    end = _BASE_HEADER + _U64_SIZE
    if len(value) < end:
        raise record_error(code, "new-format TTL section truncated")
    ttl = min(_U64.unpack_from(value, _BASE_HEADER)[0], MAX_INT64)
    return SimpleValue(value[end:], True, True, ttl)


def decode_string_value(value: bytes) -> SimpleValue:
    """Decode a ``!redis|str|`` value (``FF 01 flags [ttl] body``, or legacy raw bytes)."""
    return _decode_simple(value, _STRING_VERSION, "ErrRedisInvalidStringValue")


def decode_hll_value(value: bytes) -> SimpleValue:
    """Decode a ``!redis|hll|`` value (``FF 02 flags [ttl] sketch``, or a legacy raw sketch)."""
    return _decode_simple(value, _HLL_VERSION, "ErrRedisInvalidHLLValue")


def encode_string_value(body: bytes, ttl_ms: int) -> bytes:
    """The new-format string value the reference encoder writes (TTL 0 = none)."""
    if ttl_ms == 0:
        return bytes((_HEADER_MAGIC, _STRING_VERSION, 0)) + body
    return bytes((_HEADER_MAGIC, _STRING_VERSION, _HAS_TTL)) + _U64.pack(ttl_ms) + body


def encode_hll_value(sketch: bytes, ttl_ms: int) -> bytes:
    """The HLL value the reference encoder writes: the raw sketch, enveloped only with a TTL."""
    if ttl_ms == 0:
        return sketch
    return bytes((_HEADER_MAGIC, _HLL_VERSION, _HAS_TTL)) + _U64.pack(ttl_ms) + sketch


def decode_ttl_value(value: bytes) -> int:
    """A ``!redis|ttl|`` value: exactly 8 bytes, clamped to ``MaxInt64``."""
    if len(value) != _U64_SIZE:
        raise record_error("ErrRedisInvalidTTLValue", f"length {len(value)} != 8")
    return min(int(_U64.unpack(value)[0]), MAX_INT64)


def encode_ttl_value(ttl_ms: int) -> bytes:
    """An 8-byte ``!redis|ttl|`` value."""
    return _U64.pack(ttl_ms)


class CountMeta(msgspec.Struct, frozen=True, gc=False):
    """A hash/set/zset meta row; ``inline`` (16-byte form) makes ``ttl_ms`` authoritative."""

    declared_len: int
    inline: bool
    ttl_ms: int


def decode_count_meta(value: bytes, code: RecordCode) -> CountMeta:
    """Decode ``count u64`` or ``count u64 ‖ expireAtMs u64``."""
    if len(value) not in _COUNT_META_SIZES:
        raise record_error(code, f"meta length {len(value)} not in {{8,16}}")
    count = _U64.unpack_from(value)[0]
    if count > MAX_INT64:
        raise record_error(code, f"declared len {count} overflows int64")
    if len(value) == _U64_SIZE:
        return CountMeta(count, False, 0)
    return CountMeta(count, True, _U64.unpack_from(value, _U64_SIZE)[0])


def encode_count_meta(count: int, ttl_ms: int | None) -> bytes:
    """The reference encoder's count meta: the 16-byte form only for a non-zero TTL."""
    if ttl_ms:
        return _COUNT_META.pack(count, ttl_ms)
    return _U64.pack(count)


def decode_count_delta(value: bytes, code: RecordCode) -> int:
    """A hash/set/zset delta row: one signed length change."""
    if len(value) != _U64_SIZE:
        raise record_error(code, f"delta length {len(value)} != 8")
    return int(_I64.unpack(value)[0])


class ListMeta(msgspec.Struct, frozen=True, gc=False):
    """A list meta row (``Head ‖ Tail ‖ Len [‖ ExpireAtMs]``); only Len and the TTL matter here."""

    declared_len: int
    inline: bool
    ttl_ms: int


def is_list_meta_value(value: bytes) -> bool:
    """Whether ``value`` has a list meta's size (a delta row's value is 16 bytes)."""
    return len(value) in _LIST_META_SIZES


def decode_list_meta(value: bytes) -> ListMeta:
    """Decode a 24- or 32-byte list meta."""
    if len(value) not in _LIST_META_SIZES:
        raise record_error("ErrRedisInvalidListMeta", f"meta length {len(value)} not in {{24,32}}")
    length = _U64.unpack_from(value, 16)[0]
    if length > MAX_INT64:
        raise record_error("ErrRedisInvalidListMeta", f"declared len {length} overflows int64")
    if len(value) == _LIST_META_SIZES[0]:
        return ListMeta(length, False, 0)
    return ListMeta(length, True, _U64.unpack_from(value, 24)[0])


def encode_list_meta(count: int, ttl_ms: int | None) -> bytes:
    """The reference encoder's list meta: Head 0, Tail = Len = count, TTL only when non-zero."""
    if ttl_ms:
        return _LIST_META.pack(0, count, count, ttl_ms)
    return _LIST_META.pack(0, count, count, 0)[:24]


def decode_list_delta(value: bytes) -> int:
    """A list delta row (``HeadDelta ‖ LenDelta``): its length change."""
    if len(value) != _LIST_DELTA.size:
        raise record_error("ErrRedisInvalidListMeta", f"delta length {len(value)} != 16")
    return int(_LIST_DELTA.unpack(value)[1])


class StreamMeta(msgspec.Struct, frozen=True, gc=False):
    """A stream meta row; the 48-byte form's trim cursor is not client-visible and is dropped."""

    length: int
    last_ms: int
    last_seq: int
    inline: bool
    ttl_ms: int


def decode_stream_meta(value: bytes) -> StreamMeta:
    """Decode a 24-, 32- or 48-byte stream meta."""
    if len(value) not in _STREAM_META_SIZES:
        raise record_error(
            "ErrRedisInvalidStreamMeta", f"meta length {len(value)} not in {{24,32,48}}"
        )
    length, last_ms, last_seq = _STREAM_HEAD.unpack_from(value)
    if length > MAX_INT64:
        raise record_error("ErrRedisInvalidStreamMeta", f"declared length {length} overflows int64")
    if len(value) == _STREAM_META_SIZES[0]:
        return StreamMeta(length, last_ms, last_seq, False, 0)
    return StreamMeta(length, last_ms, last_seq, True, _U64.unpack_from(value, 24)[0])


def encode_stream_meta(length: int, last_ms: int, last_seq: int, ttl_ms: int | None) -> bytes:
    """The reference encoder's stream meta (24 bytes, 32 with a non-zero TTL; no trim cursor)."""
    if ttl_ms:
        return _STREAM_META.pack(length, last_ms, last_seq, ttl_ms)
    return _STREAM_META.pack(length, last_ms, last_seq, 0)[:24]


def decode_score(value: bytes) -> float:
    """A ``!zs|mem|`` value: an 8-byte big-endian IEEE-754 score, never NaN."""
    if len(value) != _F64.size:
        raise record_error("ErrRedisInvalidZSetMember", f"score length {len(value)} != 8")
    (score,) = _F64.unpack(value)
    if math.isnan(score):
        raise record_error("ErrRedisInvalidZSetMember", "NaN score")
    return float(score)


def encode_score(score: float) -> bytes:
    """The 8-byte ``!zs|mem|`` value of ``score``."""
    return _F64.pack(score)


def _parse_blob(value: bytes, magic: bytes, message: Message, code: RecordCode) -> None:
    from google.protobuf.message import DecodeError

    if not value.startswith(magic):
        raise record_error(code, f"missing or corrupt magic prefix (len={len(value)})")
    try:
        message.ParseFromString(value[len(magic) :])
    except DecodeError as exc:
        raise record_error(code, f"unmarshal: {exc}") from None


def decode_legacy_hash(value: bytes) -> list[tuple[bytes, bytes]]:
    """A legacy ``!redis|hash|`` blob as ``(field, value)`` pairs sorted by field bytes.

    An empty value is an empty hash, as the live reader treats it.
    """
    if not value:
        return []
    from . import redis_internal_pb2 as pb

    msg = pb.RedisHashValue()
    _parse_blob(value, HASH_BLOB_MAGIC, msg, "ErrRedisInvalidHashLegacyBlob")
    return sorted((k.encode(), v.encode()) for k, v in msg.entries.items())


def decode_legacy_set(value: bytes) -> list[bytes]:
    """A legacy ``!redis|set|`` blob as distinct members sorted by bytes (empty value = empty)."""
    if not value:
        return []
    from . import redis_internal_pb2 as pb

    msg = pb.RedisSetValue()
    _parse_blob(value, SET_BLOB_MAGIC, msg, "ErrRedisInvalidSetLegacyBlob")
    return sorted({m.encode() for m in msg.members})


def decode_legacy_zset(value: bytes) -> list[tuple[bytes, float]]:
    """A legacy ``!redis|zset|`` blob as ``(member, score)`` pairs; a repeated member keeps
    its last score, like the reference's map. NaN scores are rejected."""
    from . import redis_internal_pb2 as pb

    msg = pb.RedisZSetValue()
    _parse_blob(value, ZSET_BLOB_MAGIC, msg, "ErrRedisInvalidZSetLegacyBlob")
    members: dict[bytes, float] = {}
    for entry in msg.entries:
        if math.isnan(entry.score):
            raise record_error(
                "ErrRedisInvalidZSetLegacyBlob", f"NaN score for member {entry.member[:80]!r}"
            )
        members[entry.member.encode()] = entry.score
    return list(members.items())


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One stream entry: its ID and the interleaved field names and values (XADD order)."""

    ms: int
    seq: int
    fields: tuple[str, ...]


def parse_stream_id(text: str) -> tuple[int, int] | None:
    """Parse ``<ms>-<seq>`` (two unsigned 64-bit decimals), or ``None`` when malformed."""
    ms_text, sep, seq_text = text.partition("-")
    if not sep or not (ms_text.isascii() and ms_text.isdigit()):
        return None
    if not (seq_text.isascii() and seq_text.isdigit()):
        return None
    ms, seq = int(ms_text), int(seq_text)
    if ms > 0xFFFF_FFFF_FFFF_FFFF or seq > 0xFFFF_FFFF_FFFF_FFFF:
        return None
    return ms, seq


def decode_stream_entry(value: bytes) -> tuple[str, ...]:
    """A ``!stream|entry|`` value's interleaved fields (the ID comes from the key)."""
    from . import redis_internal_pb2 as pb

    msg = pb.RedisStreamEntry()
    _parse_blob(value, STREAM_ENTRY_MAGIC, msg, "ErrRedisInvalidStreamEntry")
    if len(msg.fields) % 2:
        raise record_error("ErrRedisInvalidStreamEntry", f"odd field count {len(msg.fields)}")
    return tuple(msg.fields)


def encode_stream_entry(entry_id: str, fields: Sequence[str]) -> bytes:
    """A ``!stream|entry|`` value: the magic, then ``RedisStreamEntry{id, fields}``."""
    from . import redis_internal_pb2 as pb

    payload = pb.RedisStreamEntry(id=entry_id, fields=list(fields)).SerializeToString()
    return STREAM_ENTRY_MAGIC + payload


def decode_legacy_stream(value: bytes) -> list[StreamEntry]:
    """A legacy ``!redis|stream|`` blob's entries sorted by ID (empty value = empty stream)."""
    if not value:
        return []
    from . import redis_internal_pb2 as pb

    msg = pb.RedisStreamValue()
    _parse_blob(value, STREAM_BLOB_MAGIC, msg, "ErrRedisInvalidStreamLegacyBlob")
    entries = []
    for entry in msg.entries:
        parsed = parse_stream_id(entry.id)
        if parsed is None:
            raise record_error(
                "ErrRedisInvalidStreamLegacyBlob", f"entry ID {entry.id[:40]!r} is not <ms>-<seq>"
            )
        if len(entry.fields) % 2:
            raise record_error(
                "ErrRedisInvalidStreamLegacyBlob", f"entry {entry.id!r} has an odd field count"
            )
        entries.append(StreamEntry(parsed[0], parsed[1], tuple(entry.fields)))
    entries.sort(key=lambda e: (e.ms, e.seq))
    return entries
