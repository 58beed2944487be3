"""Typed errors of the S3 adapter (the reference's sentinels, REFERENCE_NOTES Appendix A)."""

from __future__ import annotations

from ..._core.errors import AdapterRecordError, DumpTreeError

__all__ = [
    "S3ChunkBlobHashMismatch",
    "S3EncodeInvalidBucket",
    "S3EncodeInvalidManifest",
    "S3EncodeReservedPrefixCollision",
    "S3IncompleteBlobChunks",
    "S3InvalidBucketMeta",
    "S3InvalidChunkRef",
    "S3InvalidManifest",
    "S3MalformedKey",
    "S3MetaSuffixCollision",
]


# --- decode (snapshot records) ---------------------------------------------------------------


class S3InvalidBucketMeta(AdapterRecordError):
    """A ``!s3|bucket|meta|`` value is not the JSON the live adapter writes."""


class S3InvalidManifest(AdapterRecordError):
    """A ``!s3|obj|head|`` value is not a valid object manifest."""


class S3MalformedKey(AdapterRecordError):
    """An S3 key cannot be split into its parts, or names an impossible bucket."""


class S3MetaSuffixCollision(AdapterRecordError):
    """An object key ends in the reserved sidecar suffix and ``--rename-collisions`` is off."""


class S3IncompleteBlobChunks(AdapterRecordError):
    """A manifest declares chunks the snapshot does not hold (the body would be truncated)."""


class S3InvalidChunkRef(AdapterRecordError):
    """A ``!s3|chunkref|`` value is malformed or disagrees with its payload or manifest."""


class S3ChunkBlobHashMismatch(AdapterRecordError):
    """A ``!s3|chunkblob|`` payload does not hash to the digest in its key."""


# --- encode (dump tree) ----------------------------------------------------------------------


class S3EncodeInvalidBucket(DumpTreeError):
    """A bucket directory's ``_bucket.json`` (or its KEYMAP.jsonl) is missing or invalid."""


class S3EncodeInvalidManifest(DumpTreeError):
    """An object's ``.elastickv-meta.json`` sidecar is missing, invalid or contradicts the body."""


class S3EncodeReservedPrefixCollision(DumpTreeError):
    """A reserved dump directory (``_orphans``/``_incomplete_uploads``) holds user objects."""
