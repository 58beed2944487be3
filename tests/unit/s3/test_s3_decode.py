"""The S3 decoder end to end on hand-built records, written through a real DumpWriter."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from s3_support import (
    Harness,
    blob,
    bucket_meta,
    harness,
    manifest,
    part,
    routed,
    seg,
    simple_object,
    u64,
)
from support import raises_code

from elastickv_async._adapters.base import Routed
from elastickv_async._core.errors import AdapterRecordError, OutputError
from elastickv_async._core.memory import DEFAULT_ADAPTER_MEMORY

pytestmark = pytest.mark.anyio

MIB = 1 << 20


def _body(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


def _spill_left(h: Harness) -> list[Path]:
    return [p for p in h.scratch.rglob("*") if p.is_file()]


async def test_single_and_empty_objects_with_sidecars(tmp_path: Path) -> None:
    h = harness(tmp_path)
    scope = await h.run(
        [
            bucket_meta(b"photos", owner="alice", region="us-east-1", acl=""),
            *simple_object(b"photos", b"2026/04/greeting.txt", b"hello world", etag='"e1"',
                           last_modified_hlc=1777464000000 << 16, content_type="text/plain"),
            *simple_object(b"photos", b"empty.bin", b"", etag='"e2"'),
        ]
    )  # fmt: skip
    files = h.files()
    assert files["s3/photos/2026/04/greeting.txt"] == b"hello world"
    assert files["s3/photos/empty.bin"] == b""
    assert json.loads(files["s3/photos/2026/04/greeting.txt.elastickv-meta.json"]) == {
        "format_version": 1,
        "etag": '"e1"',
        "size_bytes": 11,
        "last_modified": "2026-04-29T12:00:00Z",
        "content_type": "text/plain",
    }
    assert json.loads(files["s3/photos/_bucket.json"]) == {
        "format_version": 1,
        "name": "photos",
        "owner": "alice",
        "region": "us-east-1",
    }
    assert scope == {"buckets": ["photos"]}
    assert _spill_left(h) == []


async def test_multi_chunk_object_in_arrival_order_is_reassembled(tmp_path: Path) -> None:
    body = _body(3 * MIB + 123)
    chunks = [body[i : i + MIB] for i in range(0, len(body), MIB)]
    h = harness(tmp_path)
    await h.run(
        [
            bucket_meta(b"big"),
            *(blob(b"big", b"blob/large.bin", c, chunk=i) for i, c in enumerate(chunks)),
            manifest(
                b"big", b"blob/large.bin", [part(1, [len(c) for c in chunks])], size_bytes=len(body)
            ),
        ],
        batch=2,
    )
    assert h.files()["s3/big/blob/large.bin"] == body
    assert _spill_left(h) == []


async def test_multipart_object_uses_declared_parts_and_versions_only(tmp_path: Path) -> None:
    p1, p2, p3 = _body(MIB, 1), _body(MIB // 2, 2), _body(700_000, 3)
    records = [
        bucket_meta(b"logs"),
        # part 1: version 3 is declared, version 2 is a stale attempt
        blob(b"logs", b"app.log", b"STALE" * 1000, part=1, chunk=0, version=2),
        blob(b"logs", b"app.log", p1[:600_000], part=1, chunk=0, version=3),
        blob(b"logs", b"app.log", p1[600_000:], part=1, chunk=1, version=3),
        # part 2 without a version trailer, part 3 split in three
        blob(b"logs", b"app.log", p2, part=2, chunk=0),
        blob(b"logs", b"app.log", p3[:100], part=3, chunk=0, version=1),
        blob(b"logs", b"app.log", p3[100:200_000], part=3, chunk=1, version=1),
        blob(b"logs", b"app.log", p3[200_000:], part=3, chunk=2, version=1),
        # another upload's chunks for the same object are ignored
        blob(b"logs", b"app.log", b"OTHER UPLOAD", upload=b"u0", part=1, chunk=0, version=3),
        manifest(
            b"logs",
            b"app.log",
            [
                part(3, [100, 199_900, 500_000], version=1),
                part(1, [600_000, MIB - 600_000], version=3),
                part(2, [len(p2)]),
            ],
            size_bytes=len(p1) + len(p2) + len(p3),
        ),
    ]
    h = harness(tmp_path)
    await h.run(records)
    assert h.files()["s3/logs/app.log"] == p1 + p2 + p3


@pytest.mark.parametrize("chunks", [[0, 2], [0, 1, 2, 3], [1, 2]])
async def test_missing_or_extra_chunks_are_a_typed_error(tmp_path: Path, chunks: list[int]) -> None:
    records = [blob(b"b", b"o", b"x", chunk=i) for i in chunks]
    records += [bucket_meta(b"b"), manifest(b"b", b"o", [part(1, [1, 1, 1])], size_bytes=3)]
    h = harness(tmp_path)
    with raises_code(AdapterRecordError, "ErrS3IncompleteBlobChunks"):
        await h.run(records)
    assert _spill_left(h) == []


def _chunkref(payload: bytes, size: int | None = None) -> bytes:
    digest = hashlib.sha256(payload).digest()
    return b"\x01" + digest + struct.pack(">QH", len(payload) if size is None else size, 2) + b"n1"


def _offloaded(
    bucket: bytes, obj: bytes, payloads: list[bytes], *, sizes: list[int] | None = None
) -> list[tuple[bytes, bytes]]:
    out = []
    for i, data in enumerate(payloads):
        out.append((b"!s3|chunkblob|" + hashlib.sha256(data).hexdigest().encode(), data))
        ref_key = (
            b"!s3|chunkref|"
            + seg(bucket)
            + u64(2)
            + seg(obj)
            + seg(b"u-off")
            + u64(1)
            + u64(i)
            + u64(1)
        )
        out.append((ref_key, _chunkref(data)))
    parts = [
        part(1, sizes or [len(p) for p in payloads], offloaded=True, chunk_ref_version=1, version=1)
    ]
    out.append(
        manifest(bucket, obj, parts, gen=2, upload="u-off", size_bytes=sum(map(len, payloads)))
    )
    return out


async def test_offloaded_object_is_assembled_from_chunkblobs(tmp_path: Path) -> None:
    payloads = [b"offloaded-chunk-0|", b"offloaded-chunk-1|", b"end"]
    h = harness(tmp_path)
    await h.run(
        [bucket_meta(b"cold", generation=2), *_offloaded(b"cold", b"archive/data.bin", payloads)]
    )
    assert h.files()["s3/cold/archive/data.bin"] == b"".join(payloads)


async def test_offloaded_size_disagreement_is_a_typed_error(tmp_path: Path) -> None:
    records = _offloaded(b"cold", b"o", [b"abc"], sizes=[4])
    h = harness(tmp_path)
    with raises_code(AdapterRecordError, "ErrS3InvalidChunkRef"):
        await h.run([bucket_meta(b"cold", generation=2), *records])


async def test_chunkblob_hash_mismatch_is_a_typed_error(tmp_path: Path) -> None:
    bad = (b"!s3|chunkblob|" + hashlib.sha256(b"good").hexdigest().encode(), b"evil")
    with raises_code(AdapterRecordError, "ErrS3ChunkBlobHashMismatch"):
        await harness(tmp_path).run([bad])


async def test_bad_manifest_json_and_bad_bucket_names_are_typed_errors(tmp_path: Path) -> None:
    with raises_code(AdapterRecordError, "ErrS3InvalidManifest"):
        await harness(tmp_path / "a").run([(manifest(b"b", b"o", None)[0], b'{"size_bytes":"1"}')])
    with raises_code(AdapterRecordError, "ErrS3MalformedKey"):
        await harness(tmp_path / "b").run(simple_object(b"..", b"o", b"x"))


async def test_path_collision_renames_and_keymap_is_sorted(tmp_path: Path) -> None:
    records = [bucket_meta(b"b")]
    for key in (b"z", b"z/1", b"path/to", b"path/to/sub", b"a/b", b"a/b/c"):
        records += simple_object(b"b", key, key)
    h = harness(tmp_path)
    await h.run(records)
    files = h.files()
    assert files["s3/b/path/to.elastickv-leaf-data"] == b"path/to"
    assert files["s3/b/path/to/sub"] == b"path/to/sub"
    assert files["s3/b/z.elastickv-leaf-data.elastickv-meta.json"].startswith(b"{")
    assert files["s3/b/KEYMAP.jsonl"] == (
        b'{"encoded":"a/b.elastickv-leaf-data","original":"YS9i","kind":"s3-leaf-data"}\n'
        b'{"encoded":"path/to.elastickv-leaf-data","original":"cGF0aC90bw","kind":"s3-leaf-data"}\n'
        b'{"encoded":"z.elastickv-leaf-data","original":"eg","kind":"s3-leaf-data"}\n'
    )


async def test_reserved_suffix_error_and_rename(tmp_path: Path) -> None:
    records = [bucket_meta(b"b"), *simple_object(b"b", b"evil.elastickv-meta.json", b"x")]
    with raises_code(AdapterRecordError, "ErrS3MetaSuffixCollision"):
        await harness(tmp_path / "plain").run(records)
    h = harness(tmp_path / "rename", rename_collisions=True)
    await h.run(records)
    assert h.files()["s3/b/evil.elastickv-meta.json.user-data"] == b"x"
    assert b'"kind":"meta-suffix-rename"' in h.files()["s3/b/KEYMAP.jsonl"]


async def test_user_objects_named_like_dump_files_do_not_clobber_them(tmp_path: Path) -> None:
    records = [bucket_meta(b"b", owner="o")]
    records += simple_object(b"b", b"_bucket.json", b"user bucket json")
    records += simple_object(b"b", b"KEYMAP.jsonl", b"user keymap")
    records += simple_object(b"b", b"x", b"x")
    records += simple_object(b"b", b"x/y", b"forces a rename, so a tracker KEYMAP is written")
    h = harness(tmp_path)
    await h.run(records)
    files = h.files()
    assert json.loads(files["s3/b/_bucket.json"])["owner"] == "o"
    assert files["s3/b/_bucket.json.user-data"] == b"user bucket json"
    assert files["s3/b/KEYMAP.jsonl.user-data"] == b"user keymap"
    lines = [json.loads(line) for line in files["s3/b/KEYMAP.jsonl"].splitlines()]
    assert [(r["encoded"], r["kind"]) for r in lines] == [
        ("KEYMAP.jsonl.user-data", "s3-reserved-name"),
        ("_bucket.json.user-data", "s3-reserved-name"),
        ("x.elastickv-leaf-data", "s3-leaf-data"),
    ]


async def test_keys_no_filesystem_holds_are_kept_losslessly(tmp_path: Path) -> None:
    long = b"L" * 304
    odd = [b"folder/", b"a//b", b"dir/" + long + b".txt", b"x/../y", b"./z"]
    records = [bucket_meta(b"b"), *simple_object(b"b", b"folder/inside", b"in")]
    for key in odd:
        records += simple_object(b"b", key, b"body of " + key)
    h = harness(tmp_path)
    await h.run(records)
    files = h.files()
    keymap = {
        base64.urlsafe_b64decode(r["original"] + "=" * (-len(r["original"]) % 4)): r
        for r in map(json.loads, files["s3/b/KEYMAP.jsonl"].splitlines())
    }
    assert sorted(keymap) == sorted(odd)
    for key, record in keymap.items():
        assert files[f"s3/b/{record['encoded']}"] == b"body of " + key
    assert keymap[b"folder/"]["encoded"] == "folder/.elastickv-dir-marker"
    assert keymap[b"folder/"]["kind"] == "s3-dir-marker"
    assert keymap[b"dir/" + long + b".txt"]["encoded"].startswith("dir/")
    assert files["s3/b/folder/inside"] == b"in"


async def test_incomplete_uploads_excluded_by_default_and_laid_out_with_the_flag(
    tmp_path: Path,
) -> None:
    meta_key = b"!s3|upload|meta|" + seg(b"up") + u64(1) + seg(b"v.mp4") + seg(b"u-1")
    part_key = b"!s3|upload|part|" + seg(b"up") + u64(1) + seg(b"v.mp4") + seg(b"u-1") + u64(1)
    records = [
        bucket_meta(b"up"),
        (meta_key, b'{"upload_id":"u-1"}'),
        (part_key, b"\x00\xff\x10"),
        blob(b"up", b"v.mp4", b"part1", upload=b"u-1"),
    ]
    h = harness(tmp_path / "default")
    await h.run(records)
    assert sorted(h.files()) == ["s3/up/_bucket.json"]
    assert h.report.counters["s3.incomplete_upload_records_excluded"] == 2
    # The upload is still in progress: its part's chunk is no orphan.
    assert h.warnings("s3_orphan_chunks") == []
    assert h.report.counters["s3.uploads_in_progress"] == 1

    h = harness(tmp_path / "flag", include_incomplete_uploads=True)
    await h.run(records)
    lines = h.files()["s3/up/_incomplete_uploads/records.jsonl"].splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "prefix": "!s3|upload|meta|",
            "key": base64.b64encode(meta_key).decode(),
            "value": base64.b64encode(b'{"upload_id":"u-1"}').decode(),
        },
        {"prefix": "!s3|upload|part|", "key": base64.b64encode(part_key).decode(), "value": "AP8Q"},
    ]


async def test_chunks_of_an_upload_without_live_meta_are_still_orphans(tmp_path: Path) -> None:
    """Only chunks whose every upload id has a live upload record count as in progress."""
    live = b"!s3|upload|meta|" + seg(b"up") + u64(1) + seg(b"v.mp4") + seg(b"u-1")
    other_object = b"!s3|upload|meta|" + seg(b"up") + u64(1) + seg(b"w.mp4") + seg(b"u-2")
    records = [
        bucket_meta(b"up"),
        (live, b'{"upload_id":"u-1"}'),
        (other_object, b'{"upload_id":"u-2"}'),
        blob(b"up", b"v.mp4", b"part1", upload=b"u-1"),
        blob(b"up", b"v.mp4", b"aborted", upload=b"u-0", part=2),  # u-0 has no live record
        blob(b"up", b"x.mp4", b"part1", upload=b"u-2"),  # u-2 belongs to another object
    ]
    h = harness(tmp_path)
    await h.run(records)
    assert {w["object"] for w in h.warnings("s3_orphan_chunks")} == {"v.mp4", "x.mp4"}
    assert "s3.uploads_in_progress" not in h.report.counters


def _orphan_records() -> list[tuple[bytes, bytes]]:
    return [
        bucket_meta(b"b", generation=3),
        *simple_object(b"b", b"live.txt", b"LIVE"),  # generation 1: stale
        blob(b"b", b"live.txt", b"LIVE3", gen=3, upload=b"u3"),
        manifest(b"b", b"live.txt", [part(1, [5])], gen=3, upload="u3", size_bytes=5),
        blob(b"b", b"lost.bin", b"chunk-0", gen=3, upload=b"u-x"),
        blob(b"b", b"lost.bin", b"chunk-1", gen=3, upload=b"u-x", chunk=1),
        blob(b"ghost", b"g.txt", b"no bucket meta", upload=b"u"),
    ]


async def test_orphans_and_stale_generations_excluded_by_default(tmp_path: Path) -> None:
    h = harness(tmp_path)
    await h.run(_orphan_records())
    assert sorted(h.files()) == [
        "s3/b/_bucket.json",
        "s3/b/live.txt",
        "s3/b/live.txt.elastickv-meta.json",
    ]
    assert h.files()["s3/b/live.txt"] == b"LIVE3"
    stale = h.warnings("s3_stale_generation_objects")
    assert [(w["bucket"], w["active_generation"], w["stale_count"]) for w in stale] == [("b", 3, 1)]
    assert {w["object"] for w in h.warnings("s3_orphan_chunks")} == {"lost.bin", "g.txt"}
    assert h.report.counters["s3.orphan_objects_excluded"] == 2
    assert h.report.counters["s3.stale_objects_excluded"] == 1


async def test_include_orphans_writes_orphan_and_stale_chunks(tmp_path: Path) -> None:
    h = harness(tmp_path, include_orphans=True)
    await h.run(_orphan_records())
    files = h.files()
    name = "{}_0000000000000001_{:016x}_0000000000000000.bin"
    assert files["s3/b/_orphans/lost.bin/gen-3/" + name.format("u-x", 0)] == b"chunk-0"
    assert files["s3/b/_orphans/lost.bin/gen-3/" + name.format("u-x", 1)] == b"chunk-1"
    assert files["s3/b/_orphans/live.txt/gen-1/" + name.format("u1", 0)] == b"LIVE"
    assert files["s3/ghost/_orphans/g.txt/gen-1/" + name.format("u", 0)] == b"no bucket meta"
    assert "s3/ghost/_bucket.json" not in files


async def test_same_chunk_identity_in_two_generations_reads_the_last_payload(
    tmp_path: Path,
) -> None:
    # The reference keys chunk scratch files without the generation; golden s3_orphans_flag
    # pins the result: both generations read the payload stored last (generation 3's).
    records = [
        bucket_meta(b"b", generation=3),
        blob(b"b", b"o", b"older", gen=2, upload=b"u"),
        blob(b"b", b"o", b"newer", gen=3, upload=b"u"),
        manifest(b"b", b"o", [part(1, [5])], gen=3, upload="u", size_bytes=5),
    ]
    h = harness(tmp_path, include_orphans=True)
    await h.run(records)
    files = h.files()
    assert files["s3/b/o"] == b"newer"
    assert (
        files["s3/b/_orphans/o/gen-2/u_0000000000000001_0000000000000000_0000000000000000.bin"]
        == b"newer"
    )


async def test_buckets_flush_concurrently_and_scope_lists_them(tmp_path: Path) -> None:
    records: list[tuple[bytes, bytes]] = []
    for n in range(6):
        name = f"bucket-{n}".encode()
        records += [bucket_meta(name), *simple_object(name, b"k", name)]
    h = harness(tmp_path, jobs=3)
    scope = await h.run(records, batch=5)
    assert scope == {"buckets": [f"bucket-{n}" for n in range(6)]}
    assert all(h.files()[f"s3/bucket-{n}/k"] == f"bucket-{n}".encode() for n in range(6))


async def test_scratch_is_removed_after_an_injected_write_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _body(2 * MIB + 1)
    records = [
        bucket_meta(b"b"),
        blob(b"b", b"big", body[:MIB]),
        blob(b"b", b"big", body[MIB:], chunk=1),
        manifest(b"b", b"big", [part(1, [MIB, MIB + 1])], size_bytes=len(body)),
    ]
    h = harness(tmp_path)

    seen: list[Path] = []

    async def failing_install(rel: str, src: Path, *, sha256: bytes | None = None) -> None:
        seen.append(src)
        raise OutputError("injected")

    async def failing_install_many(files: Sequence[tuple[str, Path, bytes | None]]) -> None:
        seen.extend(src for _, src, _ in files)
        raise OutputError("injected")

    monkeypatch.setattr(h.decoder._ctx.writer, "install", failing_install)
    monkeypatch.setattr(h.decoder._ctx.writer, "install_many", failing_install_many)
    with pytest.raises(OutputError, match="injected"):
        await h.run(records)
    assert seen and seen[0].is_relative_to(h.scratch)  # the failure hit with spill files present
    assert _spill_left(h) == []


async def test_scratch_is_removed_when_finalize_is_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [bucket_meta(b"b"), *simple_object(b"b", b"k", b"v")]
    h = harness(tmp_path)
    entered = anyio.Event()

    async def hanging_write_many(files: Any) -> None:
        entered.set()
        await anyio.sleep_forever()

    monkeypatch.setattr(h.decoder._ctx.writer, "write_many", hanging_write_many)
    async with anyio.create_task_group() as tg:
        tg.start_soon(h.run, records)
        await entered.wait()
        assert _spill_left(h) != []
        tg.cancel_scope.cancel()
    assert _spill_left(h) == []


def _record_installs(h: Harness, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes | None]:
    """The digest each ``writer.install`` or ``install_many`` of the harness's decoder is
    given, by path."""
    writer = h.decoder._ctx.writer
    install, install_many = writer.install, writer.install_many
    moved: dict[str, bytes | None] = {}

    async def recording_install(rel: str, src: Path, *, sha256: bytes | None = None) -> None:
        moved[rel] = sha256
        await install(rel, src, sha256=sha256)

    async def recording_install_many(files: Sequence[tuple[str, Path, bytes | None]]) -> None:
        moved.update((rel, sha256) for rel, _, sha256 in files)
        await install_many(files)

    monkeypatch.setattr(writer, "install", recording_install)
    monkeypatch.setattr(writer, "install_many", recording_install_many)
    return moved


async def test_bodies_alone_in_their_spill_file_are_moved_not_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 300 small objects (more than one batch of moves) each own a spill file holding exactly
    # their body: every one is moved into place. "shared" reads a payload that another
    # generation's spill file also holds, so it is copied instead.
    bodies = {f"k{n:03d}".encode(): _body(n + 1, seed=n) for n in range(300)}
    records = [bucket_meta(b"b")]
    for key, body in bodies.items():
        records += simple_object(b"b", key, body)
    records += [
        blob(b"b", b"shared", b"older", gen=0, upload=b"u"),
        blob(b"b", b"shared", b"newer", gen=1, upload=b"u"),
        manifest(b"b", b"shared", [part(1, [5])], upload="u", size_bytes=5),
    ]
    h = harness(tmp_path, jobs=3)
    moved = _record_installs(h, monkeypatch)
    await h.run(records, batch=7)
    files = h.files()
    assert sorted(moved) == sorted(f"s3/b/{key.decode()}" for key in bodies)
    assert all(files[f"s3/b/{key.decode()}"] == body for key, body in bodies.items())
    # Each moved body's digest was taken as its payloads were spilled: not read again.
    assert moved == {
        f"s3/b/{key.decode()}": hashlib.sha256(body).digest() for key, body in bodies.items()
    }
    assert files["s3/b/shared"] == b"newer"
    assert _spill_left(h) == []


async def test_consume_spills_payloads_behind_the_next_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through consume(), a batch of payloads is appended while the decoder goes on with the
    next batches: the first append holds until the next batch reached the decoder."""
    bodies = {f"k{n}".encode(): _body(3000, seed=n) for n in range(4)}
    records = [bucket_meta(b"b")]
    for key, body in bodies.items():
        records += simple_object(b"b", key, body)
    h = harness(tmp_path)
    h.decoder._ctx.memory = 4096  # a blob's payload fills a batch of appends
    handle, append = h.decoder.handle, h.decoder._spill.append
    handled = 0
    went_on = threading.Event()

    async def counting_handle(batch: Sequence[Routed]) -> None:
        nonlocal handled
        handled += 1
        if handled == 2:
            went_on.set()
        await handle(batch)

    def held_append(writes: Sequence[tuple[int, bytes]]) -> None:
        if not went_on.is_set():
            # A guard, not a timing: appending before returning never gets here.
            assert went_on.wait(30), "the decoder waited for its first append"
        append(writes)

    monkeypatch.setattr(h.decoder, "handle", counting_handle)
    monkeypatch.setattr(h.decoder._spill, "append", held_append)
    moved = _record_installs(h, monkeypatch)
    await h.consume(records, batch=1)
    files = h.files()
    assert all(files[f"s3/b/{key.decode()}"] == body for key, body in bodies.items())
    assert moved == {
        f"s3/b/{key.decode()}": hashlib.sha256(body).digest() for key, body in bodies.items()
    }
    assert _spill_left(h) == []


