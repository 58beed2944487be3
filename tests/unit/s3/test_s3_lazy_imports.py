"""An S3 encode loads the S3 encoder, not its decoder, and a small one starts no worker
process; an S3 decode starts none either, even when asked for one (S3 sends no work to them),
and builds no decoder of an adapter that receives no entries.

Checked in a fresh interpreter: ``sys.modules`` there shows what the run imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import shared_dir

SHARED = shared_dir()

_CHILD = """
import json, sys
from elastickv_async._core import workers

async def refuse(self):
    raise AssertionError("a worker process was started")

workers.Workers._start = refuse
from elastickv_async._core.entry import main

code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _run_fresh(argv: list[str]) -> dict[str, Any]:
    """Run the CLI with ``argv`` in a fresh interpreter; its exit code and loaded modules."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv, "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 0, done.stderr
    return result


@pytest.mark.skipif(SHARED is None, reason="golden corpus absent")
def test_an_s3_encode_imports_no_decoder_and_starts_no_worker(tmp_path: Path) -> None:
    assert SHARED is not None
    case = SHARED / "golden" / "public" / "enc_s3"
    tree = tmp_path / "tree"
    shutil.copytree(case / "input", tree, symlinks=True)
    out = tmp_path / "out.fsm"
    argv = ["encode", "--input", str(tree), "--output", str(out), "--adapter", "s3"]
    result = _run_fresh(argv)
    assert out.read_bytes() == (case / "expected.fsm").read_bytes()
    modules = set(result["modules"])
    assert "elastickv_async._adapters.s3.encode" in modules
    assert "elastickv_async._adapters.s3.decode" not in modules
    # Without --self-test nothing of the decoder loads: no snapshot reader, no routing.
    assert "elastickv_async._core.pipeline" not in modules
    assert "elastickv_async._core.encode.selftest" not in modules
    assert "crc32c" not in modules
    # Nor the protobuf runtime, which only DynamoDB and Redis values need.
    assert "google.protobuf" not in modules
    # The tree has no other subtree: no other adapter's encoder loads, whatever the
    # MANIFEST enables.
    assert {
        f"elastickv_async._adapters.{a}.encode" for a in ("dynamodb", "redis", "sqs")
    }.isdisjoint(modules)


@pytest.mark.skipif(SHARED is None, reason="golden corpus absent")
def test_an_s3_decode_starts_no_worker_process_and_builds_no_other_decoder(
    tmp_path: Path,
) -> None:
    assert SHARED is not None
    case = SHARED / "golden" / "public" / "s3_multipart"
    out = tmp_path / "out"
    argv = ["decode", "--input", str(case / "input.fsm"), "--output", str(out), "--workers", "1"]
    result = _run_fresh(argv)
    assert (out / "MANIFEST.json").is_file()
    modules = set(result["modules"])
    assert "elastickv_async._adapters.s3.encode" not in modules
    # The snapshot holds S3 entries only: no other adapter's decoder is built or imported,
    # nor the protobuf runtime their values need.
    assert {
        f"elastickv_async._adapters.{a}.decode" for a in ("dynamodb", "redis", "sqs")
    }.isdisjoint(modules)
    assert "google.protobuf" not in modules
