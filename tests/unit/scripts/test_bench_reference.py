"""The side-by-side benchmark's helpers (``scripts/bench_reference.py``), without the reference."""

from __future__ import annotations

import hashlib
import json
import lzma
import shutil
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))

import bench_reference
import benchlib
from bench_reference import Mix

MIB = 1 << 20


def _write_tree(root: Path, *, wall_time: str, version: str, body: bytes = b"v") -> None:
    (root / "redis" / "db_0" / "strings").mkdir(parents=True)
    (root / "redis" / "db_0" / "strings" / "k.bin").write_bytes(body)
    manifest = {
        "format_version": 1,
        "wall_time_iso": wall_time,
        "elastickv_version": version,
        "source": {"fsm_path": f"/{version}/in.fsm"},
        "adapters": {"redis": {}},
    }
    (root / "MANIFEST.json").write_text(json.dumps(manifest))
    digest = hashlib.sha256(body).hexdigest()
    manifest_digest = hashlib.sha256((root / "MANIFEST.json").read_bytes()).hexdigest()
    (root / "CHECKSUMS").write_text(
        f"{manifest_digest}  MANIFEST.json\n{digest}  redis/db_0/strings/k.bin\n"
    )


def test_trees_equal_but_for_wall_time_version_and_source(tmp_path: Path) -> None:
    _write_tree(tmp_path / "a", wall_time="2026-01-01T00:00:00Z", version="0.1")
    _write_tree(tmp_path / "b", wall_time="2027-02-02T00:00:00Z", version="dev")
    assert bench_reference.tree_differences(tmp_path / "a", tmp_path / "b") == []


def test_tree_differences_name_every_kind(tmp_path: Path) -> None:
    _write_tree(tmp_path / "a", wall_time="t", version="v", body=b"one")
    _write_tree(tmp_path / "b", wall_time="t", version="v", body=b"two")
    (tmp_path / "a" / "extra.txt").write_text("x")
    (tmp_path / "b" / "other.txt").write_text("x")
    assert bench_reference.tree_differences(tmp_path / "a", tmp_path / "b") == [
        "only ours: extra.txt",
        "only the reference's: other.txt",
        "differs: CHECKSUMS",
        "differs: redis/db_0/strings/k.bin",
    ]


def test_manifest_fields_other_than_the_run_specific_ones_count(tmp_path: Path) -> None:
    _write_tree(tmp_path / "a", wall_time="t", version="v")
    _write_tree(tmp_path / "b", wall_time="t", version="v")
    doc = json.loads((tmp_path / "b" / "MANIFEST.json").read_text())
    doc["cluster_id"] = "other"
    (tmp_path / "b" / "MANIFEST.json").write_text(json.dumps(doc))
    assert bench_reference.tree_differences(tmp_path / "a", tmp_path / "b") == [
        "differs: MANIFEST.json"
    ]


def test_scaled_divides_non_zero_counts_only() -> None:
    mix = Mix("m", dynamodb_items=100, redis_strings=10, s3_objects=3)
    assert mix.scaled(20) == Mix("m", dynamodb_items=5, redis_strings=1, s3_objects=1)


def test_mixed_5m_is_all_four_times_8_9_and_runs_only_on_request() -> None:
    every = bench_reference.MIXES["all"]
    big = bench_reference.MIXES["mixed-5m"]
    for name in ("dynamodb_items", "redis_strings", "redis_hashes", "sqs_messages", "s3_objects"):
        assert getattr(big, name) == getattr(every, name) * 89 // 10
    assert "mixed-5m" in bench_reference.FULL_ONLY
    assert bench_reference.ON_REQUEST <= bench_reference.FULL_ONLY
    assert "mixed-1m" not in bench_reference.ON_REQUEST


def test_sides_alternate_who_goes_first() -> None:
    assert list(bench_reference.alternate(3)) == [
        (0, ("ours", "ref")),
        (1, ("ref", "ours")),
        (2, ("ours", "ref")),
    ]


