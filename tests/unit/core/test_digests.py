"""The digest ledger shared by decode (CHECKSUMS of the files written) and encode (digests of
the files read): the last digest of each path, sorted by raw path, in bounded memory."""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastickv_async._core import digests, sortedruns
from elastickv_async._core.digests import DigestLedger
from elastickv_async._core.dump.checksums import ChecksumLedger, checksum_line
from elastickv_async._core.encode.readdigests import ReadDigests
from elastickv_async._core.memory import MIN_MEMORY_BUDGET, MemoryBudget

#: Path segments: ASCII, non-ASCII, an undecodable byte (as os.fsdecode gives it), prefixes
#: of each other, "/" ordering below most other characters, names CHECKSUMS escapes, and
#: CHECKSUMS itself.
_SEGMENTS = st.sampled_from(
    ["a", "ab", "a.b", "b", "Z", "é", os.fsdecode(b"\xff"), "a-", "0", "n\nl", "b\\s", "CHECKSUMS"]
)
_PATHS = st.lists(_SEGMENTS, min_size=1, max_size=3).map("/".join)
_RECORDS = st.lists(st.tuples(_PATHS, st.binary(min_size=32, max_size=32)), max_size=80)
_BATCHES = st.lists(_RECORDS, max_size=6)


def _model(batches: list[list[tuple[str, bytes]]]) -> dict[bytes, bytes]:
    """What a dict keeping the last digest of each path holds, by raw path."""
    return {os.fsencode(rel): digest for batch in batches for rel, digest in batch}


def _record(ledger: DigestLedger, batches: list[list[tuple[str, bytes]]], how: str) -> None:
    for batch in batches:
        if how == "one":
            for rel, digest in batch:
                ledger.record(rel, digest)
        elif how == "iterator":
            ledger.record_many(iter(batch))
        else:
            ledger.record_many(batch)


@settings(max_examples=80, deadline=None)
@given(
    batches=_BATCHES,
    limit=st.integers(1, 40),
    fan_in=st.integers(2, 5),
    spilling=st.booleans(),
    how=st.sampled_from(["one", "many", "iterator"]),
)
def test_items_are_a_dict_of_the_last_digests_sorted(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[tuple[str, bytes]]],
    limit: int,
    fan_in: int,
    spilling: bool,
    how: str,
) -> None:
    """Whatever the spills (a run per ``limit`` digests, or none without a spill directory),
    the merges of runs (``fan_in`` at a time) and the way digests are recorded, the ledger
    gives what a dict would, sorted by raw path; ``get`` answers for what is still held."""
    spill = tmp_path_factory.mktemp("ledger")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(digests, "MERGE_FAN_IN", fan_in)
        ledger = DigestLedger(spill if spilling else None, limit=limit)
        _record(ledger, batches, how)
        model = _model(batches)
        if ledger.spills == 0:
            for rel, digest in model.items():
                assert ledger.get(os.fsdecode(rel)) == digest
        assert ledger.get("never/recorded") is None
        try:
            assert list(ledger.items()) == sorted(model.items())
        finally:
            ledger.close()
    assert spilling or ledger.spills == 0
    assert list(spill.iterdir()) == []


@settings(max_examples=60, deadline=None)
@given(
    batches=_BATCHES,
    extra=st.dictionaries(_PATHS, st.binary(min_size=32, max_size=32), max_size=4),
    limit=st.integers(1, 40),
    keep=st.booleans(),
)
def test_checksums_listing_is_the_model_plus_extra_without_checksums(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[tuple[str, bytes]]],
    extra: dict[str, bytes],
    limit: int,
    keep: bool,
) -> None:
    """The decode's ledger adds ``extra`` last (it wins), leaves the top-level CHECKSUMS out
    unless asked to keep it, and lists the rest as ``sha256sum`` lines in path order."""
    spill = tmp_path_factory.mktemp("checksums")
    model = _model([*batches, list(extra.items())])
    expected = sorted(item for item in model.items() if keep or item[0] != b"CHECKSUMS")
    ledger = ChecksumLedger(spill, limit=limit)
    _record(ledger, batches, "many")
    assert list(ledger.items(extra, keep_checksums=keep)) == expected
    ledger.close()
    ledger = ChecksumLedger(spill, limit=limit)
    _record(ledger, batches, "many")
    listing = b"".join(ledger.listing(extra, block_size=256))
    ledger.close()
    assert listing == b"".join(
        checksum_line(digest.hex(), rel)
        for rel, digest in sorted(model.items())
        if rel != b"CHECKSUMS"
    )


