"""SIGTERM is handled like SIGINT: the run is cancelled, cleans up, writes its report with
the error, and exits 128 + the signal (143, 130) with one line on stderr."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from hostile import SAMPLE_FSM, listing, pausing_cli, sample_tree

from elastickv_async._core.pipeline import INCOMPLETE_MARKER
from elastickv_async._core.runfiles import leftover_owner

SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]
BACKENDS = ["asyncio", "trio"]


def _stop(args: list[str | Path], signum: int) -> tuple[int, str]:
    child = pausing_cli(*args)
    assert child.stdout is not None
    assert child.stdout.readline() == "READY\n"
    child.send_signal(signum)
    _, err = child.communicate()
    return child.returncode, err


@pytest.mark.parametrize("signum", SIGNALS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_stopped_by_signal_cleans_up(tmp_path: Path, signum: int, backend: str) -> None:
    out, report = tmp_path / "out", tmp_path / "report.json"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    code, err = _stop(
        [
            "decode",
            "--input",
            SAMPLE_FSM,
            "--output",
            out,
            "--report",
            report,
            "--scratch-root",
            scratch,
            "--backend",
            backend,
        ],
        signum,
    )
    name = signal.Signals(signum).name
    assert code == 128 + signum
    assert err == f"elastickv-async: interrupted by {name}\n"
    assert not (out / "MANIFEST.json").exists()
    assert listing(scratch) == []
    leftovers = [p for p in listing(out) if leftover_owner(Path(p).name) is not None]
    assert leftovers == []
    assert (out / INCOMPLETE_MARKER).exists()  # what --force recognises
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == 128 + signum
    assert doc["error"]["message"] == f"interrupted by {name}"


@pytest.mark.parametrize("signum", SIGNALS)
def test_encode_stopped_by_signal_cleans_up(tmp_path: Path, signum: int) -> None:
    tree = sample_tree(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out.fsm"
    out.write_bytes(b"previous")
    code, err = _stop(["encode", "--input", tree, "--output", out, "--force"], signum)
    assert code == 128 + signum
    assert err.count("\n") == 1
    assert listing(work) == ["out.fsm"]
    assert out.read_bytes() == b"previous"
