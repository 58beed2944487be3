"""decode_cluster on synthetic groups: joining, cross-group duplicates, inputs, reruns, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cluster_support import (
    FAR_FUTURE_MS,
    catalog_row,
    redis_strings,
    two_group_cluster,
    write_group,
)
from support import raises_code

from elastickv_async._core.cli import main
from elastickv_async._core.cluster.api import ClusterProgress, decode_cluster
from elastickv_async._core.errors import SnapshotFormatError, UsageError
from elastickv_async._core.pipeline import INCOMPLETE_MARKER, decode_snapshot

STRINGS = "redis/db_0/strings"


def _string(root: Path, key: str) -> bytes:
    return (root / STRINGS / f"{key}.bin").read_bytes()


def _ttl_lines(root: Path) -> list[dict[str, object]]:
    path = root / "redis/db_0/strings_ttl.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.anyio
async def test_rows_of_one_key_in_two_groups_are_joined(tmp_path: Path) -> None:
    """A string in group 1 and its TTL row in group 2 become one string with its TTL."""
    g1, g2 = two_group_cluster(tmp_path)
    report = await decode_cluster([g1, g2], tmp_path / "out")
    out = tmp_path / "out"
    assert _string(out, "joined") == b"hello"
    assert {"key": "joined", "expire_at_ms": FAR_FUTURE_MS} in _ttl_lines(out)
    assert "redis_orphan_ttl" not in report.warnings


@pytest.mark.anyio
async def test_each_group_alone_decodes_as_a_single_snapshot(tmp_path: Path) -> None:
    """Group 2 alone finds the TTL without its string; group 1 alone has the string, no TTL."""
    g1, g2 = two_group_cluster(tmp_path)
    alone2 = await decode_snapshot(g2, tmp_path / "g2")
    assert alone2.warnings["redis_orphan_ttl"].count == 1
    await decode_snapshot(g1, tmp_path / "g1")
    assert _string(tmp_path / "g1", "joined") == b"hello"
    assert _ttl_lines(tmp_path / "g1") == []


@pytest.mark.anyio
async def test_cross_group_duplicate_keeps_the_route_owner(tmp_path: Path) -> None:
    """The copy in the group owning the key's route wins (even when older); both reported."""
    g1, g2 = two_group_cluster(tmp_path)
    report = await decode_cluster([g1, g2], tmp_path / "out")
    out = tmp_path / "out"
    assert _string(out, "apple") == b"g1-apple"
    assert _string(out, "zebra") == b"g2-zebra"
    assert _string(out, "mango") == b"g2-mango"
    duplicates = report.warnings["cross_group_duplicate"]
    assert duplicates.count == 2
    kept = {e["key"]: (e["kept_group"], e["route_owner"], e["groups"]) for e in duplicates.examples}
    assert kept == {
        "!redis|str|apple": (1, 1, [1, 2]),
        "!redis|str|zebra": (2, 2, [1, 2]),
    }


@pytest.mark.anyio
async def test_routes_file_replaces_the_catalog_rows(tmp_path: Path) -> None:
    """``routes`` (routes.json) decides ownership instead of the default group's rows."""
    g1, g2 = two_group_cluster(tmp_path)
    routes = tmp_path / "routes.json"
    routes.write_text(
        json.dumps(
            {"routes": [{"route_id": 1, "raft_group_id": 2, "start_b64": "", "end_b64": ""}]}
        )
    )
    await decode_cluster([g1, g2], tmp_path / "out", routes=routes)
    assert _string(tmp_path / "out", "apple") == b"g2-apple-stale"
    assert _string(tmp_path / "out", "zebra") == b"g2-zebra"


@pytest.mark.anyio
async def test_without_a_catalog_the_newer_copy_is_kept_and_said(tmp_path: Path) -> None:
    """No catalog anywhere: duplicates keep the newer commit and the run warns once."""
    g1, g2 = two_group_cluster(tmp_path, with_catalog=False)
    report = await decode_cluster([g1, g2], tmp_path / "out")
    assert _string(tmp_path / "out", "apple") == b"g2-apple-stale"
    assert _string(tmp_path / "out", "zebra") == b"g1-zebra-stale"
    assert report.warnings["route_catalog_missing"].count == 1


