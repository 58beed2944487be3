"""Benchmark the S3 decoder: throughput and peak RSS on ~2 GB of objects incl. a 1 GB object.

Two modes:

``adapter`` (default)
    feeds generated ``!s3|...`` records straight into :class:`S3Decoder` in batches of at
    most ``--batch-mib`` MiB, as the pipeline's channel would, and times handle + finalize.
``pipeline``
    writes the same records into a ``.fsm`` file first, then times
    ``decode_snapshot(adapters=("s3",))`` end to end (reader, resolver, router, adapter).

Bodies are pseudo-random (one random MiB, each chunk stamped with its position), so the
script can verify every output file by SHA-256 afterwards (``--verify``).

    .venv/bin/python scripts/bench_s3.py --dir /tmp/bench --total-gib 2 --big-gib 1 --verify
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from elastickv_async.adapters.base import DecodeContext, Routed
from elastickv_async.adapters.s3 import keys
from elastickv_async.adapters.s3.decode import S3Decoder
from elastickv_async.dump.writer import DumpWriter
from elastickv_async.options import DecodeOptions
from elastickv_async.pipeline import decode_snapshot
from elastickv_async.report import Report, make_logger
from elastickv_async.snapshot.entry import Entry, SnapshotHeader

MIB = 1 << 20
BUCKET = b"bench"
UPLOAD = b"bench-upload"


@dataclass(frozen=True)
class ObjectSpec:
    """One generated object: its key and body size."""

    key: bytes
    size: int


def _objects(total: int, big: int, medium: int) -> list[ObjectSpec]:
    specs = [ObjectSpec(b"big/one-gib.bin", big)]
    left = total - big
    n = 0
    while left > 0:
        size = min(medium, left)
        specs.append(ObjectSpec(b"medium/obj-%05d.bin" % n, size))
        left -= size
        n += 1
    return specs


def _chunk(seed: bytes, obj: int, index: int, length: int) -> bytes:
    return struct.pack(">II", obj, index) + seed[8:length]


def _records(specs: list[ObjectSpec], seed: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """``(prefix, key, value)`` in snapshot key order: blobs, bucket meta, manifests."""
    ordered = sorted(enumerate(specs), key=lambda item: item[1].key)
    for n, spec in ordered:
        for i in range((spec.size + MIB - 1) // MIB):
            length = min(MIB, spec.size - i * MIB)
            key = keys.BLOB_PREFIX + keys.encode_ordered_segment(BUCKET) + struct.pack(">Q", 1)
            key += keys.encode_ordered_segment(spec.key) + keys.encode_ordered_segment(UPLOAD)
            key += struct.pack(">QQ", 1, i)
            yield keys.BLOB_PREFIX, key, _chunk(seed, n, i, length)
    meta = {"bucket_name": BUCKET.decode(), "generation": 1, "owner": "bench"}
    yield keys.BUCKET_META_PREFIX, keys.bucket_meta_key(BUCKET), json.dumps(meta).encode()
    for _n, spec in ordered:
        count = (spec.size + MIB - 1) // MIB
        sizes = [min(MIB, spec.size - i * MIB) for i in range(count)]
        doc = {
            "upload_id": UPLOAD.decode(),
            "etag": "bench",
            "size_bytes": spec.size,
            "parts": [{"part_no": 1, "chunk_count": count, "chunk_sizes": sizes}],
        }
        yield keys.MANIFEST_PREFIX, keys.manifest_key(BUCKET, 1, spec.key), json.dumps(doc).encode()


def _expected_digest(specs: list[ObjectSpec], n: int, seed: bytes) -> str:
    digest = hashlib.sha256()
    size = specs[n].size
    for i in range((size + MIB - 1) // MIB):
        digest.update(_chunk(seed, n, i, min(MIB, size - i * MIB)))
    return digest.hexdigest()


async def _run_adapter(
    specs: list[ObjectSpec], seed: bytes, out: Path, scratch: Path, batch_bytes: int
) -> None:
    report = Report()
    ctx = DecodeContext(
        options=DecodeOptions(adapters=("s3",)),
        writer=DumpWriter(out),
        log=make_logger(report).bind(adapter="s3"),
        report=report,
        header=SnapshotHeader(last_commit_ts=1),
        scratch=scratch,
        now_ms=0,
    )
    decoder = S3Decoder(ctx)
    batch: list[Routed] = []
    size = 0
    for prefix, key, value in _records(specs, seed):
        batch.append((prefix, Entry(key, value, commit_ts=1, expire_at=0, tombstone=False)))
        size += len(value)
        if size >= batch_bytes:
            await decoder.handle(batch)
            batch, size = [], 0
    if batch:
        await decoder.handle(batch)
    await decoder.finalize()


def _write_fsm(path: Path, specs: list[ObjectSpec], seed: bytes) -> None:
    suffix = struct.pack(">Q", ~1 & (1 << 64) - 1)
    with open(path, "wb", buffering=16 * MIB) as fh:
        fh.write(b"EKVPBBL1" + struct.pack("<Q", 1))
        for _prefix, key, value in _records(specs, seed):
            fh.write(struct.pack("<Q", len(key) + 8) + key + suffix)
            fh.write(struct.pack("<Q", len(value) + 9) + b"\x00" + bytes(8) + value)


def _verify(out: Path, specs: list[ObjectSpec], seed: bytes) -> None:
    for n, spec in enumerate(specs):
        path = out / "s3" / BUCKET.decode() / spec.key.decode()
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(8 * MIB):
                digest.update(block)
        if digest.hexdigest() != _expected_digest(specs, n, seed):
            raise SystemExit(f"verification failed for {spec.key!r}")


def main() -> None:
    """Parse flags, run the benchmark, print one JSON line of results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, required=True, help="work directory (removed first)")
    parser.add_argument("--mode", choices=("adapter", "pipeline"), default="adapter")
    parser.add_argument("--total-gib", type=float, default=2.0)
    parser.add_argument("--big-gib", type=float, default=1.0)
    parser.add_argument("--medium-mib", type=int, default=10, help="size of the other objects")
    parser.add_argument(
        "--batch-mib", type=int, default=32, help="adapter mode: bytes per handle()"
    )
    parser.add_argument(
        "--verify", action="store_true", help="check every body's SHA-256 afterwards"
    )
    args = parser.parse_args()

    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    out, scratch = args.dir / "out", args.dir / "scratch"
    specs = _objects(
        int(args.total_gib * 1024) * MIB, int(args.big_gib * 1024) * MIB, args.medium_mib * MIB
    )
    seed = os.urandom(MIB)
    total = sum(s.size for s in specs)

    if args.mode == "pipeline":
        fsm = args.dir / "input.fsm"
        _write_fsm(fsm, specs, seed)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if args.mode == "adapter":
        out.mkdir()
        scratch.mkdir()
        anyio.run(_run_adapter, specs, seed, out, scratch, args.batch_mib * MIB)
    else:
        options = DecodeOptions(adapters=("s3",), scratch_root=scratch)
        anyio.run(decode_snapshot, fsm, out, options)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.verify:
        _verify(out, specs, seed)
    leftover = [p for p in scratch.rglob("*") if p.is_file()] if scratch.exists() else []
    print(
        json.dumps(
            {
                "mode": args.mode,
                "objects": len(specs),
                "body_bytes": total,
                "seconds": round(elapsed, 2),
                "mb_per_s": round(total / MIB / elapsed, 1),
                "peak_rss_mib": round(peak / 1024, 1),
                "peak_rss_before_run_mib": round(baseline / 1024, 1),
                "verified": args.verify,
                "scratch_files_left": len(leftover),
            }
        )
    )
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
