"""Snapshots of a real elastickv node decode to exactly the state its clients wrote (issue #6).

Every ``<name>.fsm`` in ``../shared/realnode/`` that has a ``<name>.expected.json`` is decoded
with the library and compared semantically (see :mod:`statecompare`) with what the clients
read back before the node took the snapshot; the intermediate snapshots (no expectation)
must decode cleanly. Skipped when the shared corpus is absent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from statecompare import compare, load_expected, load_tree
from support import shared_dir

from elastickv_async._core.cli import main
from elastickv_async._core.options import DecodeOptions
from elastickv_async._core.pipeline import decode_snapshot

REALNODE = (shared_dir() or Path("/nonexistent")) / "realnode"
SNAPSHOTS = sorted(p for p in REALNODE.glob("*.fsm") if p.with_suffix(".expected.json").is_file())
INTERMEDIATE = sorted(REALNODE.glob("intermediate/*.fsm"))


def _params(paths: list[Path]) -> list[Any]:
    if paths:
        return [pytest.param(p, id=p.stem) for p in paths]
    return [pytest.param(None, marks=pytest.mark.skip(reason=f"no snapshots in {REALNODE}"))]


def _with_uploads(paths: list[Path]) -> list[Path]:
    """Snapshots whose expectation records an incomplete multipart upload."""
    out = []
    for path in paths:
        buckets = json.loads(path.with_suffix(".expected.json").read_bytes())["s3"]["buckets"]
        if any(b.get("incomplete_multipart_uploads") for b in buckets.values()):
            out.append(path)
    return out


@pytest.fixture
def anyio_backend() -> str:
    """These read up to 32 MB each; the event-loop matrix is covered by the unit tests."""
    return "asyncio"


async def _decode(snapshot: Path, out: Path, **s3_options: Any) -> Path:
    await decode_snapshot(snapshot, out, DecodeOptions(adapter_options={"s3": s3_options}))
    return out


@pytest.mark.anyio
@pytest.mark.parametrize("snapshot", _params(SNAPSHOTS))
async def test_snapshot_decodes_to_the_expected_state(snapshot: Path, tmp_path: Path) -> None:
    tree = await _decode(snapshot, tmp_path / "out")
    expected = load_expected(snapshot.with_suffix(".expected.json"))
    assert compare(load_tree(tree), expected) == []


@pytest.mark.anyio
@pytest.mark.parametrize("snapshot", _params(_with_uploads(SNAPSHOTS)))
async def test_incomplete_uploads_are_kept_with_the_flag(snapshot: Path, tmp_path: Path) -> None:
    tree = await _decode(snapshot, tmp_path / "out", include_incomplete_uploads=True)
    assert list(tree.glob("s3/*/_incomplete_uploads/records.jsonl"))
    expected = load_expected(snapshot.with_suffix(".expected.json"), incomplete_uploads=True)
    assert compare(load_tree(tree), expected) == []


@pytest.mark.anyio
@pytest.mark.parametrize("snapshot", _params(INTERMEDIATE))
async def test_intermediate_snapshot_decodes(snapshot: Path, tmp_path: Path) -> None:
    tree = await _decode(snapshot, tmp_path / "out")
    manifest = json.loads((tree / "MANIFEST.json").read_bytes())
    assert manifest["snapshot_index"] == int(snapshot.stem, 16)


@pytest.mark.anyio
@pytest.mark.parametrize("snapshot", _params([p for p in INTERMEDIATE if int(p.stem, 16) == 1]))
async def test_the_empty_nodes_snapshot_holds_no_state(snapshot: Path, tmp_path: Path) -> None:
    tree = await _decode(snapshot, tmp_path / "out")
    assert load_tree(tree) == {"dynamodb": {}, "s3": {}, "redis": {}, "sqs": {}}


@pytest.mark.parametrize("snapshot", _params(SNAPSHOTS + INTERMEDIATE))
def test_the_cli_exits_zero(snapshot: Path, tmp_path: Path) -> None:
    assert main(["decode", "--quiet", "--input", str(snapshot), "--output", str(tmp_path)]) == 0
    assert (tmp_path / "MANIFEST.json").is_file()
