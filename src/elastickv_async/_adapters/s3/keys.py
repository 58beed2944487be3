"""S3 key layouts of the snapshot (REFERENCE_NOTES §3.2, ``internal/s3keys``).

Object-scoped keys are built from *ordered segments*: the raw bytes with every ``00``
escaped as ``00 FF``, closed by the terminator ``00 01``; integers are 8-byte big-endian.
"""

from __future__ import annotations

import struct
from typing import Final

import msgspec

from ..._core.errors import AdapterRecordError
from .errors import record_error

__all__ = [
    "BLOB_PREFIX",
    "BUCKET_GEN_PREFIX",
    "BUCKET_META_PREFIX",
    "CHUNKBLOB_PREFIX",
    "CHUNKREF_PREFIX",
    "GC_UPLOAD_PREFIX",
    "MANIFEST_PREFIX",
    "ROUTE_PREFIX",
    "UPLOAD_META_PREFIX",
    "UPLOAD_PART_PREFIX",
    "ChunkKey",
    "ChunkRef",
    "blob_key",
    "bucket_gen_key",
    "bucket_meta_key",
    "encode_ordered_segment",
    "manifest_key",
    "parse_blob_key",
    "parse_bucket_meta_key",
    "parse_chunkblob_key",
    "parse_chunkref_key",
    "parse_chunkref_value",
    "parse_manifest_key",
    "parse_upload_key_bucket",
    "parse_upload_meta_key",
    "partition_unit",
    "route_key",
    "with_generation",
]

BUCKET_META_PREFIX: Final = b"!s3|bucket|meta|"
BUCKET_GEN_PREFIX: Final = b"!s3|bucket|gen|"
MANIFEST_PREFIX: Final = b"!s3|obj|head|"
UPLOAD_META_PREFIX: Final = b"!s3|upload|meta|"
UPLOAD_PART_PREFIX: Final = b"!s3|upload|part|"
BLOB_PREFIX: Final = b"!s3|blob|"
CHUNKREF_PREFIX: Final = b"!s3|chunkref|"
CHUNKBLOB_PREFIX: Final = b"!s3|chunkblob|"
GC_UPLOAD_PREFIX: Final = b"!s3|gc|upload|"
ROUTE_PREFIX: Final = b"!s3route|"

_ESCAPE: Final = 0x00
_TERMINATOR: Final = 0x01
_ESCAPED_ZERO: Final = 0xFF
_U64: Final = struct.Struct(">Q")
_U16: Final = struct.Struct(">H")
_SHA256_HEX_LEN: Final = 64
_CHUNKREF_V1: Final = 1
_CHUNKREF_V2: Final = 2
#: version(1) + sha256(32) + size(8) + source-peer length(2).
_CHUNKREF_FIXED: Final = 1 + 32 + 8 + 2


def encode_ordered_segment(raw: bytes) -> bytes:
    """One ordered key segment: ``00`` escaped as ``00 FF``, then the ``00 01`` terminator."""
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def _segment(key: bytes, offset: int) -> tuple[bytes, int] | None:
    """Decode the segment at ``offset``; return it and the offset after its terminator."""
    j = key.find(b"\x00", offset)
    if 0 <= j < len(key) - 1 and key[j + 1] == _TERMINATOR:
        return key[offset:j], j + 2  # no escaped zero: the bytes as they are
    out = bytearray()
    i = offset
    while True:
        j = key.find(b"\x00", i)
        if j < 0 or j + 1 >= len(key):
            return None
        out += key[i:j]
        marker = key[j + 1]
        if marker == _ESCAPED_ZERO:
            out.append(_ESCAPE)
            i = j + 2
        elif marker == _TERMINATOR:
            return bytes(out), j + 2
        else:
            return None


def _u64(key: bytes, offset: int) -> tuple[int, int] | None:
    if len(key) - offset < _U64.size:
        return None
    return _U64.unpack_from(key, offset)[0], offset + _U64.size


def _malformed(kind: str, key: bytes) -> AdapterRecordError:
    return record_error("ErrS3MalformedKey", f"malformed S3 {kind} key {key[:96]!r}", key=key)


def parse_bucket_meta_key(key: bytes) -> bytes:
    """``!s3|bucket|meta|`` + seg(bucket), nothing after: return the bucket name."""
    seg = _segment(key, len(BUCKET_META_PREFIX))
    if seg is None or seg[1] != len(key):
        raise _malformed("bucket meta", key)
    return seg[0]


def parse_manifest_key(key: bytes) -> tuple[bytes, int, bytes]:
    """``!s3|obj|head|`` + seg(bucket) + u64(gen) + seg(object): ``(bucket, gen, object)``."""
    bucket = _segment(key, len(MANIFEST_PREFIX))
    gen = bucket and _u64(key, bucket[1])
    obj = gen and _segment(key, gen[1])
    if not (bucket and gen and obj) or obj[1] != len(key):
        raise _malformed("object manifest", key)
    return bucket[0], gen[0], obj[0]


