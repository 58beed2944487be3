"""Measure the snapshot reader and the MVCC resolver on a synthetic stream.

Writes a temporary ``.fsm`` of ``--entries`` small entries (about one user key in four has an
older version, one in twenty ends in a tombstone), then times framing alone and framing plus
resolution. Usage: ``python scripts/bench_snapshot_reader.py [--entries N] [--chunk-size B]``.
"""

from __future__ import annotations

import argparse
import struct
import tempfile
import time
from pathlib import Path

import anyio

from elastickv_async.snapshot.mvcc import VisibilityResolver
from elastickv_async.snapshot.reader import open_snapshot

_MASK = (1 << 64) - 1


def write_stream(path: Path, entries: int) -> int:
    """Write a synthetic EKVPBBL1 stream with about ``entries`` entries; return its size."""
    last_commit_ts = 10_000
    pack_len = struct.Struct("<Q").pack
    with path.open("wb") as out:
        out.write(b"EKVPBBL1" + pack_len(last_commit_ts))
        written = 0
        i = 0
        while written < entries:
            user_key = b"!redis|str|user:%010d" % i
            versions = [(9_000, False)]
            if i % 4 == 0:
                versions.append((5_000, False))
            if i % 20 == 0:
                versions.insert(0, (9_500, True))
            for ts, tombstone in versions:
                key = user_key + struct.pack(">Q", ts ^ _MASK)
                body = b"" if tombstone else b"value-%d-%d" % (i, ts)
                value = bytes([1 if tombstone else 0]) + bytes(8) + body
                out.write(pack_len(len(key)) + key + pack_len(len(value)) + value)
                written += 1
            i += 1
    return path.stat().st_size


async def measure(path: Path, chunk_size: int, resolve: bool) -> tuple[float, int, int]:
    """Read ``path`` once; return (seconds, raw entries, visible entries)."""
    start = time.perf_counter()
    visible = 0
    async with open_snapshot(path, chunk_size=chunk_size) as snap:
        resolver = VisibilityResolver(snap.header.last_commit_ts)
        async for batch in snap.batches(512):
            if resolve:
                visible += len(resolver.resolve(batch))
    return time.perf_counter() - start, snap.stats.entries, visible


def main() -> None:
    """Generate the stream, then print entries/s and MB/s for both measurements."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=4 << 20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.fsm"
        size = write_stream(path, args.entries)
        print(f"stream: {args.entries} entries, {size / 1e6:.1f} MB")
        for label, resolve in (("reader", False), ("reader+resolver", True)):
            best = min(anyio.run(measure, path, args.chunk_size, resolve) for _ in range(3))
            seconds, count, visible = best
            print(
                f"{label:16s} {seconds:6.3f} s  {count / seconds:>10,.0f} entries/s  "
                f"{size / seconds / 1e6:6.1f} MB/s  visible={visible}"
            )


if __name__ == "__main__":
    main()
