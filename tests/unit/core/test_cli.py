"""CLI parsing, exit codes and error reporting."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from elastickv_async._core.cli import _PARSERS_OF, _build_parser, _normalise_go_flags, main


def test_go_flag_spellings_are_accepted() -> None:
    """-name, --name=value and --bool=true/false spellings map onto argparse's."""
    known = {"input", "include-orphans", "cluster-id"}
    switches = {"include-orphans"}
    assert _normalise_go_flags(
        ["decode", "-input", "a.fsm", "--include-orphans=true", "-cluster-id=c"], known, switches
    ) == ["decode", "--input", "a.fsm", "--include-orphans", "--cluster-id=c"]
    assert _normalise_go_flags(["--include-orphans=false"], known, switches) == []


def _command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


_FIRST_WORDS = [
    "decode",
    "decode-cluster",
    "encode",
    "encode-cluster",
    "inspect",
    "verify",
    "prepare-restore",
    "--help",
]


@pytest.mark.parametrize("command", _FIRST_WORDS)
def test_a_command_line_builds_only_the_parsers_its_first_word_needs_as_the_full_ones(
    command: str,
) -> None:
    full = _build_parser()
    alone = _build_parser(_PARSERS_OF[command])
    assert alone.format_help() == full.format_help()
    full_parsers, alone_parsers = _command_parsers(full), _command_parsers(alone)
    assert list(alone_parsers) == list(full_parsers)
    needed = {command, command.removesuffix("-cluster")} - {"-h", "--help"}
    for name, parser in alone_parsers.items():
        if name in needed:
            assert parser.format_help() == full_parsers[name].format_help()
        else:
            assert parser._actions == []


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        # Another command's flag, spelt the Go way, is rewritten as it always was.
        (["decode", "--output", "o", "-self-test"], "unrecognized arguments: --self-test"),
        (["decode", "--output", "o", "--json=maybe"], "invalid boolean value 'maybe' for --json"),
        (["encode", "--output", "o", "--input", "i", "-fresh-cluster"], "--fresh-cluster"),
        (["decode-cluster", "--output", "o", "-input=x", "-json"], "arguments: --json"),
        (["--help", "--force=maybe"], "invalid boolean value 'maybe' for --force"),
    ],
)
def test_go_spellings_of_other_commands_flags_fail_as_with_every_parser(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    assert error in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["decode", "--output", "x"],
        ["decode", "--input", "a", "--output", "b", "--adapter", "redis,mongodb"],
        ["decode", "--input", "a", "--output", "b", "--dynamodb-bundle-mode", "csv"],
        ["decode", "--input", "a", "--output", "b", "--include-orphans=maybe"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_1_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Usage errors exit 1 and print exactly one line, no traceback."""
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("elastickv-async: ")


def test_missing_input_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing .fsm exits 1 and creates no output."""
    out = tmp_path / "out"
    assert main(["decode", "--input", str(tmp_path / "nope.fsm"), "--output", str(out)]) == 1
    assert not out.exists()
    assert "not a readable file" in capsys.readouterr().err


def test_bad_snapshot_is_a_data_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file with the wrong magic exits 2 and leaves no MANIFEST.json behind."""
    bad = tmp_path / "bad.fsm"
    bad.write_bytes(b"NOTMAGIC" + bytes(8))
    out = tmp_path / "out"
    assert main(["decode", "--input", str(bad), "--output", str(out), "--adapter", "redis"]) == 2
    assert not (out / "MANIFEST.json").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_non_empty_output_is_refused(tmp_path: Path) -> None:
    """Decoding into a directory that already holds files is refused (exit 1)."""
    fsm = tmp_path / "in.fsm"
    fsm.write_bytes(b"EKVPBBL1" + bytes(8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_bytes(b"x")
    assert main(["decode", "--input", str(fsm), "--output", str(out)]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["old"]
