"""Measure ``encode_snapshot`` throughput and peak memory.

Generates a dump tree with ``--items`` DynamoDB items (about ``--item-bytes`` each) and
``--objects`` S3 objects of ``--object-bytes`` each, then encodes it without and with
``--self-test``. Each run happens in a fresh child process so that its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own. Adapters whose encoder is not in
this build are left out; when neither DynamoDB nor S3 can encode, the core alone is measured
with an in-process synthetic adapter yielding the same records' sizes (no self-test then).

Usage::

    python scripts/bench_encode.py [--items N] [--item-bytes B] [--objects M]
        [--object-bytes S] [--sort-budget BYTES] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from elastickv_async.adapters.base import AdapterSpec, EncodeAdapter, EncodeContext
from elastickv_async.encode import api
from elastickv_async.encode.sorter import DEFAULT_SORT_BUDGET
from elastickv_async.options import DecodeOptions, EncodeOptions

_MANIFEST: dict[str, Any] = {
    "format_version": 1,
    "phase": "phase0-snapshot-decode",
    "elastickv_version": "bench",
    "last_commit_ts": 1 << 40,
    "wall_time_iso": "2026-01-01T00:00:00Z",
    "source": {"fsm_path": "bench.fsm"},
    "adapters": {"dynamodb": {}, "s3": {}},
    "exclusions": {
        "include_incomplete_uploads": False,
        "include_orphans": False,
        "preserve_sqs_visibility": False,
        "include_sqs_side_records": False,
    },
    "checksum_algorithm": "sha256",
    "checksum_format": "sha256sum",
    "encoded_filename_charset": "rfc3986-unreserved-plus-percent",
    "key_segment_max_bytes": 240,
    "s3_meta_suffix": ".elastickv-meta.json",
    "s3_collision_strategy": "leaf-data-suffix",
    "dynamodb_layout": "per-item",
}


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n")


def build_tree(root: Path, items: int, item_bytes: int, objects: int, object_bytes: int) -> int:
    """Write the dump tree; return the bytes of its data files."""
    total = 0
    root.mkdir(parents=True)
    _write_json(root / "MANIFEST.json", _MANIFEST)
    table = root / "dynamodb" / "bench"
    (table / "items").mkdir(parents=True)
    _write_json(
        table / "_schema.json",
        {
            "format_version": 1,
            "table_name": "bench",
            "primary_key": {"hash_key": {"name": "pk", "type": "S"}},
            "attribute_definitions": [{"name": "pk", "type": "S"}],
        },
    )
    filler = "x" * max(0, item_bytes - 60)
    for i in range(items):
        data = json.dumps({"pk": {"S": f"item-{i:08d}"}, "n": {"N": str(i)}, "d": {"S": filler}})
        (table / "items" / f"item-{i:08d}.json").write_text(data)
        total += len(data)
    bucket = root / "s3" / "bench"
    bucket.mkdir(parents=True)
    _write_json(bucket / "_bucket.json", {"format_version": 1, "name": "bench"})
    block = os.urandom(1 << 20)
    for i in range(objects):
        name = f"obj-{i:06d}.bin"
        digest = hashlib.md5(usedforsecurity=False)
        with (bucket / name).open("wb") as fh:
            left = object_bytes
            while left:
                chunk = block[: min(left, len(block))]
                fh.write(chunk)
                digest.update(chunk)
                left -= len(chunk)
        meta = {
            "format_version": 1,
            "etag": f'"{digest.hexdigest()}"',
            "size_bytes": object_bytes,
            "last_modified": "2026-01-01T00:00:00Z",
            "content_type": "application/octet-stream",
        }
        _write_json(bucket / f"{name}.elastickv-meta.json", meta)
        total += object_bytes
    return total


class _Synthetic:
    """Stands in for missing adapter encoders: the tree's records, sizes only."""

    def __init__(self, items: int, item_bytes: int, objects: int, object_bytes: int) -> None:
        self._shape = (items, item_bytes, objects, object_bytes)

    async def records(self) -> AsyncIterator[tuple[bytes, bytes]]:
        items, item_bytes, objects, object_bytes = self._shape
        body = os.urandom(max(item_bytes, 1))
        for i in range(items):
            yield b"!ddb|item|YmVuY2g|1|item-%08d\x00\x01" % i, bytes(memoryview(body)[:item_bytes])
        chunk = os.urandom(1 << 20)
        for i in range(objects):
            for c in range((object_bytes + (1 << 20) - 1) >> 20):
                size = min(1 << 20, object_bytes - (c << 20))
                yield b"!s3|blob|bench|obj-%06d|%08d" % (i, c), bytes(memoryview(chunk)[:size])


