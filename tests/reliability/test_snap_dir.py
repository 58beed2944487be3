"""``decode --input-snap-dir`` (newest snapshot of a node's fsm-snap/) and ``--all``."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hostile import cli, snapshot
from support import raises_code

from elastickv_async import SnapshotFormatError, UsageError
from elastickv_async._core.snapdir import decode_snap_dir


def _with_applied_index(index: int, last_commit_ts: int) -> bytes:
    """An empty snapshot whose store recorded ``_meta_applied_index = index`` (a raw,
    non-MVCC key with an 8-byte little-endian value, after every ``!`` key)."""
    key = b"_meta_applied_index"
    meta = struct.pack("<Q", len(key)) + key + struct.pack("<Q", 8) + struct.pack("<Q", index)
    return snapshot([], last_commit_ts) + meta


def _snap_dir(tmp_path: Path, indexes: dict[int, int]) -> Path:
    """``fsm-snap/`` holding ``<index>.fsm`` for each ``{name index: applied index}``; the
    last_commit_ts of each is ``1000 + name index`` so trees tell them apart."""
    snap = tmp_path / "fsm-snap"
    snap.mkdir()
    for name, applied in indexes.items():
        (snap / f"{name:016x}.fsm").write_bytes(_with_applied_index(applied, 1000 + name))
    (snap / "0000000000000fff.fsm.tmp").write_bytes(b"a node's unfinished snapshot")
    return snap


def _manifest(tree: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((tree / "MANIFEST.json").read_bytes())
    return doc


def test_cli_decodes_the_newest_snapshot(tmp_path: Path) -> None:
    snap = _snap_dir(tmp_path, {5: 5, 10: 10, 7: 7})
    out = tmp_path / "out"
    done = cli("decode", "--input-snap-dir", snap, "--output", out, "--quiet", "--strict")
    assert done.returncode == 0, done.stderr
    manifest = _manifest(out)
    assert manifest["snapshot_index"] == 10
    assert manifest["last_commit_ts"] == 1010
    source = manifest["source"]
    assert isinstance(source, dict) and source["fsm_path"] == str(snap / "000000000000000a.fsm")


def test_cli_all_decodes_each_oldest_first_into_its_own_tree(tmp_path: Path) -> None:
    snap = _snap_dir(tmp_path, {10: 10, 5: 5})
    out = tmp_path / "out"
    report = tmp_path / "r.json"
    args: list[str | Path] = ["--output", out, "--all", "--quiet", "--report", report]
    done = cli("decode", "--input-snap-dir", snap, *args)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["0000000000000005", "000000000000000a"]
    for name, index in (("0000000000000005", 5), ("000000000000000a", 10)):
        assert _manifest(out / name)["snapshot_index"] == index
        assert (out / name / "CHECKSUMS").exists()
    facts = json.loads(report.read_bytes())["snapshot"]["snapshots"]
    assert [f["index"] for f in facts] == [5, 10]  # oldest first


def test_cli_index_mismatch_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    snap = _snap_dir(tmp_path, {5: 5, 11: 12})
    out = tmp_path / "out"
    done = cli("decode", "--input-snap-dir", snap, "--output", out, "--all", "--quiet")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "[errSnapshotIndexMismatch]" in done.stderr
    assert str(snap / "000000000000000b.fsm") in done.stderr
    assert _manifest(out / "0000000000000005")["snapshot_index"] == 5  # done before: kept
    assert not (out / "000000000000000b" / "MANIFEST.json").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--input", "0000000000000005.fsm", "--input-snap-dir", "."], "exactly one of --input"),
        ([], "exactly one of --input"),
        (["--input", "0000000000000005.fsm", "--all"], "--all needs --input-snap-dir"),
    ],
)
def test_cli_input_flags_are_checked_first(tmp_path: Path, flags: list[str], message: str) -> None:
    snap = _snap_dir(tmp_path, {5: 5})
    done = cli("decode", "--output", tmp_path / "out", *flags, cwd=snap)
    assert done.returncode == 1 and message in done.stderr
    assert not (tmp_path / "out").exists()


def test_cli_an_empty_snap_dir_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "fsm-snap"
    empty.mkdir()
    done = cli("decode", "--input-snap-dir", empty, "--output", tmp_path / "out")
    assert done.returncode == 1 and "no <index>.fsm snapshot" in done.stderr


@pytest.mark.anyio
async def test_library_decode_snap_dir(tmp_path: Path) -> None:
    snap = _snap_dir(tmp_path, {3: 3, 4: 4})
    [((index, path, tree), report)] = await decode_snap_dir(snap, tmp_path / "newest")
    assert (index, path.name, tree) == (4, "0000000000000004.fsm", tmp_path / "newest")
    assert report.snapshot["meta_keys"] == {"_meta_applied_index": 4}
    every = await decode_snap_dir(snap, tmp_path / "all", every=True)
    assert [run[0][0] for run in every] == [3, 4]
    assert all((run[0][2] / "MANIFEST.json").exists() for run in every)


@pytest.mark.anyio
async def test_library_mismatch_and_missing_index(tmp_path: Path) -> None:
    snap = _snap_dir(tmp_path, {9: 8})
    with raises_code(SnapshotFormatError, "errSnapshotIndexMismatch", match="index 9"):
        await decode_snap_dir(snap, tmp_path / "out")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "0000000000000009.fsm").write_bytes(snapshot([]))
    [(_, report)] = await decode_snap_dir(bare, tmp_path / "bare-out")
    assert list(report.warnings) == ["snapshot_index_unchecked"]
    with pytest.raises(UsageError, match="not a readable directory"):
        await decode_snap_dir(tmp_path / "nowhere", tmp_path / "x")
