"""Print what a ``.fsm`` snapshot holds: header, footer, meta keys, counts and key prefixes.

Usage: ``python scripts/inspect_fsm.py [--depth N] FILE [FILE ...]``. The prefix of a user key
is the key up to and including its N-th ``|`` (default 2: ``!redis|str|``; its last one when
it has fewer), or its first 12 bytes when it has fewer than two. For every
prefix the table lists raw versions, tombstone versions and keys visible at the header's
``last_commit_ts``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import anyio

from elastickv_async.snapshot.mvcc import VisibilityResolver
from elastickv_async.snapshot.reader import open_snapshot
from elastickv_async.snapshot.source import snapshot_index_from_path


def key_prefix(key: bytes, depth: int) -> bytes:
    """The histogram bucket of a user key.

    Up to its ``depth``-th ``|`` (or its last one when it has fewer, but at least two),
    else its first 12 bytes.
    """
    ends: list[int] = []
    at = key.find(b"|")
    while at >= 0 and len(ends) < depth:
        ends.append(at)
        at = key.find(b"|", at + 1)
    return key[: ends[-1] + 1] if len(ends) >= 2 else key[:12]


async def inspect(path: Path, depth: int) -> None:
    """Read ``path`` fully and print its summary."""
    versions: Counter[bytes] = Counter()
    tombstones: Counter[bytes] = Counter()
    visible: Counter[bytes] = Counter()
    async with open_snapshot(path) as snap:
        header = snap.header
        resolver = VisibilityResolver(header.last_commit_ts)
        async for batch in snap.batches(4096):
            for entry in batch:
                prefix = key_prefix(entry.key, depth)
                versions[prefix] += 1
                if entry.tombstone:
                    tombstones[prefix] += 1
            for entry in resolver.resolve(batch):
                visible[key_prefix(entry.key, depth)] += 1
    stats = snap.stats
    print(f"== {path}")
    print(f"size               {stats.total_bytes} bytes")
    print(f"index from name    {snapshot_index_from_path(path)}")
    print(f"header kind        {header.kind}")
    print(f"hlc ceiling ms     {header.hlc_ceiling_ms}")
    print(f"raft cutover index {header.raft_cutover_index}")
    print(f"last_commit_ts     {header.last_commit_ts}")
    print(f"footer             {stats.footer}")
    print(f"payload crc32c     {stats.payload_crc32c:#010x}")
    for name, value in sorted(stats.meta.items()):
        print(f"meta               {name} = {value}")
    print(f"writer rows        {stats.encryption_writer_rows}")
    r = resolver.stats
    print(f"entries (versions) {stats.entries}")
    print(f"tombstone versions {sum(tombstones.values())}")
    print(
        f"resolved           visible={r.visible} superseded={r.versions_superseded} "
        f"tombstoned={r.tombstones} expired={r.expired} future={r.future_versions}"
    )
    print(f"{'versions':>9} {'tombst':>7} {'visible':>8}  prefix")
    for prefix in sorted(versions):
        print(f"{versions[prefix]:9d} {tombstones[prefix]:7d} {visible[prefix]:8d}  {prefix!r}")


def main() -> None:
    """Inspect every file named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depth", type=int, default=2, help="'|'-separated prefix depth")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    for path in args.files:
        anyio.run(inspect, path, args.depth)


if __name__ == "__main__":
    main()
