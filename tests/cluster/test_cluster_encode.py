"""encode_cluster: a cluster tree back into one .fsm per group, routed by the catalog."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import anyio
import pytest
from cluster_support import catalog_row, tree_without_manifest, two_group_cluster
from support import count_tree_opens, raises_code

from elastickv_async._core.cli import main
from elastickv_async._core.cluster.api import decode_cluster
from elastickv_async._core.cluster.encode import SET_MARKER, encode_cluster
from elastickv_async._core.errors import ChecksumMismatch, DataError, UsageError
from elastickv_async._core.options import DecodeOptions, EncodeOptions
from elastickv_async._core.pipeline import decode_snapshot
from elastickv_async._core.restore.prepare import PrepareRestoreOptions, prepare_restore
from elastickv_async._core.snapshot.reader import open_snapshot


async def _rows(path: Path) -> tuple[int, dict[bytes, bytes]]:
    """A group file's header ``last_commit_ts`` and its rows (user key -> value)."""
    rows: dict[bytes, bytes] = {}
    async with open_snapshot(path) as snap:
        ts = snap.header.last_commit_ts
        async for batch in snap.batches(256, 1 << 20):
            for entry in batch:
                assert entry.commit_ts == ts
                rows[entry.key] = entry.value
    return ts, rows


async def _cluster_tree(tmp_path: Path) -> Path:
    g1, g2 = two_group_cluster(tmp_path / "src")
    tree = tmp_path / "tree"
    await decode_cluster([f"1={g1}", f"2={g2}"], tree)
    return tree


def _routes_file(path: Path, routes: list[tuple[int, int, bytes, bytes]]) -> Path:
    import base64

    doc = {
        "routes": [
            {
                "route_id": rid,
                "raft_group_id": group,
                "start_b64": base64.b64encode(start).decode(),
                "end_b64": base64.b64encode(end).decode(),
            }
            for rid, group, start, end in routes
        ]
    }
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.anyio
async def test_decode_encode_decode_gives_the_same_tree(tmp_path: Path) -> None:
    """The groups' files decode (as a cluster) back to the tree they were made from."""
    tree = await _cluster_tree(tmp_path)
    result = await encode_cluster(tree, tmp_path / "groups", EncodeOptions(self_test=True))
    assert result.self_test_matched
    assert [g.group for g in result.groups] == [1, 2]
    inputs = [f"{g.group}={g.path}" for g in result.groups]
    report = await decode_cluster(inputs, tmp_path / "again")
    assert tree_without_manifest(tmp_path / "again") == tree_without_manifest(tree)
    assert "cross_group_duplicate" not in report.warnings
    before = json.loads((tree / "MANIFEST.json").read_bytes())["cluster"]["routes"]
    after = json.loads((tmp_path / "again/MANIFEST.json").read_bytes())["cluster"]["routes"]
    assert after == before


@pytest.mark.anyio
async def test_records_land_in_their_owner_group_at_its_own_timestamp(tmp_path: Path) -> None:
    """Catalog: keys below ``m`` in group 1, the rest in
    group 2; each file is stamped with its group's last_commit_ts (100 and 200)."""
    tree = await _cluster_tree(tmp_path)
    out = tmp_path / "groups"
    await encode_cluster(tree, out)
    ts1, rows1 = await _rows(out / "group-1.fsm")
    ts2, rows2 = await _rows(out / "group-2.fsm")
    assert (ts1, ts2) == (100, 200)
    data1 = {k for k in rows1 if not k.startswith(b"!dist|")}
    # The encoder keeps a string's TTL in its own value: no separate TTL row.
    assert data1 == {b"!redis|str|apple", b"!redis|str|joined"}
    assert set(rows2) == {b"!redis|str|mango", b"!redis|str|zebra"}
    for group, ts in ((1, 100), (2, 200)):
        info = json.loads((out / f"group-{group}.fsm.encode_info.json").read_bytes())
        assert info["last_commit_ts"] == ts
        assert info["output_fsm_path"] == os.fspath(out / f"group-{group}.fsm")
    marker = json.loads((out / SET_MARKER).read_bytes())
    assert [g["raft_group_id"] for g in marker["groups"]] == [1, 2]
    assert marker["catalog_group"] == 1


