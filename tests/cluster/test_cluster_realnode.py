"""The real 3-node, 2-group cluster's snapshots decode to the cluster's state.

Compared semantically (:mod:`statecompare`, as ``tests/realnode/`` does) with
``cluster.expected.json``; each group file alone still decodes to its own expectation.
Skipped when the shared corpus is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import cluster_support  # noqa: F401 - puts the shared test helpers on sys.path
import pytest
from statecompare import compare, load_expected, load_tree
from support import shared_dir

from elastickv_async._core.cluster.api import decode_cluster
from elastickv_async._core.pipeline import decode_snapshot

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
