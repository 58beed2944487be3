"""What the CLI prints: progress on a terminal, JSON events, the summary line, help, startup."""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import select
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from support import REPO_ROOT

from elastickv_async._core.cli import _build_parser
from elastickv_async._core.console import human_bytes, human_duration

SAMPLE = REPO_ROOT / "examples" / "sample.fsm"


def _cli(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "elastickv_async", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        **kwargs,
    )


def _on_terminal(columns: int, *args: str | Path) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal ``columns`` wide; return (code, stderr)."""
    master, slave = pty.openpty()
    env = os.environ | {"COLUMNS": str(columns), "LINES": "24"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "elastickv_async", *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal (EIO on Linux)
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(), b"".join(chunks).decode()


# --- the documented JSON event schema (README, "Progress, events and the summary") ---


def _readme_schema() -> dict[str, tuple[str, set[str]]]:
    """The README's event table: event name -> (level, fields)."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("#### JSON events", 1)[1].split("\n#", 1)[0]
    schema: dict[str, tuple[str, set[str]]] = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        fields = set(re.findall(r"`([a-z_]+)`", cells[2]))
        for name in re.findall(r"`([a-z_*]+)`", cells[0]):
            schema[name] = (cells[1], fields)
    return schema


def _check_event(line: str, schema: dict[str, tuple[str, set[str]]]) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(line)
    assert {"timestamp", "level", "event"} <= set(event), line
    datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    name = event["event"]
    key = name if name in schema else re.sub(r"^[a-z_]+?_(started|complete)$", r"*_\1", name)
    if key not in schema:
        # The engine's own events (warnings, notes) carry their own fields: the report's.
        assert event["level"] in ("info", "warning"), line
        return event
    level, fields = schema[key]
    assert event["level"] == level, line
    extra = set(event) - {"timestamp", "level", "event"} - fields
    assert not extra, f"{name}: undocumented fields {extra}"
    return event


def test_every_json_line_of_real_runs_matches_the_documented_schema(tmp_path: Path) -> None:
    """decode (with a warning), encode --self-test, verify and a failing run: every stderr
    line is a JSON event with timestamp, level and event, documented in the README table."""
    schema = _readme_schema()
    assert {"progress", "run_failed", "*_started", "*_complete"} <= set(schema)
    fsm = tmp_path / "odd.fsm"
    # A key matching no prefix gives an unknown_prefix_entries warning.
    key = b"!mystery|x|1" + (2**64 - 1 - 50).to_bytes(8, "big")
    value = b"\x00" + bytes(8)
    fsm.write_bytes(
        b"EKVPBBL1"
        + (100).to_bytes(8, "little")
        + len(key).to_bytes(8, "little")
        + key
        + len(value).to_bytes(8, "little")
        + value
    )
    runs = [
        ("decode", "--input", SAMPLE, "--output", tmp_path / "d"),
        ("decode", "--input", fsm, "--output", tmp_path / "odd"),
        ("encode", "--input", tmp_path / "d", "--output", tmp_path / "x.fsm", "--self-test"),
        ("verify", "--input", tmp_path / "d"),
        ("inspect", "--input", SAMPLE),
        ("decode-cluster", "--input", f"1={SAMPLE}", "--output", tmp_path / "cluster"),
        ("prepare-restore", "--input", tmp_path / "x.fsm", "--data-dir", tmp_path / "node",
         "--index", "1", "--peers", "n1=127.0.0.1:7000", "--allow-missing-cluster-id"),
        ("verify", "--input", tmp_path / "nowhere"),
    ]  # fmt: skip
    seen: list[dict[str, Any]] = []
    for argv in runs:
        done = _cli(*argv, "--log-format", "json")
        lines = done.stderr.splitlines()
        assert lines, argv
        events = [_check_event(line, schema) for line in lines]
        seen += events
        if done.returncode == 0:
            name = str(argv[0]).replace("-", "_")
            assert events[0]["event"] == f"{name}_started"
            assert events[-1]["event"] == f"{name}_complete"
            assert events[0]["input"] == events[-1]["input"]
            assert events[0]["input"] is not None
        else:
            assert events[-1]["event"] == "run_failed" and events[-1]["exit_code"] == 1
    names = [e["event"] for e in seen]
    assert "unknown_prefix_entries" in names
    stages = {(e["command"], e["stage"]) for e in seen if e["event"] == "progress"}
    assert stages >= {
        ("decode", "read"),
        ("decode", "flush"),
        ("decode", "checksums"),
        ("encode", "collect"),
        ("encode", "write"),
        ("encode", "self_test"),
        ("verify", "verify"),
        ("decode-cluster", "groups"),
        ("decode-cluster", "merge"),
    }
    restored = next(e for e in seen if e["event"] == "prepare_restore_complete")
    assert restored["summary"].startswith(f"Prepared {tmp_path / 'node'} for restore in ")
    decoded = next(e for e in seen if e["event"] == "decode_complete")
    files = [p for p in (tmp_path / "d").rglob("*") if p.is_file()]
    assert decoded["counters"]["output.files_written"] == len(files)
    assert decoded["output"] == str(tmp_path / "d") and decoded["duration_s"] >= 0


