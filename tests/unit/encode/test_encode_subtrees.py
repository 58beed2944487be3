"""An adapter whose encoder reads only its own subtree is not even loaded for a tree that
lacks that subtree: an S3-only tree costs no DynamoDB, Redis or SQS encoder (nor their
imports), whatever MANIFEST.json enables."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from encode_support import ALL, fake_specs, make_tree, use_specs
from support import hand_built_fsm

from elastickv_async._adapters.base import EncodeContext
from elastickv_async._core.encode.api import encode_snapshot
from elastickv_async._core.options import EncodeOptions

pytestmark = pytest.mark.anyio

RECORDS = {name: [(f"{name}-key".encode(), b"v")] for name in ALL}


@pytest.mark.parametrize("kind", ["dir", "file"])
async def test_only_the_adapters_with_a_subtree_encode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    seen: dict[str, EncodeContext] = {}
    specs = {
        name: dataclasses.replace(spec, subtree_only=True)
        for name, spec in fake_specs(RECORDS, seen=seen).items()
    }
    use_specs(monkeypatch, specs)
    tree = make_tree(tmp_path / "in")
    # A subtree of any type counts: its encoder judges it (a file here is its error to word).
    (tree / "s3").mkdir() if kind == "dir" else (tree / "s3").write_bytes(b"")
    result = await encode_snapshot(tree, tmp_path / "out.fsm", EncodeOptions())
    assert sorted(seen) == ["s3"]
    assert result.adapters_enabled == ("redis", "dynamodb", "s3", "sqs")  # as the MANIFEST says
    ts = result.last_commit_ts
    assert (tmp_path / "out.fsm").read_bytes() == hand_built_fsm(ts, RECORDS["s3"])


async def test_an_adapter_not_bound_to_its_subtree_always_encodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, EncodeContext] = {}
    use_specs(monkeypatch, fake_specs(RECORDS, seen=seen))  # subtree_only=False
    await encode_snapshot(make_tree(tmp_path / "in"), tmp_path / "out.fsm", EncodeOptions())
    assert sorted(seen) == sorted(ALL)
