"""The S3 encoder: dump tree -> records, validation failures, and decode/encode round trips."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from s3_support import bucket_meta, encode_all, encoder, harness, seg, simple_object, u64
from support import DigestLog, encode_context, hand_built_fsm, raises_code

from elastickv_async import DecodeOptions, EncodeOptions, decode_snapshot, encode_snapshot
from elastickv_async._adapters.base import Deferred
from elastickv_async._adapters.s3 import keymap
from elastickv_async._adapters.s3.encode import S3Encoder, _Bodies
from elastickv_async._core.dump.tree import (
    DumpTree,
    TreeDir,
    TreeEntry,
    TreeFile,
    recording_reads,
)
from elastickv_async._core.encode.output import SnapshotStream
from elastickv_async._core.errors import DumpTreeError, UnsafeDumpEntry
from elastickv_async._core.memory import MIN_MEMORY_BUDGET

pytestmark = pytest.mark.anyio

MIB = 1 << 20


def _sidecar(size: int, **fields: Any) -> bytes:
    return json.dumps({"format_version": 1, "size_bytes": size, **fields}).encode()


def _tree(
    tmp_path: Path, objects: dict[str, bytes], *, bucket: str = "b", **bucket_fields: Any
) -> Path:
    root = tmp_path / "dump"
    bdir = root / "s3" / bucket
    bdir.mkdir(parents=True)
    (bdir / "_bucket.json").write_bytes(
        json.dumps({"format_version": 1, "name": bucket, **bucket_fields}).encode()
    )
    for rel, body in objects.items():
        path = bdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        (bdir / (rel + ".elastickv-meta.json")).write_bytes(_sidecar(len(body), etag="e"))
    return root


def _blob_key(bucket: bytes, obj: bytes, chunk: int) -> bytes:
    return (
        b"!s3|blob|"
        + seg(bucket)
        + u64(1)
        + seg(obj)
        + seg(b"elastickv-restore")
        + u64(1)
        + u64(chunk)
    )


def _manifest_key(bucket: bytes, obj: bytes) -> bytes:
    return b"!s3|obj|head|" + seg(bucket) + u64(1) + seg(obj)


async def test_bucket_records_and_rechunked_body(tmp_path: Path) -> None:
    body = bytes(range(256)) * (10 * 1024) + b"tail"  # 2.5 MiB + 4 bytes
    root = _tree(tmp_path, {"dir/big.bin": body, "empty": b""}, owner="alice", acl="private")
    records = await encode_all(root, tmp_path / "scratch")
    assert records[b"!s3|bucket|meta|b\x00\x01"] == (
        b'{"bucket_name":"b","generation":1,"created_at_hlc":0,"owner":"alice","region":"",'
        b'"acl":"private"}'
    )
    assert records[b"!s3|bucket|gen|b\x00\x01"] == b"\x00\x00\x00\x00\x00\x00\x00\x01"
    chunks = [records[_blob_key(b"b", b"dir/big.bin", i)] for i in range(3)]
    assert [len(c) for c in chunks] == [MIB, MIB, len(body) - 2 * MIB]
    assert b"".join(chunks) == body
    manifest = json.loads(records[_manifest_key(b"b", b"dir/big.bin")])
    assert manifest["upload_id"] == "elastickv-restore"
    assert manifest["parts"] == [
        {
            "part_no": 1,
            "etag": "e",
            "size_bytes": len(body),
            "chunk_count": 3,
            "chunk_sizes": [MIB, MIB, len(body) - 2 * MIB],
            "part_version": 0,
            "chunk_ref_version": 0,
            "offloaded": False,
        }
    ]
    assert json.loads(records[_manifest_key(b"b", b"empty")])["parts"] is None
    assert len(records) == 2 + 3 + 1 + 1


async def test_decode_then_encode_restores_every_original_key(tmp_path: Path) -> None:
    keys = [
        b"plain.txt", b"path/to", b"path/to/sub", b"folder/", b"folder/x", b"a//b", b"./dot",
        b"x/../y", b"dir/" + b"L" * 304 + b"/leaf", b"_bucket.json", b"KEYMAP.jsonl",
        b"_orphans/o", b"evil.elastickv-meta.json", "ünï/cödé".encode(), b"",
    ]  # fmt: skip
    records = [bucket_meta(b"bk")]
    for key in keys:
        records += simple_object(b"bk", key, b"body:" + key, etag="e")
    h = harness(tmp_path / "decode", rename_collisions=True)
    await h.run(records)
    encoded = await encode_all(h.root, tmp_path / "scratch")
    restored = {
        k[len(_manifest_key(b"bk", b"")) - 2 : -2]
        for k in encoded
        if k.startswith(b"!s3|obj|head|")
    }
    assert restored == set(keys)
    for key in keys:
        assert encoded[_blob_key(b"bk", key, 0)] == b"body:" + key


async def test_symlinked_object_file_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"real.txt": b"x"})
    (root / "s3/b/link.txt").symlink_to(root / "s3/b/real.txt")
    (root / "s3/b/link.txt.elastickv-meta.json").write_bytes(_sidecar(1))
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match=r"link\.txt"):
        await encode_all(root, tmp_path / "scratch")


async def test_symlinked_sidecar_hard_link_and_fifo_are_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "side", {"o": b"x"})
    side = root / "s3/b/o.elastickv-meta.json"
    (root / "s3/b/real.json").write_bytes(side.read_bytes())
    side.unlink()
    side.symlink_to(root / "s3/b/real.json")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry"):
        await encode_all(root, tmp_path / "scratch")

    root = _tree(tmp_path / "hard", {"o": b"x"})
    os.link(root / "s3/b/o", tmp_path / "outside")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="hard link"):
        await encode_all(root, tmp_path / "scratch")

    root = _tree(tmp_path / "fifo", {})
    os.mkfifo(root / "s3/b/pipe")
    (root / "s3/b/pipe.elastickv-meta.json").write_bytes(_sidecar(0))
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry"):
        await encode_all(root, tmp_path / "scratch")


async def test_symlinked_bucket_directory_and_stray_files_are_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"o": b"x"})
    (root / "s3/link").symlink_to(root / "s3/b")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="s3/link"):
        await encode_all(root, tmp_path / "scratch")
    (root / "s3/link").unlink()
    (root / "s3/_notes").write_bytes(b"ignored: names starting with _ are not buckets")
    assert len(await encode_all(root, tmp_path / "scratch")) == 4


def _write(name: str, data: bytes) -> Any:
    return lambda bucket_dir: (bucket_dir / name).write_bytes(data)


def _reserved_dir_with_sidecar(bucket_dir: Path) -> None:
    (bucket_dir / "_orphans/x").mkdir(parents=True)
    (bucket_dir / "_orphans/x/k.elastickv-meta.json").write_bytes(b"{}")


_SIDE = "o.elastickv-meta.json"
_BUCKET = "_bucket.json"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda b: (b / _SIDE).unlink(), "ErrS3EncodeInvalidManifest"),
        (_write(_SIDE, _sidecar(5)), "ErrS3EncodeInvalidManifest"),
        (_write(_SIDE, b'{"format_version":2,"size_bytes":1}'), "ErrS3EncodeInvalidManifest"),
        (_write(_SIDE, b"{"), "ErrS3EncodeInvalidManifest"),
        (lambda b: (b / _BUCKET).unlink(), "ErrS3EncodeInvalidBucket"),
        (_write(_BUCKET, b'{"format_version":1,"name":"c"}'), "ErrS3EncodeInvalidBucket"),
        (_write(_BUCKET, b'{"format_version":1,"name":""}'), "ErrS3EncodeInvalidBucket"),
        (_write(_BUCKET, b'{"format_version":0,"name":"b"}'), "ErrS3EncodeInvalidBucket"),
        (_reserved_dir_with_sidecar, "ErrS3EncodeReservedPrefixCollision"),
    ],
)
async def test_invalid_trees_are_typed_errors(tmp_path: Path, change: Any, code: str) -> None:
    root = _tree(tmp_path, {"o": b"x"})
    change(root / "s3/b")
    with raises_code(DumpTreeError, code):
        await encode_all(root, tmp_path / "scratch")


async def test_decoder_payload_directories_are_skipped(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"o": b"x"})
    (root / "s3/b/_orphans/o/gen-1").mkdir(parents=True)
    (root / "s3/b/_orphans/o/gen-1/u_1.bin").write_bytes(b"chunk")
    (root / "s3/b/_incomplete_uploads").mkdir()
    (root / "s3/b/_incomplete_uploads/records.jsonl").write_bytes(b"{}\n")
    assert len(await encode_all(root, tmp_path / "scratch")) == 4


def _keymap(root: Path, *records: dict[str, Any] | str) -> None:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (root / "s3/b/KEYMAP.jsonl").write_text("".join(line + "\n" for line in lines))


async def test_keymap_renames_are_reversed(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"a.elastickv-leaf-data": b"leaf", "a/b": b"child"})
    _keymap(root, {"encoded": "a.elastickv-leaf-data", "original": "YQ", "kind": "s3-leaf-data"})
    records = await encode_all(root, tmp_path / "scratch")
    assert records[_blob_key(b"b", b"a", 0)] == b"leaf"
    assert _manifest_key(b"b", b"a.elastickv-leaf-data") not in records


async def test_a_user_object_named_keymap_jsonl_is_an_object(tmp_path: Path) -> None:
    # A reference-made tree keeps a user object KEYMAP.jsonl (it has a sidecar).
    root = _tree(tmp_path, {"KEYMAP.jsonl": b"not a tracker"})
    records = await encode_all(root, tmp_path / "scratch")
    assert records[_blob_key(b"b", b"KEYMAP.jsonl", 0)] == b"not a tracker"


@pytest.mark.parametrize(
    "records",
    [
        ({"encoded": "o", "original": "YQ", "kind": "s3-leaf-data"},),  # no leaf suffix
        ({"encoded": "o", "original": "YQ", "kind": "sha-fallback"},) * 2,  # duplicate
        ({"encoded": "o", "original": "YQ", "kind": "mystery"},),
        ({"encoded": "o", "original": "YQ"},),
        ({"encoded": "o", "original": None, "kind": "sha-fallback"},),
        ({"encoded": "o", "original": "!!", "kind": "sha-fallback"},),
        ({"encoded": "../o", "original": "YQ", "kind": "sha-fallback"},),
        ({"encoded": "_orphans/o", "original": "YQ", "kind": "sha-fallback"},),
        (
            {"encoded": "o", "original": "YQ", "kind": "meta-suffix-rename"},
        ),  # original lacks suffix
        ({"encoded": "o", "original": "YS8", "kind": "s3-dir-marker"},),  # wrong marker name
        ("",),
        ("not json",),
    ],
)
async def test_invalid_keymap_records_are_refused(tmp_path: Path, records: Any) -> None:
    root = _tree(tmp_path, {"o": b"x"})
    _keymap(root, *records)
    with raises_code(DumpTreeError, "ErrInvalidKeymapRecord"):
        await encode_all(root, tmp_path / "scratch")


async def test_keymap_naming_a_missing_object_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"o": b"x"})
    _keymap(root, {"encoded": "gone", "original": "YQ", "kind": "sha-fallback"})
    with raises_code(DumpTreeError, "ErrS3EncodeInvalidBucket", match="gone"):
        await encode_all(root, tmp_path / "scratch")


async def test_missing_s3_directory_yields_nothing(tmp_path: Path) -> None:
    assert await encode_all(tmp_path, tmp_path / "scratch") == {}


async def test_bodies_read_with_the_walk_or_deferred_keep_their_bytes(tmp_path: Path) -> None:
    # 60 bodies of 4-240 KiB (about 7 MiB: several walk batches of small bodies, and bodies
    # over the deferral size), one exactly one chunk, one a byte over.
    objects = {f"d{n % 3}/o{n:02d}": bytes([n]) * ((4 + 4 * n) << 10) for n in range(60)}
    objects["one-chunk"] = b"c" * MIB
    objects["over"] = b"v" * MIB + b"!"
    root = _tree(tmp_path, objects)
    records = await encode_all(root, tmp_path / "scratch")
    for rel, body in objects.items():
        chunks = [body[i : i + MIB] for i in range(0, len(body), MIB)]
        for n, chunk in enumerate(chunks):
            assert records[_blob_key(b"b", rel.encode(), n)] == chunk, rel
        assert _blob_key(b"b", rel.encode(), len(chunks)) not in records
    assert len(records) == 2 + 60 * 2 + 2 + 3


@pytest.mark.parametrize("size", [10, 3 * MIB])
async def test_a_body_that_shrinks_before_it_is_read_is_a_typed_error(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path, {"o": b"x" * size})
    open_file = TreeDir.open_file

    def shrinking_open(self: TreeDir, entry: TreeEntry) -> TreeFile:
        if entry.name == "o":
            os.truncate(root / "s3/b/o", size - 1)
        return open_file(self, entry)

    monkeypatch.setattr(TreeDir, "open_file", shrinking_open)
    with raises_code(DumpTreeError, "ErrS3EncodeInvalidManifest", match="changed size"):
        await encode_all(root, tmp_path / "scratch")


async def _walked(root: Path, scratch: Path) -> dict[bytes, bytes | Deferred]:
    """The records as the walk hands them over, deferred values unread."""
    out: dict[bytes, bytes | Deferred] = {}
    async for batch in encoder(root, scratch).batches():
        out.update(batch)
    return out


async def test_large_bodies_are_read_only_when_written(tmp_path: Path) -> None:
    """A small body comes with the walk; the chunks of a body of 64 KiB or more are deferred
    and read when their records are written: a body rewritten in place after the walk is
    read as it is then (the output is the one place its bytes go)."""
    bodies = {"small": b"s" * 1000, "mid": b"m" * (100 << 10), "big": b"b" * (2 * MIB + 5)}
    root = _tree(tmp_path, bodies)
    records = await _walked(root, tmp_path / "scratch")
    assert records[_blob_key(b"b", b"small", 0)] == bodies["small"]
    deferred = {
        (rel, n): records[_blob_key(b"b", rel.encode(), n)]
        for rel, n in [("mid", 0), ("big", 0), ("big", 1), ("big", 2)]
    }
    assert all(isinstance(v, Deferred) for v in deferred.values())
    assert [len(v) for v in deferred.values()] == [100 << 10, MIB, MIB, 5]
    (root / "s3/b/big").write_bytes(b"B" * (2 * MIB + 5))  # same file, same size
    chunks = []
    for value in deferred.values():
        assert isinstance(value, Deferred)
        chunks.append(await anyio.to_thread.run_sync(value.source.read, value.token, len(value)))
    assert chunks == [b"m" * (100 << 10), b"B" * MIB, b"B" * MIB, b"B" * 5]


async def test_a_body_replaced_before_it_is_written_is_refused(tmp_path: Path) -> None:
    """A deferred body must still be the file the walk listed."""
    root = _tree(tmp_path, {"o": b"x" * MIB})
    records = await _walked(root, tmp_path / "scratch")
    chunk = records[_blob_key(b"b", b"o", 0)]
    assert isinstance(chunk, Deferred)
    # Written beside it first, so the new file cannot reuse the old one's inode number.
    (root / "s3/b/o.new").write_bytes(b"y" * MIB)
    os.replace(root / "s3/b/o.new", root / "s3/b/o")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="replaced"):
        await anyio.to_thread.run_sync(chunk.source.read, chunk.token, len(chunk))


async def test_small_bodies_are_hashed_as_the_walk_reads_them(tmp_path: Path) -> None:
    """The walk reads a small body once, to its end, recording its digest for the CHECKSUMS
    check; a deferred body is not read (nor recorded) by the walk."""
    bodies = {"small": b"s" * 1000, "big": b"b" * (100 << 10)}
    root = _tree(tmp_path, bodies)
    digests = DigestLog()
    with recording_reads(digests):
        await _walked(root, tmp_path / "scratch")
    assert digests.digests["s3/b/small"] == hashlib.sha256(bodies["small"]).digest()
    assert "s3/b/big" not in digests.digests
    assert "s3/b/big.elastickv-meta.json" in digests.digests


async def _read_chunks(
    records: dict[bytes, bytes | Deferred], rel: str, order: list[int]
) -> list[bytes]:
    out = []
    for n in order:
        chunk = records[_blob_key(b"b", rel.encode(), n)]
        assert isinstance(chunk, Deferred)
        out.append(await anyio.to_thread.run_sync(chunk.source.read, chunk.token, len(chunk)))
    return out


async def test_a_deferred_body_read_in_order_to_its_end_records_its_digest(
    tmp_path: Path,
) -> None:
    """Reading a deferred body's chunks in key order (as the snapshot's writing does) records
    the body's digest, as a file read to its end does: the CHECKSUMS check need not read it
    again. Chunks read out of order, or from a body that grew since the walk, record nothing."""
    bodies = {"big": os.urandom(2 * MIB + 5), "odd": b"o" * (2 * MIB), "grown": b"g" * MIB * 2}
    root = _tree(tmp_path, bodies)
    digests = DigestLog()
    with recording_reads(digests):
        records = await _walked(root, tmp_path / "scratch")
    assert b"".join(await _read_chunks(records, "big", [0, 1, 2])) == bodies["big"]
    assert digests.digests["s3/b/big"] == hashlib.sha256(bodies["big"]).digest()
    await _read_chunks(records, "odd", [1, 0])
    assert "s3/b/odd" not in digests.digests
    await _read_chunks(records, "grown", [0])
    with (root / "s3/b/grown").open("ab") as fh:
        fh.write(b"more")
    await _read_chunks(records, "grown", [1])
    assert "s3/b/grown" not in digests.digests


async def test_deferred_bodies_written_to_a_stream_are_hashed_by_its_hashing_thread(
    tmp_path: Path,
) -> None:
    """Chunks read while a snapshot stream is written have their body digests taken in the
    stream's hashing thread, not the reading one, and recorded all the same."""
    bodies = {"a": os.urandom(2 * MIB + 7), "b": os.urandom(MIB)}
    root = _tree(tmp_path, bodies)
    digests = DigestLog()
    recorders: set[int] = set()
    record = digests.record

    def recording(rel: str, digest: bytes) -> None:
        recorders.add(threading.get_ident())
        record(rel, digest)

    digests.record = recording  # type: ignore[method-assign]
    readers: set[int] = set()

    def framed(records: dict[bytes, bytes | Deferred]) -> Iterator[tuple[bytes, bytes]]:
        for key in sorted(records):
            value = records[key]
            if isinstance(value, Deferred):
                readers.add(threading.get_ident())
                value = value.source.read(value.token, len(value))
            yield key + b"\x00" * 8, value

    with recording_reads(digests):
        records = await _walked(root, tmp_path / "scratch")
        recorders.clear()  # the walk's own records (sidecars)
        stream = SnapshotStream(io.BytesIO(), framed(records), 1)
        await stream.write()
    for name, body in bodies.items():
        assert digests.digests[f"s3/b/{name}"] == hashlib.sha256(body).digest()
    assert recorders and readers and recorders.isdisjoint(readers)


