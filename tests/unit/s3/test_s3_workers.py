"""S3 decode and encode with and without worker processes: the same bytes, the same typed errors.

The S3 adapter sends no work to ``ctx.workers`` (its work is moving and hashing large bodies,
which worker threads do without holding the GIL); these tests pin that the number of worker
processes of a run changes nothing in its S3 output or errors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from s3_support import blob, bucket_meta, manifest, part, seg, simple_object
from support import hand_built_fsm, run_independent_files

from elastickv_async._core.cli import main
from elastickv_async._core.encode.api import encode_snapshot
from elastickv_async._core.errors import AdapterRecordError
from elastickv_async._core.options import DecodeOptions, EncodeOptions
from elastickv_async._core.pipeline import decode_snapshot

pytestmark = pytest.mark.anyio

TS = 1 << 40
MIB = 1 << 20


_PATTERN = bytes(range(251)) * 2


def _body(n: int, seed: int) -> bytes:
    """``n`` bytes of a 251-byte cycle starting at ``seed``."""
    cycle = _PATTERN[seed % 251 : seed % 251 + 251]
    return (cycle * (n // 251 + 1))[:n]


def _chunkref(digest: bytes, size: int) -> bytes:
    """A version-1 chunkref value: version, SHA-256, size, an empty source peer."""
    return b"\x01" + digest + size.to_bytes(8, "big") + (0).to_bytes(2, "big")


def _snapshot(path: Path) -> dict[str, bytes]:
    """Two buckets: small objects, a 2.5 MiB three-chunk object, a two-part multipart
    object and an offloaded (chunkref + chunkblob) object; the expected bodies by path."""
    records = [bucket_meta(b"alpha", owner="o"), bucket_meta(b"beta")]
    bodies: dict[str, bytes] = {}
    for n in range(40):
        body = _body(1000 + 997 * n, n)
        records += simple_object(b"alpha", f"small/{n:02d}".encode(), body, etag=f'"{n}"')
        bodies[f"s3/alpha/small/{n:02d}"] = body
    big = _body(5 * MIB // 2, 99)
    chunks = [big[i : i + MIB] for i in range(0, len(big), MIB)]
    records += [blob(b"beta", b"big", c, chunk=i) for i, c in enumerate(chunks)]
    records.append(
        manifest(b"beta", b"big", [part(1, [len(c) for c in chunks])], size_bytes=len(big))
    )
    bodies["s3/beta/big"] = big
    one, two = _body(300, 1), _body(200, 2)
    records += [
        blob(b"beta", b"multi", one, part=1),
        blob(b"beta", b"multi", two, part=2),
        manifest(b"beta", b"multi", [part(1, [300]), part(2, [200])], size_bytes=500),
    ]
    bodies["s3/beta/multi"] = one + two
    payload = _body(4096, 7)
    digest = hashlib.sha256(payload).digest()
    ref_key = b"!s3|chunkref|" + seg(b"beta") + (1).to_bytes(8, "big") + seg(b"offloaded")
    ref_key += seg(b"u1") + (1).to_bytes(8, "big") + (0).to_bytes(8, "big")
    records += [
        (ref_key, _chunkref(digest, len(payload))),
        (b"!s3|chunkblob|" + digest.hex().encode(), payload),
        manifest(
            b"beta",
            b"offloaded",
            [part(1, [len(payload)], offloaded=True, chunk_ref_version=0)],
            size_bytes=len(payload),
        ),
    ]
    bodies["s3/beta/offloaded"] = payload
    path.write_bytes(hand_built_fsm(TS, records))
    return bodies


async def test_decode_and_encode_are_the_same_with_and_without_processes(tmp_path: Path) -> None:
    source = tmp_path / "in.fsm"
    bodies = _snapshot(source)
    trees = {}
    for workers in (0, 2):
        tree = tmp_path / f"tree-{workers}"
        await decode_snapshot(source, tree, DecodeOptions(workers=workers))
        trees[workers] = run_independent_files(tree)
    assert trees[0] == trees[2]
    assert {name: trees[0][name] for name in bodies} == bodies

    outputs = []
    for workers in (0, 2):
        out = tmp_path / f"out-{workers}.fsm"
        await encode_snapshot(tmp_path / "tree-0", out, EncodeOptions(workers=workers))
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    # The encoded snapshot decodes back to the same bodies.
    await decode_snapshot(tmp_path / "out-0.fsm", tmp_path / "again", DecodeOptions(workers=2))
    again = run_independent_files(tmp_path / "again")
    assert {name: again[name] for name in bodies} == bodies


def _with_missing_chunk(path: Path) -> None:
    body = _body(3 * MIB // 2, 5)
    records = [
        bucket_meta(b"b"),
        *simple_object(b"b", b"fine", b"ok"),
        blob(b"b", b"torn", body[:MIB]),  # chunk 1 of 2 is missing
        manifest(b"b", b"torn", [part(1, [MIB, len(body) - MIB])], size_bytes=len(body)),
    ]
    path.write_bytes(hand_built_fsm(TS, records))


@pytest.mark.parametrize("workers", [0, 2])
async def test_a_missing_chunk_is_typed_whatever_the_workers(tmp_path: Path, workers: int) -> None:
    source = tmp_path / "in.fsm"
    _with_missing_chunk(source)
    with pytest.raises(AdapterRecordError) as caught:
        await decode_snapshot(source, tmp_path / "out", DecodeOptions(workers=workers))
    assert caught.value.code == "ErrS3IncompleteBlobChunks"
    assert caught.value.adapter == "s3"
    assert "'torn'" in str(caught.value)
    assert not (tmp_path / "out" / "MANIFEST.json").exists()


def test_the_cli_reports_it_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.fsm"
    _with_missing_chunk(source)
    out = tmp_path / "out"
    argv = ["decode", "--quiet", "--input", str(source), "--output", str(out), "--workers", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "torn" in err[0] and "declares 2 chunks" in err[0]
