"""Measure a cluster decode: one process vs a Dask LocalCluster, wall time and peak RSS.

A synthetic cluster of ``--groups`` groups is made by splitting one large DynamoDB snapshot at
route boundaries: table ``t<g>`` (``--items`` items, shaped like ``bench_dynamodb``'s orders)
routes to group ``g``, so group ``g``'s file holds exactly that table's rows, written in
snapshot order with the product's own encode helpers. Both runs decode all groups into one tree
(``--layout jsonl`` by default, to measure the engine rather than a million small files):

- ``local``: ``decode_cluster`` in one child process (its peak RSS is the process's);
- ``dask``: a child that starts a ``LocalCluster`` of ``--workers`` single-threaded worker
  processes and runs ``decode_cluster(..., client=...)``; peak RSS is reported per worker
  (each worker's ``VmHWM``, interpreter and Dask included) and for the driver.

Usage: ``python scripts/bench_cluster.py [--groups 8] [--items 250000] [--workers 2]
[--layout jsonl|per-item] [--workdir DIR] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import benchlib
from bench_dynamodb import _SCHEMA, _item

from elastickv_async._adapters.dynamodb.encode import item_key
from elastickv_async._adapters.dynamodb.keys import (
    RESTORE_GENERATION,
    table_gen_key,
    table_meta_key,
)
from elastickv_async._adapters.dynamodb.layout import public_to_item, public_to_schema
from elastickv_async._adapters.dynamodb.values import encode_item, encode_schema
from elastickv_async._core.cluster.api import decode_cluster
from elastickv_async._core.options import DecodeOptions


def _group_records(table: str, items: int) -> list[benchlib.Record]:
    schema = public_to_schema(dict(_SCHEMA, table_name=table), "bench schema")
    out: list[benchlib.Record] = [
        (table_meta_key(table), encode_schema(schema)),
        (table_gen_key(table), str(RESTORE_GENERATION).encode()),
    ]
    for i in range(items):
        item = public_to_item(_item(i), f"bench item {i}")
        out.append((item_key(schema, item, f"bench item {i}"), encode_item(item)))
    out.sort()
    return out


def prepare(workdir: Path, groups: int, items: int) -> list[Path]:
    """Write one group file per table; return their paths (``group-<g>/fsm-snap/`` layout)."""
    paths = []
    for group in range(1, groups + 1):
        path = workdir / f"data/group-{group}/fsm-snap/{group:016x}.fsm"
        path.parent.mkdir(parents=True, exist_ok=True)
        benchlib.write_fsm(path, _group_records(f"t{group}", items))
        paths.append(path)
    return paths


def _vmhwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def _local(inputs: list[str], out: str, layout: str) -> dict[str, Any]:
    await decode_cluster(
        inputs, out, DecodeOptions(adapter_options={"dynamodb": {"layout": layout}})
    )
    return {}


async def _dask(inputs: list[str], out: str, layout: str, workers: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    async with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            asynchronous=True,
            dashboard_address="127.0.0.1:0",  # None still binds 8787
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster, asynchronous=True) as client,  # type: ignore[no-untyped-call]
    ):
        await client.wait_for_workers(workers)
        start = time.perf_counter()
        await decode_cluster(
            inputs,
            out,
            DecodeOptions(adapter_options={"dynamodb": {"layout": layout}}),
            client=client,
        )
        seconds = time.perf_counter() - start
        per_worker = await client.run(_vmhwm_kib)
    return {"decode_seconds": seconds, "worker_peak_rss_kib": sorted(per_worker.values())}


def _child(mode: str, inputs: list[str], out: str, layout: str, workers: int) -> None:
    start = time.perf_counter()
    if mode == "local":
        extra = anyio.run(_local, inputs, out, layout)
    else:
        extra = anyio.run(_dask, inputs, out, layout, workers)
    doc = {"seconds": time.perf_counter() - start, "peak_rss_kib": _vmhwm_kib(), **extra}
    print(json.dumps(doc))


def _measure(mode: str, inputs: list[Path], out: Path, layout: str, workers: int) -> Any:
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, __file__, "--child", mode, "--out", str(out), "--layout", layout]
    argv += ["--workers", str(workers), *map(str, inputs)]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Generate the cluster, measure both modes, print (and optionally save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--items", type=int, default=250_000, help="items per group")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--layout", default="jsonl", choices=("jsonl", "per-item"))
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=("local", "dask"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("inputs", nargs="*")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.inputs, str(args.out), args.layout, args.workers)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    inputs = prepare(workdir, args.groups, args.items)
    size = sum(p.stat().st_size for p in inputs)
    rows = {
        "groups": args.groups,
        "items_per_group": args.items,
        "input_mb": round(size / 1e6, 1),
        "load1_before": os.getloadavg()[0],
        "local": _measure("local", inputs, workdir / "out-local", args.layout, args.workers),
        "dask": _measure("dask", inputs, workdir / "out-dask", args.layout, args.workers),
    }
    print(json.dumps(rows, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
