"""Round trip with the real adapters: the bundled sample decodes, re-encodes and self-tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import REPO_ROOT

from elastickv_async._core.encode.api import encode_snapshot
from elastickv_async._core.options import EncodeOptions
from elastickv_async._core.pipeline import decode_snapshot

pytestmark = pytest.mark.anyio

SAMPLE = REPO_ROOT / "examples" / "sample.fsm"


@pytest.mark.skipif(not SAMPLE.is_file(), reason="examples/sample.fsm is absent")
async def test_sample_round_trip_self_test_without_blocking(tmp_path: Path) -> None:
    """Decode -> encode --self-test matches, makes no blocking call on the loop, and the
    re-encoded snapshot decodes to the same tree again (encoding is a fixed point)."""
    tree = tmp_path / "tree"
    await decode_snapshot(SAMPLE, tree)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "restored.fsm"
    result = await encode_snapshot(
        tree, out, EncodeOptions(self_test=True, scratch_root=scratch), sort_budget=4096
    )
    assert result.self_test_ran and result.self_test_matched
    assert result.report.counters["encode.sort_spills"] > 0
    info = json.loads((tmp_path / "restored.fsm.encode_info.json").read_text())
    assert info["self_test"] == {"ran": True, "matched": True}
    assert (
        info["last_commit_ts"] == json.loads((tree / "MANIFEST.json").read_text())["last_commit_ts"]
    )
    # A second encode of the decoded tree gives the same bytes.
    again_tree = tmp_path / "again"
    await decode_snapshot(out, again_tree)
    again = await encode_snapshot(again_tree, tmp_path / "again.fsm")
    assert again.sha256 == result.sha256
    assert (tmp_path / "again.fsm").read_bytes() == out.read_bytes()
    assert list(scratch.iterdir()) == []
