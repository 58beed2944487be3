"""``inspect``: what a snapshot holds, without decoding it into a tree.

Reads the whole file once: header kind and HLC ceiling, footer status, raw meta keys, each
adapter's inventory of its visible data (tables, buckets, queues, key types: the adapters
count, through their :class:`~elastickv_async._adapters.base.Inventory` hook), and per key
prefix the raw versions, tombstone versions and keys visible at ``last_commit_ts``, plus
where the router would send them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from .._adapters.base import Inventory, InventoryRow
from .._adapters.registry import REGISTRY
from .console import human_bytes
from .errors import escape_key
from .memory import DEFAULT_MEMORY_BUDGET, MemoryBudget
from .routing import Router
from .snapshot.entry import SnapshotHeader
from .snapshot.mvcc import VisibilityResolver
from .snapshot.reader import open_snapshot
from .snapshot.source import snapshot_index_from_path

__all__ = ["PrefixCounts", "SnapshotInspection", "inspect_snapshot", "key_prefix"]


#: The bucket of keys without any ``|``: no prefix to cut there.
NO_SEPARATOR: Final = b"(no | in key)"


def key_prefix(key: bytes, depth: int = 2) -> bytes:
    """A key's histogram bucket: the key up to its ``depth``-th ``|`` (or its last one, when it
    has fewer), so a bucket never ends inside a segment; :data:`NO_SEPARATOR` without any."""
    end = -1
    for _ in range(max(depth, 1)):
        at = key.find(b"|", end + 1)
        if at < 0:
            break
        end = at
    return key[: end + 1] if end >= 0 else NO_SEPARATOR


@dataclass(slots=True)
class PrefixCounts:
    """Counts for one key prefix; ``route`` is ``mixed`` when its keys go to several places."""

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
    #: Each adapter's inventory rows, by adapter name.
    inventory: dict[str, list[InventoryRow]] = field(default_factory=dict)

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
            "inventory": {
                adapter: [{"kind": r.kind, "name": r.name} | r.counts for r in rows]
                for adapter, rows in self.inventory.items()
            },
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
        ]
        for adapter, rows in self.inventory.items():
            out.append(f"{adapter:<19}(nothing)" if not rows else adapter)
            out += [f"  {r.kind:<9} {r.name}: {_counts(r.counts)}" for r in rows]
        out.append(f"{'versions':>9} {'tombst':>7} {'visible':>8}  {'route':<9} prefix")
        out += [
            f"{c.versions:9d} {c.tombstones:7d} {c.visible:8d}  {c.route:<9} " + escape_key(p)
            for p, c in sorted(self.prefixes.items())
        ]
        return out


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(
        f"{human_bytes(n)}" if name == "bytes" else f"{n:,} {name}" for name, n in counts.items()
    )


async def inspect_snapshot(
    path: str | os.PathLike[str], *, depth: int = 2, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> SnapshotInspection:
    """Read the snapshot at ``path`` once and summarise it (nothing is written), reading
    within ``memory_budget`` bytes (the per-prefix counts and the inventories come beside
    it: they grow with the snapshot's distinct prefixes and names, not its size)."""
    memory = MemoryBudget(memory_budget, "decode", REGISTRY.names())
    chunk = memory.scan_chunk()
    router = Router({spec.name: spec for spec in REGISTRY}, REGISTRY.names())
    prefixes: dict[bytes, PrefixCounts] = {}
    inventories: dict[str, Inventory] = {
        spec.name: spec.inventory() for spec in REGISTRY if spec.inventory is not None
    }

    def bucket(key: bytes) -> PrefixCounts:
        prefix = key_prefix(key, depth)
        route = router.route(key)[0] or "unknown"
        counts = prefixes.get(prefix)
        if counts is None:
            counts = prefixes[prefix] = PrefixCounts(route=route)
        elif counts.route != route:
            counts.route = "mixed"
        return counts

    async with open_snapshot(Path(path), chunk_size=chunk) as snap:
        header = snap.header
        resolver = VisibilityResolver(header.last_commit_ts)
        async for batch in snap.batches(memory.scan_entries(), chunk):
            for entry in batch:
                counts = bucket(entry.key)
                counts.versions += 1
                if entry.tombstone:
                    counts.tombstones += 1
            for entry in resolver.resolve(batch):
                bucket(entry.key).visible += 1
                target, routed = router.route(entry.key)
                inventory = inventories.get(target or "")
                if inventory is not None:
                    inventory.add(routed, entry)
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
        mvcc=msgspec.structs.asdict(resolver.stats),
        prefixes=prefixes,
        inventory={name: inv.rows() for name, inv in inventories.items()},
    )
