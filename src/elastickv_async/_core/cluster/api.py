"""``decode_cluster``: every Raft group of a cluster into one dump tree.

The tree equals a decode of the union of the groups' visible states: each group is resolved
at its own ``last_commit_ts`` (groups snapshot independently, so the dump is *not* a
cross-group point in time, and MANIFEST.json says so), then each partition merges the groups'
sorted runs into one stream, so rows of one key found in different groups are joined.

Work runs in this process (groups resolved concurrently into run files in the scratch, then
partitions decoded concurrently), or on a Dask cluster (see :mod:`.dask_exec`). Either way
the driver writes CHECKSUMS and, last, MANIFEST.json. The output is handled like a single-file
decode's: locked for the run, marked incomplete until MANIFEST.json is written, and replaced
by a rerun only with ``force``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import heapq
import itertools
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final, TextIO

import anyio
import anyio.to_thread

from ..._adapters.registry import REGISTRY
from ..._version import __version__
from ..concurrency import task_group
from ..dump.checksums import CHECKSUMS_NAME, checksum_line, joined_blocks
from ..dump.manifest import MANIFEST_NAME, DecodeManifest
from ..dump.writer import DumpWriter
from ..errors import DataError, UsageError
from ..memory import MIN_MEMORY_BUDGET, MemoryBudget
from ..options import DecodeOptions
from ..pipeline import claim_output, make_scratch, normalise_options, release, seal_manifest
from ..report import Report, make_logger
from ..runfiles import (
    LockedDir,
    new_tag,
)
from .inputs import GroupInput, discover_groups, parse_group_inputs
from .partitions import merge_scopes
from .routes import RouteCatalog
from .work import (
    GroupResult,
    Partition,
    PartitionResult,
    cluster_header,
    decode_partition,
    describe,
    merge_report,
    named,
    plan_partitions,
    resolve_group,
)

__all__ = ["ClusterProgress", "decode_cluster"]

_POINT_IN_TIME_NOTE: Final = (
    "each group is resolved at its own last_commit_ts; the dump is not a cross-group point in time"
)
#: Groups resolved, and partitions decoded, at once on one machine (each is mostly one core
#: of framing and decoding work, and holds open files and buffers).
_LOCAL_GROUP_CONCURRENCY: Final = 2
#: The partitions' CHECKSUMS listings merged at once, and each file's read buffer at least.
_LISTING_FAN_IN: Final = 64
_MIN_LISTING_BUFFER: Final = 4 << 10
_LOCAL_PARTITION_CONCURRENCY: Final = 4


@dataclass(frozen=True, slots=True)
class ClusterProgress:
    """A progress sample of a cluster decode."""

    groups_done: int
    groups_total: int
    partitions_done: int
    partitions_total: int
    bytes_read: int
    done: bool = False


ClusterProgressCallback = Callable[[ClusterProgress], None]


class _Tracker:
    def __init__(self, groups_total: int, callback: ClusterProgressCallback | None) -> None:
        self.groups_total, self.callback = groups_total, callback
        self.groups_done = self.partitions_done = self.partitions_total = self.bytes_read = 0

    def group_done(self, result: GroupResult) -> None:
        self.groups_done += 1
        self.bytes_read += result.stats.total_bytes
        self._emit()

    def partition_done(self) -> None:
        self.partitions_done += 1
        self._emit()

    def _emit(self, done: bool = False) -> None:
        if self.callback is not None:
            self.callback(
                ClusterProgress(
                    self.groups_done,
                    self.groups_total,
                    self.partitions_done,
                    self.partitions_total,
                    self.bytes_read,
                    done,
                )
            )

    def finish(self) -> None:
        self._emit(done=True)


def _collect_groups(
    inputs: Sequence[str | os.PathLike[str] | GroupInput],
    data_dir: str | os.PathLike[str] | None,
    pins: Mapping[int, str] | None,
) -> list[GroupInput]:
    found: list[str | os.PathLike[str] | GroupInput] = list(inputs)
    if data_dir is not None:
        found.extend(discover_groups(Path(data_dir)))
    groups = parse_group_inputs(found, dict(pins or {}))
    for group in groups:
        if group.worker is None and not group.path.is_file():
            raise UsageError(f"input {group.path} (group {group.group}) is not a readable file")
    return groups


def _catalog(
    given: RouteCatalog | None, groups: Sequence[GroupResult], log: Any
) -> RouteCatalog | None:
    """``--routes`` if given, else the default group's catalog rows (lowest group holding any)."""
    if given is not None:
        return given
    for result in sorted(groups, key=lambda g: g.group):
        if result.catalog_rows:
            return RouteCatalog.from_rows(result.catalog_rows)
    log.warning(
        "route_catalog_missing",
        hint="no group holds !dist|route| rows and no --routes was given; a key found in "
        "two groups keeps its newer copy",
    )
    return None


