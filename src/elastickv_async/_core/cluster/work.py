"""The two kinds of work a cluster decode is made of, the same on one machine or on Dask.

- :func:`resolve_group` (where the group's file is): read the file, verify its footer, keep
  each key's visible version at the group's own ``last_commit_ts``, and cut the visible stream
  into one sorted run per partition; also collect the route catalog rows.
- :func:`decode_partition` (anywhere the output is reachable): merge the groups' runs of one
  partition and decode them with the single-file pipeline's adapters.

**Partition rule.** A partition is one adapter's whole keyspace (every prefix the router sends
to it). An adapter joins rows across its prefixes (a table's schema and its items, a key's
rows and its TTL row, a queue's meta and its messages, a bucket's meta and its objects) and
writes files shared by many keys (``KEYMAP.jsonl``), so any cut inside it could split what
must stay together; distinct adapters write disjoint subtrees.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread

from ..._adapters.registry import REGISTRY
from ..options import DecodeOptions
from ..pipeline import StreamOutcome, decode_entries
from ..report import Report, make_logger
from ..routing import INTERNAL, Router, prefix_family
from ..snapshot.entry import SnapshotHeader
from ..snapshot.mvcc import VisibilityResolver
from ..snapshot.reader import SnapshotStats, open_snapshot
from ..snapshot.source import snapshot_index_from_path
from .inputs import GroupInput
from .merge import merge_runs
from .routes import CATALOG_ROUTE_PREFIX, RouteCatalog
from .runs import RunReader, RunWriter

__all__ = [
    "GroupResult",
    "PartitionResult",
    "cluster_header",
    "decode_partition",
    "describe",
    "merge_report",
    "partition_runs",
    "resolve_group",
]

_HLC_LOGICAL_BITS: Final = 16


@dataclass(slots=True)
class GroupResult:
    """One group's resolved state: its runs by partition, and what its file said."""

    group: int
    source: str
    header: SnapshotHeader
    stats: SnapshotStats
    snapshot_index: int | None
    runs: dict[str, bytes | Path]
    run_entries: dict[str, int]
    counters: dict[str, int]
    unknown_families: dict[bytes, int]
    mvcc: dict[str, int]
    catalog_rows: dict[bytes, bytes]
    #: The header was below all of the group's history, so the newest version decided.
    relaxed: bool = False

    @property
    def now_ms(self) -> int:
        """ "Now" as this group saw it (HLC ceiling, else the physical part of its commit ts)."""
        return self.header.hlc_ceiling_ms or (self.header.last_commit_ts >> _HLC_LOGICAL_BITS)

    def without_runs(self) -> GroupResult:
        """A copy without the run data (what the driver needs to see)."""
        return dataclasses.replace(self, runs={})


async def _resolve_once(
    group: GroupInput,
    adapters: Sequence[str],
    run_dir: Path | None,
    options: DecodeOptions,
    *,
    strict: bool,
) -> GroupResult:
    router = Router({spec.name: spec for spec in REGISTRY}, adapters)
    writers = {
        name: RunWriter(None if run_dir is None else run_dir / f"g{group.group}-{name}.run")
        for name in adapters
    }
    counters = {"total": 0, "internal": 0, "unknown": 0}
    unknown: dict[bytes, int] = {}
    catalog_rows: dict[bytes, bytes] = {}
    try:
        async with open_snapshot(group.path) as snap:
            header = snap.header
            resolver = VisibilityResolver(header.last_commit_ts, ignore_future_versions=strict)
            async for raw in snap.batches(options.batch_size, options.batch_bytes):
                counters["total"] += len(raw)
                for entry in resolver.resolve(raw):
                    target, _ = router.route(entry.key)
                    if target is None:
                        counters["unknown"] += 1
                        family = prefix_family(entry.key)
                        unknown[family] = unknown.get(family, 0) + 1
                    elif target == INTERNAL:
                        counters["internal"] += 1
                        if entry.key.startswith(CATALOG_ROUTE_PREFIX):
                            catalog_rows[entry.key] = entry.value
                    else:
                        await writers[target].add(entry)
        runs = {name: await w.finish() for name, w in writers.items() if w.entries}
    finally:
        with anyio.CancelScope(shield=True):
            for writer in writers.values():
                await writer.aclose()
    return GroupResult(
        group=group.group,
        source=str(group.path),
        header=header,
        stats=snap.stats,
        snapshot_index=snapshot_index_from_path(group.path)
        or snap.stats.meta.get("_meta_applied_index"),
        runs=runs,
        run_entries={name: w.entries for name, w in writers.items() if w.entries},
        counters=counters,
        unknown_families=unknown,
        mvcc=dataclasses.asdict(resolver.stats),
        catalog_rows=catalog_rows,
        relaxed=not strict,
    )