async def test_deferred_bodies_open_their_directory_once_until_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bodies read in key order open each directory once (not the path from the root at
    every chunk); the directory kept open is closed by ``close()``, and a read after it
    opens its own again. The chunks are the bodies' bytes."""
    bodies = {
        f"{d}/{n}": os.urandom(MIB + 100 * (i + 1))
        for i, (d, n) in enumerate([("x", "a"), ("x", "b"), ("y", "c"), ("y", "d")])
    }
    root = _tree(tmp_path, bodies)
    records = await _walked(root, tmp_path / "scratch")
    opened: list[TreeDir] = []
    open_dir = DumpTree.open_dir

    def spy(tree: DumpTree, parts: Any) -> TreeDir | None:
        directory = open_dir(tree, parts)
        if directory is not None:
            opened.append(directory)
        return directory

    monkeypatch.setattr(DumpTree, "open_dir", spy)
    for rel, body in bodies.items():
        assert b"".join(await _read_chunks(records, rel, [0, 1])) == body
    assert [d.rel for d in opened] == ["s3/b/x", "s3/b/y"]
    assert opened[0].fd == -1 and opened[1].fd >= 0  # the one in use stays open
    source = next(v for v in records.values() if isinstance(v, Deferred)).source
    assert isinstance(source, _Bodies)
    await anyio.to_thread.run_sync(source.close)
    assert opened[1].fd == -1
    assert b"".join(await _read_chunks(records, "x/a", [0, 1])) == bodies["x/a"]
    assert [d.rel for d in opened] == ["s3/b/x", "s3/b/y", "s3/b/x"]
    await anyio.to_thread.run_sync(source.close)


