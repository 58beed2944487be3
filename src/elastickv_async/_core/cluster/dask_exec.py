"""Cluster decode on Dask distributed (the ``dask`` extra).

The work is the same as on one machine (:mod:`.work`); Dask places and retries it:

- one task per group, placed on the worker pinned for it (a worker name, address or host:
  the machine holding the group's file); it writes the group's run files into the run's
  scratch directory and returns their paths and unit ranges (a few KiB) to the driver;
- one task per partition (a table, bucket, queue, or a whole adapter), anywhere; it streams
  its ranges of the groups' run files through the merge into the adapter and writes into
  the output.

Run files go to the shared scratch rather than through Dask's transfer: the output must
already be on a filesystem every worker reaches at the same path, and the scratch is by
default inside it (or at ``--scratch-root``, which then must be shared too). A partition
thus reads only the bytes it decodes, in bounded chunks, and no worker ever holds a group's
runs in memory.

A task that fails (or whose worker dies more often than the scheduler's
``allowed-failures``) fails the run with an error naming its group or partition; the driver
never writes MANIFEST.json then. Each partition task empties its subtree first, so Dask's
retry of a task whose worker died does not inherit the dead attempt's files.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import sniffio

from ..concurrency import task_group
from ..errors import ElasticKVError, ExecutionError, UsageError
from ..options import DecodeOptions
from ..snapshot.entry import SnapshotHeader
from .inputs import GroupInput
from .routes import RouteCatalog
from .work import (
    GroupResult,
    Partition,
    PartitionResult,
    cluster_header,
    decode_partition,
    named,
    plan_partitions,
    resolve_group,
)

__all__ = ["check_dask", "run_on_dask"]


def _group_task(group: GroupInput, run_dir: Path, options: DecodeOptions) -> GroupResult:
    run_dir.mkdir(mode=0o700, exist_ok=True)
    return anyio.run(resolve_group, group, options.adapters, run_dir, options)


def _partition_task(
    partition: Partition,
    catalog: RouteCatalog | None,
    header: SnapshotHeader,
    now_ms: int,
    output: Path,
    scratch: Path,
    options: DecodeOptions,
) -> PartitionResult:
    job = functools.partial(
        decode_partition, partition, catalog, header, now_ms, output, scratch, options
    )
    return anyio.run(job)


async def _outcome(future: Any, what: str) -> Any:
    """The future's result; a failure becomes an error naming ``what``."""
    from distributed import KilledWorker

    try:
        return await future
    except ElasticKVError as exc:
        raise named(exc, what) from exc
    except KilledWorker as exc:
        raise ExecutionError(
            f"{what}: its Dask worker died ({exc})", code="ErrClusterWorkerDied"
        ) from exc
    except (OSError, RuntimeError, ValueError, MemoryError) as exc:
        raise ExecutionError(
            f"{what} failed on Dask: {type(exc).__name__}: {exc}", code="ErrClusterTaskFailed"
        ) from exc


def _restriction(pin: str, workers: dict[str, Any]) -> list[str]:
    """A pin as Dask restriction: a worker name becomes its address; addresses and hosts pass."""
    for address, info in workers.items():
        if str(info.get("name")) == pin:
            return [address]
    return [pin]


def check_dask(client: Any) -> None:
    """Raise :class:`UsageError` unless Dask mode can run here (extra, backend, client)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(
            "Dask mode needs the dask extra: pip install 'elastickv-async[dask]'"
        ) from None
    if sniffio.current_async_library() != "asyncio":
        raise UsageError("Dask mode runs under the asyncio backend only")
    if client is not None and not getattr(client, "asynchronous", False):
        raise UsageError("decode_cluster needs a Client created with asynchronous=True")


async def run_on_dask(
    client: Any,
    scheduler: str | None,
    groups: Sequence[GroupInput],
    options: DecodeOptions,
    output: Path,
    scratch: Path,
    tracker: Any,
    choose_catalog: Callable[[list[GroupResult]], RouteCatalog | None],
) -> tuple[list[GroupResult], RouteCatalog | None, list[PartitionResult]]:
    """Run the groups and partitions as Dask tasks; return what the driver needs to finish."""
    check_dask(client)
    from distributed import Client

    if client is not None:
        return await _run(client, groups, options, output, scratch, tracker, choose_catalog)
    try:
        own = await Client(scheduler, asynchronous=True, timeout=30)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    try:
        return await _run(own, groups, options, output, scratch, tracker, choose_catalog)
    finally:
        with anyio.CancelScope(shield=True):
            await own.close()


async def _run(
    client: Any,
    groups: Sequence[GroupInput],
    options: DecodeOptions,
    output: Path,
    scratch: Path,
    tracker: Any,
    choose_catalog: Callable[[list[GroupResult]], RouteCatalog | None],
) -> tuple[list[GroupResult], RouteCatalog | None, list[PartitionResult]]:
    token = secrets.token_hex(4)
    identity = await client.scheduler.identity(n_workers=-1)
    workers = identity.get("workers", {})
    submitted: list[Any] = []

    def submit(fn: Callable[..., Any], *args: Any, key: str, **kw: Any) -> Any:
        future = client.submit(fn, *args, key=f"{key}-{token}", pure=False, **kw)
        submitted.append(future)
        return future

    async def gather_all(jobs: list[tuple[Any, str, Callable[[Any], None]]]) -> None:
        async def one(future: Any, what: str, done: Callable[[Any], None]) -> None:
            done(await _outcome(future, what))

        async with task_group() as tg:
            for future, what, done in jobs:
                tg.start_soon(one, future, what, done)

    try:
        facts: list[GroupResult] = []

        def group_done(result: GroupResult) -> None:
            facts.append(result)
            tracker.group_done(result)

        jobs: list[tuple[Any, str, Callable[[Any], None]]] = []
        for group in groups:
            placement: dict[str, Any] = {}
            if group.worker is not None:
                # Only while the pinned worker is gone may the group run elsewhere: a worker
                # lost mid-run then leads to a retry that either finds the file (shared
                # storage) or fails naming the group, instead of waiting forever for the
                # dead worker's address.
                placement = {
                    "workers": _restriction(group.worker, workers),
                    "allow_other_workers": True,
                }
            future = submit(
                _group_task,
                group,
                scratch / "runs",
                options,
                key=f"elastickv-group-{group.group}",
                **placement,
            )
            jobs.append((future, f"group {group.group} ({group.path})", group_done))
        await gather_all(jobs)
        catalog = choose_catalog(facts)
        header, now_ms = cluster_header(facts)
        plan = plan_partitions(options.adapters, {g.group: g.runs for g in facts})
        parts: list[PartitionResult] = []

        def part_done(result: PartitionResult) -> None:
            parts.append(result)
            tracker.partition_done()

        tracker.partitions_total = len(plan)
        jobs = []
        for partition in plan:
            future = submit(
                _partition_task,
                partition,
                catalog,
                header,
                now_ms,
                output,
                scratch / f"part-{partition.index}",
                options,
                key=f"elastickv-partition-{partition.index}",
            )
            jobs.append((future, f"partition {partition.label}", part_done))
        await gather_all(jobs)
        return facts, catalog, parts
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _cancel(client.cancel, submitted)
        raise


async def _cancel(cancel: Callable[[list[Any]], Awaitable[None]], futures: list[Any]) -> None:
    if futures:
        await cancel(futures)
