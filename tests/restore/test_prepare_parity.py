"""``elastickv-async prepare-restore`` against the reference ``elastickv-snapshot-prepare-restore``.

Same flags, same input: the two data directories must be identical file for file, byte for
byte and mode for mode; the same refusals must give the same exit codes. Skipped when the
shared folder's ``elastickv-bin/`` is absent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Final

import pytest
from restore_node import unpack
from support import shared_dir

from elastickv_async._core.cli import main

SHARED: Final = shared_dir()
BIN_DIR: Final = SHARED / "elastickv-bin" if SHARED else None

pytestmark = pytest.mark.skipif(
    BIN_DIR is None or not (BIN_DIR / "elastickv-snapshot-prepare-restore.xz").is_file(),
    reason="needs ../shared/elastickv-bin/",
)

#: ``EKVPBBL1``, last_commit_ts (LE) of 2026-11-22 with logical counter 3, and one Redis string
#: committed at that instant.
_TS: Final = (1795312289900 << 16) | 3


def _payload() -> bytes:
    key = b"!redis|str|k" + (_TS ^ ((1 << 64) - 1)).to_bytes(8, "big")
    value = b"\x00" + bytes(8) + b"value"
    return (
        b"EKVPBBL1"
        + _TS.to_bytes(8, "little")
        + len(key).to_bytes(8, "little")
        + key
        + len(value).to_bytes(8, "little")
        + value
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference helper, unpacked."""
    assert BIN_DIR is not None
    return unpack(BIN_DIR, tmp_path_factory.getbasetemp())["elastickv-snapshot-prepare-restore"]


def _inputs(tmp_path: Path, **info: object) -> Path:
    fsm = tmp_path / "in.fsm"
    fsm.write_bytes(_payload())
    doc = {
        "format_version": 1,
        "encoder_key_format_version": 1,
        "output_fsm_sha256": hashlib.sha256(fsm.read_bytes()).hexdigest(),
        "manifest_cluster_id": "prod",
        "self_test": {"ran": True, "matched": True},
    } | info
    Path(f"{fsm}.encode_info.json").write_text(json.dumps(doc))
    return fsm


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Relative path -> (permission bits, content or None for a directory)."""
    return {
        p.relative_to(root).as_posix(): (
            stat.S_IMODE(p.stat().st_mode),
            p.read_bytes() if p.is_file() else None,
        )
        for p in sorted(root.rglob("*"))
    }


def _run_both(reference: Path, tmp_path: Path, flags: list[str]) -> tuple[int, int]:
    (tmp_path / "ref").mkdir(exist_ok=True)
    (tmp_path / "ours").mkdir(exist_ok=True)
    ref = subprocess.run(
        [str(reference), *flags, "--data-dir", str(tmp_path / "ref" / "n1")],
        capture_output=True,
        timeout=120,
        check=False,
    )
    ours = main(["prepare-restore", "--quiet", *flags, "--data-dir", str(tmp_path / "ours" / "n1")])
    return ref.returncode, ours


@pytest.mark.parametrize(
    "flags",
    [
        ["--index", "1", "--peers", "n1=127.0.0.1:7000", "--fresh-cluster"],
        [
            "--index=501",
            "--term=4",
            "--peers",
            "n3=10.0.0.3:7000, n1=10.0.0.1:7000,n2=10.0.0.2:7000",
            "--target-cluster-id",
            "prod",
        ],
    ],
    ids=["single", "three-peers"],
)
def test_data_directories_are_identical(reference: Path, tmp_path: Path, flags: list[str]) -> None:
    """Both helpers write the same files with the same bytes and modes."""
    fsm = _inputs(tmp_path)
    assert _run_both(reference, tmp_path, ["--input", str(fsm), *flags]) == (0, 0)
    ref, ours = _tree(tmp_path / "ref" / "n1"), _tree(tmp_path / "ours" / "n1")
    assert sorted(ours) == sorted(ref)
    for name in ref:
        assert ours[name] == ref[name], name
    shutil.rmtree(tmp_path / "ref")  # the reference preallocates its 64 MB WAL


@pytest.mark.parametrize(
    ("info", "flags", "code"),
    [
        ({"output_fsm_sha256": "ab" * 32}, ["--fresh-cluster"], 2),
        ({"self_test": {"ran": True, "matched": False}}, ["--fresh-cluster"], 2),
        ({"manifest_cluster_id": ""}, ["--fresh-cluster"], 2),
        ({}, ["--target-cluster-id", "other"], 2),
        ({}, [], 2),
        ({"format_version": 9}, ["--fresh-cluster"], 2),
        ({}, ["--fresh-cluster", "--target-cluster-id", "prod"], 1),
        ({}, ["--fresh-cluster", "--index", "0"], 1),
    ],
)
def test_refusals_exit_alike(
    reference: Path, tmp_path: Path, info: dict[str, object], flags: list[str], code: int
) -> None:
    """A refused restore exits with the reference's code and writes no data directory."""
    fsm = _inputs(tmp_path, **info)
    base = ["--input", str(fsm), "--peers", "n1=127.0.0.1:7000"]
    if "--index" not in flags:
        base += ["--index", "1"]
    assert _run_both(reference, tmp_path, [*base, *flags]) == (code, code)
    assert not (tmp_path / "ours" / "n1").exists()