def _checksum_path(line: bytes) -> bytes:
    """The raw path of a CHECKSUMS line (as :func:`checksum_line` wrote it)."""
    if line.startswith(b"\\"):
        escaped = line[67:-1]
        return escaped.replace(b"\\n", b"\n").replace(b"\\r", b"\r").replace(b"\\\\", b"\\")
    return line[66:-1]


def _merged_lines(files: Sequence[BinaryIO], extra: Sequence[bytes] = ()) -> Iterator[bytes]:
    """The lines of ``files`` (each sorted by path) and ``extra``, merged by path."""
    return heapq.merge(*files, extra, key=_checksum_path)


def _listing(
    parts: Sequence[Path], manifest: bytes, scratch: Path, memory: MemoryBudget
) -> Iterator[bytes]:
    """CHECKSUMS of the whole tree: the partitions' sorted listings (files) and MANIFEST.json,
    merged, in blocks of ``memory``'s listing block (blocking: iterate in a worker thread).

    At most :data:`_LISTING_FAN_IN` files are open at once (more are merged into files under
    ``scratch`` first, a group at a time), their read buffers sharing the checksums' share.
    """
    block_size = memory.listing_block()
    own = checksum_line(hashlib.sha256(manifest).hexdigest(), MANIFEST_NAME.encode())
    buffering = max(_MIN_LISTING_BUFFER, memory.share("checksums") // (_LISTING_FAN_IN + 1))
    paths = list(parts)
    for number in itertools.count():
        if len(paths) <= _LISTING_FAN_IN:
            break
        group, paths = paths[:_LISTING_FAN_IN], paths[_LISTING_FAN_IN:]
        merged = scratch / f"checksums-{number}"
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(open(p, "rb", buffering=buffering)) for p in group]
            out = stack.enter_context(open(merged, "xb", buffering=buffering))
            for block in joined_blocks(_merged_lines(files), block_size):
                out.write(block)
        paths.append(merged)
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(p, "rb", buffering=buffering)) for p in paths]
        yield from joined_blocks(_merged_lines(files, [own]), block_size)


