"""A decode builds an adapter's decoder only when entries are routed to it: the adapters that
receive none take their SPEC's ``empty_scope`` instead. Held here to the general path (every
enabled decoder built and finalised) byte for byte, MANIFEST scopes included."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from support import run_independent_files, shared_dir

from elastickv_async._adapters.registry import REGISTRY
from elastickv_async._core.cli import main

SHARED = shared_dir()

# No entries at all; one adapter's entries only (each adapter); every flag; a disabled
# adapter's option; all four adapters.
_CASES = (
    "global_empty",
    "ddb_hash_only",
    "redis_streams",
    "s3_multipart",
    "sqs_standard",
    "global_all_flags",
    "ddb_jsonl_mode_no_ddb",
    "global_all_adapters",
)


def _decode(case: Path, out: Path) -> dict[str, object]:
    args = json.loads((case / "case.json").read_text())["args"]
    argv = ["decode", "--input", str(case / "input.fsm"), "--output", str(out), "--quiet"]
    assert main([*argv, *args]) == 0
    manifest = json.loads((out / "MANIFEST.json").read_bytes())
    del manifest["wall_time_iso"]
    assert isinstance(manifest, dict)
    return manifest


@pytest.mark.skipif(SHARED is None, reason="golden corpus absent")
@pytest.mark.parametrize("name", _CASES)
def test_adapters_without_entries_decode_as_if_their_decoder_ran(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SHARED is not None
    case = SHARED / "golden" / "public" / name
    lazy = _decode(case, tmp_path / "lazy")
    for spec in REGISTRY:
        assert spec.empty_scope is not None
        general = dataclasses.replace(spec, empty_scope=None)
        monkeypatch.setitem(REGISTRY._specs, spec.name, general)
    built = _decode(case, tmp_path / "built")
    assert lazy == built
    assert run_independent_files(tmp_path / "lazy") == run_independent_files(tmp_path / "built")
