"""Measure the S3 decoder: MB/s and peak RSS on ~2 GiB of objects including a 1 GiB object.

One bucket holds a ``--big-mib`` object and ``--medium-mib`` objects up to ``--total-mib``,
stored as 1 MiB chunks (keys from ``adapters/s3/keys.py``). Bodies are pseudo-random (one
seeded MiB, each chunk stamped with its object and position), so ``--verify`` can check every
output file by SHA-256 afterwards.

``--mode pipeline`` (default) writes the records into a ``.fsm`` and measures
``decode_snapshot(adapters=("s3",))`` end to end (reader, resolver, router, adapter);
``--mode adapter`` feeds the records straight to the S3 decoder (``benchlib.feed_adapter``,
generated lazily inside the measured child).

Usage: ``python scripts/bench_s3.py [--total-mib N] [--big-mib N] [--medium-mib N]
[--mode pipeline|adapter] [--verify] [--json FILE] [--workdir DIR] [--backend asyncio|trio]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import benchlib

from elastickv_async._adapters.s3.keys import blob_key, bucket_meta_key, manifest_key
from elastickv_async._core.options import DecodeOptions
from elastickv_async._core.pipeline import decode_snapshot

MIB: Final = benchlib.MIB
BUCKET: Final = b"bench"
UPLOAD: Final = b"bench-upload"
GENERATION: Final = 1
PART_NO: Final = 1
_STAMP: Final = struct.Struct(">II")


def objects(total: int, big: int, medium: int) -> list[tuple[bytes, int]]:
    """``(object key, size)`` of every object: the big one, then mediums up to ``total``."""
    specs = [(b"big/one.bin", big)]
    left, n = total - big, 0
    while left > 0:
        size = min(medium, left)
        specs.append((b"medium/obj-%05d.bin" % n, size))
        left -= size
        n += 1
    return specs


def _seed_block(seed: int) -> bytes:
    return random.Random(seed).randbytes(MIB)


def _chunks(block: bytes, obj: int, size: int) -> Iterator[bytes]:
    for i in range((size + MIB - 1) // MIB):
        yield _STAMP.pack(obj, i) + block[_STAMP.size : min(MIB, size - i * MIB)]


def records(total: int, big: int, medium: int, seed: int) -> Iterator[benchlib.Record]:
    """``!s3|blob|`` chunks, the bucket meta, then the manifests: snapshot order."""
    specs = objects(total, big, medium)
    ordered = sorted(enumerate(specs), key=lambda item: item[1][0])
    block = _seed_block(seed)
    for n, (key, size) in ordered:
        for i, chunk in enumerate(_chunks(block, n, size)):
            yield blob_key(BUCKET, GENERATION, key, UPLOAD, PART_NO, i), chunk
    meta = {"bucket_name": BUCKET.decode(), "generation": GENERATION, "owner": "bench"}
    yield bucket_meta_key(BUCKET), json.dumps(meta).encode()
    for _n, (key, size) in ordered:
        sizes = [min(MIB, size - i * MIB) for i in range((size + MIB - 1) // MIB)]
        doc = {
            "upload_id": UPLOAD.decode(),
            "etag": "bench",
            "size_bytes": size,
            "parts": [{"part_no": PART_NO, "chunk_count": len(sizes), "chunk_sizes": sizes}],
        }
        yield manifest_key(BUCKET, GENERATION, key), json.dumps(doc).encode()


def prepare(fsm: str, total: int, big: int, medium: int, seed: int) -> dict[str, int]:
    """Write the synthetic snapshot; return its entry count and size."""
    return benchlib.write_fsm(Path(fsm), records(total, big, medium, seed))


async def decode(fsm: str, out: str, scratch: str) -> dict[str, Any]:
    """The whole decode (scratch outside the output); return the report's counters."""
    # --scratch-root must exist (the decoder never creates it: a typo would go unnoticed).
    await anyio.Path(scratch).mkdir(parents=True, exist_ok=True)
    options = DecodeOptions(adapters=("s3",), scratch_root=Path(scratch))
    report = await decode_snapshot(fsm, out, options)
    return report.counters


async def feed(out: str, total: int, big: int, medium: int, seed: int) -> dict[str, Any]:
    """Generate the records and feed them to the S3 decoder alone."""
    report = await benchlib.feed_adapter("s3", Path(out), records(total, big, medium, seed))
    return report.counters


def verify(out: str, total: int, big: int, medium: int, seed: int) -> None:
    """Check every object file's SHA-256 against the generated bodies."""
    block = _seed_block(seed)
    for n, (key, size) in enumerate(objects(total, big, medium)):
        expected = hashlib.sha256()
        for chunk in _chunks(block, n, size):
            expected.update(chunk)
        with (Path(out) / "s3" / BUCKET.decode() / key.decode()).open("rb") as fh:
            actual = hashlib.file_digest(fh, "sha256")
        if actual.digest() != expected.digest():
            raise SystemExit(f"verification failed for {key!r}")


def run(
    bench: benchlib.Bench,
    *,
    total_mib: int,
    big_mib: int,
    medium_mib: int = 10,
    mode: str = "pipeline",
    check: bool = False,
    seed: int = 1,
) -> None:
    """Generate the bucket, measure one decode, optionally verify the output."""
    shape = {"total": total_mib * MIB, "big": big_mib * MIB, "medium": medium_mib * MIB}
    shape_seed = {**shape, "seed": seed}
    count = len(objects(**shape))
    with bench.workspace("s3") as work:
        # Adapter mode reads no file: the stream is only sized (written to /dev/null).
        fsm = str(work / "bench.fsm") if mode == "pipeline" else os.devnull
        made = bench.prepare(
            f"{total_mib:,} MiB in {count} objects", prepare, fsm=fsm, **shape_seed
        )
        out = str(work / "out")
        label = f"s3 {total_mib} MiB" + (" (adapter)" if mode == "adapter" else "")
        sizes = {"items": count, "entries": made["entries"], "input_bytes": made["bytes"]}
        if mode == "pipeline":
            kwargs = {"fsm": fsm, "out": out, "scratch": str(work / "scratch")}
            bench.measure(label, decode, kwargs, **sizes)
        else:
            bench.measure(label, feed, {"out": out, **shape_seed}, **sizes)
        if check:
            verify(out, **shape_seed)
            print("  verified every object's SHA-256", flush=True)


def main() -> None:
    """Parse the flags and run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--total-mib", type=int, default=2048)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--medium-mib", type=int, default=10, help="size of the other objects")
    parser.add_argument("--mode", choices=("pipeline", "adapter"), default="pipeline")
    parser.add_argument(
        "--verify", action="store_true", help="check every body's SHA-256 afterwards"
    )
    parser.add_argument("--seed", type=int, default=1)
    benchlib.add_common_arguments(parser)
    args = parser.parse_args()
    bench = benchlib.bench_from_args(args)
    run(
        bench,
        total_mib=args.total_mib,
        big_mib=args.big_mib,
        medium_mib=args.medium_mib,
        mode=args.mode,
        check=args.verify,
        seed=args.seed,
    )
    bench.finish()


if __name__ == "__main__":
    main()
