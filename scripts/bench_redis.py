"""Measure the Redis decoder: keys/s and peak RSS for many strings and for many hashes.

Two workloads, each a synthetic ``.fsm`` in snapshot order built with the product's key and
value builders (``adapters/redis/keys.py``, ``values.py``):

* ``strings``: ``--strings`` new-format string keys, every other one with an inline TTL and a
  ``!redis|ttl|`` scan-index row (what a live node writes);
* ``hashes``: ``--hashes`` hashes of ``--fields`` fields each, with a 16-byte meta carrying a
  TTL on every other hash, plus its ``!redis|ttl|`` row.

``--mode pipeline`` (default) runs the whole decode with ``--adapter redis``; ``--mode
adapter`` feeds the records straight to the Redis decoder (``benchlib.feed_adapter``),
generated lazily inside the measured child.

Usage: ``python scripts/bench_redis.py [--strings N] [--hashes N] [--fields N]
[--mode pipeline|adapter] [--only strings|hashes] [--json FILE] [--workdir DIR]
[--backend asyncio|trio]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import benchlib

from elastickv_async._adapters.redis.keys import HASH_FIELD, HASH_META, STRING, TTL, wide_key
from elastickv_async._adapters.redis.values import (
    encode_count_meta,
    encode_string_value,
    encode_ttl_value,
)
from elastickv_async._core.options import DecodeOptions
from elastickv_async._core.pipeline import decode_snapshot

WORKLOADS: Final = ("strings", "hashes")
_TTL_MS: Final = 4_102_444_800_000  # 2100-01-01: never expired


def _strings(count: int) -> Iterator[benchlib.Record]:
    for i in range(count):
        ttl = _TTL_MS + i if i % 2 else 0
        yield STRING + b"str:%08d" % i, encode_string_value(b"value-%08d-" % i + b"x" * 24, ttl)
    for i in range(1, count, 2):
        yield TTL + b"str:%08d" % i, encode_ttl_value(_TTL_MS + i)


def _hashes(count: int, fields: int) -> Iterator[benchlib.Record]:
    names = [b"hash:%08d" % i for i in range(count)]
    for name in names:
        for f in range(fields):
            yield wide_key(HASH_FIELD, name, b"field%03d" % f), b"v" * 32
    for i, name in enumerate(names):
        yield wide_key(HASH_META, name), encode_count_meta(fields, _TTL_MS + i if i % 2 else None)
    for i in range(1, count, 2):
        yield TTL + names[i], encode_ttl_value(_TTL_MS + i)


def records(workload: str, count: int, fields: int) -> Iterator[benchlib.Record]:
    """The records of ``workload`` (``count`` strings or hashes), in snapshot order."""
    return _strings(count) if workload == "strings" else _hashes(count, fields)


def prepare(fsm: str, workload: str, count: int, fields: int) -> dict[str, int]:
    """Write the synthetic snapshot; return its entry count and size."""
    return benchlib.write_fsm(Path(fsm), records(workload, count, fields))


def _files(out: str) -> int:
    return sum(len(names) for _root, _dirs, names in os.walk(Path(out) / "redis"))


async def decode(fsm: str, out: str) -> dict[str, Any]:
    """The whole decode; return the report's counters and the number of files written."""
    report = await decode_snapshot(fsm, out, DecodeOptions(adapters=("redis",)))
    return report.counters | {"redis_files": _files(out)}


async def feed(out: str, workload: str, count: int, fields: int) -> dict[str, Any]:
    """Generate the records and feed them to the Redis decoder alone."""
    report = await benchlib.feed_adapter("redis", Path(out), records(workload, count, fields))
    return report.counters | {"redis_files": _files(out)}


def run(
    bench: benchlib.Bench, *, workload: str, count: int, fields: int = 10, mode: str = "pipeline"
) -> None:
    """Generate one workload's snapshot, then measure its decode."""
    with bench.workspace(f"redis-{workload}") as work:
        # Adapter mode reads no file: the stream is only sized (written to /dev/null).
        fsm = str(work / "bench.fsm") if mode == "pipeline" else os.devnull
        shape = {"workload": workload, "count": count, "fields": fields}
        what = f"{count:,} {workload}" + (f" x {fields} fields" if workload == "hashes" else "")
        made = bench.prepare(what, prepare, fsm=fsm, **shape)
        out = str(work / "out")
        label = f"redis {workload}" + (" (adapter)" if mode == "adapter" else "")
        sizes = {"items": count, "entries": made["entries"], "input_bytes": made["bytes"]}
        if mode == "pipeline":
            bench.measure(label, decode, {"fsm": fsm, "out": out}, **sizes)
        else:
            bench.measure(label, feed, {"out": out, **shape}, **sizes)


def main() -> None:
    """Parse the flags and run the chosen workloads one after the other."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--strings", type=int, default=1_000_000)
    parser.add_argument("--hashes", type=int, default=100_000)
    parser.add_argument("--fields", type=int, default=10)
    parser.add_argument("--mode", choices=("pipeline", "adapter"), default="pipeline")
    parser.add_argument("--only", choices=WORKLOADS, default=None)
    benchlib.add_common_arguments(parser)
    args = parser.parse_args()
    bench = benchlib.bench_from_args(args)
    for workload in (args.only,) if args.only else WORKLOADS:
        count = args.strings if workload == "strings" else args.hashes
        run(bench, workload=workload, count=count, fields=args.fields, mode=args.mode)
    bench.finish()


if __name__ == "__main__":
    main()
