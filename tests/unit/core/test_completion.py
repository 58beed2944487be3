"""Shell completion: the generated scripts complete what the real parser accepts."""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from elastickv_async._core.cli import _build_parser, main
from elastickv_async._core.completion import completion_script

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _complete(words: list[str], cwd: Path) -> list[str]:
    """Run the generated completion function as bash does for the command line ``words``."""
    script = completion_script(_build_parser(), "bash")
    line = " ".join(shlex.quote(w) for w in words)
    program = (
        f"{script}\n"
        f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}\n"
        "_elastickv_async\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return [w for w in result.stdout.splitlines() if w]


def _long_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the CLI has no subcommands")


def test_subcommands_complete_from_a_prefix(tmp_path: Path) -> None:
    """The first word completes to the subcommands that start with it."""
    assert _complete(["elastickv-async", "dec"], tmp_path) == ["decode", "decode-cluster"]
    assert set(_complete(["elastickv-async", ""], tmp_path)) >= set(_subparsers(_build_parser()))


def test_every_flag_of_every_subcommand_completes(tmp_path: Path) -> None:
    """Each subcommand offers exactly the long flags its parser defines."""
    for name, sub in _subparsers(_build_parser()).items():
        offered = set(_complete(["elastickv-async", name, "--"], tmp_path))
        assert offered == _long_flags(sub), name


def test_flag_values_complete_from_choices_or_files(tmp_path: Path) -> None:
    """Choice flags offer their choices, path flags offer files, free-form flags offer nothing."""
    (tmp_path / "snap.fsm").write_bytes(b"")
    (tmp_path / "other.txt").write_bytes(b"")
    assert _complete(["elastickv-async", "decode", "--backend", ""], tmp_path) == [
        "asyncio",
        "trio",
    ]
    assert _complete(["elastickv-async", "decode", "--input", "sn"], tmp_path) == ["snap.fsm"]
    assert _complete(["elastickv-async", "decode", "--jobs", ""], tmp_path) == []


def test_cli_prints_scripts_that_bash_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``completion bash|zsh`` prints a script; the bash one passes ``bash -n``."""
    assert main(["completion", "bash"]) == 0
    bash = capsys.readouterr().out
    script = tmp_path / "c.bash"
    script.write_text(bash)
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "complete -F _elastickv_async elastickv-async" in bash
    assert main(["completion", "zsh"]) == 0
    zsh = capsys.readouterr().out
    assert "bashcompinit" in zsh and zsh.endswith(bash)
    assert main(["completion", "fish"]) == 1


def test_module_entry_point_prints_completion() -> None:
    """``python -m elastickv_async completion bash`` works without any other flag."""
    result = subprocess.run(
        [sys.executable, "-m", "elastickv_async", "completion", "bash"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.startswith("# bash completion")
