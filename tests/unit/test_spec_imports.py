"""Every adapter's SPEC loads without its decoder or encoder: the CLI loads all four SPECs
for its flags, and a run imports only the side of the adapters it uses.

Checked in a fresh interpreter: ``sys.modules`` there shows what was imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

_CHILD = """
import json, sys
from elastickv_async._core.cli import _build_parser

_build_parser()
print(json.dumps(sorted(sys.modules)))
"""


def test_the_cli_flags_load_no_adapter_decoder_or_encoder() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True
    )
    modules = set(json.loads(done.stdout))
    assert "elastickv_async._adapters.registry" in modules
    sides = sorted(
        name
        for adapter in ("dynamodb", "redis", "s3", "sqs")
        for side in ("decode", "encode")
        if (name := f"elastickv_async._adapters.{adapter}.{side}") in modules
    )
    assert sides == []


def test_the_cli_flags_load_no_command_implementation() -> None:
    """Building the parser registers every command's flags, not their engines: the Raft
    state writer of ``prepare-restore`` (and the CRC32C package, whose import looks its own
    version up in the installed distributions) loads only when that command runs."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True
    )
    modules = set(json.loads(done.stdout))
    assert "elastickv_async._core.restore.command" in modules
    loaded = {
        "elastickv_async._core.restore.prepare",
        "elastickv_async._core.pipeline",
        "elastickv_async._core.encode.api",
        "crc32c",
        "importlib.metadata",
    } & modules
    assert loaded == set()


_LAYOUT_CHILD = """
import json, sys
from elastickv_async._core.cli import _build_parser
import elastickv_async._adapters.redis.layout

_build_parser()
print(json.dumps(sorted(sys.modules)))
"""


def test_the_specs_and_the_redis_layout_load_no_protobuf() -> None:
    """The protobuf runtime and the generated message modules load only where a value is
    parsed or written: not with a SPEC, its options, or the Redis tree layout (which every
    Redis run loads for its stream helpers)."""
    done = subprocess.run(
        [sys.executable, "-c", _LAYOUT_CHILD], capture_output=True, text=True, check=True
    )
    modules = set(json.loads(done.stdout))
    assert "elastickv_async._adapters.dynamodb.spec" in modules
    assert "elastickv_async._adapters.redis.layout" in modules
    loaded = sorted(name for name in modules if name.startswith("google") or "_pb2" in name)
    assert loaded == []
