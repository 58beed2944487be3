"""Measure the snapshot reader and the MVCC resolver on a stream of small entries.

The synthetic ``.fsm`` holds ``--entries`` entries (counting every version): about one user key
in four has an older version and one in twenty ends in a tombstone. Two rows: framing alone
(``reader``) and framing plus visibility resolution (``reader+resolver``), each in a fresh
child process (see ``benchlib``).

Usage: ``python scripts/bench_snapshot_reader.py [--entries N] [--chunk-size B] [--json FILE]
[--workdir DIR] [--backend asyncio|trio]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import benchlib

from elastickv_async._core.snapshot.mvcc import VisibilityResolver
from elastickv_async._core.snapshot.reader import DEFAULT_CHUNK_SIZE, open_snapshot

LAST_COMMIT_TS: Final = 10_000
#: (commit_ts, tombstone) of each user key's versions, newest first, chosen by key index.
_LIVE: Final = (9_000, False)
_OLDER: Final = (5_000, False)
_DELETED: Final = (9_500, True)


def _versions(i: int) -> list[tuple[int, bool]]:
    versions = [_LIVE]
    if i % 4 == 0:
        versions.append(_OLDER)
    if i % 20 == 0:
        versions.insert(0, _DELETED)
    return versions


def _records(entries: int) -> Iterator[tuple[bytes, int, bool, bytes]]:
    """``(user_key, commit_ts, tombstone, body)`` in snapshot order, about ``entries`` of them."""
    written = i = 0
    while written < entries:
        user_key = b"!redis|str|user:%010d" % i
        for ts, tombstone in _versions(i):
            yield user_key, ts, tombstone, b"" if tombstone else b"value-%d-%d" % (i, ts)
            written += 1
        i += 1


def prepare(fsm: str, entries: int) -> dict[str, int]:
    """Write the synthetic stream; return its entry count and size."""
    path = Path(fsm)
    with benchlib.FsmWriter(path, LAST_COMMIT_TS) as out:
        for user_key, ts, tombstone, body in _records(entries):
            out.add(user_key, body, commit_ts=ts, tombstone=tombstone)
    return {"entries": out.entries, "bytes": out.size}


async def read(fsm: str, resolve: bool, chunk_size: int) -> dict[str, int]:
    """Read the stream once (resolving visibility if asked); return the entry counts."""
    visible = 0
    async with open_snapshot(Path(fsm), chunk_size=chunk_size) as snap:
        resolver = VisibilityResolver(snap.header.last_commit_ts)
        async for batch in snap.batches(512):
            if resolve:
                visible += len(resolver.resolve(batch))
    counts = {"raw_entries": snap.stats.entries}
    if resolve:
        counts["visible"] = visible
    return counts


def run(bench: benchlib.Bench, *, entries: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
    """Generate the stream, then measure ``reader`` and ``reader+resolver``."""
    with bench.workspace("reader") as work:
        fsm = str(work / "bench.fsm")
        made = bench.prepare(f"{entries:,} entries", prepare, fsm=fsm, entries=entries)
        for label, resolve in (("reader", False), ("reader+resolver", True)):
            bench.measure(
                label,
                read,
                {"fsm": fsm, "resolve": resolve, "chunk_size": chunk_size},
                items=made["entries"],
                entries=made["entries"],
                input_bytes=made["bytes"],
            )


def main() -> None:
    """Parse the flags and run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    benchlib.add_common_arguments(parser)
    args = parser.parse_args()
    bench = benchlib.bench_from_args(args)
    run(bench, entries=args.entries, chunk_size=args.chunk_size)
    bench.finish()


if __name__ == "__main__":
    main()
