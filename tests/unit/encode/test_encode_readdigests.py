"""The ledger of the digests an encode read: sorted by raw path, the last digest winning."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastickv_async._core.dump.checksums import ChecksumLedger
from elastickv_async._core.encode import readdigests
from elastickv_async._core.encode.readdigests import ReadDigests

#: Path segments: ASCII, non-ASCII, an undecodable byte (as os.fsdecode gives it), prefixes
#: of each other, and "/" ordering below most other characters.
_SEGMENTS = st.sampled_from(["a", "ab", "a.b", "b", "Z", "é", os.fsdecode(b"\xff"), "a-", "0"])
_PATHS = st.lists(_SEGMENTS, min_size=1, max_size=3).map("/".join)
_RECORDS = st.lists(st.tuples(_PATHS, st.binary(min_size=32, max_size=32)), max_size=80)


def _model(batches: list[list[tuple[str, bytes]]]) -> list[tuple[bytes, bytes]]:
    """What a dict keeping the last digest of each path gives, sorted by raw path."""
    latest = {os.fsencode(rel): digest for batch in batches for rel, digest in batch}
    return sorted(latest.items())


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(_RECORDS, max_size=6), limit=st.integers(1, 40), fan_in=st.integers(2, 5))
def test_items_are_the_last_digest_of_each_path_in_path_order(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[tuple[str, bytes]]],
    limit: int,
    fan_in: int,
) -> None:
    """Whatever the spills (a run per ``limit`` digests) and the merges of runs (``fan_in``
    at a time, in chunks of any size), the ledger gives what a dict would, sorted."""
    spill = tmp_path_factory.mktemp("read")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(readdigests, "MERGE_FAN_IN", fan_in)
        ledger = ReadDigests(spill, limit=limit)
        for batch in batches:
            ledger.record_many(batch)
        try:
            assert list(ledger.items()) == _model(batches)
        finally:
            ledger.close()
    assert list(spill.iterdir()) == []


def test_runs_are_spilled_past_the_limit_and_merged_past_the_fan_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``limit`` digests a run is spilled; past the fan-in, runs are merged into one, so
    that the final merge reads a bounded number of them."""
    monkeypatch.setattr(readdigests, "MERGE_FAN_IN", 3)
    ledger = ReadDigests(tmp_path / "read", limit=2)
    records = [(f"d/{i:03d}", hashlib.sha256(b"%d" % i).digest()) for i in range(20)]
    for start in range(0, len(records), 2):
        ledger.record_many(reversed(records[start : start + 2]))
    assert ledger.spills == 10
    assert len(list((tmp_path / "read").iterdir())) <= 2
    assert list(ledger.items()) == [(rel.encode(), digest) for rel, digest in records]
    ledger.close()


def test_record_is_record_many_of_one(tmp_path: Path) -> None:
    """One digest at a time, the ledger agrees with the general CHECKSUMS ledger's items."""
    ours = ReadDigests(tmp_path / "ours", limit=3)
    general = ChecksumLedger(tmp_path / "general", limit=3)
    for turn, i in enumerate((5, 3, 9, 3, 1, 5, 7, 0, 3)):
        rel, digest = f"x/{i}", hashlib.sha256(b"%d at %d" % (i, turn)).digest()
        ours.record(rel, digest)
        general.record(rel, digest)
    assert list(ours.items()) == list(general.items())
    ours.close()
    general.close()