@pytest.mark.anyio
async def test_override_stamps_every_group_and_may_not_go_back(tmp_path: Path) -> None:
    """``last_commit_ts`` given: every group gets it; below the tree's (200) it is refused."""
    tree = await _cluster_tree(tmp_path)
    await encode_cluster(tree, tmp_path / "g", EncodeOptions(last_commit_ts=500))
    assert (await _rows(tmp_path / "g/group-1.fsm"))[0] == 500
    assert (await _rows(tmp_path / "g/group-2.fsm"))[0] == 500
    with raises_code(UsageError, "ErrLastCommitTSRegression"):
        await encode_cluster(tree, tmp_path / "h", EncodeOptions(last_commit_ts=150))


@pytest.mark.anyio
async def test_the_catalog_group_carries_the_route_rows(tmp_path: Path) -> None:
    """Group 1 (routing ``!dist|meta|version``) gets the routes as the node writes them, the
    catalog version and the next route id; group 2 gets no catalog row."""
    tree = await _cluster_tree(tmp_path)
    out = tmp_path / "groups"
    await encode_cluster(tree, out)
    _, rows1 = await _rows(out / "group-1.fsm")
    _, rows2 = await _rows(out / "group-2.fsm")
    expected = dict(
        (key, value)
        for key, _, value in (catalog_row(1, 1, b"", b"m"), catalog_row(2, 2, b"m", None))
    )
    expected[b"!dist|meta|version"] = b"\x01" + struct.pack(">Q", 1)
    expected[b"!dist|meta|next_route_id"] = b"\x01" + struct.pack(">Q", 3)
    assert {k: v for k, v in rows1.items() if k.startswith(b"!dist|")} == expected
    assert not any(k.startswith(b"!dist|") for k in rows2)


