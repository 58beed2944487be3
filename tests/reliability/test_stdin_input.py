"""``--input -``: decode and inspect a snapshot read from standard input (a pipe)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import anyio
import pytest
from hostile import SAMPLE_FSM, cli_argv, snapshot
from support import raises_code, tree_files

from elastickv_async import UsageError, decode_snapshot, inspect_snapshot

#: Every version is newer than the header: the decode needs its second pass.
_HEADER_BELOW_DATA = snapshot([(b"!nosuch|k", b"v")], last_commit_ts=1, commit_ts=5)


def _piped(data: bytes, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI with ``data`` on a pipe as its standard input (not seekable)."""
    with subprocess.Popen(
        cli_argv(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        out, err = child.communicate(data)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def _without_manifest(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in tree_files(root).items() if k not in ("MANIFEST.json", "CHECKSUMS")}


def test_cli_decode_from_a_pipe_matches_the_file(tmp_path: Path) -> None:
    data = SAMPLE_FSM.read_bytes()
    piped = _piped(data, "decode", "--input", "-", "--output", tmp_path / "piped", "--quiet")
    assert piped.returncode == 0, piped.stderr
    done = subprocess.run(
        cli_argv("decode", "--input", SAMPLE_FSM, "--output", tmp_path / "file", "--quiet"),
        check=False,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    assert _without_manifest(tmp_path / "piped") == _without_manifest(tmp_path / "file")
    manifest = json.loads((tmp_path / "piped" / "MANIFEST.json").read_bytes())
    assert manifest["source"]["fsm_path"] == "-"
    verified = subprocess.run(
        cli_argv("verify", "--input", tmp_path / "piped"), check=False, capture_output=True
    )
    assert verified.returncode == 0, verified.stderr


def test_cli_progress_from_a_pipe_has_no_total(tmp_path: Path) -> None:
    args: list[str | Path] = ["--output", tmp_path / "out", "--log-format", "json"]
    piped = _piped(SAMPLE_FSM.read_bytes(), "decode", "--input", "-", *args)
    assert piped.returncode == 0, piped.stderr
    events = [json.loads(line) for line in piped.stderr.splitlines()]
    reads = [e for e in events if e["event"] == "progress" and e["stage"] == "read"]
    assert reads and all(e["total"] is None for e in reads)
    assert reads[-1]["done"] == SAMPLE_FSM.stat().st_size


def test_cli_inspect_from_a_pipe(tmp_path: Path) -> None:
    piped = _piped(SAMPLE_FSM.read_bytes(), "inspect", "--input", "-", "--json")
    assert piped.returncode == 0, piped.stderr
    from_file = subprocess.run(
        cli_argv("inspect", "--input", SAMPLE_FSM, "--json"), check=True, capture_output=True
    )
    got, want = json.loads(piped.stdout), json.loads(from_file.stdout)
    assert got["path"] == "-" and got["size_bytes"] == SAMPLE_FSM.stat().st_size
    differ = ("path", "index_from_name")
    assert {k: v for k, v in got.items() if k not in differ} == {
        k: v for k, v in want.items() if k not in differ
    }


def test_cli_a_second_pass_from_a_pipe_is_refused_clearly(tmp_path: Path) -> None:
    args: list[str | Path] = ["decode", "--input", "-", "--output", tmp_path / "out", "--quiet"]
    piped = _piped(_HEADER_BELOW_DATA, *args)
    assert piped.returncode == 1
    assert piped.stderr.count(b"\n") == 1 and b"[errStdinNotRereadable]" in piped.stderr
    assert not (tmp_path / "out" / "MANIFEST.json").exists()
    saved = tmp_path / "saved.fsm"
    saved.write_bytes(_HEADER_BELOW_DATA)
    done = subprocess.run(
        cli_argv("decode", "--input", saved, "--output", tmp_path / "ok", "--quiet"),
        check=False,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bytes], None]]:
    """``feed(data)``: standard input now reads ``data`` (from a file, from its start)."""
    opened: list[BinaryIO] = []

    def feed(data: bytes) -> None:
        path = tmp_path / f"stdin-{len(opened)}"
        path.write_bytes(data)
        opened.append(open(path, "rb"))  # noqa: SIM115 - closed at teardown
        monkeypatch.setattr("sys.stdin", opened[-1])

    yield feed
    for file in opened:
        file.close()


@pytest.mark.anyio
async def test_library_reads_standard_input(tmp_path: Path, stdin: Callable[[bytes], None]) -> None:
    stdin(SAMPLE_FSM.read_bytes())
    report = await decode_snapshot("-", tmp_path / "out")
    assert report.snapshot["size_bytes"] == SAMPLE_FSM.stat().st_size
    assert await anyio.Path(tmp_path / "out" / "MANIFEST.json").exists()
    stdin(SAMPLE_FSM.read_bytes())
    found = await inspect_snapshot("-")
    assert found.path == "-" and found.index_from_name is None
    assert found.size_bytes == SAMPLE_FSM.stat().st_size


@pytest.mark.anyio
async def test_library_second_pass_on_standard_input(
    tmp_path: Path, stdin: Callable[[bytes], None]
) -> None:
    stdin(_HEADER_BELOW_DATA)
    with raises_code(UsageError, "errStdinNotRereadable", match="save the stream"):
        await decode_snapshot("-", tmp_path / "out")