async def test_an_encode_closes_the_directory_its_bodies_kept_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once an encode is over, no directory opened for its deferred bodies is left open."""
    bodies = {"a/big": os.urandom(2 * MIB), "b/mid": os.urandom(100 << 10)}
    records = [bucket_meta(b"bk")]
    for rel, body in bodies.items():
        records += simple_object(b"bk", rel.encode(), body, etag="e")
    (tmp_path / "in.fsm").write_bytes(hand_built_fsm(1 << 40, records))
    await decode_snapshot(tmp_path / "in.fsm", tmp_path / "tree", DecodeOptions(workers=0))
    opened: list[TreeDir] = []
    directory = _Bodies._directory

    def spy(bodies: _Bodies, parts: tuple[str, ...]) -> TreeDir:
        found = directory(bodies, parts)
        opened.append(found)
        return found

    monkeypatch.setattr(_Bodies, "_directory", spy)
    out = tmp_path / "out.fsm"
    await encode_snapshot(tmp_path / "tree", out, EncodeOptions(workers=0))
    assert len(opened) == 3  # a/big's two chunks, then b/mid
    assert all(d.fd == -1 for d in opened)


async def test_a_small_body_that_grows_before_it_is_read_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path, {"o": b"x" * 10})
    open_file = TreeDir.open_file

    def growing_open(self: TreeDir, entry: TreeEntry) -> TreeFile:
        if entry.name == "o":
            (root / "s3/b/o").write_bytes(b"x" * 11)
        return open_file(self, entry)

    monkeypatch.setattr(TreeDir, "open_file", growing_open)
    with raises_code(DumpTreeError, "ErrS3EncodeInvalidManifest", match="changed size"):
        await encode_all(root, tmp_path / "scratch")


@pytest.mark.parametrize("memory", [None, 8 << 10])
async def test_walk_batches_and_upload_blocks_take_half_the_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory: int | None
) -> None:
    """A walk batch's small bodies and a block of ``records.jsonl`` are read within half the
    encoder's memory share (past it by the one body or line that crosses it), and the
    records are those of the default share."""
    import base64

    from support import encode_context

    from elastickv_async._adapters.s3 import encode as s3_encode
    from elastickv_async._adapters.s3.encode import S3Encoder

    root = _tree(tmp_path, {f"o{i:03d}": bytes([i]) * 3000 for i in range(60)})
    lines = []
    for i in range(200):
        part = b"!s3|upload|part|" + seg(b"b") + u64(1) + seg(b"v") + seg(b"u-1") + u64(i)
        doc = {"prefix": "!s3|upload|part|", "key": base64.b64encode(part).decode(), "value": ""}
        lines.append(json.dumps(doc) + "\n")
    (root / "s3/b/_incomplete_uploads").mkdir()
    (root / "s3/b/_incomplete_uploads/records.jsonl").write_text("".join(lines))

    walked: list[int] = []
    next_batch = s3_encode._BucketScan.next_batch

    def batch(self: Any, read_bytes: int) -> Any:
        found = next_batch(self, read_bytes)
        if found:
            bodies = [len(obj.body or b"") for obj in found]
            assert sum(bodies) - bodies[-1] < read_bytes
            walked.append(read_bytes)
        return found

    blocks: list[int] = []
    upload_batch = s3_encode._upload_batch

    def block(fh: Any, rel: str, limit: int) -> Any:
        found = upload_batch(fh, rel, limit)
        if found:
            blocks.append(limit)
        return found

    async def encode(share: int | None) -> dict[bytes, bytes]:
        ctx = encode_context(root, tmp_path / "scratch", "s3")
        ctx.full_fidelity = True  # the uploads are read
        if share is not None:
            ctx.memory = share
        out: dict[bytes, bytes] = {}
        async for records in S3Encoder(ctx).batches():
            for key, value in records:
                assert isinstance(value, bytes)
                out[key] = value
        return out

    default = await encode(None)
    monkeypatch.setattr(s3_encode._BucketScan, "next_batch", batch)
    monkeypatch.setattr(s3_encode, "_upload_batch", block)
    assert await encode(memory) == default
    assert len(default) == 2 + 2 * 60 + 200
    if memory is None:
        assert walked == [s3_encode._SCAN_BYTES] and blocks == [s3_encode._READ_BLOCK]
    else:
        assert set(walked) == set(blocks) == {memory // 2}
        assert len(walked) > 10 and len(blocks) > 3


# --- KEYMAP within the memory share -------------------------------------------------------------


def _keymap_spills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The runs each bucket's KEYMAP spilled, one entry per bucket as its scan closes."""
    spills: list[int] = []
    close = keymap.BucketKeymap.close

    def closing(self: keymap.BucketKeymap) -> None:
        spills.append(self.spills)
        close(self)

    monkeypatch.setattr(keymap.BucketKeymap, "close", closing)
    return spills


