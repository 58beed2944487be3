"""The inspect command's summary of a snapshot."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from elastickv_async._core.inspection import NO_SEPARATOR, inspect_snapshot, key_prefix

pytestmark = pytest.mark.anyio


def _entry(key: bytes, ts: int, body: bytes, *, tombstone: bool = False) -> bytes:
    encoded = key + struct.pack(">Q", ts ^ (2**64 - 1))
    value = bytes([1 if tombstone else 0]) + struct.pack("<Q", 0) + body
    return struct.pack("<Q", len(encoded)) + encoded + struct.pack("<Q", len(value)) + value


def test_key_prefix_buckets() -> None:
    """Keys bucket up to their depth-th '|' (their last one when they have fewer), never
    inside a segment; keys without any '|' share one bucket."""
    assert key_prefix(b"!redis|str|foo") == b"!redis|str|"
    assert key_prefix(b"!redis|str|a|b", depth=3) == b"!redis|str|a|"
    assert key_prefix(b"!redis|str|foo", depth=1) == b"!redis|"
    assert key_prefix(b"!dist|x", depth=5) == b"!dist|"
    assert key_prefix(b"plainkey-no-bars") == NO_SEPARATOR


async def test_counts_versions_tombstones_and_routes(tmp_path: Path) -> None:
    """Versions, tombstones and visible keys are counted per prefix with their route."""
    stream = b"EKVPBBL1" + struct.pack("<Q", 100)
    stream += _entry(b"!redis|str|a", 90, b"\xff\x01\x00new")
    stream += _entry(b"!redis|str|a", 80, b"\xff\x01\x00old")
    stream += _entry(b"!redis|str|b", 90, b"", tombstone=True)
    stream += _entry(b"!txn|lock|x", 50, b"")
    stream += _entry(b"zzz|mystery|1", 50, b"")
    path = tmp_path / "0000000000000064.fsm"
    path.write_bytes(stream)
    found = await inspect_snapshot(path)
    assert found.index_from_name == 100
    assert found.header.last_commit_ts == 100
    assert found.footer == "absent"
    counts = {p: (c.route, c.versions, c.tombstones, c.visible) for p, c in found.prefixes.items()}
    assert counts == {
        b"!redis|str|": ("redis", 3, 1, 1),
        b"!txn|lock|": ("internal", 1, 0, 1),
        b"zzz|mystery|": ("unknown", 1, 0, 1),
    }
    assert found.mvcc["versions_superseded"] == 1
    assert found.to_dict()["prefixes"][0]["prefix"] == "!redis|str|"
