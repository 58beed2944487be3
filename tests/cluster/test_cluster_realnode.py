"""The real 3-node, 2-group cluster's snapshots decode to the cluster's state.

Compared semantically (:mod:`statecompare`, as ``tests/realnode/`` does) with
``cluster.expected.json``; each group file alone still decodes to its own expectation.
Skipped when the shared corpus is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio.to_thread
import pytest
from cluster_support import tree_without_manifest
from statecompare import compare, load_expected, load_tree
from support import shared_dir

from elastickv_async._core.cluster.api import decode_cluster
from elastickv_async._core.cluster.encode import encode_cluster
from elastickv_async._core.cluster.routes import RouteCatalog
from elastickv_async._core.options import EncodeOptions
from elastickv_async._core.pipeline import decode_snapshot
from elastickv_async._core.snapshot.reader import open_snapshot

MULTIGROUP = (shared_dir() or Path("/nonexistent")) / "realnode-multigroup"
G1 = MULTIGROUP / "g1_n2_00000000000000c9.fsm"
G2 = MULTIGROUP / "g2_n2_00000000000000c9.fsm"

pytestmark = pytest.mark.skipif(not G1.is_file(), reason=f"no snapshots in {MULTIGROUP}")


@pytest.fixture
def anyio_backend() -> str:
    """The event-loop matrix is covered by the synthetic tests."""
    return "asyncio"


def _hash_ttl(tree: Path) -> tuple[bool, bool]:
    """Whether ``z:hash:ttl`` is a hash in the tree, and whether it has a TTL."""
    state = load_tree(tree)["redis"]
    record = state.get("z:hash:ttl")
    if record is None:
        return False, False
    return record["type"] == "hash", record["expire_at_ms"] is not None


@pytest.mark.anyio
@pytest.mark.parametrize("routes", [None, "routes.json"])
async def test_cluster_decodes_to_the_cluster_state(tmp_path: Path, routes: str | None) -> None:
    """Both groups together give cluster.expected.json, z:hash:ttl a hash with its TTL."""
    out = tmp_path / "out"
    report = await decode_cluster(
        [f"1={G1}", f"2={G2}"], out, routes=MULTIGROUP / routes if routes else None
    )
    assert compare(load_tree(out), load_expected(MULTIGROUP / "cluster.expected.json")) == []
    assert _hash_ttl(out) == (True, True)
    assert "redis_orphan_ttl" not in report.warnings
    assert "cross_group_duplicate" not in report.warnings
    manifest = json.loads((out / "MANIFEST.json").read_bytes())
    listed = json.loads((MULTIGROUP / "routes.json").read_bytes())["routes"]
    recorded = manifest["cluster"]["routes"]
    assert [(r["raft_group_id"], r["start_b64"]) for r in recorded] == [
        (r["raft_group_id"], r["start_b64"]) for r in listed
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("snapshot", [G1, G2], ids=["group1", "group2"])
async def test_each_group_alone_decodes_as_today(tmp_path: Path, snapshot: Path) -> None:
    """A group file alone matches its own expectation; group 2 alone has an orphan TTL row.

    (Group 1 alone already shows z:hash:ttl with a TTL: its wide-column hash meta row
    carries the expiry too.)
    """
    report = await decode_snapshot(snapshot, tmp_path / "out")
    expected = load_expected(snapshot.with_suffix(".expected.json"))
    assert compare(load_tree(tmp_path / "out"), expected) == []
    assert _hash_ttl(tmp_path / "out") == ((True, True) if snapshot == G1 else (False, False))
    assert ("redis_orphan_ttl" in report.warnings) == (snapshot == G2)


async def _visible_rows(path: Path) -> dict[bytes, bytes]:
    """The newest live version of every key of a snapshot (enough for the catalog rows)."""
    rows: dict[bytes, tuple[int, bytes | None]] = {}
    async with open_snapshot(path) as snap:
        async for batch in snap.batches(512, 1 << 20):
            for e in batch:
                if e.key not in rows or rows[e.key][0] < e.commit_ts:
                    rows[e.key] = (e.commit_ts, None if e.tombstone else e.value)
    return {k: v for k, (_, v) in rows.items() if v is not None}


@pytest.mark.anyio
async def test_encode_cluster_round_trips_the_real_cluster(tmp_path: Path) -> None:
    """decode-cluster -> encode-cluster -> decode-cluster still gives cluster.expected.json;
    every key sits in the group routes.json gives it, and group 1 carries the node's own
    route rows byte for byte."""
    tree = tmp_path / "tree"
    await decode_cluster([f"1={G1}", f"2={G2}"], tree)
    result = await encode_cluster(tree, tmp_path / "groups", EncodeOptions(self_test=True))
    assert result.self_test_matched and result.catalog_group == 1
    again = tmp_path / "again"
    await decode_cluster([f"{g.group}={g.path}" for g in result.groups], again)
    assert compare(load_tree(again), load_expected(MULTIGROUP / "cluster.expected.json")) == []
    assert tree_without_manifest(again) == tree_without_manifest(tree)
    catalog = await anyio.to_thread.run_sync(
        RouteCatalog.from_json_file, MULTIGROUP / "routes.json"
    )
    for group in result.groups:
        rows = await _visible_rows(group.path)
        for key in rows:
            assert key.startswith(b"!dist|") or catalog.owner(key) == group.group, key
    new = await _visible_rows(result.groups[0].path)
    old = await _visible_rows(G1)
    prefix = b"!dist|route|"
    assert {k: v for k, v in new.items() if k.startswith(prefix)} == {
        k: v for k, v in old.items() if k.startswith(prefix)
    }
    for key in (b"!dist|meta|version", b"!dist|meta|next_route_id"):
        assert new[key] == old[key]