async def _local_groups(
    groups: Sequence[GroupInput],
    adapters: Sequence[str],
    scratch: Path,
    options: DecodeOptions,
    tracker: _Tracker,
) -> list[GroupResult]:
    run_dir = scratch / "runs"
    await anyio.Path(run_dir).mkdir(mode=0o700)
    # The groups resolved at once share the run's budget, as the partitions do.
    budget = options.memory_budget
    concurrency = max(1, min(_LOCAL_GROUP_CONCURRENCY, budget // MIN_MEMORY_BUDGET))
    options = dataclasses.replace(options, memory_budget=budget // concurrency)
    limiter = anyio.CapacityLimiter(concurrency)
    results: list[GroupResult] = []

    async def one(group: GroupInput) -> None:
        async with limiter:
            try:
                result = await resolve_group(group, adapters, run_dir, options)
            except DataError as exc:
                raise named(exc, f"group {group.group} ({group.path})") from exc
        results.append(result)
        tracker.group_done(result)

    async with task_group() as tg:
        for group in groups:
            tg.start_soon(one, group)
    return results


async def _local_partitions(
    plan: Sequence[Partition],
    catalog: RouteCatalog | None,
    groups: Sequence[GroupResult],
    output: Path,
    scratch: Path,
    options: DecodeOptions,
    tracker: _Tracker,
) -> list[PartitionResult]:
    header, now_ms = cluster_header(groups)
    # The partitions decoded at once share the run's budget (fewer run at once when it is
    # too small for each to have the least budget).
    budget = options.memory_budget
    concurrency = max(1, min(_LOCAL_PARTITION_CONCURRENCY, budget // MIN_MEMORY_BUDGET))
    options = dataclasses.replace(options, memory_budget=budget // concurrency)
    limiter = anyio.CapacityLimiter(concurrency)
    results: list[PartitionResult] = []

    async def one(partition: Partition) -> None:
        part_scratch = scratch / f"part-{partition.index}"
        async with limiter:
            try:
                result = await decode_partition(
                    partition, catalog, header, now_ms, output, part_scratch, options
                )
            except DataError as exc:
                raise named(exc, f"partition {partition.label}") from exc
        results.append(result)
        tracker.partition_done()

    async with task_group() as tg:
        for partition in plan:
            tg.start_soon(one, partition)
    return results


async def decode_cluster(
    inputs: Sequence[str | os.PathLike[str] | GroupInput],
    output: str | os.PathLike[str],
    options: DecodeOptions | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    routes: str | os.PathLike[str] | None = None,
    pins: Mapping[int, str] | None = None,
    client: Any = None,
    scheduler: str | None = None,
    log_format: str | None = None,
    log_stream: TextIO | None = None,
    progress: ClusterProgressCallback | None = None,
    report: Report | None = None,
    force: bool = False,
) -> Report:
    """Decode the snapshots of every Raft group of a cluster into one dump tree at ``output``.

    ``inputs`` are group snapshot files (``PATH``, ``"GROUP=PATH"`` or :class:`GroupInput`);
    ``data_dir`` adds the newest snapshot of every ``group-<g>/fsm-snap/`` of a node's
    ``<raftDataDir>/<raftId>``. A key visible in two groups is kept from the group owning its
    route (``routes``, a ``routes.json`` file, else the default group's ``!dist|route|`` rows)
    and reported as ``cross_group_duplicate``.

    Runs in this process, or on Dask with ``client`` (a ``distributed.Client`` created with
    ``asynchronous=True``) or ``scheduler`` (its address); ``pins`` maps a group to the Dask
    worker that can read its file. ``options.memory_budget`` bounds the buffers of the
    partitions decoded at once in this process together (on Dask, those of each task).
    ``output`` must be absent or empty; with ``force`` it may
    hold the incomplete tree of a run that did not finish, which is replaced. Returns the
    merged report; raises an
    :class:`~elastickv_async._core.errors.ElasticKVError` subclass on failure, and the tree
    then has no MANIFEST.json.
    """
    options = normalise_options(options or DecodeOptions())
    if client is not None and scheduler is not None:
        raise UsageError("give a Dask client or a scheduler address, not both")
    if client is not None or scheduler is not None:
        from .dask_exec import check_dask

        check_dask(client)
    out = Path(output)
    groups = await anyio.to_thread.run_sync(_collect_groups, inputs, data_dir, pins)
    given = None
    if routes is not None:
        given = await anyio.to_thread.run_sync(RouteCatalog.from_json_file, Path(routes))
    report = report if report is not None else Report()
    log = make_logger(report, log_format=log_format, stream=log_stream)
    tracker = _Tracker(len(groups), progress)
    tag = new_tag()
    held = await anyio.to_thread.run_sync(lambda: claim_output(out, force=force, tag=tag))
    scratch_dir: LockedDir | None = None
    try:
        scratch_dir = await anyio.to_thread.run_sync(make_scratch, options, out, tag)
        scratch = scratch_dir.path
        if client is None and scheduler is None:
            group_results = await _local_groups(groups, options.adapters, scratch, options, tracker)
            catalog = _catalog(given, group_results, log)
            plan = plan_partitions(options.adapters, {g.group: g.runs for g in group_results})
            tracker.partitions_total = len(plan)
            part_results = await _local_partitions(
                plan, catalog, group_results, out, scratch, options, tracker
            )
        else:
            from .dask_exec import run_on_dask

            group_results, catalog, part_results = await run_on_dask(
                client,
                scheduler,
                groups,
                options,
                out,
                scratch,
                tracker,
                lambda results: _catalog(given, results, log),
            )

        async def drop_scratch() -> None:
            nonlocal scratch_dir
            await anyio.to_thread.run_sync(lambda: release(scratch_dir, remove=True))
            scratch_dir = None

        await _finish(
            held,
            options,
            group_results,
            part_results,
            catalog,
            report,
            log,
            scratch,
            drop_scratch,
        )
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: release(scratch_dir, remove=True))
            await anyio.to_thread.run_sync(lambda: release(held, remove=False))
    tracker.finish()
    return report


async def _finish(
    held: LockedDir,
    options: DecodeOptions,
    groups: Sequence[GroupResult],
    parts: Sequence[PartitionResult],
    catalog: RouteCatalog | None,
    report: Report,
    log: Any,
    scratch: Path,
    drop_scratch: Callable[[], Awaitable[None]],
) -> None:
    """Merge the report, then write CHECKSUMS (from the partitions' listings in ``scratch``),
    drop the scratch and, last, write MANIFEST.json."""
    ordered = sorted(groups, key=lambda g: g.group)
    unknown: dict[bytes, int] = {}
    for result in ordered:
        for name, value in result.counters.items():
            report.count(f"entries.{name}", value)
        for name, value in result.mvcc.items():
            report.count(f"mvcc.{name}", value)
        for family, count in result.unknown_families.items():
            unknown[family] = unknown.get(family, 0) + count
        if result.relaxed:
            log.warning(
                "mvcc_header_below_data",
                raft_group_id=result.group,
                hint="the group's header last_commit_ts is below all of its versions; "
                "the newest version of each key decided",
            )
    for family, count in sorted(unknown.items()):
        log.warning(
            "unknown_prefix_entries",
            prefix=family.decode("utf-8", "backslashreplace"),
            count=count,
            hint="keys matched no known prefix and were not decoded",
        )
    by_adapter: dict[str, list[PartitionResult]] = {}
    for part in sorted(parts, key=lambda p: (p.adapter, p.unit or b"")):
        merge_report(report, part.report)
        by_adapter.setdefault(part.adapter, []).append(part)
        report.count(f"entries.{part.adapter}", part.outcome.counters.get(part.adapter, 0))
    scopes = {
        adapter: merge_scopes(adapter, [p.outcome.scopes[adapter] for p in adapter_parts])
        for adapter, adapter_parts in by_adapter.items()
    }
    header, _ = cluster_header(ordered)
    cluster_doc: dict[str, Any] = {
        "point_in_time": False,
        "note": _POINT_IN_TIME_NOTE,
        "last_commit_ts_rule": "max",
        "groups": [describe(g) for g in ordered],
    }
    if catalog is not None:
        cluster_doc["routes"] = catalog.to_json()
    report.snapshot.update(
        header_kind="cluster",
        last_commit_ts=header.last_commit_ts,
        hlc_ceiling_ms=header.hlc_ceiling_ms,
        groups=cluster_doc["groups"],
        point_in_time=False,
    )
    manifest = DecodeManifest(
        adapters=REGISTRY.select(options.adapters),
        cluster_id=options.cluster_id,
        fields=REGISTRY.manifest_fields(options.adapter_options),
        fsm_path=None,
        last_commit_ts=header.last_commit_ts,
        elastickv_version=f"elastickv-async {__version__}",
        wall_time=datetime.now(UTC),
        hlc_ceiling_ms=header.hlc_ceiling_ms,
        scopes=scopes,
        cluster=cluster_doc,
        full_fidelity=options.full_fidelity,
    ).to_json()
    writer = DumpWriter(held.path, jobs=options.jobs, fsync=options.fsync)
    memory = MemoryBudget(options.memory_budget, "decode", options.adapters)
    listing = _listing([p.outcome.checksums for p in parts], manifest, scratch, memory)
    await writer.write_chunks(CHECKSUMS_NAME, listing)
    # The tree is complete but for its MANIFEST: the scratch goes first.
    await drop_scratch()
    await anyio.to_thread.run_sync(seal_manifest, held.fd, manifest)
    files = sum(p.outcome.files_written for p in parts) + writer.files_written + 1
    report.count("output.files_written", files)
    written = sum(p.outcome.bytes_written for p in parts) + writer.bytes_written
    report.count("output.bytes_written", written + len(manifest))
