"""S3 key and chunkref parsing against hand-built keys (REFERENCE_NOTES §3.2)."""

from __future__ import annotations

import hashlib
import struct

import pytest
from s3_support import blob, seg, u64
from support import raises_code

from elastickv_async._adapters.s3 import keys
from elastickv_async._adapters.s3.keys import ChunkKey
from elastickv_async._core.errors import AdapterRecordError


def test_blob_key_without_and_with_part_version() -> None:
    key, _ = blob(b"bk", b"a/b", b"", gen=7, upload=b"up", part=2, chunk=3)
    assert keys.parse_blob_key(key) == (b"bk", 7, b"a/b", ChunkKey(2, 0, False, 3, b"up"))
    key, _ = blob(b"bk", b"a/b", b"", gen=7, upload=b"up", part=2, chunk=3, version=9)
    assert keys.parse_blob_key(key) == (b"bk", 7, b"a/b", ChunkKey(2, 9, False, 3, b"up"))


def test_segments_unescape_nul_bytes() -> None:
    key = b"!s3|obj|head|" + b"b\x00\xff1\x00\x01" + u64(1) + b"o\x00\xff\x00\xff\x00\x01"
    assert keys.parse_manifest_key(key) == (b"b\x001", 1, b"o\x00\x00")


def test_a_segment_without_escaped_nul_is_sliced_not_rebuilt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every key of a bucket is parsed on the event loop: a segment holding no ``00`` byte
    (nearly all) is one slice of the key, not rebuilt byte run by byte run."""

    def no_rebuild(*args: object) -> bytearray:
        raise AssertionError("a plain segment was rebuilt")

    monkeypatch.setattr(keys, "bytearray", no_rebuild, raising=False)
    key = b"!s3|obj|head|" + seg(b"bucket") + u64(3) + seg(b"a/b.txt")
    assert keys.parse_manifest_key(key) == (b"bucket", 3, b"a/b.txt")


@pytest.mark.parametrize(
    "key",
    [
        b"!s3|blob|b\x00\x01" + u64(1) + seg(b"o") + seg(b"u") + u64(1),  # no chunk number
        b"!s3|blob|b\x00\x01" + u64(1) + seg(b"o") + seg(b"u") + u64(1) + u64(0) + b"\x01",
        b"!s3|blob|b\x00\x02" + u64(1) + seg(b"o") + seg(b"u") + u64(1) + u64(0),  # bad escape
        b"!s3|blob|b" + u64(1),  # unterminated bucket
    ],
)
def test_malformed_blob_keys_are_typed_errors(key: bytes) -> None:
    with raises_code(AdapterRecordError, "ErrS3MalformedKey"):
        keys.parse_blob_key(key)


def test_manifest_key_must_end_after_the_object() -> None:
    with raises_code(AdapterRecordError, "ErrS3MalformedKey"):
        keys.parse_manifest_key(b"!s3|obj|head|" + seg(b"b") + u64(1) + seg(b"o") + b"x")


def test_bucket_meta_key() -> None:
    assert keys.parse_bucket_meta_key(b"!s3|bucket|meta|" + seg(b"photos")) == b"photos"
    with raises_code(AdapterRecordError, "ErrS3MalformedKey"):
        keys.parse_bucket_meta_key(b"!s3|bucket|meta|" + seg(b"photos") + b"z")


def test_chunkblob_key() -> None:
    digest = hashlib.sha256(b"payload").digest()
    assert keys.parse_chunkblob_key(b"!s3|chunkblob|" + digest.hex().encode()) == digest
    with raises_code(AdapterRecordError, "ErrS3MalformedKey"):
        keys.parse_chunkblob_key(b"!s3|chunkblob|" + digest.hex().encode()[:-1])
    with raises_code(AdapterRecordError, "ErrS3MalformedKey"):
        keys.parse_chunkblob_key(b"!s3|chunkblob|" + b"zz" * 32)


def test_upload_meta_bucket_is_cut_at_the_first_terminator_without_unescaping() -> None:
    # The reference routes meta keys by the raw bytes before the first 00 01.
    key = b"!s3|upload|meta|" + b"a\x00\xffb\x00\x01" + u64(1) + seg(b"o") + seg(b"u")
    assert keys.parse_upload_key_bucket(keys.UPLOAD_META_PREFIX, key) == b"a\x00\xffb"
    part_key = b"!s3|upload|part|" + seg(b"a\x00b") + u64(1) + seg(b"o") + seg(b"u") + u64(2)
    assert keys.parse_upload_key_bucket(keys.UPLOAD_PART_PREFIX, part_key) == b"a\x00b"
    with raises_code(AdapterRecordError, "ErrS3MalformedKey"):
        keys.parse_upload_key_bucket(keys.UPLOAD_PART_PREFIX, part_key + b"x")


def _chunkref(version: int, size: int, peer: bytes, replicas: list[tuple[bytes, bytes]]) -> bytes:
    value = bytes([version]) + b"\x11" * 32 + struct.pack(">QH", size, len(peer)) + peer
    if version == 2:
        value += struct.pack(">H", len(replicas))
        for node, addr in replicas:
            value += struct.pack(">H", len(node)) + node + struct.pack(">H", len(addr)) + addr
    return value


def test_chunkref_values_v1_and_v2() -> None:
    ref = keys.parse_chunkref_value(_chunkref(1, 18, b"n1", []), b"k")
    assert (ref.sha256, ref.size) == (b"\x11" * 32, 18)
    ref = keys.parse_chunkref_value(
        _chunkref(2, 5, b"", [(b"n2", b"10.0.0.2:1"), (b"n3", b"")]), b"k"
    )
    assert ref.size == 5


@pytest.mark.parametrize(
    "value",
    [
        _chunkref(3, 1, b"", []),  # unknown version
        _chunkref(1, 1, b"peer", [])[:-1],  # truncated source peer
        _chunkref(1, 1, b"", []) + b"\x00",  # trailing byte
        _chunkref(2, 1, b"", [(b"n", b"a")])[:-1],  # truncated replica
        b"\x01" + b"\x00" * 10,
    ],
)
def test_bad_chunkref_values_are_typed_errors(value: bytes) -> None:
    with raises_code(AdapterRecordError, "ErrS3InvalidChunkRef"):
        keys.parse_chunkref_value(value, b"k")


def test_chunk_keys_sort_in_assembly_order() -> None:
    # Part, then part attempt, then inline before offloaded, then chunk number.
    ordered = [
        ChunkKey(1, 0, False, 1, b"u"),
        ChunkKey(1, 2, False, 0, b"u"),
        ChunkKey(1, 2, True, 0, b"u"),
        ChunkKey(2, 0, False, 0, b"u"),
    ]
    assert sorted(reversed(ordered)) == ordered


def test_restore_keys_match_the_layout() -> None:
    assert keys.bucket_gen_key(b"b") == b"!s3|bucket|gen|b\x00\x01"
    assert keys.blob_key(b"b", 1, b"o", b"elastickv-restore", 1, 5) == (
        b"!s3|blob|b\x00\x01" + u64(1) + b"o\x00\x01elastickv-restore\x00\x01" + u64(1) + u64(5)
    )