async def _encode_with_share(root: Path, scratch: Path, share: int | None) -> dict[bytes, bytes]:
    ctx = encode_context(root, scratch, "s3")
    if share is not None:
        ctx.memory = share
    out: dict[bytes, bytes] = {}
    async for batch in S3Encoder(ctx).batches():
        for key, value in batch:
            assert key not in out, key
            if isinstance(value, Deferred):
                value = await anyio.to_thread.run_sync(value.source.read, value.token, len(value))
            out[key] = value
    return out


def _renamed_tree(tmp_path: Path) -> tuple[Path, set[bytes]]:
    """A bucket whose KEYMAP renames objects throughout the walk: names whose bytes sort
    differently from their slash paths (``a.b`` before ``a/b`` as strings, after it in the
    walk), one beside a directory of the same name, and renamed keys deep in directories."""
    objects = {"a.b.elastickv-meta-key": b"1", "a/b.elastickv-meta-key": b"2", "a/z": b"3"}
    lines = [
        {"encoded": "a.b.elastickv-meta-key", "original": "a.b.elastickv-meta.json"},
        {"encoded": "a/b.elastickv-meta-key", "original": "a/b.elastickv-meta.json"},
    ]
    for i in range(120):
        encoded = f"d{i % 7}/k{i:03d}.elastickv-meta-key"
        objects[encoded] = b"body %d" % i
        lines.append({"encoded": encoded, "original": encoded[: -len("-key")] + ".json"})
    root = _tree(tmp_path, objects)
    originals = set()
    records = []
    for line in lines:
        original = line["original"].encode()
        originals.add(original)
        records.append(
            {
                "encoded": line["encoded"],
                "original": base64.urlsafe_b64encode(original).rstrip(b"=").decode(),
                "kind": "meta-suffix-rename",
            }
        )
    _keymap(root, *reversed(records))  # file order is not walk order
    return root, originals | {b"a/z"}