@pytest.mark.anyio
async def test_manifest_records_every_group(tmp_path: Path) -> None:
    """MANIFEST: each group's facts, not a point in time, top-level last_commit_ts = max."""
    g1, g2 = two_group_cluster(tmp_path)
    samples: list[ClusterProgress] = []
    await decode_cluster(["1=" + str(g1), f"2={g2}"], tmp_path / "out", progress=samples.append)
    manifest = json.loads((tmp_path / "out/MANIFEST.json").read_bytes())
    assert manifest["last_commit_ts"] == 200
    assert "source" not in manifest
    cluster = manifest["cluster"]
    assert cluster["point_in_time"] is False
    groups = {g["raft_group_id"]: g for g in cluster["groups"]}
    assert groups[1]["last_commit_ts"] == 100 and groups[2]["last_commit_ts"] == 200
    assert groups[1]["footer"] == "valid" and groups[1]["hlc_ceiling_ms"] > 0
    assert groups[2]["fsm_path"] == str(g2)
    assert [r["raft_group_id"] for r in cluster["routes"]] == [1, 2]
    assert not (tmp_path / "out" / INCOMPLETE_MARKER).exists()
    assert samples[-1].done and samples[-1].groups_done == 2
    assert samples[-1].partitions_done == samples[-1].partitions_total == 4


@pytest.mark.anyio
async def test_a_bad_group_fails_naming_it_and_a_rerun_succeeds(tmp_path: Path) -> None:
    """A corrupt group file: typed error naming the group, no MANIFEST; ``force`` reruns.

    As for a single-file decode, the unfinished tree is replaced only when asked to, and a
    complete tree never.
    """
    g1, g2 = two_group_cluster(tmp_path)
    good = g2.read_bytes()
    g2.write_bytes(good[:-3])
    out = tmp_path / "out"
    with raises_code(SnapshotFormatError, "ErrSnapshotTruncated", match="group 2"):
        await decode_cluster([g1, g2], out)
    assert not (out / "MANIFEST.json").exists()
    assert (out / INCOMPLETE_MARKER).exists()
    g2.write_bytes(good)
    with pytest.raises(UsageError, match="--force"):
        await decode_cluster([g1, g2], out)
    await decode_cluster([g1, g2], out, force=True)
    assert (out / "MANIFEST.json").is_file()
    assert not (out / INCOMPLETE_MARKER).exists()
    assert sorted(p.name for p in out.iterdir()) == ["CHECKSUMS", "MANIFEST.json", "redis"]
    with pytest.raises(UsageError, match="not empty"):
        await decode_cluster([g1, g2], out, force=True)