def _available() -> tuple[str, ...]:
    from elastickv_async.adapters.registry import adapter_specs

    try:
        specs = adapter_specs()
    except ImportError:
        return ()
    return tuple(n for n in ("dynamodb", "s3") if n in specs and specs[n].encoder is not None)


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    adapters = tuple(args.adapters.split(",")) if args.adapters else ()
    if not adapters:
        shape = (args.items, args.item_bytes, args.objects, args.object_bytes)

        def synthetic(_ctx: EncodeContext) -> EncodeAdapter:
            return _Synthetic(*shape)

        spec = AdapterSpec(
            "s3", (), (), decoder=lambda _c: sys.exit("no decoder"), encoder=synthetic
        )
        setattr(api, "adapter_specs", lambda: {"s3": spec})  # noqa: B010 (patching for the run)
        adapters = ("s3",)
    options = EncodeOptions(adapters=adapters, self_test=args.self_test)
    out = Path(args.workdir) / "out.fsm"
    start = time.perf_counter()
    result = await api.encode_snapshot(
        Path(args.workdir) / "tree", out, options, sort_budget=args.sort_budget
    )
    seconds = time.perf_counter() - start
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": seconds,
        "bytes": result.bytes_written,
        "entries": result.entries,
        "spills": result.report.counters.get("encode.sort_spills", 0),
        "maxrss_mib": rss_kib / 1024,
        "adapters": ",".join(result.adapters_enabled),
    }


def _child_json(argv: list[str]) -> dict[str, Any]:
    # Every heavy step runs in its own process: a child's peak RSS starts at its parent's RSS
    # at fork time, so the parent must stay small for the figures to mean anything.
    done = subprocess.run(
        [sys.executable, __file__, *argv], check=False, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"bench step failed (exit {done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def _canonicalise(raw: Path, tree: Path, adapters: tuple[str, ...]) -> None:
    """Encode the generated tree and decode it again: byte-exact files the self-test expects."""
    from elastickv_async.pipeline import decode_snapshot

    fsm = raw.parent / "raw.fsm"
    await api.encode_snapshot(raw, fsm, EncodeOptions(adapters=adapters))
    await decode_snapshot(fsm, tree, DecodeOptions(adapters=adapters))
    await anyio.to_thread.run_sync(shutil.rmtree, raw)
    await anyio.to_thread.run_sync(fsm.unlink)
    await anyio.to_thread.run_sync(Path(f"{fsm}.encode_info.json").unlink)


def _build(args: argparse.Namespace) -> dict[str, Any]:
    adapters = tuple(args.adapters.split(",")) if args.adapters else ()
    work = Path(args.workdir)
    raw = work / ("raw" if adapters else "tree")
    start = time.perf_counter()
    data = build_tree(raw, args.items, args.item_bytes, args.objects, args.object_bytes)
    if adapters:
        anyio.run(_canonicalise, raw, work / "tree", adapters)
    return {"data": data, "seconds": time.perf_counter() - start}


def main() -> None:
    """Build the tree once, then time the encoder in child processes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--item-bytes", type=int, default=200)
    parser.add_argument("--objects", type=int, default=64)
    parser.add_argument("--object-bytes", type=int, default=4 << 20)
    parser.add_argument("--sort-budget", type=int, default=DEFAULT_SORT_BUDGET)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--stage", choices=("build", "encode"), help=argparse.SUPPRESS)
    parser.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--adapters", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "build":
        print(json.dumps(_build(args)))
        return
    if args.stage == "encode":
        print(json.dumps(anyio.run(_child, args)))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        adapters = _available()
        shape = [
            f"--items={args.items}",
            f"--item-bytes={args.item_bytes}",
            f"--objects={args.objects}",
            f"--object-bytes={args.object_bytes}",
            f"--sort-budget={args.sort_budget}",
            f"--workdir={work}",
            f"--adapters={','.join(adapters)}",
        ]
        built = _child_json([*shape, "--stage=build"])
        data = built["data"]
        print(f"tree: {data / 1e6:.1f} MB of data files, built in {built['seconds']:.1f}s")
        if not adapters:
            print(
                "no DynamoDB/S3 encoder in this build: measuring the core with a synthetic adapter"
            )
        for self_test in [False, True] if adapters else [False]:
            r = _child_json([*shape, "--stage=encode", *(["--self-test"] if self_test else [])])
            label = "encode --self-test" if self_test else "encode"
            print(
                f"{label:<20} {r['seconds']:7.2f}s  {data / 1e6 / r['seconds']:7.1f} MB/s of data"
                f"  {r['bytes'] / 1e6 / r['seconds']:7.1f} MB/s of .fsm  peak RSS "
                f"{r['maxrss_mib']:6.0f} MiB  entries={r['entries']} spills={r['spills']}"
                f" adapters={r['adapters']}"
            )


if __name__ == "__main__":
    main()