async def test_a_keymap_past_its_share_is_sorted_and_joined_with_the_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KEYMAP larger than its half of the encoder's share is sorted in the walk's order
    (spilled under scratch) and merge-joined: the records are those of the default share,
    every original key restored, and no spilled run is left behind."""
    root, originals = _renamed_tree(tmp_path)
    default = await _encode_with_share(root, tmp_path / "scratch-default", None)
    spills = _keymap_spills(monkeypatch)
    small = await _encode_with_share(root, tmp_path / "scratch-small", 4 << 10)
    assert small == default
    assert spills and spills[0] > 1
    restored = {k[len(_manifest_key(b"b", b"")) - 2 : -2] for k in default if b"|obj|head|" in k}
    assert restored == originals
    assert not [p for p in (tmp_path / "scratch-small").rglob("*") if p.is_file()]


@pytest.mark.parametrize("share", [None, 2])
@pytest.mark.parametrize(
    ("lines", "code", "match"),
    [
        # A record naming no object (between and after the walked ones), the first named.
        (
            [("zz", "sha-fallback"), ("o", "sha-fallback"), ("m", "sha-fallback")],
            "ErrS3EncodeInvalidBucket",
            "names 'm', which is not an object file",
        ),
        # One object file recorded twice.
        ([("o", "sha-fallback"), ("o", "sha-fallback")], "ErrInvalidKeymapRecord", "'o' twice"),
        # A path no object can have, recorded twice.
        (
            [("x\u0000y", "sha-fallback"), ("x\u0000y", "sha-fallback")],
            "ErrInvalidKeymapRecord",
            "twice",
        ),
        (
            [("x\u0000y", "sha-fallback"), ("o", "sha-fallback")],
            "ErrS3EncodeInvalidBucket",
            "which is not an object file",
        ),
    ],
)
async def test_keymap_errors_are_the_same_held_or_sorted(
    tmp_path: Path, share: int | None, lines: list[tuple[str, str]], code: str, match: str
) -> None:
    root = _tree(tmp_path, {"o": b"x", "p": b"y"})
    _keymap(root, *({"encoded": e, "original": "YQ", "kind": k} for e, k in lines))
    with raises_code(DumpTreeError, code, match=match):
        await _encode_with_share(root, tmp_path / "scratch", share)


async def test_the_smallest_budget_spills_the_keymap_and_writes_the_same_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decoded bucket of 2000 renamed keys (``--rename-collisions``), encoded under the
    smallest ``--memory-budget``, spills its KEYMAP and gives the default budget's bytes."""
    records = [bucket_meta(b"bk")]
    for i in range(2000):
        records += simple_object(b"bk", b"d%d/k%04d.elastickv-meta.json" % (i % 9, i), b"%d" % i)
    (tmp_path / "in.fsm").write_bytes(hand_built_fsm(1 << 40, records))
    options = DecodeOptions(workers=0, adapter_options={"s3": {"rename_collisions": True}})
    await decode_snapshot(tmp_path / "in.fsm", tmp_path / "tree", options)
    assert (tmp_path / "tree/s3/bk/KEYMAP.jsonl").read_text().count("\n") == 2000

    spills = _keymap_spills(monkeypatch)
    await encode_snapshot(tmp_path / "tree", tmp_path / "default.fsm", EncodeOptions(workers=0))
    tiny = EncodeOptions(workers=0, memory_budget=MIN_MEMORY_BUDGET)
    await encode_snapshot(tmp_path / "tree", tmp_path / "tiny.fsm", tiny)
    assert spills[0] == 0 and spills[1] > 1
    assert (tmp_path / "tiny.fsm").read_bytes() == (tmp_path / "default.fsm").read_bytes()


