"""The decode output directory: locked for one run, never reset through a swapped symlink,
reusable with ``--force`` only when it holds a killed decode's unfinished tree."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from faultlib import failing_call
from hostile import SAMPLE_FSM, cli, header_below_data, listing

from elastickv_async import DecodeOptions, OutputError, UsageError, decode_snapshot
from elastickv_async._core import pipeline
from elastickv_async._core.dump.checksums import compute_checksums
from elastickv_async._core.pipeline import INCOMPLETE_MARKER

DEAD_PID = 2**22 + 12345  # above pid_max's default: never a live process


def _decode(out: Path, **kwargs: Any) -> None:
    anyio.run(lambda: decode_snapshot(SAMPLE_FSM, out, **kwargs))


def test_a_locked_output_directory_fails_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UsageError, match="in use by another run"):
            _decode(out)
        assert os.listdir(out) == []
    finally:
        os.close(fd)
    _decode(out)  # the lock is gone with its holder
    assert (out / "CHECKSUMS").read_bytes() == compute_checksums(out)


def test_the_lock_is_released_after_a_run_and_after_a_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _decode(out)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the run still held it
    finally:
        os.close(fd)
    assert not (out / INCOMPLETE_MARKER).exists()


def test_cli_second_run_on_a_locked_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = cli("decode", "--input", SAMPLE_FSM, "--output", out)
    finally:
        os.close(fd)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "in use by another run" in done.stderr


def _killed_run_leftovers(out: Path) -> None:
    """What a decode killed half-way leaves: the marker, some files, scratch, a temp."""
    (out / "dynamodb/orders").mkdir(parents=True)
    (out / "dynamodb/orders/_schema.json").write_text("{}")
    (out / INCOMPLETE_MARKER).write_text(f"elastickv-async-{DEAD_PID}-0badc0de\n")
    scratch = out / f".elastickv-async-{DEAD_PID}-0badc0de.scratch"
    (scratch / "s3").mkdir(parents=True)
    (scratch / "s3/spill").write_bytes(b"x" * 100)
    (out / "dynamodb/orders" / f".elastickv-async-{DEAD_PID}-0badc0de.7.tmp").write_bytes(b"y")


def test_killed_decode_output_needs_force_and_is_then_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _killed_run_leftovers(out)
    with pytest.raises(UsageError, match=r"incomplete tree .* --force"):
        _decode(out)
    assert (out / INCOMPLETE_MARKER).exists()
    _decode(out, force=True)
    assert (out / "CHECKSUMS").read_bytes() == compute_checksums(out)
    assert not [n for n in listing(out) if "elastickv-async" in n]
    reference = tmp_path / "reference"
    _decode(reference)
    assert listing(out) == listing(reference)


@pytest.mark.parametrize("complete", [True, False])
def test_force_never_removes_a_complete_tree_or_foreign_files(
    tmp_path: Path, complete: bool
) -> None:
    out = tmp_path / "out"
    if complete:
        _decode(out)
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    before = listing(out)
    with pytest.raises(UsageError, match=r"not empty .*--force replaces only"):
        _decode(out, force=True)
    assert listing(out) == before


def test_cli_force_flag(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _killed_run_leftovers(out)
    refused = cli("decode", "--input", SAMPLE_FSM, "--output", out)
    assert refused.returncode == 1
    assert "--force" in refused.stderr
    done = cli("decode", "--input", SAMPLE_FSM, "--output", out, "--force", "--quiet")
    assert done.returncode == 0, done.stderr
    assert (out / "MANIFEST.json").exists()


def test_reset_after_header_below_data_never_follows_a_swapped_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The redo's reset works on the directory opened at the start, not on the path."""
    fsm = tmp_path / "s.fsm"
    fsm.write_bytes(header_below_data())
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    out = tmp_path / "out"
    first_pass = pipeline._DecodeRun.execute

    async def swap_after_first_pass(self: Any, *, ignore_future_versions: bool) -> Any:
        try:
            return await first_pass(self, ignore_future_versions=ignore_future_versions)
        finally:
            if ignore_future_versions:
                out.rename(tmp_path / "moved")
                out.symlink_to(victim)

    monkeypatch.setattr(pipeline._DecodeRun, "execute", swap_after_first_pass)
    with pytest.raises(OutputError, match="replaced during the run"):
        anyio.run(decode_snapshot, fsm, out, DecodeOptions(adapters=("redis",)))
    assert listing(victim) == ["precious.txt"]
    assert (victim / "precious.txt").read_text() == "keep me"


def test_a_manifest_that_cannot_be_made_durable_is_taken_back(tmp_path: Path) -> None:
    """The directory fsync after the marker became MANIFEST.json fails: the run fails and
    leaves the marker, not MANIFEST.json (found by scripts/faults.py)."""
    out = tmp_path / "out"
    # Without --fsync the decode's fsyncs are the manifest's own, then the directory's.
    with (
        failing_call("fsync", 2, errno.ENOSPC),
        pytest.raises(OutputError, match=r"MANIFEST\.json"),
    ):
        _decode(out)
    assert not (out / "MANIFEST.json").exists()
    assert (out / INCOMPLETE_MARKER).exists()
    _decode(out, force=True)
    assert (out / "CHECKSUMS").read_bytes() == compute_checksums(out)