# --- the terminal display ---


def test_progress_fits_a_60_column_terminal(tmp_path: Path) -> None:
    """On a 60-column terminal every rewrite of the line is at most 59 columns and clears the
    rest of the line; each stage leaves its final line; the summary line comes last."""
    code, err = _on_terminal(60, "decode", "--input", SAMPLE, "--output", tmp_path / "out")
    assert code == 0, err
    pieces = [p for p in re.split(r"\r\n|\r|\n", err) if p]
    # The summary line (last) is text that stays, and may wrap like any other.
    for piece in pieces[:-1]:
        assert len(piece.replace("\x1b[K", "")) <= 59, piece
    rewrites = err.split("\r")[1:]
    assert rewrites and all(r.startswith(("\x1b[K", "\n")) or "\x1b[K" in r for r in rewrites)
    finals = [line.replace("\x1b[K", "").strip() for line in err.replace("\r\n", "\n").split("\n")]
    stage_lines = [line.split("\r")[-1] for line in finals if line]
    assert [s.split()[0] for s in stage_lines[:3]] == ["read", "flush", "checksums"]
    assert stage_lines[-1].startswith("Wrote 21 files (1.6 MB) to ")


def test_no_display_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    """Piped stderr gets the summary line only; -v adds the counters; --quiet nothing."""
    out = tmp_path / "out"
    done = _cli("decode", "--input", SAMPLE, "--output", out)
    files = [p for p in out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    assert done.stderr.splitlines() == [
        f"Wrote {len(files)} files ({human_bytes(size)}) to {out} in "
        + done.stderr.split(" in ", 1)[1].split(";")[0]
        + "; no warnings"
    ]
    verbose = _cli("verify", "--input", out, "-v").stderr.splitlines()
    assert verbose[0].startswith(f"Verified {len(files) - 1} files of {out} in ")
    hashed = size - (out / "CHECKSUMS").stat().st_size
    assert f"  verify: bytes={hashed} files={len(files) - 1}" in verbose
    assert _cli("verify", "--input", out, "--quiet").stderr == ""


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (3_400_000_000, "3.4 GB"), (123_456, "123 kB")],
)
def test_human_bytes(n: int, text: str) -> None:
    """Decimal units, three significant digits at most."""
    assert human_bytes(n) == text


def test_human_duration() -> None:
    """Seconds, then minutes and seconds, then hours and minutes."""
    assert [human_duration(s) for s in (0.42, 42.4, 185, 7620)] == [
        "0.4 s",
        "42 s",
        "3 min 5 s",
        "2 h 7 min",
    ]