async def test_sidecars_are_read_from_the_listing_without_a_second_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sidecar listed right after its body is opened from its listed entry; one that a
    name sorting between them separates (``a-b`` before ``a.elastickv-meta.json``) is
    looked up by name: the records are the same either way."""
    objects = {"a": b"1", "a-b": b"2", "c/d": b"3", "c/e": b"4"}
    root = _tree(tmp_path, objects)
    looked_up: list[str] = []
    lookup = TreeDir.lookup

    def counted(self: TreeDir, name: str) -> TreeEntry | None:
        looked_up.append(name)
        return lookup(self, name)

    monkeypatch.setattr(TreeDir, "lookup", counted)
    records = await encode_all(root, tmp_path / "scratch")
    for rel, body in objects.items():
        assert records[_blob_key(b"b", rel.encode(), 0)] == body
        assert json.loads(records[_manifest_key(b"b", rel.encode())])["etag"] == "e"
    sidecars = [name for name in looked_up if name.endswith(".elastickv-meta.json")]
    # Each listed once; "a"'s looked up again (the listing had "a-b" next).
    assert sorted(sidecars) == sorted(
        [f"{rel.split('/')[-1]}.elastickv-meta.json" for rel in objects] + ["a.elastickv-meta.json"]
    )


async def test_an_object_error_comes_before_an_unsafe_entry_listed_after_it(
    tmp_path: Path,
) -> None:
    """Errors keep the listing's order with the entry ahead already looked at: a body
    without a sidecar is reported before the symlink that follows it."""
    root = _tree(tmp_path, {"z": b"x"})
    (root / "s3/b/a").write_bytes(b"no sidecar")
    (root / "s3/b/b").symlink_to(root / "s3/b/z")
    with raises_code(DumpTreeError, "ErrS3EncodeInvalidManifest", match="no .elastickv-meta"):
        await encode_all(root, tmp_path / "scratch")
    (root / "s3/b/a").unlink()
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="symlink"):
        await encode_all(root, tmp_path / "scratch")