async def test_consume_fails_with_the_error_of_a_spill_behind_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spill file that cannot be written fails the run with that error while the decoder
    is handing over the next batch: nothing waits for a lane that is gone."""
    records = [bucket_meta(b"b")]
    for n in range(6):
        records += simple_object(b"b", b"k%d" % n, _body(3000, seed=n))
    h = harness(tmp_path)
    h.decoder._ctx.memory = 4096

    def full_disk(writes: Sequence[tuple[int, bytes]]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h.decoder._spill, "append", full_disk)
    with pytest.raises(OSError, match="No space left"):
        await h.consume(records, batch=1)


async def test_consume_appends_and_hashes_a_batch_on_two_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spill files' writes and the bodies' SHA-256 of one batch run at once, on two
    worker threads (each waits for the other to have started)."""
    body = _body(5000)
    h = harness(tmp_path)
    both = threading.Barrier(2, timeout=30)  # a guard against a hang, not a timing
    append, hash_payloads = h.decoder._spill.append, h.decoder._hash_payloads
    threads: set[int] = set()

    def meeting_append(writes: Sequence[tuple[int, bytes]]) -> None:
        threads.add(threading.get_ident())
        both.wait()
        append(writes)

    def meeting_hash(blobs: Any) -> None:
        threads.add(threading.get_ident())
        both.wait()
        hash_payloads(blobs)

    monkeypatch.setattr(h.decoder._spill, "append", meeting_append)
    monkeypatch.setattr(h.decoder, "_hash_payloads", meeting_hash)
    moved = _record_installs(h, monkeypatch)
    h.decoder._ctx.memory = 4096
    await h.consume([bucket_meta(b"b"), *simple_object(b"b", b"k", body)], batch=1)
    assert len(threads) == 2
    assert h.files()["s3/b/k"] == body
    assert moved == {"s3/b/k": hashlib.sha256(body).digest()}