async def resolve_group(
    group: GroupInput, adapters: Sequence[str], run_dir: Path | None, options: DecodeOptions
) -> GroupResult:
    """Read, verify and resolve one group; its runs go to ``run_dir`` (else stay in memory).

    Like a single-file decode, a group whose header ``last_commit_ts`` is below all of its
    versions (future versions, none straddling it) is resolved again with the newest version
    of each key deciding.
    """
    result = await _resolve_once(group, adapters, run_dir, options, strict=True)
    if result.mvcc["future_versions"] and not result.mvcc["straddling_keys"]:
        for run in result.runs.values():
            if isinstance(run, Path):
                await anyio.Path(run).unlink()
        result = await _resolve_once(group, adapters, run_dir, options, strict=False)
    return result


@dataclass(slots=True)
class PartitionResult:
    """One partition's outcome: the pipeline's, plus the warnings it logged."""

    adapter: str
    outcome: StreamOutcome
    report: Report = field(default_factory=Report)


def _clear(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


async def decode_partition(
    adapter: str,
    runs: Sequence[tuple[int, bytes | Path]],
    catalog: RouteCatalog | None,
    header: SnapshotHeader,
    now_ms: int,
    output: Path,
    scratch: Path,
    options: DecodeOptions,
    *,
    log_format: str | None = None,
) -> PartitionResult:
    """Merge ``runs`` (``(group, run)``, one per group) and decode them into ``output``.

    The partition's subtree (``output/<adapter>``) is emptied first, so a retried attempt
    never leaves a killed attempt's files behind.
    """
    report = Report()
    log = make_logger(report, log_format=log_format)
    await anyio.to_thread.run_sync(_clear, output / adapter)
    await anyio.to_thread.run_sync(_clear, scratch)
    await anyio.Path(scratch).mkdir(mode=0o700, parents=True)
    readers = [(group, RunReader(run, options.batch_size)) for group, run in runs]
    try:
        merged = merge_runs(
            readers, catalog, log.bind(adapter=adapter), batch_size=options.batch_size
        )
        outcome = await decode_entries(
            merged,
            header,
            now_ms=now_ms,
            output=output,
            scratch=scratch,
            options=dataclasses.replace(options, adapters=(adapter,)),
            report=report,
            log=log,
        )
    finally:
        with anyio.CancelScope(shield=True):
            for _, reader in readers:
                await reader.aclose()
            await anyio.to_thread.run_sync(_clear, scratch)
    return PartitionResult(adapter, outcome, report)


def cluster_header(groups: Sequence[GroupResult]) -> tuple[SnapshotHeader, int]:
    """The header and "now" the adapters see for the whole cluster: the newest of the groups.

    Each group was resolved at its own ``last_commit_ts``; the cluster's is their maximum, so
    re-encoding the tree at it keeps every row visible and every TTL where it was.
    """
    ceilings = [g.header.hlc_ceiling_ms for g in groups if g.header.hlc_ceiling_ms is not None]
    header = SnapshotHeader(
        last_commit_ts=max(g.header.last_commit_ts for g in groups),
        kind="cluster",
        hlc_ceiling_ms=max(ceilings) if ceilings else None,
    )
    return header, max(g.now_ms for g in groups)


def partition_runs(
    adapters: Sequence[str], groups: Sequence[GroupResult]
) -> dict[str, list[tuple[int, bytes | Path]]]:
    """Each partition's runs, ``(group, run)`` in group order.

    Every enabled adapter is a partition, with or without data, so its MANIFEST scope and
    files are what a single-file decode of the same state would give.
    """
    parts: dict[str, list[tuple[int, bytes | Path]]] = {name: [] for name in adapters}
    for result in sorted(groups, key=lambda g: g.group):
        for adapter, run in result.runs.items():
            parts[adapter].append((result.group, run))
    return parts


def merge_report(into: Report, other: Report) -> None:
    """Add ``other``'s counters and warnings to ``into`` (examples up to its limit)."""
    for name, value in other.counters.items():
        into.count(name, value)
    for event, summary in other.warnings.items():
        mine = into.warnings.setdefault(event, dataclasses.replace(summary, count=0, examples=[]))
        mine.count += summary.count
        room = into.max_examples - len(mine.examples)
        mine.examples.extend(summary.examples[: max(room, 0)])


def describe(result: GroupResult) -> dict[str, Any]:
    """The MANIFEST / report record of one group."""
    doc: dict[str, Any] = {"raft_group_id": result.group, "fsm_path": result.source}
    if result.snapshot_index:
        doc["snapshot_index"] = result.snapshot_index
    doc["last_commit_ts"] = result.header.last_commit_ts
    if result.header.hlc_ceiling_ms is not None:
        doc["hlc_ceiling_ms"] = result.header.hlc_ceiling_ms
    doc["fsm_crc32c"] = f"{result.stats.payload_crc32c:08x}"
    doc["footer"] = result.stats.footer
    return doc
