"""Operator safety rules: encode never replaces an output without ``--force``, checks the tree
against its CHECKSUMS first, ``--checksums none`` trees and ``--strict`` (exit 3)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anyio
import pytest
from hostile import SAMPLE_FSM, cli, copy_tree, sample_tree, snapshot
from support import raises_code

from elastickv_async import (
    ChecksumMismatch,
    DecodeOptions,
    EncodeOptions,
    UsageError,
    decode_snapshot,
    encode_snapshot,
    verify_tree,
)

#: A value file whose bytes the encoder copies verbatim, so an edit still encodes.
_EDITABLE = "redis/db_0/strings/greeting.bin"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_tree(tmp_path_factory.mktemp("sample"))


# --- encode refuses to replace an output unless --force ------------------------------------


def test_cli_encode_refuses_an_existing_output_unless_forced(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.fsm"
    out.write_bytes(b"previous")
    done = cli("encode", "--input", tree, "--output", out, "--quiet")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "--force" in done.stderr
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fsm"]
    done = cli("encode", "--input", tree, "--output", out, "--quiet", "--force")
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"EKVPBBL1")


def test_cli_encode_refuses_a_dangling_symlink_output(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.fsm"
    out.symlink_to(tmp_path / "nowhere")
    done = cli("encode", "--input", tree, "--output", out, "--quiet")
    assert done.returncode == 1 and "exists" in done.stderr
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.anyio
async def test_library_encode_refuses_an_existing_output(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.fsm"
    first = await encode_snapshot(tree, out)
    with raises_code(UsageError, "errOutputExists", match="--force"):
        await encode_snapshot(tree, out)
    again = await encode_snapshot(tree, out, force=True)
    assert again.sha256 == first.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()


# --- encode verifies CHECKSUMS first --------------------------------------------------------


def test_cli_encode_refuses_a_file_that_no_longer_matches(tree: Path, tmp_path: Path) -> None:
    edited = copy_tree(tree, tmp_path / "edited")
    (edited / _EDITABLE).write_bytes(b"changed after the dump")
    out = tmp_path / "out.fsm"
    done = cli("encode", "--input", edited, "--output", out, "--quiet")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert _EDITABLE in done.stderr and "sha256 differs" in done.stderr
    assert not out.exists()
    done = cli("encode", "--input", edited, "--output", out, "--quiet", "--no-verify-checksums")
    assert done.returncode == 0, done.stderr
    assert out.exists()


@pytest.mark.anyio
async def test_library_encode_verifies_checksums(tree: Path, tmp_path: Path) -> None:
    edited = await anyio.to_thread.run_sync(copy_tree, tree, tmp_path / "edited")
    await anyio.Path(edited / _EDITABLE).write_bytes(b"changed")
    out = tmp_path / "out.fsm"
    with raises_code(ChecksumMismatch, "ErrChecksumMismatch", match=_EDITABLE):
        await encode_snapshot(edited, out)
    assert not await anyio.Path(out).exists()
    result = await encode_snapshot(edited, out, EncodeOptions(verify_checksums=False))
    assert "encode.files_verified" not in result.report.counters
    intact = await encode_snapshot(tree, tmp_path / "intact.fsm")
    listed = (tree / "CHECKSUMS").read_bytes().count(b"\n")
    assert intact.report.counters["encode.files_verified"] == listed


@pytest.mark.anyio
async def test_a_tree_without_checksums_is_encoded_with_a_warning(
    tree: Path, tmp_path: Path
) -> None:
    bare = await anyio.to_thread.run_sync(copy_tree, tree, tmp_path / "bare")
    await anyio.Path(bare / "CHECKSUMS").unlink()
    result = await encode_snapshot(bare, tmp_path / "out.fsm")
    assert list(result.report.warnings) == ["checksums_missing"]


# --- --checksums none -----------------------------------------------------------------------


def test_cli_checksums_none(tmp_path: Path) -> None:
    out = tmp_path / "tree"
    done = cli("decode", "--input", SAMPLE_FSM, "--output", out, "--checksums", "none", "--quiet")
    assert done.returncode == 0, done.stderr
    assert not (out / "CHECKSUMS").exists()
    manifest = json.loads((out / "MANIFEST.json").read_bytes())
    assert manifest["checksum_algorithm"] == manifest["checksum_format"] == "none"
    done = cli("verify", "--input", out)
    assert done.returncode == 0, done.stderr
    assert "content was not verified" in done.stderr
    (out / "MANIFEST.json").unlink()
    done = cli("verify", "--input", out)
    assert done.returncode == 2 and "incomplete" in done.stderr


@pytest.mark.anyio
async def test_library_checksums_none_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "tree"
    await decode_snapshot(SAMPLE_FSM, out, DecodeOptions(checksums="none"))
    report = await verify_tree(out)
    assert report.snapshot["checksums"] == "none"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert report.counters["verify.files"] == len(files)
    result = await encode_snapshot(out, tmp_path / "out.fsm")
    assert not result.report.warnings
    reference = await encode_snapshot(
        await anyio.to_thread.run_sync(sample_tree, tmp_path / "full"), tmp_path / "full.fsm"
    )
    assert result.sha256 == reference.sha256


@pytest.mark.anyio
async def test_library_rejects_an_unknown_checksums_value(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="checksums must be sha256 or none"):
        await decode_snapshot(SAMPLE_FSM, tmp_path / "t", DecodeOptions(checksums="md5"))
    assert not (tmp_path / "t").exists()


# --- --strict -------------------------------------------------------------------------------


def _warning_snapshot(tmp_path: Path) -> Path:
    """A snapshot whose only key matches no known prefix: decodes, with a warning."""
    path = tmp_path / "warn.fsm"
    path.write_bytes(snapshot([(b"!nosuch|family|k", b"v")]))
    return path


def test_cli_strict_exits_3_on_warnings(tmp_path: Path) -> None:
    fsm = _warning_snapshot(tmp_path)
    plain = cli("decode", "--input", fsm, "--output", tmp_path / "a", "--quiet")
    assert plain.returncode == 0, plain.stderr
    report = tmp_path / "r.json"
    args: list[str | Path] = ["--output", tmp_path / "b", "--quiet", "--strict", "--report", report]
    strict = cli("decode", "--input", fsm, *args)
    assert strict.returncode == 3
    assert strict.stderr.count("\n") == 1 and "[errStrictWarnings]" in strict.stderr
    assert (tmp_path / "b" / "MANIFEST.json").exists()  # the tree is still complete
    doc = json.loads(report.read_bytes())
    assert doc["exit_code"] == 3
    assert [w["event"] for w in doc["warnings"]] == ["unknown_prefix_entries"]
    clean = cli("decode", "--input", SAMPLE_FSM, "--output", tmp_path / "c", "--strict")
    assert clean.returncode == 0, clean.stderr
