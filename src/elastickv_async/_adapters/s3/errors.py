"""Errors of the S3 adapter: one constructor per direction, the fault named by its code.

Decode faults are :class:`AdapterRecordError` (a malformed snapshot record), encode faults
:class:`DumpTreeError` (a malformed dump tree); both exit 2. Codes are the reference's
sentinel names; mypy checks every raise site's code against the lists below.
"""

from __future__ import annotations

from typing import Literal

from ..._core.errors import AdapterRecordError, DumpTreeError

__all__ = ["RecordCode", "TreeCode", "record_error", "tree_error"]

ADAPTER = "s3"

RecordCode = Literal[
    "ErrS3MalformedKey",
    "ErrS3InvalidBucketMeta",
    "ErrS3InvalidManifest",
    "ErrS3MetaSuffixCollision",
    "ErrS3IncompleteBlobChunks",
    "ErrS3InvalidChunkRef",
    "ErrS3ChunkBlobHashMismatch",
]
TreeCode = Literal[
    "ErrS3EncodeInvalidBucket",
    "ErrS3EncodeInvalidIncompleteUpload",
    "ErrS3EncodeInvalidManifest",
    "ErrS3EncodeReservedPrefixCollision",
]


def record_error(code: RecordCode, message: str, *, key: bytes | None = None) -> AdapterRecordError:
    """The error for a malformed S3 record (``key`` is the snapshot key when known)."""
    return AdapterRecordError(message, code=code, adapter=ADAPTER, key=key)


def tree_error(code: TreeCode, message: str, *, path: str | None = None) -> DumpTreeError:
    """The error for a malformed ``s3/`` subtree (``path`` relative to the tree's root)."""
    return DumpTreeError(message, code=code, adapter=ADAPTER, path=path)