def test_a_long_iterator_is_taken_a_buffer_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``record_many`` of an iterator longer than the limit never holds more than ``limit``
    digests (verify feeds it a whole CHECKSUMS file)."""
    held: list[int] = []
    spill = DigestLedger._spill

    def counted(ledger: DigestLedger) -> None:
        held.append(len(ledger._paths))
        spill(ledger)

    monkeypatch.setattr(DigestLedger, "_spill", counted)
    ledger = DigestLedger(tmp_path / "spill", limit=7)
    records = ((f"f/{i:04d}", hashlib.sha256(b"%d" % i).digest()) for i in range(100))
    ledger.record_many(records)
    assert held == [7] * 14
    assert len(list(ledger.items())) == 100
    ledger.close()


def test_a_path_holding_a_nul_byte_keeps_its_place(tmp_path: Path) -> None:
    """Paths are encoded joined by NUL; one that holds a NUL (a hand-edited CHECKSUMS line)
    is encoded on its own instead of shifting the digests of the others."""
    ledger = DigestLedger(tmp_path / "spill", limit=100)
    ledger.record_many([("a\0b", b"1" * 32), ("a", b"2" * 32), ("c", b"3" * 32)])
    assert list(ledger.items()) == [(b"a", b"2" * 32), (b"a\0b", b"1" * 32), (b"c", b"3" * 32)]
    ledger.close()


def test_threads_record_at_once(tmp_path: Path) -> None:
    """Writer threads record concurrently, spilling as they go; every digest is kept."""
    ledger = DigestLedger(tmp_path / "spill", limit=50)
    start = threading.Barrier(4)

    def record(thread: int) -> None:
        start.wait()
        for batch in range(40):
            ledger.record_many(
                (f"t{thread}/{batch:02d}/{i}", bytes([thread, batch, i]) * 8) for i in range(7)
            )

    threads = [threading.Thread(target=record, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = sorted(
        (f"t{t}/{b:02d}/{i}".encode(), bytes([t, b, i]) * 8)
        for t in range(4)
        for b in range(40)
        for i in range(7)
    )
    assert ledger.spills > 0
    assert list(ledger.items()) == expected
    ledger.close()


def test_runs_are_spilled_past_the_limit_and_merged_past_the_fan_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``limit`` digests a run is spilled; past the fan-in, runs are merged into one, so
    that the final merge reads a bounded number of them."""
    monkeypatch.setattr(digests, "MERGE_FAN_IN", 3)
    ledger = ReadDigests(tmp_path / "read", limit=2)
    records = [(f"d/{i:03d}", hashlib.sha256(b"%d" % i).digest()) for i in range(20)]
    for start in range(0, len(records), 2):
        ledger.record_many(reversed(records[start : start + 2]))
    assert ledger.spills == 10
    assert len(list((tmp_path / "read").iterdir())) <= 2
    assert list(ledger.items()) == [(rel.encode(), digest) for rel, digest in records]
    ledger.close()


def test_spilled_runs_are_merged_by_level_each_digest_rewritten_a_few_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs spilled while recording are merged as soon as enough of them share a level, so the
    runs on disk stay few and each digest is rewritten a logarithmic number of times (merging
    everything spilled so far at every merge would rewrite the oldest digests each time)."""
    monkeypatch.setattr(digests, "MERGE_FAN_IN", 3)  # merges of two runs
    written = [0]
    most_runs = [0]
    write_run = sortedruns.write_run

    def counted(path: Path, chunks: Any) -> None:
        def each() -> Any:
            for chunk in chunks:
                written[0] += len(chunk)
                yield chunk

        write_run(path, each())
        most_runs[0] = max(most_runs[0], len(list(path.parent.iterdir())))

    monkeypatch.setattr(digests, "write_run", counted)
    ledger = DigestLedger(tmp_path / "runs", limit=1)
    records = [(f"f/{i:03d}", hashlib.sha256(b"%d" % i).digest()) for i in range(64)]
    for rel, digest in reversed(records):
        ledger.record(rel, digest)
    assert ledger.spills == 64
    # 64 = 2**6: each digest written once when spilled and once per level.
    assert written[0] == 7 * 64
    assert most_runs[0] <= 8
    assert list(ledger.items()) == [(rel.encode(), digest) for rel, digest in records]
    ledger.close()
    assert list((tmp_path / "runs").iterdir()) == []


def _fresh(start: int, count: int) -> list[tuple[str, bytes]]:
    """``count`` new paths of 64 characters and their digests (made here, so the ledger is
    the only one holding them once recorded)."""
    return [
        (
            f"dynamodb/orders/items/customer-{i:07d}/{'x' * 20}.json",
            hashlib.sha256(b"%d" % i).digest(),
        )
        for i in range(start, start + count)
    ]


@pytest.mark.parametrize("budget", [MIN_MEMORY_BUDGET, 2 << 20, 4 << 20, 16 << 20])
def test_a_ledger_holds_no_more_than_the_checksums_share(tmp_path: Path, budget: int) -> None:
    """Recording enough digests to spill and merge runs, then listing them with a tail of
    almost a full buffer, a ledger of the budget's ``ledger_entries`` allocates at most the
    checksums' share (tracemalloc)."""
    memory = MemoryBudget(budget, "decode", ("dynamodb",))
    limit = memory.ledger_entries()
    ledger = DigestLedger(tmp_path / "spill", limit=limit)
    total = limit * 40 + limit - 1
    tracemalloc.start()
    try:
        batch = 32
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for start in range(0, total, batch):
            ledger.record_many(_fresh(start, min(batch, total - start)))
        recording = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.reset_peak()
        listed = sum(1 for _ in ledger.items())
        listing = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
        ledger.close()
    assert listed == total
    assert ledger.spills >= 40
    assert max(recording, listing) <= memory.share("checksums")
