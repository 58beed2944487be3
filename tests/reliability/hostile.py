"""Builders for hostile inputs: hand-framed snapshots, decoded sample trees, CLI runs."""

from __future__ import annotations

import base64
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import anyio

from elastickv_async import decode_snapshot

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE_FSM = REPO_ROOT / "examples" / "sample.fsm"
_TS_MASK = (1 << 64) - 1
LAST_COMMIT_TS = 1 << 20


def deep_json(depth: int) -> str:
    """A JSON array nested ``depth`` deep around a lone-surrogate ``\\u`` escape."""
    return "[" * depth + '"\\ud800"' + "]" * depth


def b64url(raw: bytes) -> bytes:
    """Unpadded base64url, as SQS keys spell queue names."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def snapshot(
    records: Iterable[tuple[bytes, bytes]],
    last_commit_ts: int = LAST_COMMIT_TS,
    *,
    commit_ts: int = 1,
) -> bytes:
    """An ``EKVPBBL1`` stream of one live version per ``(user key, body)``, in key order."""
    out = bytearray(b"EKVPBBL1" + struct.pack("<Q", last_commit_ts))
    for key, body in sorted(records):
        raw_key = key + struct.pack(">Q", commit_ts ^ _TS_MASK)
        raw_value = b"\x00" + struct.pack("<Q", 0) + body
        out += struct.pack("<Q", len(raw_key)) + raw_key
        out += struct.pack("<Q", len(raw_value)) + raw_value
    return bytes(out)


def sample_tree(base: Path) -> Path:
    """Decode ``examples/sample.fsm`` (all four adapters) into ``base/tree``."""
    tree = base / "tree"
    anyio.run(decode_snapshot, SAMPLE_FSM, tree)
    return tree


def copy_tree(tree: Path, target: Path) -> Path:
    """A private copy of a dump tree."""
    shutil.copytree(tree, target, symlinks=True)
    return target


def cli(
    *args: str | os.PathLike[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m elastickv_async ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "elastickv_async", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def cli_argv(*args: str | os.PathLike[str]) -> Sequence[str]:
    """The argv of :func:`cli` (for :class:`subprocess.Popen`)."""
    return [sys.executable, "-m", "elastickv_async", *map(str, args)]


def listing(root: Path) -> list[str]:
    """Every path under ``root`` (files, directories, links), relative and sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


#: A child process running the CLI that stops after its first written file (decode) or after
#: collecting records (encode), prints READY and waits there until it is signalled.
PAUSING_CLI = """
import sys
import anyio
from elastickv_async._core.cli import main
from elastickv_async._core.dump.writer import DumpWriter
from elastickv_async._core.encode import api

async def pause() -> None:
    print("READY", flush=True)
    await anyio.sleep_forever()

write = DumpWriter._call
async def write_then_pause(self, func, *args):
    result = await write(self, func, *args)
    await pause()
    return result

collect = api.collect_records
async def collect_then_pause(*args, **kwargs):
    await collect(*args, **kwargs)
    await pause()

DumpWriter._call = write_then_pause
api.collect_records = collect_then_pause
sys.exit(main(sys.argv[1:]))
"""


def pausing_cli(*args: str | os.PathLike[str]) -> subprocess.Popen[str]:
    """Start :data:`PAUSING_CLI` with ``args``; read its first line before signalling it."""
    return subprocess.Popen(
        [sys.executable, "-c", PAUSING_CLI, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def header_below_data() -> bytes:
    """Two Redis strings committed after the header's ``last_commit_ts``: a snapshot the
    decoder must decode a second time (``mvcc_header_below_data``)."""
    return snapshot(
        [(b"!redis|str|a", b"\xff\x01\x00A"), (b"!redis|str|b", b"\xff\x01\x00B")],
        last_commit_ts=60,
        commit_ts=7000,
    )