@pytest.mark.anyio
async def test_duplicate_inputs_and_foreign_output_are_refused(tmp_path: Path) -> None:
    """A group given twice, or an output holding someone else's files, is a usage error."""
    g1, g2 = two_group_cluster(tmp_path)
    with pytest.raises(UsageError, match="group 1 given twice"):
        await decode_cluster([f"1={g1}", f"1={g2}"], tmp_path / "out")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        await decode_cluster([g1, g2], foreign)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_cli_finds_groups_in_a_data_dir_and_the_tree_verifies(tmp_path: Path) -> None:
    """``--input-data-dir`` picks each group's newest snapshot; verify and encode take the tree."""
    g1, g2 = two_group_cluster(tmp_path / "src")
    node = tmp_path / "data/n1"
    for group, path in ((1, g1), (2, g2)):
        snaps = node / f"group-{group}/fsm-snap"
        snaps.mkdir(parents=True)
        shutil.copy(path, snaps / "00000000000000c9.fsm")
    # An older snapshot of group 1 that must not be picked.
    write_group(node / "group-1/fsm-snap/0000000000000001.fsm", 5, redis_strings(("old", 1, "x")))
    out = tmp_path / "out"
    argv = ["decode-cluster", "--input-data-dir", str(node), "--output", str(out), "--quiet"]
    assert main(argv) == 0
    manifest = json.loads((out / "MANIFEST.json").read_bytes())
    assert [g["snapshot_index"] for g in manifest["cluster"]["groups"]] == [0xC9, 0xC9]
    assert not (out / STRINGS / "old.bin").exists()
    assert main(["verify", "--input", str(out), "--quiet"]) == 0
    assert (
        main(["encode", "--input", str(out), "--output", str(tmp_path / "c.fsm"), "--quiet"]) == 0
    )
    assert (tmp_path / "c.fsm").read_bytes()[8:16] == (200).to_bytes(8, "little")


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No input, --pin without --scheduler, a bad --pin: exit 1, one line on stderr each."""
    assert main(["decode-cluster", "--output", str(tmp_path / "o")]) == 1
    g1, _ = two_group_cluster(tmp_path)
    argv = ["decode-cluster", "--input", str(g1), "--output", str(tmp_path / "o"), "--pin", "1=w"]
    assert main(argv) == 1
    assert main([*argv[:-2], "--scheduler", "tcp://127.0.0.1:1", "--pin", "one=w"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("elastickv-async: ") for line in err)
    assert "GROUP=WORKER" in err[2]
    assert not (tmp_path / "o").exists()


@pytest.mark.anyio
async def test_catalog_rows_of_a_non_default_layout(tmp_path: Path) -> None:
    """Route rows are read from whichever group holds them (the lowest such group)."""
    g1 = write_group(tmp_path / "a.fsm", 10, redis_strings(("k", 5, "from-1")))
    g2 = write_group(
        tmp_path / "b.fsm",
        10,
        [catalog_row(7, 1, b"", None), *redis_strings(("k", 6, "from-2"))],
    )
    await decode_cluster([g1, g2], tmp_path / "out")
    assert _string(tmp_path / "out", "k") == b"from-1"


@pytest.mark.anyio
async def test_group_header_below_its_data_is_resolved_by_newest_version(tmp_path: Path) -> None:
    """As for one file: a group stamped below all its versions is decoded newest-first, said."""
    g1 = write_group(tmp_path / "a.fsm", 1, redis_strings(("k", 50, "new"), ("k", 40, "old")))
    g2 = write_group(tmp_path / "b.fsm", 100, redis_strings(("other", 5, "x")))
    report = await decode_cluster([g1, g2], tmp_path / "out")
    assert _string(tmp_path / "out", "k") == b"new"
    [example] = report.warnings["mvcc_header_below_data"].examples
    assert example["raft_group_id"] == 1


def test_dask_mode_refuses_trio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--scheduler`` under ``--backend trio`` is a usage error (Dask's client is asyncio)."""
    g1, g2 = two_group_cluster(tmp_path)
    argv = ["decode-cluster", "--input", str(g1), "--input", str(g2), "--output"]
    argv += [str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:1", "--backend", "trio"]
    assert main(argv) == 1
    assert "asyncio" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.anyio
async def test_route_owner_deletion_beats_a_stale_live_copy(tmp_path: Path) -> None:
    """Group 1 owns keys below ``m`` and deleted ``apple``; group 2 still holds it live.

    The owner's deletion wins like its live version would: the key is absent and the dropped
    stale copy is reported. The owner (group 2) of ``zebra`` holds it live while group 1
    deleted it, and group 2 deleted ``lime``, which group 1 owns live: those deletions drop
    nothing visible, so they are not reported.
    """
    catalog = [catalog_row(1, 1, b"", b"m"), catalog_row(2, 2, b"m", None)]
    g1 = write_group(
        tmp_path / "g1.fsm",
        100,
        [*catalog, *redis_strings(("apple", 20, "g1-apple"), ("lime", 5, "g1-lime"))],
        tombstones=[(b"!redis|str|apple", 30), (b"!redis|str|zebra", 60)],
    )
    g2 = write_group(
        tmp_path / "g2.fsm",
        200,
        redis_strings(("apple", 150, "g2-apple-stale"), ("zebra", 40, "g2-zebra")),
        tombstones=[(b"!redis|str|lime", 150)],
    )
    report = await decode_cluster([g1, g2], tmp_path / "out")
    out = tmp_path / "out"
    assert not (out / STRINGS / "apple.bin").exists()
    assert _string(out, "zebra") == b"g2-zebra"
    assert _string(out, "lime") == b"g1-lime"
    duplicates = report.warnings["cross_group_duplicate"]
    assert duplicates.count == 1
    assert [(e["key"], e["kept_group"], e["route_owner"]) for e in duplicates.examples] == [
        ("!redis|str|apple", 1, 1)
    ]
    assert report.counters["entries.redis"] == 2
