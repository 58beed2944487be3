"""``inspect``: what a snapshot holds, without decoding it into a tree.

Reads the whole file once: header kind and HLC ceiling, footer status, raw meta keys, and per
key prefix the raw versions, tombstone versions and keys visible at ``last_commit_ts``, plus
where the router would send them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._adapters.registry import REGISTRY
from .routing import Router
from .snapshot.entry import SnapshotHeader
from .snapshot.mvcc import VisibilityResolver
from .snapshot.reader import open_snapshot
from .snapshot.source import snapshot_index_from_path

__all__ = ["PrefixCounts", "SnapshotInspection", "inspect_snapshot", "key_prefix"]


def key_prefix(key: bytes, depth: int = 2) -> bytes:
    """A key's histogram bucket: up to its ``depth``-th ``|`` (at least two), else 12 bytes."""
    ends: list[int] = []
    at = key.find(b"|")
    while at >= 0 and len(ends) < depth:
        ends.append(at)
        at = key.find(b"|", at + 1)
    return key[: ends[-1] + 1] if len(ends) >= 2 else key[:12]


@dataclass(slots=True)
class PrefixCounts:
    """Counts for one key prefix."""

    route: str
    versions: int = 0
    tombstones: int = 0
    visible: int = 0


@dataclass(slots=True)
class SnapshotInspection:
    """Everything :func:`inspect_snapshot` found."""

    path: str
    size_bytes: int
    index_from_name: int | None
    header: SnapshotHeader
    footer: str
    payload_crc32c: int
    meta: dict[str, int]
    encryption_writer_rows: int
    entries: int
    mvcc: dict[str, int]
    prefixes: dict[bytes, PrefixCounts] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "index_from_name": self.index_from_name,
            "header": dataclasses.asdict(self.header),
            "footer": self.footer,
            "payload_crc32c": f"{self.payload_crc32c:08x}",
            "meta": self.meta,
            "encryption_writer_rows": self.encryption_writer_rows,
            "entries": self.entries,
            "mvcc": self.mvcc,
            "prefixes": [
                {"prefix": prefix.decode("utf-8", "backslashreplace")} | dataclasses.asdict(counts)
                for prefix, counts in sorted(self.prefixes.items())
            ],
        }

    def lines(self) -> list[str]:
        """A human-readable rendering."""
        h = self.header
        out = [
            f"file               {self.path} ({self.size_bytes} bytes)",
            f"index from name    {self.index_from_name}",
            f"header             {h.kind}, last_commit_ts={h.last_commit_ts}, "
            f"hlc_ceiling_ms={h.hlc_ceiling_ms}, raft_cutover_index={h.raft_cutover_index}",
            f"footer             {self.footer} (payload crc32c {self.payload_crc32c:08x})",
            *(f"meta key           {k} = {v}" for k, v in sorted(self.meta.items())),
            f"writer rows        {self.encryption_writer_rows}",
            f"entries            {self.entries} versions; "
            + " ".join(f"{k}={v}" for k, v in self.mvcc.items()),
            f"{'versions':>9} {'tombst':>7} {'visible':>8}  {'route':<9} prefix",
        ]
        out += [
            f"{c.versions:9d} {c.tombstones:7d} {c.visible:8d}  {c.route:<9} {p!r}"
            for p, c in sorted(self.prefixes.items())
        ]
        return out


async def inspect_snapshot(path: str | os.PathLike[str], *, depth: int = 2) -> SnapshotInspection:
    """Read the snapshot at ``path`` once and summarise it (nothing is written)."""
    router = Router({spec.name: spec for spec in REGISTRY}, REGISTRY.names())
    prefixes: dict[bytes, PrefixCounts] = {}

    def bucket(key: bytes) -> PrefixCounts:
        prefix = key_prefix(key, depth)
        counts = prefixes.get(prefix)
        if counts is None:
            target, _ = router.route(key)
            counts = prefixes[prefix] = PrefixCounts(route=target or "unknown")
        return counts

    async with open_snapshot(Path(path)) as snap:
        header = snap.header
        resolver = VisibilityResolver(header.last_commit_ts)
        async for batch in snap.batches(4096):
            for entry in batch:
                counts = bucket(entry.key)
                counts.versions += 1
                if entry.tombstone:
                    counts.tombstones += 1
            for entry in resolver.resolve(batch):
                bucket(entry.key).visible += 1
        stats = snap.stats
    return SnapshotInspection(
        path=os.fspath(path),
        size_bytes=stats.total_bytes,
        index_from_name=snapshot_index_from_path(Path(path)),
        header=header,
        footer=stats.footer,
        payload_crc32c=stats.payload_crc32c,
        meta=dict(stats.meta),
        encryption_writer_rows=stats.encryption_writer_rows,
        entries=stats.entries,
        mvcc=dataclasses.asdict(resolver.stats),
        prefixes=prefixes,
    )
