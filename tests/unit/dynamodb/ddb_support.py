"""Helpers for the DynamoDB adapter tests: contexts, a tiny .fsm reader, golden case paths."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import decode_context, shared_dir, tree_files
from support import encode_context as shared_encode_context

from elastickv_async._adapters.base import EncodeContext, Routed
from elastickv_async._adapters.dynamodb.decode import DynamoDBDecoder
from elastickv_async._core.report import Report
from elastickv_async._core.snapshot.entry import Entry
from elastickv_async._core.workers import Workers

GOLDEN = (shared_dir() or Path("/nonexistent")) / "golden" / "public"
DDB_PREFIXES = (b"!ddb|meta|table|", b"!ddb|meta|gen|", b"!ddb|item|", b"!ddb|gsi|")


def golden_case(name: str) -> Path:
    """The public golden case ``name``; skips the test when the corpus is absent."""
    case = GOLDEN / name
    if not (case / "case.json").is_file():
        pytest.skip(f"golden case {name} is absent")
    return case


def read_fsm(path: Path) -> list[tuple[bytes, bytes]]:
    """``(user key, value body)`` of a clean EKVPBBL1 stream (one live version per key)."""
    data = path.read_bytes()
    assert data[:8] == b"EKVPBBL1"
    pos, out = 16, []
    while pos < len(data):
        (klen,) = struct.unpack_from("<Q", data, pos)
        key = data[pos + 8 : pos + 8 + klen]
        pos += 8 + klen
        (vlen,) = struct.unpack_from("<Q", data, pos)
        value = data[pos + 8 : pos + 8 + vlen]
        pos += 8 + vlen
        assert value[0] == 0, "tests only read live cleartext entries"
        out.append((key[:-8], value[9:]))
    return out


def routed(records: Iterable[tuple[bytes, bytes]]) -> list[Routed]:
    """Route ``(key, value)`` pairs to their ``!ddb|`` prefix the way the pipeline does."""
    out: list[Routed] = []
    for key, value in records:
        prefix = next(p for p in DDB_PREFIXES if key.startswith(p))
        out.append((prefix, Entry(key, value, commit_ts=1, expire_at=0, tombstone=False)))
    return out


@dataclass
class Harness:
    """A decoder wired to a real DumpWriter under ``root`` and its report."""

    root: Path
    report: Report
    decoder: DynamoDBDecoder
    #: Its worker processes: ``async with`` them when there are any.
    workers: Workers

    def files(self) -> dict[str, bytes]:
        """Every regular file written, by slash path."""
        return tree_files(self.root)

    def warnings(self, event: str) -> list[dict[str, Any]]:
        """The fields of every ``event`` warning."""
        summary = self.report.warnings.get(event)
        return summary.examples if summary else []


def harness(tmp_path: Path, *, processes: int = 0, **options: Any) -> Harness:
    """A fresh decoder with an output root and a scratch directory under ``tmp_path``, and
    ``processes`` worker processes (0: its CPU-bound calls run in threads)."""
    ctx = decode_context(tmp_path, "dynamodb", **options)
    ctx.workers = Workers(processes)
    return Harness(tmp_path / "out", ctx.report, DynamoDBDecoder(ctx), ctx.workers)


def encode_context(root: Path, scratch: Path, **decoded_with: Any) -> EncodeContext:
    """An encode context for the dump tree at ``root`` decoded with ``decoded_with``."""
    return shared_encode_context(root, scratch, "dynamodb", decoded_with)


def b64(text: str) -> str:
    """base64url without padding of a UTF-8 string (table names in keys)."""
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
