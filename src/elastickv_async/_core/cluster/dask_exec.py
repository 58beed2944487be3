"""Cluster decode on Dask distributed (the ``dask`` extra).

The work is the same as on one machine (:mod:`.work`); Dask places, retries and moves it:

- one task per group, placed on the worker pinned for it (a worker name, address or host:
  the machine holding the group's file), returning the group's runs in memory;
- small tasks that take one partition's run out of a group's result (they run where the
  result is) and one that returns the group's facts without runs to the driver;
- one task per partition, anywhere: Dask transfers the runs it needs; it writes into the
  output, which every worker must reach at the same path (a shared filesystem).

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
    PartitionResult,
    cluster_header,
    decode_partition,
    resolve_group,
)

__all__ = ["check_dask", "run_on_dask"]


def _group_task(group: GroupInput, options: DecodeOptions) -> GroupResult:
    return anyio.run(resolve_group, group, options.adapters, None, options)


def _group_facts(result: GroupResult) -> GroupResult:
    return result.without_runs()


def _group_run(result: GroupResult, adapter: str) -> bytes | Path:
    return result.runs[adapter]


def _partition_task(
    adapter: str,
    runs: Sequence[tuple[int, bytes | Path]],
    catalog: RouteCatalog | None,
    header: SnapshotHeader,
    now_ms: int,
    output: Path,
    scratch: Path,
    options: DecodeOptions,
) -> PartitionResult:
    job = functools.partial(
        decode_partition, adapter, runs, catalog, header, now_ms, output, scratch, options
    )
    return anyio.run(job)


async def _outcome(future: Any, what: str) -> Any:
    """The future's result; a failure becomes an error naming ``what``."""
    from distributed import KilledWorker

    try:
        return await future
    except ElasticKVError as exc:
        # The same class and fault, the message naming the task that met it.
        raise type(exc)(
            f"{what}: {exc.message}", code=exc.code, adapter=exc.adapter, key=exc.key, path=exc.path
        ) from exc
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
        results: dict[int, Any] = {}
        facts: list[GroupResult] = []

        def group_done(result: GroupResult) -> None:
            facts.append(result)
            tracker.group_done(result)

        jobs: list[tuple[Any, str, Callable[[Any], None]]] = []
        for group in groups:
            placement: dict[str, Any] = {}
            if group.worker is not None:
                # Only while the pinned worker is gone may the group run elsewhere: a worker
                # lost after its group finished then leads to a recompute that either finds
                # the file (shared storage) or fails naming the group, instead of waiting
                # forever for the dead worker's address.
                placement = {
                    "workers": _restriction(group.worker, workers),
                    "allow_other_workers": True,
                }
            results[group.group] = submit(
                _group_task, group, options, key=f"elastickv-group-{group.group}", **placement
            )
            what = f"group {group.group} ({group.path})"
            facts_future = submit(
                _group_facts, results[group.group], key=f"elastickv-facts-{group.group}"
            )
            jobs.append((facts_future, what, group_done))
        await gather_all(jobs)
        catalog = choose_catalog(facts)
        header, now_ms = cluster_header(facts)
        parts: list[PartitionResult] = []

        def part_done(result: PartitionResult) -> None:
            parts.append(result)
            tracker.partition_done()

        tracker.partitions_total = len(options.adapters)
        jobs = []
        for adapter in options.adapters:
            run_futures = [
                (g, submit(_group_run, results[g], adapter, key=f"elastickv-run-{g}-{adapter}"))
                for g in sorted(f.group for f in facts if adapter in f.run_entries)
            ]
            future = submit(
                _partition_task,
                adapter,
                run_futures,
                catalog,
                header,
                now_ms,
                output,
                scratch / f"part-{adapter}",
                options,
                key=f"elastickv-partition-{adapter}",
            )
            jobs.append((future, f"partition {adapter}", part_done))
        await gather_all(jobs)
        return facts, catalog, parts
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _cancel(client.cancel, submitted)
        raise


async def _cancel(cancel: Callable[[list[Any]], Awaitable[None]], futures: list[Any]) -> None:
    if futures:
        await cancel(futures)
