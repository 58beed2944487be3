"""Hand-built .fsm byte streams for the snapshot tests (layouts from REFERENCE_NOTES §1)."""

from __future__ import annotations

import struct
from collections.abc import Iterable

import crc32c

TS_MASK = (1 << 64) - 1


def u64le(value: int) -> bytes:
    """Little-endian u64."""
    return struct.pack("<Q", value)


def u64be(value: int) -> bytes:
    """Big-endian u64."""
    return struct.pack(">Q", value)


def mvcc_key(user_key: bytes, commit_ts: int) -> bytes:
    """``userKey ‖ BE(^commitTS)``."""
    return user_key + u64be(commit_ts ^ TS_MASK)


def mvcc_value(body: bytes = b"", *, tombstone: bool = False, expire_at: int = 0) -> bytes:
    """``flags ‖ expireAt(LE) ‖ body`` with a cleartext flags byte."""
    return bytes([1 if tombstone else 0]) + u64le(expire_at) + body


def frame(raw_key: bytes, raw_value: bytes) -> bytes:
    """One framed entry: LE lengths before the key and the value."""
    return u64le(len(raw_key)) + raw_key + u64le(len(raw_value)) + raw_value


def version(
    user_key: bytes,
    commit_ts: int,
    body: bytes = b"",
    *,
    tombstone: bool = False,
    expire_at: int = 0,
) -> bytes:
    """One framed MVCC version."""
    return frame(
        mvcc_key(user_key, commit_ts),
        mvcc_value(body, tombstone=tombstone, expire_at=expire_at),
    )


def stream(last_commit_ts: int, entries: Iterable[bytes] = ()) -> bytes:
    """``EKVPBBL1`` + LE last_commit_ts + the framed entries, in the order given."""
    return b"EKVPBBL1" + u64le(last_commit_ts) + b"".join(entries)


def hlc_v1(ceiling_ms: int) -> bytes:
    """A kv-FSM v1 header."""
    return b"EKVTHLC1" + u64be(ceiling_ms)


def hlc_v2(ceiling_ms: int, cutover: int, extension: bytes = b"") -> bytes:
    """A kv-FSM v2 header with optional extension bytes."""
    payload = u64be(ceiling_ms) + u64be(cutover) + extension
    return b"EKVTHLC2" + struct.pack(">H", len(payload)) + payload


def with_footer(payload: bytes) -> bytes:
    """Append the node's 4-byte big-endian CRC32C footer."""
    return payload + struct.pack(">I", crc32c.crc32c(payload))