async def test_the_hash_lane_goes_on_while_the_write_lane_is_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spill's write and hash lanes each take the batches in order on their own: the
    second batch is hashed while the first one is still being written (the first append
    waits for it), and both bodies come out whole with their spill-time digests."""
    first, second = _body(5000, 1), _body(6000, 2)
    h = harness(tmp_path)
    second_hashed = threading.Event()
    append, hash_payloads = h.decoder._spill.append, h.decoder._hash_payloads
    appends: list[int] = []

    def held_append(writes: Sequence[tuple[int, bytes]]) -> None:
        appends.append(len(writes))
        if len(appends) == 1:
            assert second_hashed.wait(30)  # a guard against a hang, not a timing
        append(writes)

    def hash_and_tell(blobs: Any) -> None:
        hash_payloads(blobs)
        if any(data == second for _, data in blobs):
            second_hashed.set()

    monkeypatch.setattr(h.decoder._spill, "append", held_append)
    monkeypatch.setattr(h.decoder, "_hash_payloads", hash_and_tell)
    moved = _record_installs(h, monkeypatch)
    h.decoder._ctx.memory = 4096  # a blob's payload fills a batch of appends
    records = [bucket_meta(b"b"), *simple_object(b"b", b"a", first)]
    await h.consume([*records, *simple_object(b"b", b"b", second)], batch=1)
    assert appends == [1, 1]
    assert h.files()["s3/b/a"] == first
    assert h.files()["s3/b/b"] == second
    assert moved == {
        "s3/b/a": hashlib.sha256(first).digest(),
        "s3/b/b": hashlib.sha256(second).digest(),
    }


async def test_a_body_whose_chunks_arrive_apart_is_hashed_from_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of one object arrive together in key order; when another object's come between
    them (a hand-fed stream), the spill-time digest is dropped and the moved file is read to
    hash it: CHECKSUMS stays right either way."""
    a0, a1, b0 = _body(100, 1), _body(50, 2), _body(70, 3)
    records = [
        bucket_meta(b"b"),
        blob(b"b", b"a", a0, chunk=0),
        blob(b"b", b"b", b0, chunk=0),
        blob(b"b", b"a", a1, chunk=1),
        manifest(b"b", b"a", [part(1, [100, 50])], size_bytes=150),
        manifest(b"b", b"b", [part(1, [70])], size_bytes=70),
    ]
    h = harness(tmp_path)
    moved = _record_installs(h, monkeypatch)
    for record in records:  # in this order, not sorted as the harness would
        await h.decoder.handle(routed([record]))
    await h.decoder.finalize()
    assert h.files()["s3/b/a"] == a0 + a1
    assert moved == {"s3/b/a": None, "s3/b/b": hashlib.sha256(b0).digest()}
    assert h.decoder._ctx.writer.ledger.get("s3/b/a") == hashlib.sha256(a0 + a1).digest()
    assert h.decoder._ctx.writer.ledger.get("s3/b/b") == hashlib.sha256(b0).digest()


