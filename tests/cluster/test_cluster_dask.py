"""decode_cluster on a Dask ``LocalCluster`` of worker processes (the ``dask`` extra).

Group files are pinned to named workers; the tree must equal the one-machine decode. A worker
killed while it decodes a partition fails the run naming the partition (when the scheduler
allows no retry) or is retried by Dask; either way a MANIFEST only ever marks a complete tree.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cluster_support import split_snapshot, tree_without_manifest, two_group_cluster
from statecompare import compare, load_expected, load_tree
from support import raises_code, shared_dir

from elastickv_async._core.cluster.api import ClusterProgress, decode_cluster
from elastickv_async._core.cluster.inputs import GroupInput
from elastickv_async._core.dump.verify import verify_tree
from elastickv_async._core.errors import ExecutionError
from elastickv_async._core.pipeline import INCOMPLETE_MARKER, decode_snapshot
from elastickv_async._core.report import Report

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")
from distributed import WorkerPlugin  # noqa: E402 - only once the extra is known installed

MULTIGROUP = (shared_dir() or Path("/nonexistent")) / "realnode-multigroup"


@pytest.fixture
def anyio_backend() -> str:
    """Dask's asynchronous client runs on asyncio only."""
    return "asyncio"


@asynccontextmanager
async def local_cluster(workers: int = 3, **config: Any) -> AsyncIterator[Any]:
    """A LocalCluster of ``workers`` single-threaded worker processes and a client to it."""
    with dask.config.set(config):
        async with (
            distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                asynchronous=True,
                # None still binds the scheduler's HTTP server to 8787; a free loopback
                # port keeps concurrent clusters (and CI neighbours) from colliding.
                dashboard_address="127.0.0.1:0",
                worker_dashboard_address=None,
            ) as cluster,
            distributed.Client(cluster, asynchronous=True) as client,
        ):
            await client.wait_for_workers(workers)
            yield client


async def _names(client: Any) -> dict[str, str]:
    """Worker name -> address."""
    identity = await client.scheduler.identity(n_workers=-1)
    return {str(info["name"]): address for address, info in identity["workers"].items()}


def _corpora(tmp: Path) -> list[tuple[str, list[Path]]]:
    corpora = [("synthetic", list(two_group_cluster(tmp / "synthetic")))]
    if (MULTIGROUP / "routes.json").is_file():
        corpora.append(("realnode", sorted(MULTIGROUP.glob("g*_n2_*.fsm"))))
    return corpora


@pytest.mark.anyio
async def test_pinned_groups_on_three_workers_give_the_local_tree(tmp_path: Path) -> None:
    """Each group runs on its pinned worker; the tree equals the in-process decode."""
    async with local_cluster() as client:
        names = await _names(client)
        for corpus, (g1, g2) in _corpora(tmp_path):
            local, remote = tmp_path / f"{corpus}-local", tmp_path / f"{corpus}-dask"
            await decode_cluster([g1, g2], local)
            inputs = [GroupInput(1, g1, "2"), GroupInput(2, g2, "0")]
            async with distributed.get_task_stream(client) as stream:
                report = await decode_cluster(inputs, remote, client=client)
            placed = {
                t["key"].split("-")[2]: t["worker"]
                for t in stream.data
                if t["key"].startswith("elastickv-group-")
            }
            assert placed == {"1": names["2"], "2": names["0"]}
            assert tree_without_manifest(remote) == tree_without_manifest(local)
            manifests = [json.loads((t / "MANIFEST.json").read_bytes()) for t in (local, remote)]
            assert manifests[0]["cluster"] == manifests[1]["cluster"]
            assert report.counters["entries.redis"] > 0
            await verify_tree(remote, Report())
            if corpus == "realnode":
                expected = load_expected(MULTIGROUP / "cluster.expected.json")
                assert compare(load_tree(remote), expected) == []


class KillPartitionWorker(WorkerPlugin):
    """Kill the first worker process that starts decoding a partition (``marker`` says so).

    Only once in the whole cluster, so the outcome does not depend on which other workers
    are restarting at that moment.
    """

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "executing" or not str(key).startswith("elastickv-partition-"):
            return
        try:
            fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return
        os.write(fd, f"{key}\n".encode())
        os.close(fd)
        os._exit(1)


@pytest.mark.anyio
async def test_worker_killed_without_retries_fails_naming_the_partition(tmp_path: Path) -> None:
    """No retry allowed: a clear error naming the partition, no MANIFEST; a rerun succeeds."""
    g1, g2 = two_group_cluster(tmp_path)
    out = tmp_path / "out"
    marker = tmp_path / "killed"
    async with local_cluster(**{"distributed.scheduler.allowed-failures": 0}) as client:
        await client.register_plugin(KillPartitionWorker(str(marker)), name="kill")
        with raises_code(
            ExecutionError, "ErrClusterWorkerDied", match=r"partition \w+: its Dask worker died"
        ):
            await decode_cluster([g1, g2], out, client=client)
        assert marker.read_text().startswith("elastickv-partition-")
        assert not (out / "MANIFEST.json").exists()
        assert (out / INCOMPLETE_MARKER).exists()
        await client.wait_for_workers(3)
        await decode_cluster([g1, g2], out, client=client, force=True)
    assert (out / "MANIFEST.json").is_file()
    await verify_tree(out, Report())


@pytest.mark.anyio
async def test_worker_killed_once_is_retried_by_dask(tmp_path: Path) -> None:
    """With the scheduler's default retries, a partition whose worker died is run again."""
    g1, g2 = two_group_cluster(tmp_path)
    marker = tmp_path / "killed"
    async with local_cluster() as client:
        await client.register_plugin(KillPartitionWorker(str(marker)), name="kill")
        await decode_cluster([g1, g2], tmp_path / "dask", client=client)
    await decode_cluster([g1, g2], tmp_path / "local")
    assert len(marker.read_text().splitlines()) == 1
    assert tree_without_manifest(tmp_path / "dask") == tree_without_manifest(tmp_path / "local")
    await verify_tree(tmp_path / "dask", Report())


MIXED = (shared_dir() or Path("/nonexistent")) / "realnode/p4_mixed_00000000000001f5.fsm"


@pytest.mark.anyio
@pytest.mark.skipif(not MIXED.is_file(), reason=f"no snapshot {MIXED}")
async def test_partitions_per_table_bucket_queue_on_dask_give_the_merged_tree(
    tmp_path: Path,
) -> None:
    """A mixed snapshot dealt over three pinned groups decodes on Dask, one partition per
    table, bucket and queue (one of them killed once and retried), to the single-file tree."""
    groups = await split_snapshot(MIXED, tmp_path / "groups")
    await decode_snapshot(MIXED, tmp_path / "single")
    marker = tmp_path / "killed"
    samples: list[ClusterProgress] = []
    async with local_cluster() as client:
        await client.register_plugin(KillPartitionWorker(str(marker)), name="kill")
        inputs = [GroupInput(i, path, str(i - 1)) for i, path in enumerate(groups, start=1)]
        await decode_cluster(inputs, tmp_path / "dask", client=client, progress=samples.append)
    assert len(marker.read_text().splitlines()) == 1
    assert samples[-1].partitions_done == 14
    assert tree_without_manifest(tmp_path / "dask") == tree_without_manifest(tmp_path / "single")
    await verify_tree(tmp_path / "dask", Report())