class ChunkKey(msgspec.Struct, frozen=True, order=True):
    """Where one chunk belongs: upload, part, part attempt, blob vs offloaded, chunk number.

    The field order is the assembly order (part, attempt, inline before offloaded, chunk);
    ``upload_id`` last only breaks ties the reference leaves to map order.
    """

    part_no: int
    part_version: int
    offloaded: bool
    chunk_no: int
    upload_id: bytes


def _parse_chunk_location(
    key: bytes, prefix: bytes, kind: str, offloaded: bool
) -> tuple[bytes, int, bytes, ChunkKey]:
    bucket = _segment(key, len(prefix))
    gen = bucket and _u64(key, bucket[1])
    obj = gen and _segment(key, gen[1])
    upload = obj and _segment(key, obj[1])
    part = upload and _u64(key, upload[1])
    chunk = part and _u64(key, part[1])
    if not (bucket and gen and obj and upload and part and chunk):
        raise _malformed(kind, key)
    rest = len(key) - chunk[1]
    if rest == 0:
        version = 0
    elif rest == _U64.size:
        version = _U64.unpack_from(key, chunk[1])[0]
    else:
        raise _malformed(kind, key)
    return (
        bucket[0],
        gen[0],
        obj[0],
        ChunkKey(part[0], version, offloaded, chunk[0], upload[0]),
    )


def parse_blob_key(key: bytes) -> tuple[bytes, int, bytes, ChunkKey]:
    """``!s3|blob|`` + bucket, gen, object, upload, part, chunk [+ part version]."""
    return _parse_chunk_location(key, BLOB_PREFIX, "blob", offloaded=False)


def parse_chunkref_key(key: bytes) -> tuple[bytes, int, bytes, ChunkKey]:
    """``!s3|chunkref|``: the same layout as a blob key, for an offloaded chunk."""
    return _parse_chunk_location(key, CHUNKREF_PREFIX, "chunkref", offloaded=True)


def parse_chunkblob_key(key: bytes) -> bytes:
    """``!s3|chunkblob|`` + 64 hex digits: return the 32-byte SHA-256 digest."""
    text = key[len(CHUNKBLOB_PREFIX) :]
    if len(text) != _SHA256_HEX_LEN:
        raise _malformed("chunkblob", key)
    try:
        return bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise _malformed("chunkblob", key) from None


def parse_upload_meta_key(key: bytes) -> tuple[bytes, int, bytes, bytes] | None:
    """``!s3|upload|meta|`` + bucket, gen, object, upload id: the four parts, or ``None``.

    Strict, unlike :func:`parse_upload_key_bucket`'s routing cut: a key that does not fit
    is simply not known as a live upload.
    """
    bucket = _segment(key, len(UPLOAD_META_PREFIX))
    gen = bucket and _u64(key, bucket[1])
    obj = gen and _segment(key, gen[1])
    upload = obj and _segment(key, obj[1])
    if not (bucket and gen and obj and upload) or upload[1] != len(key):
        return None
    return bucket[0], gen[0], obj[0], upload[0]


def parse_upload_key_bucket(prefix: bytes, key: bytes) -> bytes:
    """The bucket of an ``!s3|upload|meta|`` / ``!s3|upload|part|`` key.

    Part keys are parsed strictly (bucket, gen, object, upload, part, nothing after). Meta
    keys are only cut at the first ``00 01``, without undoing ``00 FF`` escapes, exactly as
    the reference routes them.
    """
    if prefix == UPLOAD_PART_PREFIX:
        bucket = _segment(key, len(prefix))
        gen = bucket and _u64(key, bucket[1])
        obj = gen and _segment(key, gen[1])
        upload = obj and _segment(key, obj[1])
        part = upload and _u64(key, upload[1])
        if not (bucket and gen and obj and upload and part) or part[1] != len(key):
            raise _malformed("upload part", key)
        return bucket[0]
    rest = key[len(prefix) :]
    end = rest.find(b"\x00\x01")
    if end < 0:
        raise _malformed("upload meta", key)
    return rest[:end]


class ChunkRef(msgspec.Struct, frozen=True):
    """An offloaded chunk's pointer to its content-addressed ``!s3|chunkblob|`` payload."""

    sha256: bytes
    size: int


def parse_chunkref_value(value: bytes, key: bytes) -> ChunkRef:
    """Decode a chunkref value (v1 or v2); the whole value must be consumed."""
    bad = record_error(
        "ErrS3InvalidChunkRef", f"invalid chunkref value for key {key[:96]!r}", key=key
    )
    if len(value) < _CHUNKREF_FIXED or value[0] not in (_CHUNKREF_V1, _CHUNKREF_V2):
        raise bad
    digest = value[1:33]
    size = _U64.unpack_from(value, 33)[0]
    pos = 41
    peer_len = _U16.unpack_from(value, pos)[0]
    pos += _U16.size + peer_len
    if pos > len(value):
        raise bad
    if value[0] == _CHUNKREF_V2:
        if len(value) - pos < _U16.size:
            raise bad
        replicas = _U16.unpack_from(value, pos)[0]
        pos += _U16.size
        for _ in range(2 * replicas):  # node id and address, each length-prefixed
            if len(value) - pos < _U16.size:
                raise bad
            pos += _U16.size + _U16.unpack_from(value, pos)[0]
            if pos > len(value):
                raise bad
    if pos != len(value):
        raise bad
    return ChunkRef(digest, size)