async def test_sidecars_of_moved_bodies_are_written_in_bounded_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [bucket_meta(b"b")]
    for n in range(600):
        records += simple_object(b"b", f"k{n:03d}".encode(), b"body %d" % n)
    h = harness(tmp_path)
    writer = h.decoder._ctx.writer
    write_many = writer.write_many
    batches: list[int] = []

    async def recording_write_many(files: Any) -> None:
        batches.append(len(files))
        await write_many(files)

    monkeypatch.setattr(writer, "write_many", recording_write_many)
    await h.run(records, batch=50)
    assert sum(batches) == 600 + 1  # the sidecars and _bucket.json
    assert len(batches) >= 3 and max(batches) <= 256
    files = h.files()
    assert all(files[f"s3/b/k{n:03d}"] == b"body %d" % n for n in range(600))
    assert _spill_left(h) == []


async def test_write_batches_take_their_bytes_from_the_memory_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bucket's batches of small files stay within the adapter's memory share (the batch
    being filled and those in flight, each under twice its part) and the files are those of a
    run under the default share."""
    records = [bucket_meta(b"b")]
    for n in range(300):
        records += simple_object(b"b", f"k{n:03d}".encode(), b"body %d" % n)
    trees = {}
    sizes: dict[int, list[int]] = {}
    for memory in (DEFAULT_ADAPTER_MEMORY, 6 << 10):
        h = harness(tmp_path / str(memory))
        h.decoder._ctx.memory = memory
        writer = h.decoder._ctx.writer
        write_many = writer.write_many
        sizes[memory] = []

        async def recording_write_many(
            files: Any, write_many: Any = write_many, seen: list[int] = sizes[memory]
        ) -> None:
            seen.append(sum(len(data) for _, data in files))
            await write_many(files)

        monkeypatch.setattr(writer, "write_many", recording_write_many)
        await h.run(records, batch=50)
        trees[memory] = h.files()
    assert trees[6 << 10] == trees[DEFAULT_ADAPTER_MEMORY]
    part = (6 << 10) // (2 * 3)  # one bucket: the batch filled and two in flight
    assert len(sizes[6 << 10]) > 10 and max(sizes[6 << 10]) < 2 * part
    assert len(sizes[DEFAULT_ADAPTER_MEMORY]) == 2  # 256 files, then the rest


async def test_payloads_are_spilled_in_few_appends_with_the_same_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input batch often holds one object's records: its payloads wait until enough are
    pending (a sixth of the memory share at most) and go to the spill files in one call.
    The tree and the digests handed to the writer are those of one append per batch."""
    records = [bucket_meta(b"b")]
    for n in range(120):
        records += simple_object(b"b", f"k{n:03d}".encode(), _body(300 + n, seed=n))
    records += [
        blob(b"b", b"multi", _body(40, 1), chunk=0),
        blob(b"b", b"multi", _body(30, 2), chunk=1),
        manifest(b"b", b"multi", [part(1, [40, 30])], size_bytes=70),
    ]
    appended: dict[int, list[int]] = {}
    results = {}
    for memory in (DEFAULT_ADAPTER_MEMORY, 4):  # 4: a 1-byte threshold, one append per batch
        h = harness(tmp_path / str(memory))
        h.decoder._ctx.memory = memory
        calls = appended[memory] = []
        spill = h.decoder._spill
        append = spill.append

        def recording_append(writes: Any, append: Any = append, calls: list[int] = calls) -> None:
            calls.append(len(writes))
            append(writes)

        monkeypatch.setattr(spill, "append", recording_append)
        moved = _record_installs(h, monkeypatch)
        await h.run(records, batch=2)
        results[memory] = (h.files(), moved, dict(h.decoder._ctx.writer.ledger.items()))
        assert _spill_left(h) == []
    assert results[DEFAULT_ADAPTER_MEMORY] == results[4]
    # In key order the 122 blob records come first, two per batch: an append each.
    assert appended[4] == [2] * 61
    assert appended[DEFAULT_ADAPTER_MEMORY] == [122]  # all of them, at finalize
    files = results[4][0]
    assert files["s3/b/multi"] == _body(40, 1) + _body(30, 2)
    assert all(files[f"s3/b/k{n:03d}"] == _body(300 + n, seed=n) for n in range(120))