@pytest.mark.anyio
async def test_a_tree_without_cluster_section_needs_routes(tmp_path: Path) -> None:
    """A single-file dump is refused without --routes, and split by it with them."""
    g1, _ = two_group_cluster(tmp_path / "src")
    await decode_snapshot(g1, tmp_path / "single")
    with raises_code(UsageError, "errNotClusterTree"):
        await encode_cluster(tmp_path / "single", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    routes = _routes_file(tmp_path / "routes.json", [(1, 1, b"", b"m"), (2, 3, b"m", b"\xff")])
    result = await encode_cluster(
        tmp_path / "single", tmp_path / "out", EncodeOptions(self_test=True), routes=routes
    )
    assert [g.group for g in result.groups] == [1, 3]
    assert set((await _rows(tmp_path / "out/group-3.fsm"))[1]) == {b"!redis|str|zebra"}


@pytest.mark.anyio
async def test_a_key_no_route_covers_is_refused(tmp_path: Path) -> None:
    """Routes that leave ``m``.. uncovered: refused, nothing published, no temp left."""
    tree = await _cluster_tree(tmp_path)
    routes = _routes_file(tmp_path / "routes.json", [(1, 1, b"", b"m")])
    with raises_code(DataError, "errKeyNotRouted"):
        await encode_cluster(tree, tmp_path / "out", routes=routes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routes.json", "src", "tree"]


@pytest.mark.anyio
async def test_output_dir_rules(tmp_path: Path) -> None:
    """Foreign files are never replaced; an earlier set only with ``force``."""
    tree = await _cluster_tree(tmp_path)
    out = tmp_path / "groups"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        await encode_cluster(tree, out)
    (out / "notes.txt").unlink()
    await encode_cluster(tree, out)
    first = (out / SET_MARKER).read_bytes()
    with pytest.raises(UsageError, match="--force"):
        await encode_cluster(tree, out)
    await encode_cluster(tree, out, EncodeOptions(last_commit_ts=300), force=True)
    assert (out / SET_MARKER).read_bytes() != first
    assert (await _rows(out / "group-2.fsm"))[0] == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["groups", "src", "tree"]


def test_cli_encode_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command: a non-cluster tree exits 1, an unrouted key 2, one line each; then a run."""
    g1, g2 = two_group_cluster(tmp_path / "src")
    tree = tmp_path / "tree"
    argv = ["decode-cluster", "--input", f"1={g1}", "--input", f"2={g2}", "--output", str(tree)]
    assert main([*argv, "--quiet"]) == 0
    assert main(["decode", "--input", str(g1), "--output", str(tmp_path / "one"), "--quiet"]) == 0
    capsys.readouterr()
    base = ["encode-cluster", "--quiet", "--output-dir", str(tmp_path / "out")]
    assert main([*base, "--input", str(tmp_path / "one")]) == 1
    routes = _routes_file(tmp_path / "routes.json", [(1, 1, b"", b"m")])
    assert main([*base, "--input", str(tree), "--routes", str(routes)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert "not a cluster tree" in err[0] and "no route" in err[1]
    assert main([*base, "--input", str(tree), "--self-test"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        SET_MARKER,
        "group-1.fsm",
        "group-1.fsm.encode_info.json",
        "group-2.fsm",
        "group-2.fsm.encode_info.json",
    ]


@pytest.mark.anyio
async def test_prepare_restore_takes_every_group_file(tmp_path: Path) -> None:
    """Each group file with its sidecar (self-tested, the tree's cluster id) prepares a
    group-<g> data directory whose snapshot is stamped with that group's timestamp."""
    g1, g2 = two_group_cluster(tmp_path / "src")
    tree = tmp_path / "tree"
    await decode_cluster([f"1={g1}", f"2={g2}"], tree, DecodeOptions(cluster_id="prod-1"))
    result = await encode_cluster(tree, tmp_path / "groups", EncodeOptions(self_test=True))
    node = tmp_path / "raft/n1"
    await anyio.Path(node).mkdir(parents=True)
    for group in result.groups:
        prepared = await prepare_restore(
            PrepareRestoreOptions(
                input=group.path,
                data_dir=node / f"group-{group.group}",
                index=1,
                peers="n1=127.0.0.1:50051",
                target_cluster_id="prod-1",
            )
        )
        assert prepared.last_commit_ts == group.last_commit_ts
        assert prepared.payload_sha256 == group.sha256
    assert sorted(p.name for p in node.iterdir()) == ["group-1", "group-2"]


@pytest.mark.anyio
async def test_a_tree_that_changed_since_its_checksums_is_refused(tmp_path: Path) -> None:
    """As for encode: a file differing from CHECKSUMS stops the run and nothing is
    published, unless checksums are not verified."""
    tree = await _cluster_tree(tmp_path)
    (tree / "redis/db_0/strings/apple.bin").write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatch):
        await encode_cluster(tree, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    await encode_cluster(tree, tmp_path / "out", EncodeOptions(verify_checksums=False))
    assert (await _rows(tmp_path / "out/group-1.fsm"))[1][b"!redis|str|apple"].endswith(b"tampered")


@pytest.mark.anyio
async def test_the_checksums_check_reads_no_file_the_encoders_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for encode: the encoders' reads record each file's digest and the check against
    CHECKSUMS takes those, so every adapter file is opened once; a changed file is still
    found, and nothing is published."""

    tree = await _cluster_tree(tmp_path)
    opened = count_tree_opens(monkeypatch)
    await encode_cluster(tree, tmp_path / "out")
    data_files = sorted(
        str(p.relative_to(tree))
        for p in tree.rglob("*")
        # MANIFEST.json and CHECKSUMS are the run's own
        if p.is_file() and p.parent != tree
    )
    assert len(data_files) >= 5
    assert {rel: opened.get(rel, 0) for rel in data_files} == dict.fromkeys(data_files, 1)
    victim = tree / data_files[-1]
    victim.write_bytes(victim.read_bytes() + b" ")
    with raises_code(ChecksumMismatch, "ErrChecksumMismatch", match=data_files[-1]):
        await encode_cluster(tree, tmp_path / "again")
    assert not (tmp_path / "again").exists()
