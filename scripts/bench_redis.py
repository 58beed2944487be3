"""Measure the Redis decoder: keys/s and peak RSS for many strings and many hashes.

Writes a synthetic ``.fsm`` in snapshot key order, then decodes it in a child process and
reports the child's wall time and peak RSS. Two workloads, run one after the other:

* ``strings``: ``--strings`` new-format string keys, every other one with an inline TTL and a
  ``!redis|ttl|`` scan-index row (what a live node writes);
* ``hashes``: ``--hashes`` hashes of ``--fields`` fields each, with a 16-byte meta carrying a
  TTL on every other hash, plus its ``!redis|ttl|`` row.

``--mode pipeline`` (default) runs the whole decode with ``--adapter redis``; ``--mode
adapter`` feeds the generated rows straight to the Redis decoder to isolate its own cost.

Usage: ``python scripts/bench_redis.py [--strings N] [--hashes N] [--fields N]
[--mode pipeline|adapter] [--only strings|hashes]``.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio

_MASK = (1 << 64) - 1
_COMMIT_TS = 1 << 40
_TTL_MS = 4_102_444_800_000  # 2100-01-01: never expired
_U32 = struct.Struct(">I").pack
_U64 = struct.Struct(">Q").pack


def _strings(count: int) -> Iterator[tuple[bytes, bytes]]:
    for i in range(count):
        body = b"value-%08d-" % i + b"x" * 24
        if i % 2:
            yield b"!redis|str|str:%08d" % i, b"\xff\x01\x01" + _U64(_TTL_MS + i) + body
        else:
            yield b"!redis|str|str:%08d" % i, b"\xff\x01\x00" + body
    for i in range(1, count, 2):
        yield b"!redis|ttl|str:%08d" % i, _U64(_TTL_MS + i)


def _hashes(count: int, fields: int) -> Iterator[tuple[bytes, bytes]]:
    names = [b"hash:%08d" % i for i in range(count)]
    for name in names:
        prefix = b"!hs|fld|" + _U32(len(name)) + name
        for f in range(fields):
            yield prefix + b"field%03d" % f, b"v" * 32
    for i, name in enumerate(names):
        meta = _U64(fields) + (_U64(_TTL_MS + i) if i % 2 else b"")
        yield b"!hs|meta|" + _U32(len(name)) + name, meta
    for i in range(1, count, 2):
        yield b"!redis|ttl|" + names[i], _U64(_TTL_MS + i)


def _entries(workload: str, args: argparse.Namespace) -> Iterator[tuple[bytes, bytes]]:
    if workload == "strings":
        return _strings(args.strings)
    return _hashes(args.hashes, args.fields)


def write_fsm(path: Path, rows: Iterator[tuple[bytes, bytes]]) -> int:
    """Write the synthetic snapshot (rows must already be in key order); return the count."""
    pack = struct.Struct("<Q").pack
    suffix = _U64(_COMMIT_TS ^ _MASK)
    count = 0
    with path.open("wb") as out:
        out.write(b"EKVPBBL1" + pack(_COMMIT_TS))
        for key, value in rows:
            full_key = key + suffix
            full_value = bytes(9) + value
            out.write(pack(len(full_key)) + full_key + pack(len(full_value)) + full_value)
            count += 1
    return count


async def _run_pipeline(fsm: Path, out: Path) -> None:
    from elastickv_async.options import DecodeOptions
    from elastickv_async.pipeline import decode_snapshot

    await decode_snapshot(fsm, out, DecodeOptions(adapters=("redis",)))


async def _run_adapter(out: Path, rows: Iterator[tuple[bytes, bytes]]) -> None:
    from elastickv_async.adapters.base import DecodeContext
    from elastickv_async.adapters.redis import keys
    from elastickv_async.adapters.redis.decode import RedisDecoder
    from elastickv_async.dump.writer import DumpWriter
    from elastickv_async.options import DecodeOptions
    from elastickv_async.report import Report, make_logger
    from elastickv_async.snapshot.entry import Entry, SnapshotHeader

    report = Report()
    scratch = out / ".scratch"
    scratch.mkdir(parents=True)
    ctx = DecodeContext(
        options=DecodeOptions(adapters=("redis",)),
        writer=DumpWriter(out),
        log=make_logger(report),
        report=report,
        header=SnapshotHeader(_COMMIT_TS),
        scratch=scratch,
        now_ms=0,
    )
    decoder = RedisDecoder(ctx)
    prefixes = sorted(keys.ROUTED_PREFIXES, key=len, reverse=True)
    batch = []
    for key, value in rows:
        prefix = next(p for p in prefixes if key.startswith(p))
        batch.append((prefix, Entry(key, value, _COMMIT_TS, 0, False)))
        if len(batch) == 512:
            await decoder.handle(batch)
            batch = []
    await decoder.handle(batch)
    await decoder.finalize()


def _child(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if args.mode == "pipeline":
        anyio.run(_run_pipeline, Path(args.fsm), out)
    else:
        anyio.run(_run_adapter, out, _entries(args.workload, args))


def _measure(workload: str, args: argparse.Namespace, tmp: Path) -> None:
    fsm = tmp / f"{workload}.fsm"
    keys = args.strings if workload == "strings" else args.hashes
    if args.mode == "pipeline":
        start = time.perf_counter()
        entries = write_fsm(fsm, _entries(workload, args))
        print(
            f"{workload}: wrote {entries} entries ({fsm.stat().st_size / 2**20:.0f} MiB) "
            f"in {time.perf_counter() - start:.1f}s",
            flush=True,
        )
    out = tmp / f"out-{workload}"
    cmd = [sys.executable, __file__, "--child", "--fsm", str(fsm), "--out", str(out)]
    cmd += ["--mode", args.mode, "--workload", workload]
    cmd += ["--strings", str(args.strings), "--hashes", str(args.hashes)]
    cmd += ["--fields", str(args.fields)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"decode failed with status {status}")
    files = sum(len(names) for _root, _dirs, names in os.walk(out / "redis"))
    print(
        f"{workload} ({args.mode}): {keys} keys in {elapsed:.1f}s = {keys / elapsed:,.0f} keys/s; "
        f"peak RSS {usage.ru_maxrss / 1024:.0f} MiB; {files} files",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--strings", type=int, default=1_000_000)
    parser.add_argument("--hashes", type=int, default=100_000)
    parser.add_argument("--fields", type=int, default=10)
    parser.add_argument("--mode", choices=("pipeline", "adapter"), default="pipeline")
    parser.add_argument("--only", choices=("strings", "hashes"), default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--fsm", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        for workload in (args.only,) if args.only else ("strings", "hashes"):
            _measure(workload, args, Path(tmp))


if __name__ == "__main__":
    main()
