"""Typed errors of the Redis adapter (both directions).

Decode errors are :class:`AdapterRecordError` subclasses named after the reference's sentinels
(``ErrRedisInvalid…``); encode errors are :class:`DumpTreeError` subclasses (``ErrRedisEncode…``).
Both exit 2.
"""

from __future__ import annotations

from ..._core.errors import AdapterRecordError, DumpTreeError

__all__ = [
    "RedisEncodeError",
    "RedisEncodeInvalidJSON",
    "RedisEncodeMissingKeymap",
    "RedisEncodeMultiDBUnsupported",
    "RedisEncodeNotDir",
    "RedisError",
    "RedisInvalidHLLValue",
    "RedisInvalidHashKey",
    "RedisInvalidHashLegacyBlob",
    "RedisInvalidHashMeta",
    "RedisInvalidListKey",
    "RedisInvalidListMeta",
    "RedisInvalidSetKey",
    "RedisInvalidSetLegacyBlob",
    "RedisInvalidSetMeta",
    "RedisInvalidStreamEntry",
    "RedisInvalidStreamKey",
    "RedisInvalidStreamLegacyBlob",
    "RedisInvalidStreamMeta",
    "RedisInvalidStringValue",
    "RedisInvalidTTLValue",
    "RedisInvalidZSetKey",
    "RedisInvalidZSetLegacyBlob",
    "RedisInvalidZSetMember",
    "RedisInvalidZSetMeta",
]


class RedisError(AdapterRecordError):
    """A Redis record in the snapshot cannot be decoded."""


class RedisInvalidStringValue(RedisError):
    """A ``!redis|str|`` value has a truncated new-format header."""


class RedisInvalidHLLValue(RedisError):
    """A ``!redis|hll|`` value has a truncated new-format header."""


class RedisInvalidTTLValue(RedisError):
    """A ``!redis|ttl|`` value is not an 8-byte big-endian millisecond timestamp."""


class RedisInvalidHashKey(RedisError):
    """A ``!hs|`` key does not have the ``<len u32><key>…`` layout."""


class RedisInvalidHashMeta(RedisError):
    """A ``!hs|meta|`` (or delta) value has the wrong size or an overflowing count."""


class RedisInvalidHashLegacyBlob(RedisError):
    """A legacy ``!redis|hash|`` blob lacks its magic or is not a ``RedisHashValue``."""


class RedisInvalidListKey(RedisError):
    """A ``!lst|`` key is too short for its sequence number or length prefix."""


class RedisInvalidListMeta(RedisError):
    """A ``!lst|meta|`` (or delta) value has the wrong size or an overflowing length."""


class RedisInvalidSetKey(RedisError):
    """A ``!st|`` key does not have the ``<len u32><key>…`` layout."""


class RedisInvalidSetMeta(RedisError):
    """A ``!st|meta|`` (or delta) value has the wrong size or an overflowing count."""


class RedisInvalidSetLegacyBlob(RedisError):
    """A legacy ``!redis|set|`` blob lacks its magic or is not a ``RedisSetValue``."""


class RedisInvalidZSetKey(RedisError):
    """A ``!zs|`` key does not have the ``<len u32><key>…`` layout."""


class RedisInvalidZSetMeta(RedisError):
    """A ``!zs|meta|`` (or delta) value has the wrong size or an overflowing count."""


class RedisInvalidZSetMember(RedisError):
    """A ``!zs|mem|`` score is not 8 bytes or is NaN."""


class RedisInvalidZSetLegacyBlob(RedisError):
    """A legacy ``!redis|zset|`` blob lacks its magic, is not a ``RedisZSetValue`` or has NaN."""


class RedisInvalidStreamKey(RedisError):
    """A ``!stream|`` key does not have the ``<len u32><key>[<ms><seq>]`` layout."""


class RedisInvalidStreamMeta(RedisError):
    """A ``!stream|meta|`` value has the wrong size or an overflowing length."""


class RedisInvalidStreamEntry(RedisError):
    """A ``!stream|entry|`` value lacks its magic, is not a ``RedisStreamEntry`` or is odd."""


class RedisInvalidStreamLegacyBlob(RedisError):
    """A legacy ``!redis|stream|`` blob lacks its magic, is malformed or has a bad entry ID."""


class RedisEncodeError(DumpTreeError):
    """The ``redis/`` subtree of a dump cannot be encoded."""


class RedisEncodeNotDir(RedisEncodeError):
    """``redis/``, ``redis/db_<n>`` or a type directory is a symlink or not a directory."""


class RedisEncodeMissingKeymap(RedisEncodeError):
    """A SHA-fallback file name has no KEYMAP.jsonl record."""


class RedisEncodeInvalidJSON(RedisEncodeError):
    """A collection file, TTL sidecar or KEYMAP.jsonl is not valid for its format."""


class RedisEncodeMultiDBUnsupported(RedisEncodeError):
    """The tree holds a Redis database other than ``db_0``, or more than one."""