def with_generation(key: bytes, prefix: bytes, gen: int) -> bytes:
    """``key`` (``prefix`` + seg(bucket) + u64(gen) + ...) with its generation replaced."""
    bucket = _segment(key, len(prefix))
    if bucket is None or _u64(key, bucket[1]) is None:
        raise _malformed(prefix.decode("ascii").strip("!|"), key)
    at = bucket[1]
    return key[:at] + _U64.pack(gen) + key[at + 8 :]


def bucket_meta_key(bucket: bytes) -> bytes:
    """``!s3|bucket|meta|`` + seg(bucket)."""
    return BUCKET_META_PREFIX + encode_ordered_segment(bucket)


def bucket_gen_key(bucket: bytes) -> bytes:
    """``!s3|bucket|gen|`` + seg(bucket)."""
    return BUCKET_GEN_PREFIX + encode_ordered_segment(bucket)


def manifest_key(bucket: bytes, gen: int, obj: bytes) -> bytes:
    """``!s3|obj|head|`` + seg(bucket) + u64(gen) + seg(object)."""
    return (
        MANIFEST_PREFIX
        + encode_ordered_segment(bucket)
        + _U64.pack(gen)
        + encode_ordered_segment(obj)
    )


def blob_key(
    bucket: bytes, gen: int, obj: bytes, upload_id: bytes, part_no: int, chunk_no: int
) -> bytes:
    """``!s3|blob|`` + bucket, gen, object, upload, part, chunk (no part-version trailer)."""
    return (
        BLOB_PREFIX
        + encode_ordered_segment(bucket)
        + _U64.pack(gen)
        + encode_ordered_segment(obj)
        + encode_ordered_segment(upload_id)
        + _U64.pack(part_no)
        + _U64.pack(chunk_no)
    )


#: Rows of one object route by ``!s3route|<bucket segment><generation><object segment>``.
_OBJECT_ROUTED: Final = (
    MANIFEST_PREFIX,
    UPLOAD_META_PREFIX,
    UPLOAD_PART_PREFIX,
    BLOB_PREFIX,
    CHUNKREF_PREFIX,
    GC_UPLOAD_PREFIX,
)


def _segment_end(key: bytes, offset: int) -> int | None:
    """End (after the ``00 01`` terminator) of an escaped key segment starting at ``offset``."""
    i = offset
    while True:
        i = key.find(b"\x00", i)
        if i < 0 or i + 1 >= len(key):
            return None
        follower = key[i + 1]
        if follower == 0x01:
            return i + 2
        if follower != 0xFF:
            return None
        i += 2


def route_key(key: bytes) -> bytes | None:
    """The key the store routes ``key`` by, or ``None`` when no S3 rule applies."""
    prefix = next((p for p in _OBJECT_ROUTED if key.startswith(p)), None)
    if prefix is None:
        return None
    bucket_end = _segment_end(key, len(prefix))
    if bucket_end is None or len(key) < bucket_end + 8:
        return key
    object_end = _segment_end(key, bucket_end + 8)
    if object_end is None:
        return key
    return ROUTE_PREFIX + key[len(prefix) : object_end]


def _unit(prefix: bytes, key: bytes) -> bytes | None:
    if prefix == BLOB_PREFIX:
        return parse_blob_key(key)[0]
    if prefix == CHUNKREF_PREFIX:
        return parse_chunkref_key(key)[0]
    if prefix == MANIFEST_PREFIX:
        return parse_manifest_key(key)[0]
    if prefix == BUCKET_META_PREFIX:
        return parse_bucket_meta_key(key)
    if prefix in (UPLOAD_META_PREFIX, UPLOAD_PART_PREFIX):
        bucket = parse_upload_key_bucket(prefix, key)
        # The decoder files an upload record under its routing cut but remembers a live
        # upload under the strictly parsed bucket; both must be in one partition.
        live = parse_upload_meta_key(key) if prefix == UPLOAD_META_PREFIX else None
        return bucket if live is None or live[0] == bucket else None
    # Chunkblobs are content-addressed: any bucket's objects may reference one.
    return None


def partition_unit(prefix: bytes, key: bytes) -> bytes | None:
    """The bucket a row belongs to (``AdapterSpec.partition_unit``), as the decoder parses it.

    ``None`` for a ``!s3|chunkblob|`` payload, which objects of any bucket may share, and for
    a key the decoder would reject.
    """
    try:
        return _unit(prefix, key)
    except AdapterRecordError:
        return None
