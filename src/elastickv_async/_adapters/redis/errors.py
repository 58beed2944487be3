"""Errors of the Redis adapter: one constructor per direction, the fault named by its code.

Decode faults are :class:`AdapterRecordError` (a malformed snapshot record), encode faults
:class:`DumpTreeError` (a malformed dump tree); both exit 2. Codes are the reference's
sentinel names; mypy checks every raise site's code against the lists below.

The legacy hash, set and stream blob codes are ours: the reference does not read those blobs.
"""

from __future__ import annotations

from typing import Literal

from ..._core.errors import AdapterRecordError, DumpTreeError

__all__ = ["RecordCode", "TreeCode", "record_error", "tree_error"]

ADAPTER = "redis"

RecordCode = Literal[
    "ErrRedisInvalidStringValue",
    "ErrRedisInvalidHLLValue",
    "ErrRedisInvalidTTLValue",
    "ErrRedisInvalidHashKey",
    "ErrRedisInvalidHashMeta",
    "ErrRedisInvalidHashLegacyBlob",
    "ErrRedisInvalidListKey",
    "ErrRedisInvalidListMeta",
    "ErrRedisInvalidSetKey",
    "ErrRedisInvalidSetMeta",
    "ErrRedisInvalidSetLegacyBlob",
    "ErrRedisInvalidZSetKey",
    "ErrRedisInvalidZSetMeta",
    "ErrRedisInvalidZSetMember",
    "ErrRedisInvalidZSetLegacyBlob",
    "ErrRedisInvalidStreamKey",
    "ErrRedisInvalidStreamMeta",
    "ErrRedisInvalidStreamEntry",
    "ErrRedisInvalidStreamLegacyBlob",
]
TreeCode = Literal[
    "ErrRedisEncodeNotDir",
    "ErrRedisEncodeMissingKeymap",
    "ErrRedisEncodeInvalidJSON",
    "ErrRedisEncodeMultiDBUnsupported",
]


def record_error(code: RecordCode, message: str, *, key: bytes | None = None) -> AdapterRecordError:
    """The error for a malformed Redis record (``key`` is the snapshot key when known)."""
    return AdapterRecordError(message, code=code, adapter=ADAPTER, key=key)


def tree_error(code: TreeCode, message: str, *, path: str | None = None) -> DumpTreeError:
    """The error for a malformed ``redis/`` subtree (``path`` relative to the tree's root)."""
    return DumpTreeError(message, code=code, adapter=ADAPTER, path=path)
