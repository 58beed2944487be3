"""``encode`` and ``verify`` on hostile trees: FIFOs, symlinks, hard links, oversized files.

Both read the tree under the reader's rules, so ``verify`` fails every tree ``encode`` refuses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from elastickv_async._core.cli import main
from elastickv_async._core.dump.tree import MAX_RECORD_FILE

GOLDEN = Path(__file__).resolve().parents[3].parent / "shared" / "golden" / "public"


def _golden_tree(tmp_path: Path) -> Path:
    case = GOLDEN / "enc_ddb" / "input"
    if not case.is_dir():
        pytest.skip("golden case enc_ddb is absent")
    root = tmp_path / "tree"
    shutil.copytree(case, root)
    return root


def _cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    # A child process: on a regression the FIFO open blocks, and only a child can be killed.
    # The timeout is a guard against hanging the suite, not a measurement.
    return subprocess.run(
        [sys.executable, "-m", "elastickv_async", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0]


def test_encode_refuses_a_fifo_manifest_without_hanging(tmp_path: Path) -> None:
    """``MANIFEST.json`` as a FIFO: exit 2 with one line naming it, nothing written."""
    root = _golden_tree(tmp_path)
    (root / "MANIFEST.json").unlink()
    os.mkfifo(root / "MANIFEST.json")
    out = tmp_path / "out.fsm"
    done = _cli(["encode", "--input", str(root), "--output", str(out)])
    assert done.returncode == 2
    _one_line(done.stderr, "MANIFEST.json", "FIFO")
    assert not out.exists()


def test_verify_refuses_a_fifo_checksums_without_hanging(tmp_path: Path) -> None:
    """``CHECKSUMS`` as a FIFO: exit 2 with one line naming it."""
    root = _golden_tree(tmp_path)
    (root / "CHECKSUMS").unlink()
    os.mkfifo(root / "CHECKSUMS")
    done = _cli(["verify", "--input", str(root)])
    assert done.returncode == 2
    _one_line(done.stderr, "CHECKSUMS", "FIFO")


def test_encode_refuses_a_symlinked_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A symlinked ``MANIFEST.json`` (to a valid manifest) is refused, not followed."""
    root = _golden_tree(tmp_path)
    (root / "MANIFEST.json").rename(tmp_path / "elsewhere.json")
    (root / "MANIFEST.json").symlink_to(tmp_path / "elsewhere.json")
    out = tmp_path / "out.fsm"
    assert main(["encode", "--input", str(root), "--output", str(out)]) == 2
    _one_line(capsys.readouterr().err, "MANIFEST.json", "symlink")
    assert not out.exists()


def _unlisted_symlink(root: Path, tmp_path: Path) -> str:
    (root / "dynamodb" / "orders" / "items" / "notes.txt").symlink_to("/etc/hostname")
    return "dynamodb/orders/items/notes.txt"


def _unlisted_fifo(root: Path, tmp_path: Path) -> str:
    os.mkfifo(root / "dynamodb" / "pipe")
    return "dynamodb/pipe"


def _symlinked_directory(root: Path, tmp_path: Path) -> str:
    (tmp_path / "other").mkdir()
    (root / "dynamodb" / "other").symlink_to(tmp_path / "other")
    return "dynamodb/other"


def _hard_linked_file(root: Path, tmp_path: Path) -> str:
    os.link(root / "dynamodb" / "orders" / "_schema.json", tmp_path / "outside")
    return "dynamodb/orders/_schema.json"


@pytest.mark.parametrize(
    "plant", [_unlisted_symlink, _unlisted_fifo, _symlinked_directory, _hard_linked_file]
)
def test_verify_and_encode_refuse_the_same_trees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], plant: Callable[[Path, Path], str]
) -> None:
    """A tree that ``encode`` refuses fails ``verify`` too: exit 2, one line naming the path."""
    root = _golden_tree(tmp_path)
    assert main(["verify", "--input", str(root)]) == 0
    capsys.readouterr()
    where = plant(root, tmp_path)
    assert main(["verify", "--input", str(root)]) == 2
    _one_line(capsys.readouterr().err, where)
    out = tmp_path / "out.fsm"
    assert main(["encode", "--input", str(root), "--output", str(out)]) == 2
    _one_line(capsys.readouterr().err, where)
    assert not out.exists()


def test_encode_refuses_an_item_file_over_the_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An item file over the record-file cap fails before it is read (exit 2, one line)."""
    root = _golden_tree(tmp_path)
    item = next((root / "dynamodb" / "orders" / "items").rglob("*.json"))
    with open(item, "r+b") as fh:
        fh.truncate(MAX_RECORD_FILE + 1)  # sparse: no 64 MiB written
    out = tmp_path / "out.fsm"
    argv = ["encode", "--input", str(root), "--output", str(out), "--no-verify-checksums"]
    assert main(argv) == 2
    _one_line(capsys.readouterr().err, item.name, "larger than the 67,108,864-byte limit")
    assert not out.exists()
