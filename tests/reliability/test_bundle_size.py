"""``--dynamodb-bundle-size``: jsonl parts rolled at the size; the encoder reads every part."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile import SAMPLE_FSM, cli

from elastickv_async import DecodeOptions, UsageError, decode_snapshot, encode_snapshot
from elastickv_async._adapters.dynamodb.options import parse_size

_PART = 150


def _parts(tree: Path) -> list[Path]:
    return sorted((tree / "dynamodb" / "orders" / "items").iterdir())


@pytest.mark.parametrize(
    ("text", "size"),
    [("64MiB", 64 << 20), ("1GiB", 1 << 30), ("512KiB", 512 << 10), ("100", 100), ("7B", 7)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["64MB", "0", "-1", "1.5MiB", "2TiB", "", "2048GiB"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError, match="--dynamodb-bundle-size"):
        parse_size(text)


def test_cli_parts_are_rolled_and_encode_reads_them_all(tmp_path: Path) -> None:
    bundled = tmp_path / "bundled"
    flags = ["--dynamodb-bundle-mode", "jsonl", "--dynamodb-bundle-size", str(_PART)]
    done = cli("decode", "--input", SAMPLE_FSM, "--output", bundled, *flags, "--quiet")
    assert done.returncode == 0, done.stderr
    parts = _parts(bundled)
    assert len(parts) > 1
    lines = [line for part in parts for line in part.read_bytes().splitlines(keepends=True)]
    for part in parts:
        body = part.read_bytes()
        assert len(body) <= _PART or body.count(b"\n") == 1
    manifest = json.loads((bundled / "MANIFEST.json").read_bytes())
    assert manifest["dynamodb_bundle_size_bytes"] == _PART
    one_part = tmp_path / "one-part"
    done = cli("decode", "--input", SAMPLE_FSM, "--output", one_part, *flags[:2], "--quiet")
    assert done.returncode == 0, done.stderr
    assert [p.name for p in _parts(one_part)] == ["data-00000.jsonl"]
    # The default size is not recorded: the reference's MANIFEST has no such field.
    assert "dynamodb_bundle_size_bytes" not in json.loads((one_part / "MANIFEST.json").read_bytes())
    assert _parts(one_part)[0].read_bytes() == b"".join(lines)  # same lines, same order
    encoded = {}
    for tree in (bundled, one_part):
        out = tmp_path / f"{tree.name}.fsm"
        done = cli("encode", "--input", tree, "--output", out, "--self-test", "--quiet")
        assert done.returncode == 0, done.stderr
        encoded[tree.name] = out.read_bytes()
    assert encoded["bundled"] == encoded["one-part"]


def test_cli_a_bad_size_is_a_usage_error_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    flags = ["--dynamodb-bundle-mode", "jsonl", "--dynamodb-bundle-size", "64MB"]
    done = cli("decode", "--input", SAMPLE_FSM, "--output", out, *flags)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "--dynamodb-bundle-size" in done.stderr
    assert not out.exists()


@pytest.mark.anyio
async def test_library_bundle_size(tmp_path: Path) -> None:
    options = DecodeOptions(
        adapter_options={"dynamodb": {"layout": "jsonl", "bundle_size": f"{_PART}B"}}
    )
    await decode_snapshot(SAMPLE_FSM, tmp_path / "t", options)
    assert len(_parts(tmp_path / "t")) > 1
    result = await encode_snapshot(tmp_path / "t", tmp_path / "t.fsm")
    reference = await encode_snapshot(
        await _decoded(tmp_path / "per-item"), tmp_path / "per-item.fsm"
    )
    assert result.sha256 == reference.sha256


async def _decoded(tree: Path) -> Path:
    await decode_snapshot(SAMPLE_FSM, tree)
    return tree
