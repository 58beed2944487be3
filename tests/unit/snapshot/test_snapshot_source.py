"""Snapshot index from a .fsm file name."""

from __future__ import annotations

from pathlib import Path

import pytest

from elastickv_async._core.snapshot.source import snapshot_index_from_path


@pytest.mark.parametrize(
    ("path", "index"),
    [
        ("42.fsm", 42),  # the reference's decimal rule
        ("/var/lib/elastickv/snap/0.fsm", 0),
        ("fsm-snap/0000000000000065.fsm", 0x65),  # the node's %016x name
        ("fsm-snap/00000000000001f5.fsm", 501),
        ("ffffffffffffffff.fsm", 2**64 - 1),
        ("18446744073709551615.fsm", 2**64 - 1),
        ("18446744073709551616.fsm", None),  # over u64
        ("00000000000001F5.fsm", 501),  # the node parses its names as hex, any case
        ("000000000000001f5.fsm", None),  # 17 characters, not decimal
        ("input.fsm", None),
        ("p1_redis_ddb_00000000000000c9.fsm", None),
        (".fsm", None),
        ("42.fsm.tmp", None),
        ("42", None),
        ("+42.fsm", None),
        ("4_2.fsm", None),
    ],
)
def test_snapshot_index_from_path(path: str, index: int | None) -> None:
    """Decimal stems read as decimal, 16-hex-digit node names as hex, anything else as None."""
    assert snapshot_index_from_path(path) == index
    assert snapshot_index_from_path(Path(path)) == index
