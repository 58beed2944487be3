"""Encode publishing: the previous .fsm and sidecar survive every failure, a kill between the
two renames leaves a pair whose mismatch a reader can see, a second run on the same output
fails at once, and a dead run's leftovers are removed by the next run."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from hostile import cli, sample_tree

from elastickv_async import EncodeOptions, OutputError, UsageError, encode_snapshot
from elastickv_async._core.runfiles import leftover_owner

DEAD_PID = 2**22 + 54321  # above pid_max's default: never a live process
OLD_FSM = b"previous good snapshot"
OLD_INFO = b'{"output_fsm_sha256": "' + hashlib.sha256(OLD_FSM).hexdigest().encode() + b'"}'


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_tree(tmp_path_factory.mktemp("sample"))


def _previous_pair(work: Path) -> Path:
    work.mkdir(exist_ok=True)
    out = work / "out.fsm"
    out.write_bytes(OLD_FSM)
    (work / "out.fsm.encode_info.json").write_bytes(OLD_INFO)
    return out


def _encode(tree: Path, out: Path, **options: Any) -> None:
    anyio.run(partial(encode_snapshot, force=True), tree, out, EncodeOptions(**options))


def _names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def _recorded_sha(out: Path) -> str:
    doc = json.loads((out.parent / f"{out.name}.encode_info.json").read_bytes())
    sha: str = doc["output_fsm_sha256"]
    return sha


def _fail_nth(monkeypatch: pytest.MonkeyPatch, name: str, n: int, err: int = errno.EIO) -> None:
    real = getattr(os, name)
    calls = 0

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == n:
            raise OSError(err, f"injected {name} failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, failing)


@pytest.mark.parametrize(
    ("call", "n"),
    [
        pytest.param("rename", 2, id="sidecar-rename"),
        pytest.param("fsync", 3, id="directory-fsync"),
        pytest.param("rename", 1, id="fsm-rename"),
        pytest.param("link", 2, id="keeping-the-old-sidecar"),
    ],
)
def test_a_failed_publish_keeps_the_previous_pair(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, n: int
) -> None:
    out = _previous_pair(tmp_path / "work")
    # fsync order: the .fsm temp, the sidecar temp, then the directory after both renames.
    _fail_nth(monkeypatch, call, n)
    with pytest.raises(OutputError, match="injected"):
        _encode(tree, out)
    assert out.read_bytes() == OLD_FSM
    assert (tmp_path / "work/out.fsm.encode_info.json").read_bytes() == OLD_INFO
    assert _names(tmp_path / "work") == ["out.fsm", "out.fsm.encode_info.json"]


def test_a_failed_publish_without_a_previous_pair_leaves_nothing(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "work").mkdir()
    _fail_nth(monkeypatch, "fsync", 3)
    with pytest.raises(OutputError):
        _encode(tree, tmp_path / "work/out.fsm")
    assert _names(tmp_path / "work") == []


@pytest.mark.parametrize("previous", [True, False])
def test_sidecar_chmod_failure_leaves_no_empty_sidecar(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, previous: bool
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    out = _previous_pair(work) if previous else work / "out.fsm"
    real = os.fchmod

    def fchmod(fd: int, mode: int) -> None:
        if "encode_info" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EIO, "injected fchmod failure")
        real(fd, mode)

    monkeypatch.setattr(os, "fchmod", fchmod)
    with pytest.raises(OutputError, match="injected fchmod failure"):
        _encode(tree, out)
    if previous:
        assert out.read_bytes() == OLD_FSM
        assert (work / "out.fsm.encode_info.json").read_bytes() == OLD_INFO
        assert _names(work) == ["out.fsm", "out.fsm.encode_info.json"]
    else:
        assert _names(work) == []


#: Runs an encode that dies (like SIGKILL: no cleanup) at the Nth call of ``os.<name>``.
_DIE_AT = """
import os, sys
from elastickv_async._core.cli import main
name, n = sys.argv.pop(1), int(sys.argv.pop(1))
real = getattr(os, name)
def die_at_nth(*args, **kwargs):
    global n
    n -= 1
    if n == 0:
        os._exit(137)
    return real(*args, **kwargs)
setattr(os, name, die_at_nth)
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("call", "n", "die_at"),
    [("rename", 1, 1), ("rename", 2, 2), ("fsync", 3, 3)],
    ids=["before-renames", "between-renames", "after-renames"],
)
def test_kill_around_the_renames_leaves_a_checkable_pair(
    tree: Path, tmp_path: Path, call: str, n: int, die_at: int
) -> None:
    """Killed before, between or after the two renames: the .fsm is the old or the new one
    (never neither), the sidecar's sha256 tells which pair is whole, a rerun cleans up."""
    out = _previous_pair(tmp_path / "work")
    argv = [sys.executable, "-c", _DIE_AT, call, str(n)]
    argv += ["encode", "--input", str(tree), "--output", str(out), "--force"]
    assert subprocess.run(argv, check=False, capture_output=True).returncode == 137
    fsm = out.read_bytes()
    new = fsm != OLD_FSM
    if new:
        assert fsm.startswith(b"EKVPBBL1")
    consistent = _recorded_sha(out) == hashlib.sha256(fsm).hexdigest()
    assert consistent == (die_at != 2)  # 1: nothing renamed yet, 3: both renamed
    assert new == (die_at != 1)
    done = cli("encode", "--input", tree, "--output", out, "--quiet", "--force")
    assert done.returncode == 0, done.stderr
    assert _recorded_sha(out) == hashlib.sha256(out.read_bytes()).hexdigest()
    assert _names(tmp_path / "work") == ["out.fsm", "out.fsm.encode_info.json"]


def test_a_locked_output_fails_at_once(tree: Path, tmp_path: Path) -> None:
    out = _previous_pair(tmp_path / "work")
    fd = os.open(tmp_path / "work/out.fsm.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UsageError, match="in use by another run"):
            _encode(tree, out)
        done = cli("encode", "--input", tree, "--output", out, "--force")
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1 and "in use by another run" in done.stderr
    finally:
        os.close(fd)
    assert out.read_bytes() == OLD_FSM
    _encode(tree, out)
    assert _names(tmp_path / "work") == ["out.fsm", "out.fsm.encode_info.json"]


def test_dead_runs_leftovers_are_removed_live_ones_kept(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, tmp = tmp_path / "work", tmp_path / "tmpdir"
    work.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", None)
    dead, live = f"elastickv-async-{DEAD_PID}-0badc0de", "elastickv-async-1-0badc0de"
    (work / f"out.fsm.{dead}.tmp").write_bytes(b"half an fsm")
    (work / f"out.fsm.{dead}.prev").write_bytes(b"an old fsm")
    (work / f".{dead}.work/sort").mkdir(parents=True)
    (work / f".{dead}.work/sort/run-0").write_bytes(b"spill")
    (tmp / f"{dead}.selftest/tree").mkdir(parents=True)
    (work / f"out.fsm.{live}.tmp").write_bytes(b"pid 1 is alive")
    (work / "out.fsm.tmp-1234").write_bytes(b"not named by a run: never ours")
    _encode(tree, work / "out.fsm", self_test=True)
    assert _names(work) == sorted(
        ["out.fsm", "out.fsm.encode_info.json", f"out.fsm.{live}.tmp", "out.fsm.tmp-1234"]
    )
    assert _names(tmp) == []
    assert leftover_owner(f"out.fsm.{dead}.tmp") == DEAD_PID
    assert leftover_owner("out.fsm.tmp-1234") is None
