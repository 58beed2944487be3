"""Synthetic group snapshots for the cluster tests, built with the snapshot test streams."""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Iterable
from pathlib import Path

from elastickv_async._core.snapshot.reader import open_snapshot

# The group files are built with the snapshot tests' stream builders; trees are compared
# with the real-node tests' semantic comparison.
for _helpers in ("unit/snapshot", "realnode"):
    _path = str(Path(__file__).resolve().parents[1] / _helpers)
    if _path not in sys.path:
        sys.path.append(_path)

from snapshot_streams import hlc_v1, mvcc_key, stream, version, with_footer  # noqa: E402

__all__ = [
    "CEILING_MS",
    "FAR_FUTURE_MS",
    "catalog_row",
    "redis_strings",
    "split_snapshot",
    "tree_without_manifest",
    "two_group_cluster",
    "write_group",
]

#: The groups' HLC ceiling ("now" for Redis expiry) and a TTL well after it.
CEILING_MS = 1_700_000_000_000
FAR_FUTURE_MS = 1_900_000_000_000

Row = tuple[bytes, int, bytes]


def _u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def catalog_row(route_id: int, group: int, start: bytes, end: bytes | None) -> Row:
    """A ``!dist|route|`` row (codec v2) as ``distribution/catalog.go`` lays it out."""
    value = b"\x02" + _u64(route_id) + _u64(group) + b"\x00" + _u64(0)
    value += _u64(len(start)) + start
    value += b"\x00" if end is None else b"\x01" + _u64(len(end)) + end
    value += _u64(0)
    return b"!dist|route|" + _u64(route_id), 1, value


def write_group(
    path: Path,
    last_commit_ts: int,
    rows: Iterable[Row],
    tombstones: Iterable[tuple[bytes, int]] = (),
) -> Path:
    """A node-style group file (``EKVTHLC1`` header, footer) of ``(key, commit_ts, body)`` rows
    and ``(key, commit_ts)`` deletions."""
    framed = [(mvcc_key(key, ts), version(key, ts, value)) for key, ts, value in rows]
    framed += [(mvcc_key(key, ts), version(key, ts, tombstone=True)) for key, ts in tombstones]
    body = stream(last_commit_ts, (frame for _, frame in sorted(framed)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(with_footer(hlc_v1(CEILING_MS) + body))
    return path


def redis_strings(*items: tuple[str, int, str]) -> list[Row]:
    """Legacy Redis string rows ``(key, commit_ts, value)``."""
    return [(b"!redis|str|" + k.encode(), ts, v.encode()) for k, ts, v in items]


def two_group_cluster(base: Path, *, with_catalog: bool = True) -> tuple[Path, Path]:
    """Group 1 (default, routes keys below ``m``) and group 2 (``m`` and up).

    - ``joined``: its string row is in group 1, its TTL row in group 2;
    - ``apple`` and ``zebra``: the same raw string key in both groups (stale copies), the
      stale copy being the *newer* one so that recency alone would pick it.
    """
    catalog = [catalog_row(1, 1, b"", b"m"), catalog_row(2, 2, b"m", None)] if with_catalog else []
    g1 = write_group(
        base / "g1.fsm",
        100,
        [
            *catalog,
            *redis_strings(("joined", 10, "hello"), ("apple", 20, "g1-apple")),
            *redis_strings(("zebra", 90, "g1-zebra-stale")),
        ],
    )
    g2 = write_group(
        base / "g2.fsm",
        200,
        [
            (b"!redis|ttl|joined", 11, _u64(FAR_FUTURE_MS)),
            *redis_strings(("apple", 150, "g2-apple-stale"), ("zebra", 30, "g2-zebra")),
            *redis_strings(("mango", 40, "g2-mango")),
        ],
    )
    return g1, g2


def tree_without_manifest(root: Path) -> dict[str, bytes]:
    """Every regular file of a dump tree but MANIFEST.json and CHECKSUMS (which hold times)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("MANIFEST.json", "CHECKSUMS")
    }


async def split_snapshot(source: Path, base: Path, groups: int = 3) -> list[Path]:
    """Deal the raw versions of ``source`` over ``groups`` group files, no catalog rows.

    Each version goes to a group chosen from its key and timestamp, so a key's versions, a
    table's schema and items, a queue's meta and messages are spread over the groups. Every
    group keeps ``source``'s header, so each resolves at the same ``last_commit_ts``; with no
    catalog the newest copy of a key wins the merge, and the cluster decode must give the
    tree of ``source`` itself.
    """
    frames: list[list[bytes]] = [[] for _ in range(groups)]
    async with open_snapshot(source) as snap:
        header = snap.header
        async for batch in snap.batches(512, 1 << 20):
            for e in batch:
                if e.key.startswith(b"!dist|"):
                    continue
                target = zlib.crc32(e.key + e.commit_ts.to_bytes(8, "big")) % groups
                frames[target].append(
                    version(
                        e.key, e.commit_ts, e.value, tombstone=e.tombstone, expire_at=e.expire_at
                    )
                )
    assert header.hlc_ceiling_ms is not None
    paths = []
    for index, group_frames in enumerate(frames, start=1):
        path = base / f"g{index}.fsm"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = stream(header.last_commit_ts, group_frames)
        path.write_bytes(with_footer(hlc_v1(header.hlc_ceiling_ms) + body))
        paths.append(path)
    return paths
