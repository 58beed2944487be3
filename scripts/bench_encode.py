"""Measure ``encode_snapshot`` throughput and peak RSS, with and without ``--self-test``.

The dump tree holds ``--items`` DynamoDB items (about ``--item-bytes`` each, one file per
item) and ``--objects`` S3 objects of ``--object-bytes`` each. It is generated, then made
canonical by one encode and decode round (so the self-test compares byte-exact files), all in
a child process; each measured encode then runs in a fresh child (see ``benchlib``). MB/s is
of the tree's bytes (every file, JSON included).

Usage: ``python scripts/bench_encode.py [--items N] [--item-bytes B] [--objects M]
[--object-bytes S] [--sort-budget BYTES] [--json FILE] [--workdir DIR]
[--backend asyncio|trio]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import benchlib

from elastickv_async import encode_snapshot
from elastickv_async._adapters.registry import REGISTRY
from elastickv_async._core.dump.manifest import DecodeManifest
from elastickv_async._core.options import DecodeOptions, EncodeOptions
from elastickv_async._core.pipeline import decode_snapshot

ADAPTERS: Final = ("dynamodb", "s3")
TABLE: Final = "bench"
BUCKET: Final = "bench"
_SCHEMA: Final = {
    "format_version": 1,
    "table_name": TABLE,
    "primary_key": {"hash_key": {"name": "pk", "type": "S"}},
    "attribute_definitions": [{"name": "pk", "type": "S"}],
}


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n")


def build_tree(root: Path, items: int, item_bytes: int, objects: int, object_bytes: int) -> None:
    """Write the (not yet canonical) dump tree."""
    root.mkdir(parents=True)
    manifest = DecodeManifest(
        adapters=ADAPTERS,
        fields=REGISTRY.manifest_fields({}),
        fsm_path="bench.fsm",
        last_commit_ts=benchlib.COMMIT_TS,
        elastickv_version="bench",
        wall_time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    (root / "MANIFEST.json").write_bytes(manifest.to_json())
    table = root / "dynamodb" / TABLE
    (table / "items").mkdir(parents=True)
    _write_json(table / "_schema.json", _SCHEMA)
    filler = "x" * max(0, item_bytes - 60)
    for i in range(items):
        doc = {"pk": {"S": f"item-{i:08d}"}, "n": {"N": str(i)}, "d": {"S": filler}}
        (table / "items" / f"item-{i:08d}.json").write_text(json.dumps(doc))
    bucket = root / "s3" / BUCKET
    bucket.mkdir(parents=True)
    _write_json(bucket / "_bucket.json", {"format_version": 1, "name": BUCKET})
    block = random.Random(1).randbytes(benchlib.MIB)
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


async def _canonicalise(raw: Path, tree: Path) -> int:
    """Encode the generated tree and decode it again; return the number of entries."""
    fsm = raw.parent / "raw.fsm"
    result = await encode_snapshot(raw, fsm, EncodeOptions(adapters=ADAPTERS))
    await decode_snapshot(fsm, tree, DecodeOptions(adapters=ADAPTERS))
    for path in (fsm, Path(f"{fsm}.encode_info.json")):
        await anyio.to_thread.run_sync(path.unlink)
    await anyio.to_thread.run_sync(shutil.rmtree, raw)
    return result.entries


def prepare(
    work: str, items: int, item_bytes: int, objects: int, object_bytes: int
) -> dict[str, int]:
    """Build the canonical tree at ``work/tree``; return its entries, files and bytes."""
    raw, tree = Path(work) / "raw", Path(work) / "tree"
    build_tree(raw, items, item_bytes, objects, object_bytes)
    entries = anyio.run(_canonicalise, raw, tree)
    files = size = 0
    for root, _dirs, names in os.walk(tree):
        files += len(names)
        size += sum(os.stat(os.path.join(root, name)).st_size for name in names)
    return {"entries": entries, "files": files, "bytes": size}


async def encode(tree: str, out: str, self_test: bool, sort_budget: int | None) -> dict[str, Any]:
    """One encode of the tree; return what it wrote and how often the sorter spilled."""
    options = EncodeOptions(adapters=ADAPTERS, self_test=self_test)
    if sort_budget is None:
        result = await encode_snapshot(Path(tree), Path(out), options)
    else:
        result = await encode_snapshot(Path(tree), Path(out), options, sort_budget=sort_budget)
    return {
        "fsm_bytes": result.bytes_written,
        "entries": result.entries,
        "self_test_matched": result.self_test_matched,
        "sort_spills": result.report.counters.get("encode.sort_spills", 0),
    }


def run(
    bench: benchlib.Bench,
    *,
    items: int,
    objects: int,
    item_bytes: int = 200,
    object_bytes: int = 4 * benchlib.MIB,
    sort_budget: int | None = None,
) -> None:
    """Build the tree once, then measure the encoder without and with the self-test."""
    with bench.workspace("encode") as work:
        shape = {"items": items, "item_bytes": item_bytes}
        shape |= {"objects": objects, "object_bytes": object_bytes}
        what = f"a tree of {items:,} items and {objects} objects"
        made = bench.prepare(what, prepare, work=str(work), **shape)
        out = work / "out.fsm"
        for self_test in (False, True):
            label = "encode --self-test" if self_test else "encode"
            kwargs: dict[str, Any] = {"tree": str(work / "tree"), "out": str(out)}
            kwargs |= {"self_test": self_test, "sort_budget": sort_budget}
            row = bench.measure(
                label,
                encode,
                kwargs,
                items=items + objects,
                entries=made["entries"],
                input_bytes=made["bytes"],
            )
            if self_test and not row.extra["self_test_matched"]:
                raise SystemExit("the self-test did not match")
            out.unlink()
            Path(f"{out}.encode_info.json").unlink()


def main() -> None:
    """Parse the flags and run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--item-bytes", type=int, default=200)
    parser.add_argument("--objects", type=int, default=64)
    parser.add_argument("--object-bytes", type=int, default=4 * benchlib.MIB)
    parser.add_argument("--sort-budget", type=int, default=None, help="default: the encoder's")
    benchlib.add_common_arguments(parser)
    args = parser.parse_args()
    bench = benchlib.bench_from_args(args)
    run(
        bench,
        items=args.items,
        objects=args.objects,
        item_bytes=args.item_bytes,
        object_bytes=args.object_bytes,
        sort_budget=args.sort_budget,
    )
    bench.finish()


if __name__ == "__main__":
    main()
