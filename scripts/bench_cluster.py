"""Measure a cluster decode: one process vs a Dask LocalCluster, wall time and peak RSS.

A synthetic cluster of ``--groups`` groups is made by splitting one large mixed snapshot at
route boundaries: table ``t<g>`` (``--items`` items, shaped like ``bench_dynamodb``'s orders),
queue ``q<g>`` (``--items``/10 messages, shaped like ``bench_sqs``'s) and bucket ``b<g>``
(``--objects`` objects of 64 KiB) route to group ``g``, so group ``g``'s file holds exactly
their rows, written in snapshot order with the product's own key helpers. Every table, queue
and bucket is a partition of its own. Both runs decode all groups into one tree (``--layout
jsonl`` by default, to measure the engine rather than a million small files):

- ``local``: ``decode_cluster`` in one child process (its peak RSS is the process's);
- ``dask``: a child that starts a ``LocalCluster`` of ``--workers`` single-threaded worker
  processes and runs ``decode_cluster(..., client=...)``; peak RSS is reported per worker
  (each worker's ``VmHWM``, interpreter and Dask included) and for the driver.

Usage: ``python scripts/bench_cluster.py [--groups 8] [--items 250000] [--objects 64]
[--workers 2] [--layout jsonl|per-item] [--workdir DIR] [--json FILE]``.
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
import orjson
from bench_dynamodb import _SCHEMA, _item
from bench_sqs import _message_id, _message_value

from elastickv_async._adapters.dynamodb.encode import item_key
from elastickv_async._adapters.dynamodb.keys import (
    RESTORE_GENERATION,
    table_gen_key,
    table_meta_key,
)
from elastickv_async._adapters.dynamodb.layout import public_to_item, public_to_schema
from elastickv_async._adapters.dynamodb.values import encode_item, encode_schema
from elastickv_async._adapters.s3.keys import blob_key, bucket_meta_key, manifest_key
from elastickv_async._adapters.sqs.keys import (
    QUEUE_META_MAGIC,
    message_data_key,
    queue_gen_key,
    queue_meta_key,
)
from elastickv_async._core.cluster.api import decode_cluster
from elastickv_async._core.options import DecodeOptions

_OBJECT_BYTES = 64 << 10


def _table_records(table: str, items: int) -> list[benchlib.Record]:
    schema = public_to_schema(dict(_SCHEMA, table_name=table), "bench schema")
    out: list[benchlib.Record] = [
        (table_meta_key(table), encode_schema(schema)),
        (table_gen_key(table), str(RESTORE_GENERATION).encode()),
    ]
    for i in range(items):
        item = public_to_item(_item(i), f"bench item {i}")
        out.append((item_key(schema, item, f"bench item {i}"), encode_item(item)))
    return out


def _queue_records(queue: bytes, messages: int, seed: int) -> list[benchlib.Record]:
    out = [
        (message_data_key(queue, None, 1, _message_id(seed, i)), _message_value(seed, i))
        for i in range(messages)
    ]
    meta = {"name": queue.decode(), "generation": 1, "visibility_timeout_seconds": 30}
    out.append((queue_gen_key(queue), b"1"))
    out.append((queue_meta_key(queue), QUEUE_META_MAGIC + orjson.dumps(meta)))
    return out


def _bucket_records(bucket: bytes, objects: int, seed: int) -> list[benchlib.Record]:
    meta = {"bucket_name": bucket.decode(), "generation": 1, "owner": "bench"}
    out = [(bucket_meta_key(bucket), orjson.dumps(meta))]
    for n in range(objects):
        key = b"obj-%05d.bin" % n
        body = (b"%d:%d|" % (seed, n)) * (_OBJECT_BYTES // 16)
        body = body[:_OBJECT_BYTES]
        out.append((blob_key(bucket, 1, key, b"up", 1, 0), body))
        doc = {
            "upload_id": "up",
            "etag": "bench",
            "size_bytes": len(body),
            "parts": [{"part_no": 1, "chunk_count": 1, "chunk_sizes": [len(body)]}],
        }
        out.append((manifest_key(bucket, 1, key), orjson.dumps(doc)))
    return out


def prepare(workdir: Path, groups: int, items: int, objects: int) -> list[Path]:
    """Write one group file per table, queue and bucket; return their paths
    (``group-<g>/fsm-snap/`` layout)."""
    paths = []
    for group in range(1, groups + 1):
        path = workdir / f"data/group-{group}/fsm-snap/{group:016x}.fsm"
        path.parent.mkdir(parents=True, exist_ok=True)
        records = _table_records(f"t{group}", items)
        records += _queue_records(b"q%d" % group, items // 10, group)
        records += _bucket_records(b"b%d" % group, objects, group)
        records.sort()
        benchlib.write_fsm(path, records)
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
    parser.add_argument("--objects", type=int, default=64, help="S3 objects per group")
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
    inputs = prepare(workdir, args.groups, args.items, args.objects)
    size = sum(p.stat().st_size for p in inputs)
    rows = {
        "groups": args.groups,
        "items_per_group": args.items,
        "messages_per_group": args.items // 10,
        "objects_per_group": args.objects,
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
