"""The external merge sort: order, spilling, multi-pass merging, cleanup."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from elastickv_async._core import extsort
from elastickv_async._core.extsort import ExternalSorter


def _records(n: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    keys = {rng.randbytes(rng.randint(0, 12)) for _ in range(n)}
    return [(k, rng.randbytes(rng.randint(0, 300))) for k in keys]


def test_in_memory_sort_is_bytewise(tmp_path: Path) -> None:
    """Without spilling, records come out in bytewise key order and nothing touches disk."""
    recs = [(b"b", b"2"), (b"a\x00", b"3"), (b"a", b"1"), (b"\xff", b"4"), (b"", b"0")]
    s = ExternalSorter(tmp_path)
    for k, v in recs:
        s.add(k, v)
    assert not s.over_budget
    assert list(s.merged()) == [
        (b"", b"0"),
        (b"a", b"1"),
        (b"a\x00", b"3"),
        (b"b", b"2"),
        (b"\xff", b"4"),
    ]
    assert s.spills == 0 and not list(tmp_path.iterdir())


def test_spilled_runs_merge_to_the_same_order(tmp_path: Path) -> None:
    """A tiny budget spills many runs; the merge equals Python's sorted() of the input."""
    recs = _records(500)
    s = ExternalSorter(tmp_path, budget=4096)
    for k, v in recs:
        s.add(k, v)
        if s.over_budget:
            s.spill()
    assert s.spills > 5
    assert list(s.merged()) == sorted(recs)
    s.close()
    assert not list(tmp_path.iterdir())


def test_more_runs_than_fan_in_are_compacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With more runs than the fan-in, runs are pre-merged; duplicates survive for the caller."""
    monkeypatch.setattr(extsort, "MERGE_FAN_IN", 3)
    recs = [*_records(40, seed=3), (b"dup", b"x"), (b"dup", b"x")]
    s = ExternalSorter(tmp_path, budget=1)
    for k, v in recs:
        s.add(k, v)
        s.spill()
    assert s.spills == len(recs)
    out = list(s.merged())
    assert len(list(tmp_path.iterdir())) < 3  # compacted below the fan-in
    assert out == sorted(recs)
    s.close()
    assert not list(tmp_path.iterdir())


def test_large_values_round_trip_through_runs(tmp_path: Path) -> None:
    """Values of 1 MiB spill and read back intact."""
    recs = [(bytes([i]), bytes([i]) * (1 << 20)) for i in (5, 1, 3)]
    s = ExternalSorter(tmp_path, budget=1 << 20)
    for k, v in recs:
        s.add(k, v)
        if s.over_budget:
            s.spill()
    assert s.spills == 3
    assert list(s.merged()) == sorted(recs)
    s.close()


def test_equal_keys_keep_insertion_order_through_compaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sort is stable even when runs are pre-merged (callers rely on last-wins)."""
    monkeypatch.setattr(extsort, "MERGE_FAN_IN", 3)
    s = ExternalSorter(tmp_path, budget=1)
    values = [b"%02d" % i for i in range(10)]
    for value in values:
        s.add(b"k", value)
        s.add(b"j", value)
        s.spill()
    s.add(b"k", b"tail")
    assert list(s.merged()) == [(b"j", v) for v in values] + [(b"k", v) for v in [*values, b"tail"]]
    s.close()
