"""``--report``, ``--scratch-root`` and ``--backend trio`` are checked before any work, and the
report is written atomically through the safe writer (no predictable temp, no symlink)."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hostile import SAMPLE_FSM, cli, listing, sample_tree

from elastickv_async._core.cli import main


def _decode(tmp_path: Path, *extra: str | Path) -> tuple[int, str, Path]:
    out = tmp_path / "out"
    done = cli("decode", "--input", SAMPLE_FSM, "--output", out, "--quiet", *extra)
    return done.returncode, done.stderr, out


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing/r.json", "directory .*missing does not exist"),
        ("a-directory", "is a directory"),
        ("fifo", "not a regular file"),
    ],
)
def test_bad_report_path_is_a_usage_error_before_any_work(
    tmp_path: Path, where: str, message: str
) -> None:
    (tmp_path / "a-directory").mkdir()
    os.mkfifo(tmp_path / "fifo")
    code, err, out = _decode(tmp_path, "--report", tmp_path / where)
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("elastickv-async: error: --report")
    assert re.search(message, err)
    assert not out.exists()


def test_report_never_follows_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "r.json").symlink_to(victim)
    code, err, out = _decode(tmp_path, "--report", tmp_path / "r.json")
    assert code == 1
    assert "not a regular file" in err
    assert not out.exists()
    assert victim.read_text() == "keep"


def test_report_ignores_a_planted_predictable_temp(tmp_path: Path) -> None:
    """The old temp name ``.<name>.tmp-<pid>`` could be planted; nothing goes through it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    planted = tmp_path / f".r.json.tmp-{os.getpid()}"
    planted.symlink_to(victim)
    out = tmp_path / "out"
    argv = ["decode", "--input", str(SAMPLE_FSM), "--output", str(out), "--quiet"]
    assert main([*argv, "--report", str(tmp_path / "r.json")]) == 0
    assert victim.read_text() == "keep"
    assert planted.is_symlink()
    assert json.loads((tmp_path / "r.json").read_text())["exit_code"] == 0
    assert (tmp_path / "r.json").stat().st_nlink == 1
    assert sorted(os.listdir(tmp_path)) == sorted(["out", "r.json", "victim.txt", planted.name])


def test_report_after_a_failure_carries_the_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.fsm"
    bad.write_bytes(b"NOTASNAP" + bytes(16))
    report = tmp_path / "r.json"
    done = cli("decode", "--input", bad, "--output", tmp_path / "out", "--report", report)
    assert done.returncode == 2
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == 2
    prefix = "elastickv-async: error: [ErrSnapshotBadMagic] "
    error = doc["error"]
    assert error["message"] == done.stderr.removeprefix(prefix).rstrip("\n")
    assert error["code"] == "ErrSnapshotBadMagic" and error["exit_code"] == 2
    assert doc["input"] == str(bad) and doc["output"] == str(tmp_path / "out")
    assert doc["options"]["report"] == str(report) and doc["options"]["jobs"] == 8
    started = datetime.fromisoformat(doc["started_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - started).total_seconds()) < 600
    assert doc["duration_s"] >= 0


@pytest.mark.parametrize("command", ["decode", "encode"])
def test_scratch_root_must_exist(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "no" / "such"
    if command == "decode":
        done = cli("decode", "--input", SAMPLE_FSM, "--output", tmp_path / "out",
                   "--scratch-root", missing)  # fmt: skip
    else:
        tree = sample_tree(tmp_path)
        done = cli("encode", "--input", tree, "--output", tmp_path / "o.fsm",
                   "--scratch-root", missing)  # fmt: skip
    assert done.returncode == 1
    assert (
        done.stderr
        == f"elastickv-async: error: --scratch-root {missing} is not an existing directory\n"
    )
    assert not (tmp_path / "no").exists()
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "o.fsm").exists()


def test_backend_trio_without_trio_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    (blocker / "trio").mkdir(parents=True)
    (blocker / "trio" / "__init__.py").write_text("raise ImportError('no trio here')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker))
    out = tmp_path / "out"
    done = cli("decode", "--input", SAMPLE_FSM, "--output", out, "--backend", "trio", env=env)
    assert done.returncode == 1
    assert done.stderr == (
        "elastickv-async: error: --backend trio needs the trio package: "
        "pip install 'elastickv-async[trio]'\n"
    )
    assert not out.exists()
    assert listing(tmp_path) == ["blocker", "blocker/trio", "blocker/trio/__init__.py"]
