"""The bytes of an encoder-written snapshot: ``EKVPBBL1`` framing with uniform MVCC stamping.

Every record gets the same commit timestamp ``T``: key = ``user_key ‖ BE(^T)``, value =
``flags(0) ‖ LE u64 expireAt(0) ‖ body`` (live, cleartext, no MVCC TTL: adapters keep TTLs in
their own values). The stream is the magic, ``LE u64 T`` and the entries
(``LE u64 len ‖ key ‖ LE u64 len ‖ value``) sorted by encoded key, with no footer. Magic and
limits are the reader's (:mod:`elastickv_async._core.snapshot.framing`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence, Sized
from operator import itemgetter
from typing import Final

from ..errors import DumpTreeError
from ..snapshot.framing import (
    MAX_ENCODED_KEY_SIZE,
    MAX_ENCODED_VALUE_SIZE,
    STREAM_MAGIC,
    TS_SIZE,
    VALUE_HEADER_SIZE,
)

__all__ = [
    "KEY_LEN",
    "VALUE_HEAD",
    "VALUE_HEADER",
    "check_record",
    "check_records",
    "frame_entry",
    "header",
    "ts_suffix",
]

VALUE_HEADER: Final = b"\x00" + bytes(VALUE_HEADER_SIZE - 1)
_U64_MASK: Final = (1 << 64) - 1
_LEN: Final = struct.Struct("<Q")
#: ``LE u64`` key length, as framed before the key.
KEY_LEN: Final = _LEN
#: ``LE u64`` value length followed by the value header in one pack: the header is all zero
#: bytes (flags 0, expireAt 0), which ``x`` pad bytes give.
VALUE_HEAD: Final = struct.Struct(f"<Q{VALUE_HEADER_SIZE}x")
_TS: Final = struct.Struct(">Q")
_KEY: Final = itemgetter(0)
_VALUE: Final = itemgetter(1)


def header(last_commit_ts: int) -> bytes:
    """The 16-byte stream header: magic and ``LE u64 last_commit_ts``."""
    return STREAM_MAGIC + _LEN.pack(last_commit_ts)


def ts_suffix(commit_ts: int) -> bytes:
    """The 8-byte key suffix ``BE(^commit_ts)`` shared by every key of the snapshot."""
    return _TS.pack(~commit_ts & _U64_MASK)


def check_record(user_key: bytes, user_value: Sized) -> None:
    """Refuse a record the snapshot reader would refuse (checked before anything is buffered)."""
    if len(user_key) + TS_SIZE > MAX_ENCODED_KEY_SIZE:
        raise DumpTreeError(
            f"encoded key length {len(user_key) + TS_SIZE} > {MAX_ENCODED_KEY_SIZE} "
            f"(key {user_key[:32]!r}...)",
            code="ErrEncodeKeyTooLarge",
        )
    if len(user_value) + VALUE_HEADER_SIZE > MAX_ENCODED_VALUE_SIZE:
        raise DumpTreeError(
            f"encoded value length {len(user_value) + VALUE_HEADER_SIZE} > "
            f"{MAX_ENCODED_VALUE_SIZE} (key {user_key[:32]!r})",
            code="ErrEncodeValueTooLarge",
        )


def check_records(records: Sequence[tuple[bytes, Sized]]) -> None:
    """:func:`check_record` every ``(user_key, user_value)`` of ``records``, in one pass each."""
    if not records:
        return
    if (
        max(map(len, map(_KEY, records))) + TS_SIZE > MAX_ENCODED_KEY_SIZE
        or max(map(len, map(_VALUE, records))) + VALUE_HEADER_SIZE > MAX_ENCODED_VALUE_SIZE
    ):
        for key, value in records:
            check_record(key, value)


def frame_entry(encoded_key: bytes, body: bytes) -> tuple[bytes, bytes]:
    """The two pieces written before ``body`` for one entry.

    The key with its length, then the value length and value header; ``body`` follows
    unchanged, so large values are never copied.
    """
    return (
        _LEN.pack(len(encoded_key)) + encoded_key,
        VALUE_HEAD.pack(len(body) + VALUE_HEADER_SIZE),
    )
