"""``decode --dry-run``: what a decode would write, from one read of the snapshot, writing
nothing.

The snapshot is read and its visible versions routed exactly as a decode routes them; per
enabled adapter the plan counts the keys and value bytes it would receive and, for adapters
that cut their keyspace into units (tables, buckets, queues: ``AdapterSpec.partition_unit``),
the same per unit. Files and bytes are estimates: one file per routed key and the value
bytes are upper bounds for most layouts (an object's chunks, a hash's fields or a queue's
messages share a file; JSON rendering adds some bytes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread

from .._adapters.registry import REGISTRY
from .dump.roots import checked_output_roots
from .memory import MemoryBudget
from .options import DecodeOptions
from .pipeline import normalise_options
from .routing import INTERNAL, Router
from .scope import scope_filters
from .snapshot.mvcc import VisibilityResolver
from .snapshot.reader import open_snapshot

__all__ = ["AdapterPlan", "DecodePlan", "plan_decode"]


@dataclass(slots=True)
class AdapterPlan:
    """What one adapter would receive: keys and value bytes, in total and per unit."""

    keys: int = 0
    value_bytes: int = 0
    #: Per table, bucket or queue (decoded name): ``[keys, value bytes]``.
    units: dict[str, list[int]] = field(default_factory=dict)


@dataclass(slots=True)
class DecodePlan:
    """The outcome of :func:`plan_decode`."""

    input: str
    size_bytes: int
    last_commit_ts: int
    entries: int
    adapters: dict[str, AdapterPlan]
    internal: int = 0
    unknown: int = 0
    #: Adapters whose subtree would go to a root of its own (``--output-root``), absolute.
    output_roots: dict[str, str] = field(default_factory=dict)

    @property
    def estimated_files(self) -> int:
        """At most this many files (plus MANIFEST.json and CHECKSUMS)."""
        return sum(a.keys for a in self.adapters.values()) + 2

    @property
    def estimated_bytes(self) -> int:
        """About this many bytes of values (rendering adds some)."""
        return sum(a.value_bytes for a in self.adapters.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "input": self.input,
            "size_bytes": self.size_bytes,
            "last_commit_ts": self.last_commit_ts,
            "entries": self.entries,
            "internal_keys": self.internal,
            "unknown_keys": self.unknown,
            "estimated_files": self.estimated_files,
            "estimated_bytes": self.estimated_bytes,
            "adapters": {
                name: {
                    "keys": a.keys,
                    "value_bytes": a.value_bytes,
                    "units": {u: {"keys": k, "value_bytes": b} for u, (k, b) in a.units.items()},
                }
                for name, a in self.adapters.items()
            },
        } | ({"output_roots": self.output_roots} if self.output_roots else {})

    def lines(self) -> list[str]:
        """A human-readable rendering."""
        out = [
            f"dry run: nothing written; {self.input} ({self.size_bytes:,} bytes, "
            f"{self.entries:,} versions, last_commit_ts {self.last_commit_ts})",
            f"would write at most {self.estimated_files:,} files, about "
            f"{self.estimated_bytes:,} bytes of values",
        ]
        for name, a in self.adapters.items():
            root = self.output_roots.get(name)
            place = f" (into {root}/{name}/)" if root is not None else ""
            out.append(f"  {name}: {a.keys:,} keys, {a.value_bytes:,} bytes{place}")
            out += [f"    {unit}: {k:,} keys, {b:,} bytes" for unit, (k, b) in a.units.items()]
        out.append(f"  skipped: {self.internal:,} internal keys, {self.unknown:,} unknown keys")
        return out


async def plan_decode(
    input_path: str | os.PathLike[str],
    options: DecodeOptions | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    output_roots: Mapping[str, str | os.PathLike[str]] | None = None,
) -> DecodePlan:
    """Read the snapshot at ``input_path`` (``"-"``: standard input) and tell what decoding it
    with ``options`` would write, without writing anything.

    ``output_roots`` are checked as the decode into ``output`` checks them, and the plan
    names the root each redirected adapter would write to.
    """
    options = normalise_options(options or DecodeOptions())
    specs = {spec.name: spec for spec in REGISTRY}
    enabled = REGISTRY.select(options.adapters)
    main = Path(output if output is not None else ".")
    roots = await anyio.to_thread.run_sync(
        lambda: checked_output_roots(main, output_roots, known=REGISTRY.names(), selected=enabled)
    )
    router = Router(specs, enabled)
    adapters = {name: AdapterPlan() for name in enabled}
    in_scope = {name: f.keep for name, f in scope_filters(options.scope, specs).items()}
    internal = unknown = 0
    memory = MemoryBudget(options.memory_budget, "decode", enabled)
    chunk = memory.scan_chunk()
    async with open_snapshot(Path(input_path), chunk_size=chunk) as snap:
        header = snap.header
        resolver = VisibilityResolver(header.last_commit_ts)
        async for batch in snap.batches(memory.scan_entries(), chunk):
            for entry in resolver.resolve(batch):
                target, prefix = router.route(entry.key)
                if target is None:
                    unknown += 1
                    continue
                if target == INTERNAL:
                    internal += 1
                    continue
                if target in in_scope and not in_scope[target](prefix, entry.key):
                    continue
                plan = adapters[target]
                plan.keys += 1
                plan.value_bytes += len(entry.value)
                unit = specs[target].partition_unit(prefix, entry.key)
                if unit is not None:
                    counts = plan.units.setdefault(unit.decode("utf-8", "backslashreplace"), [0, 0])
                    counts[0] += 1
                    counts[1] += len(entry.value)
        stats = snap.stats
    for plan in adapters.values():
        plan.units = dict(sorted(plan.units.items()))
    return DecodePlan(
        input=os.fspath(input_path),
        size_bytes=stats.total_bytes,
        last_commit_ts=header.last_commit_ts,
        entries=stats.entries,
        adapters=adapters,
        internal=internal,
        unknown=unknown,
        output_roots=roots.recorded(),
    )