def test_later_outputs_outlive_every_run_then_are_discarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run right after a big tree is deleted pays for the deletion in inode allocation, so
    # no output may disappear while runs remain; the first output of each side is kept.
    present: list[list[str]] = []

    def fake_run(argv: list[str], log: Path) -> bench_reference.Run:
        present.append(sorted(p.name for p in tmp_path.iterdir()))
        out = Path(argv[-1])
        out.mkdir()
        (out / "file").write_bytes(b"x")
        return bench_reference.Run(1.0, 1)

    monkeypatch.setattr(bench_reference, "run_child", fake_run)
    op = bench_reference.Operation()
    outputs = {side: tmp_path / f"tree-{side}" for side in ("ours", "ref")}
    commands = {side: (lambda out: ["tool", str(out)]) for side in outputs}
    bench_reference._measure(op, commands, outputs, tmp_path, 3)

    assert len(op.ours.runs) == len(op.ref.runs) == 3
    # The last run (the reference's, in the third round) sees every earlier output.
    assert present[-1] == ["ours-again-1", "ours-again-2", "ref-again-1", "tree-ours", "tree-ref"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree-ours", "tree-ref"]


def test_generated_snapshot_is_ordered_complete_and_seeded(tmp_path: Path) -> None:
    mix = Mix("m", dynamodb_items=10, redis_strings=4, redis_hashes=2, sqs_messages=8, s3_objects=3)
    # FsmWriter refuses out-of-order keys, so writing at all proves the merge's order.
    made = benchlib.write_fsm(tmp_path / "a.fsm", bench_reference.records(mix, seed=1))
    benchlib.write_fsm(tmp_path / "b.fsm", bench_reference.records(mix, seed=1))
    benchlib.write_fsm(tmp_path / "c.fsm", bench_reference.records(mix, seed=2))
    dynamodb = 10 + 4 * 2  # items, and a schema and generation row per table
    redis = 4 + 2 + 2 * 10 + 2 + 1  # strings, TTL rows of every other, fields, metas, TTL rows
    sqs = 8 * 2 + 4 * 2  # data and visibility rows, generation and meta per queue
    s3 = 3 * 2 + 1  # a chunk and a manifest per object, the bucket meta
    assert made["entries"] == dynamodb + redis + sqs + s3
    data = (tmp_path / "a.fsm").read_bytes()
    assert data.startswith(b"EKVPBBL1")
    assert data == (tmp_path / "b.fsm").read_bytes()
    assert data != (tmp_path / "c.fsm").read_bytes()


def test_object_sizes_stay_between_1kb_and_1mb() -> None:
    sizes = bench_reference.object_sizes(2000, seed=7)
    assert sizes == bench_reference.object_sizes(2000, seed=7)
    assert 1_000 <= min(sizes) < 10_000
    assert 100_000 < max(sizes) <= 1_000_000


def test_run_child_reports_the_child_peak_rss_not_ours(tmp_path: Path) -> None:
    ballast = b"x" * (200 * MIB)  # this process is big; a direct child would inherit its mark
    small = bench_reference.run_child([sys.executable, "-c", "pass"], tmp_path / "log")
    big = bench_reference.run_child(
        [sys.executable, "-c", f"b = b'x' * {300 * MIB}"], tmp_path / "log"
    )
    assert len(ballast) == 200 * MIB
    assert small.peak_rss_kib < 100 * 1024
    assert big.peak_rss_kib >= 300 * 1024
    assert small.seconds > 0


def test_run_child_adds_up_the_memory_of_the_tools_worker_processes(tmp_path: Path) -> None:
    """Two children holding 150 MiB each at once: ``ru_maxrss`` sees the largest process,
    the process tree's peak their sum."""
    child = f"import time; b = b'x' * {150 * MIB}; time.sleep(0.5)"
    tool = (
        "import subprocess, sys; "
        f"ps = [subprocess.Popen([sys.executable, '-c', {child!r}]) for _ in range(2)]; "
        "[p.wait() for p in ps]"
    )
    run = bench_reference.run_child([sys.executable, "-c", tool], tmp_path / "log")
    assert run.peak_rss_kib < 200 * 1024
    assert run.tree_rss_kib >= 300 * 1024
    assert run.memory_kib == run.tree_rss_kib


def test_run_child_failure_ends_with_the_tools_output(tmp_path: Path) -> None:
    code = "import sys; print('boom happened'); sys.exit(3)"
    with pytest.raises(SystemExit, match="exited 3:\nboom happened"):
        bench_reference.run_child([sys.executable, "-c", code], tmp_path / "log")


def _pack(folder: Path, name: str, content: bytes) -> str:
    with lzma.open(folder / f"{name}.xz", "wb") as out:
        out.write(content)
    return f"{hashlib.sha256(content).hexdigest()}  {name}\n"


def test_unpack_reference_checks_sha256sums(tmp_path: Path) -> None:
    shared, dest = tmp_path / "bin", tmp_path / "dest"
    shared.mkdir()
    dest.mkdir()
    assert bench_reference.unpack_reference(shared, dest) is None
    sums = _pack(shared, bench_reference.DECODER, b"#!/bin/sh\necho decode\n")
    sums += _pack(shared, bench_reference.ENCODER, b"#!/bin/sh\necho encode\n")
    (shared / "SHA256SUMS").write_text(sums)
    tools = bench_reference.unpack_reference(shared, dest)
    assert tools is not None
    assert tools[bench_reference.DECODER].read_bytes() == b"#!/bin/sh\necho decode\n"
    assert tools[bench_reference.ENCODER].stat().st_mode & 0o111
    shutil.rmtree(dest)
    dest.mkdir()
    (shared / "SHA256SUMS").write_text(sums.replace(sums[:8], "00000000", 1))
    with pytest.raises(SystemExit, match="does not match"):
        bench_reference.unpack_reference(shared, dest)
