"""The two kinds of work a cluster decode is made of, the same on one machine or on Dask.

- :func:`resolve_group` (where the group's file is): read the file, verify its footer, keep
  each key's deciding version at the group's own ``last_commit_ts`` (visible, or a deletion
  marker), and write one sorted run file per adapter, noting each partition unit's byte
  ranges in it; also collect the route catalog rows.
- :func:`decode_partition` (anywhere the output and the runs are reachable): stream and
  merge the groups' runs of one partition and decode them with the single-file pipeline's
  adapters.

:func:`plan_partitions` cuts each adapter by the rule of :mod:`.partitions`: a partition per
unit the adapter declares, or the whole adapter when it declares none or a row of it belongs
to no single unit.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import msgspec

from ..._adapters.registry import REGISTRY
from ..errors import ElasticKVError
from ..memory import READ_CHUNKS
from ..options import DecodeOptions
from ..pipeline import StreamOutcome, decode_entries
from ..report import Report, make_logger
from ..routing import INTERNAL, Router, prefix_family
from ..snapshot.entry import SnapshotHeader
from ..snapshot.mvcc import VisibilityResolver
from ..snapshot.reader import DEFAULT_CHUNK_SIZE, SnapshotStats, open_snapshot
from ..snapshot.source import snapshot_index_from_path
from .inputs import GroupInput
from .merge import merge_runs
from .partitions import subtree, unit_rules
from .routes import CATALOG_ROUTE_PREFIX, RouteCatalog
from .runs import FLUSH_AT, RunFile, RunReader, RunWriter, Unit

__all__ = [
    "GroupResult",
    "Partition",
    "PartitionResult",
    "cluster_header",
    "decode_partition",
    "describe",
    "merge_report",
    "named",
    "plan_partitions",
    "resolve_group",
]

_HLC_LOGICAL_BITS: Final = 16


@dataclass(slots=True)
class GroupResult:
    """One group's resolved state: its run file per adapter, and what its file said."""

    group: int
    source: str
    header: SnapshotHeader
    stats: SnapshotStats
    snapshot_index: int | None
    runs: dict[str, RunFile]
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


