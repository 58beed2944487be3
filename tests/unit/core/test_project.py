"""Project hygiene that CI relies on."""

from __future__ import annotations

import re
import subprocess
import sys

from support import REPO_ROOT


def _readme_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```(?:bash|sh)\n(.*?)\n```", readme, flags=re.S)


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    """.ci/run ends with the README's test command, character for character."""
    test_commands = [c for c in _readme_commands() if "pytest" in c and "\n" not in c]
    assert test_commands, "README has no one-line test command"
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == test_commands[0]


def test_generated_protobuf_modules_are_current() -> None:
    """The committed _pb2 modules match what scripts/gen_proto.py generates now."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_public_api_resolves() -> None:
    """Every name in elastickv_async.__all__ is importable (lazy ones included)."""
    import elastickv_async

    for name in elastickv_async.__all__:
        assert getattr(elastickv_async, name) is not None, name