# --- help, usage, stdout ---


def test_every_flag_has_help_and_every_command_exit_codes_and_an_example() -> None:
    """Adapter-generated flags included: no flag without help text; defaults are shown."""
    parser = _build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
        text = command.format_help()
        assert command.description, name
        assert "exit codes:" in text and "example:" in text, name
    wide = os.environ | {"COLUMNS": "200"}
    decode_help = _cli("decode", "--help", env=wide).stdout
    assert "--jobs JOBS" in decode_help and "(default: 8)" in decode_help
    assert re.search(r"--include-orphans\s+\S", decode_help)
    assert "--dynamodb-bundle-mode MODE" in decode_help and "(default: per-item)" in decode_help
    assert "--adapter ADAPTER" in _cli("encode", "--help").stdout


def test_bare_command_prints_usage_and_exits_1() -> None:
    """Like git: no command is a usage error; the help goes to stderr."""
    done = _cli()
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("usage: elastickv-async") and "decode" in done.stderr


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["inspect", "--input", str(SAMPLE)], 141),  # 128 + SIGPIPE, as a shell reports coreutils
        (["completion", "bash"], 141),
        (["--version"], 141),
        (["--help"], 0),  # argparse itself ignores a failed help write
    ],
)
def test_closed_stdout_ends_quietly(argv: list[str], code: int) -> None:
    """``inspect ... | head``: a reader that went away ends the run without a message."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "elastickv_async", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == code


def test_version_and_import_load_no_engine() -> None:
    """``import elastickv_async`` and ``--version`` load neither structlog, anyio nor the
    adapters: both stay cheap."""
    probe = (
        "import sys, contextlib, io\n"
        "import elastickv_async\n"
        "from elastickv_async._core.entry import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['--version']) == 0\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('structlog', 'anyio')\n"
        "               or m.startswith('elastickv_async._adapters'))\n"
        "print(out.getvalue().strip(), heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    version = _cli("--version").stdout.strip()
    assert version.startswith("elastickv-async ")
    assert done.stdout.strip() == f"{version} []"


def test_inspect_shows_an_inventory_and_prefixes_as_text() -> None:
    """Tables, buckets, queues and Redis types with their counts, in text and JSON; prefixes
    are text (no b'...'), whole segments even at --depth 1."""
    text = _cli("inspect", "--input", SAMPLE, "--depth", "1").stdout
    assert "b'" not in text
    assert "  table     orders: 3 items, 444 B" in text.splitlines()
    assert "  queue     jobs: 3 messages" in text.splitlines()
    prefixes = [line.split()[-1] for line in text.splitlines()[text.splitlines().index(
        next(line for line in text.splitlines() if line.endswith(" prefix"))
    ) + 1 :]]  # fmt: skip
    assert prefixes and all(p.endswith("|") for p in prefixes)
    assert all(p.count("|") == 1 for p in prefixes)
    doc = json.loads(_cli("inspect", "--input", SAMPLE, "--json").stdout)
    assert doc["inventory"]["dynamodb"] == [
        {"kind": "table", "name": "orders", "items": 3, "bytes": 444}
    ]
    assert {r["name"]: r["keys"] for r in doc["inventory"]["redis"]}["string"] == 2


def test_a_cluster_decode_keeps_its_groups_line(tmp_path: Path) -> None:
    """The groups stage ends without a finished sample; its line stays when merge begins."""
    code, err = _on_terminal(
        60, "decode-cluster", "--input", f"1={SAMPLE}", "--output", tmp_path / "out"
    )
    assert code == 0, err
    kept = [
        line.split("\r")[-1].replace("\x1b[K", "").split()
        for line in err.replace("\r\n", "\n").split("\n")
        if line.strip()
    ]
    assert [words[0] for words in kept[:2]] == ["groups", "merge"]
    assert kept[0][2:] == ["100.0%", "1/1", "groups"]