async def _resolve_once(
    group: GroupInput,
    adapters: Sequence[str],
    run_dir: Path,
    options: DecodeOptions,
    *,
    strict: bool,
) -> GroupResult:
    router = Router({spec.name: spec for spec in REGISTRY}, adapters)
    # A fresh name per attempt: a retried task never meets a dead attempt's file.
    attempt = secrets.token_hex(4)
    # The group's budget: half for the writers' gathered records, a quarter for a batch
    # read from the file, a quarter for the reader's chunks.
    budget = options.memory_budget
    flush_at = min(FLUSH_AT, budget // (2 * max(1, len(adapters))))
    batch_bytes = max(1, min(options.batch_bytes, budget // 4))
    chunk_size = max(1, min(DEFAULT_CHUNK_SIZE, budget // (4 * READ_CHUNKS)))
    writers = {
        name: RunWriter(run_dir / f"g{group.group}-{name}-{attempt}.run", flush_at)
        for name in adapters
    }
    units = unit_rules(adapters)
    counters = {"total": 0, "internal": 0, "unknown": 0}
    unknown: dict[bytes, int] = {}
    catalog_rows: dict[bytes, bytes] = {}
    try:
        async with open_snapshot(group.path, chunk_size=chunk_size) as snap:
            header = snap.header
            resolver = VisibilityResolver(
                header.last_commit_ts, ignore_future_versions=strict, keep_deletions=True
            )
            async for raw in snap.batches(options.batch_size, batch_bytes):
                counters["total"] += len(raw)
                for entry in resolver.resolve(raw):
                    target, prefix = router.route(entry.key)
                    if target is not None and target != INTERNAL:
                        await writers[target].add(entry, units[target](prefix, entry.key))
                    elif entry.tombstone:
                        continue
                    elif target is None:
                        counters["unknown"] += 1
                        family = prefix_family(entry.key)
                        unknown[family] = unknown.get(family, 0) + 1
                    else:
                        counters["internal"] += 1
                        if entry.key.startswith(CATALOG_ROUTE_PREFIX):
                            catalog_rows[entry.key] = entry.value
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
        counters=counters,
        unknown_families=unknown,
        mvcc=msgspec.structs.asdict(resolver.stats),
        catalog_rows=catalog_rows,
        relaxed=not strict,
    )


async def resolve_group(
    group: GroupInput, adapters: Sequence[str], run_dir: Path, options: DecodeOptions
) -> GroupResult:
    """Read, verify and resolve one group into run files under ``run_dir``.

    Like a single-file decode, a group whose header ``last_commit_ts`` is below all of its
    versions (future versions, none straddling it) is resolved again with the newest version
    of each key deciding.
    """
    result = await _resolve_once(group, adapters, run_dir, options, strict=True)
    if result.mvcc["future_versions"] and not result.mvcc["straddling_keys"]:
        for run in result.runs.values():
            await anyio.Path(run.path).unlink()
        result = await _resolve_once(group, adapters, run_dir, options, strict=False)
    return result


#: One group's share of a partition: the group, its run file, the byte ranges to read
#: (``None``: all of it).
RunPart = tuple[int, Path, tuple[tuple[int, int], ...] | None]


@dataclass(frozen=True, slots=True)
class Partition:
    """An independent piece of the decode: one adapter's rows of one unit (or all of them)."""

    adapter: str
    unit: Unit
    #: Position in the plan; names the partition's scratch directory.
    index: int
    runs: tuple[RunPart, ...]

    @property
    def label(self) -> str:
        """How messages name the partition: ``<adapter>`` or ``<adapter>/<unit directory>``."""
        return subtree(self.adapter, self.unit)


def plan_partitions(
    adapters: Sequence[str], runs: Mapping[int, Mapping[str, RunFile]]
) -> list[Partition]:
    """Every partition of the decode, in adapter then unit order, from each group's runs.

    Every enabled adapter has at least one partition, with or without data, so its MANIFEST
    scope and files are what a single-file decode of the same state would give.
    """
    plan: list[Partition] = []
    for adapter in adapters:
        held = [(group, runs[group][adapter]) for group in sorted(runs) if adapter in runs[group]]
        units = {unit for _, run in held for unit in run.segments}
        if None in units or not units:
            whole = tuple((group, run.path, None) for group, run in held)
            plan.append(Partition(adapter, None, len(plan), whole))
            continue
        for unit in sorted(u for u in units if u is not None):
            parts = tuple(
                (group, run.path, tuple(run.segments[unit]))
                for group, run in held
                if unit in run.segments
            )
            plan.append(Partition(adapter, unit, len(plan), parts))
    return plan


@dataclass(slots=True)
class PartitionResult:
    """One partition's outcome: the pipeline's, plus the warnings it logged."""

    adapter: str
    unit: Unit
    outcome: StreamOutcome
    report: Report = field(default_factory=Report)


def _clear(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


async def decode_partition(
    partition: Partition,
    catalog: RouteCatalog | None,
    header: SnapshotHeader,
    now_ms: int,
    output: Path,
    scratch: Path,
    options: DecodeOptions,
    *,
    log_format: str | None = None,
) -> PartitionResult:
    """Merge the groups' runs of ``partition`` and decode them into ``output``.

    The partition's subtree is emptied first, so a retried attempt never leaves a killed
    attempt's files behind. Its CHECKSUMS lines go to :func:`listing_path` of ``scratch``.
    """
    report = Report()
    log = make_logger(report, log_format=log_format)
    adapter = partition.adapter
    await anyio.to_thread.run_sync(_clear, output / subtree(adapter, partition.unit))
    await anyio.to_thread.run_sync(_clear, scratch)
    await anyio.Path(scratch).mkdir(mode=0o700, parents=True)
    readers = [(group, RunReader(path, ranges)) for group, path, ranges in partition.runs]
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
            checksums=listing_path(scratch),
        )
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_clear, scratch)
    return PartitionResult(adapter, partition.unit, outcome, report)


def listing_path(scratch: Path) -> Path:
    """Where the partition whose scratch directory is ``scratch`` leaves its CHECKSUMS lines
    (beside it, in the run's scratch: it outlives the partition's own)."""
    return scratch.with_name(f"{scratch.name}.checksums")


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


def named(exc: ElasticKVError, what: str) -> ElasticKVError:
    """``exc`` again (same class, code and place), its message naming the task that met it."""
    return type(exc)(
        f"{what}: {exc.message}", code=exc.code, adapter=exc.adapter, key=exc.key, path=exc.path
    )


def merge_report(into: Report, other: Report) -> None:
    """Add ``other``'s counters and warnings to ``into`` (examples up to its limit)."""
    for name, value in other.counters.items():
        into.count(name, value)
    for event, summary in other.warnings.items():
        mine = into.warnings.setdefault(
            event, msgspec.structs.replace(summary, count=0, examples=[])
        )
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
