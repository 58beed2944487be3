"""The external merge sort: order, spilling, multi-pass merging, cleanup."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pytest

from elastickv_async._core import extsort, scratch
from elastickv_async._core.errors import OutputError
from elastickv_async._core.extsort import Deferred, ExternalSorter


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


def _mixed_records(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    """Unique keys; about a third of the values are large (2-5 KB), the rest small."""
    rng = random.Random(seed)
    keys = sorted({rng.randbytes(rng.randint(1, 12)) for _ in range(n)})
    rng.shuffle(keys)
    return [
        (k, rng.randbytes(rng.randint(2000, 5000) if i % 3 == 0 else rng.randint(0, 300)))
        for i, k in enumerate(keys)
    ]


def test_large_values_wait_in_the_side_file_not_in_the_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``large_value``, spilled and compacted runs hold no large value, yet every record
    comes back intact and in order; close removes the side file too."""
    monkeypatch.setattr(extsort, "MERGE_FAN_IN", 3)
    recs = _mixed_records(300, seed=5)
    large = [v for _, v in recs if len(v) >= 1024]
    s = ExternalSorter(tmp_path, budget=4096, large_value=1024)
    for i in range(0, len(recs), 7):
        chunk = recs[i : i + 7]
        if i % 2:
            s.add_many(chunk)
        else:
            for k, v in chunk:
                s.add(k, v)
        if s.over_budget:
            s.spill()
    assert s.spills > 3
    assert list(s.merged()) == sorted(recs)
    assert s.side_bytes == sum(map(len, large))
    runs = [p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("run-")]
    assert runs and not any(v in run for v in large for run in runs)
    s.close()
    assert not list(tmp_path.iterdir())


def test_moving_large_values_out_may_write_no_run(tmp_path: Path) -> None:
    """When large values are most of the buffer, a spill moves them and keeps the rest."""
    recs = [(b"k%02d" % (19 - i), bytes([i]) * 2000) for i in range(20)]
    s = ExternalSorter(tmp_path, budget=10_000, large_value=1000)
    parked = 0
    for k, v in recs:
        s.add(k, v)
        if s.over_budget:
            s.spill()
            parked += 1
    assert parked > 1 and s.spills == 0
    assert [p.name for p in tmp_path.iterdir()] == ["side-values"]
    assert list(s.merged()) == sorted(recs)
    s.close()
    assert not list(tmp_path.iterdir())


def test_add_many_is_add_of_each(tmp_path: Path) -> None:
    """Buffering a list counts and spills exactly as adding its records one by one."""
    recs = _mixed_records(200, seed=9)
    one = ExternalSorter(tmp_path / "one", budget=3000, large_value=1024)
    many = ExternalSorter(tmp_path / "many", budget=3000, large_value=1024)
    for i in range(0, len(recs), 5):
        chunk = recs[i : i + 5]
        for k, v in chunk:
            one.add(k, v)
        many.add_many(chunk)
        assert one.over_budget == many.over_budget and one.records == many.records
        if one.over_budget:
            one.spill()
            many.spill()
    assert (one.spills, one.side_bytes) == (many.spills, many.side_bytes)
    assert list(one.merged()) == list(many.merged()) == sorted(recs)
    one.close()
    many.close()


def test_truncated_side_file_is_an_output_error(tmp_path: Path) -> None:
    """A side file shorter than recorded is refused, not framed short."""
    s = ExternalSorter(tmp_path, budget=1, large_value=10)
    s.add(b"a", b"x" * 100)
    s.spill()
    (tmp_path / "side-values").write_bytes(b"x" * 50)
    with pytest.raises(OutputError, match="truncated"):
        list(s.merged())
    s.close()


class _Source:
    """Values by token; counts the reads."""

    def __init__(self, values: dict[bytes, bytes]) -> None:
        self.values = values
        self.reads: list[bytes] = []

    def read(self, token: bytes, length: int) -> bytes:
        self.reads.append(token)
        value = self.values[token]
        assert len(value) == length
        return value


def test_deferred_values_are_read_once_when_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deferred values travel through spills and compaction as tokens (two sources kept
    apart), are each read exactly once, in merge order, and come out as their bytes."""
    monkeypatch.setattr(extsort, "MERGE_FAN_IN", 3)
    recs = _mixed_records(240, seed=13)
    sources = [_Source({}), _Source({})]
    given: list[tuple[bytes, bytes | Deferred]] = []
    for i, (k, v) in enumerate(recs):
        if i % 4 == 1:
            source = sources[i % 8 == 1]
            token = b"t%d" % i
            source.values[token] = v
            given.append((k, Deferred(source, token, len(v))))
        else:
            given.append((k, v))
    s = ExternalSorter(tmp_path, budget=4096, large_value=1024)
    for i in range(0, len(given), 6):
        s.add_many(given[i : i + 6])
        if s.over_budget:
            s.spill()
    assert s.spills > 3
    assert not any(src.reads for src in sources)
    out = list(s.merged())
    assert out == sorted(recs)
    reads = [*sources[0].reads, *sources[1].reads]
    assert sorted(reads) == sorted(t for src in sources for t in src.values)
    s.close()
    assert not list(tmp_path.iterdir())


def test_deferred_values_count_as_their_tokens(tmp_path: Path) -> None:
    """A deferred 1 MiB value costs the budget its token, not its length."""
    source = _Source({b"t": b"x" * (1 << 20)})
    s = ExternalSorter(tmp_path, budget=100_000)
    for i in range(200):
        s.add(b"k%03d" % i, Deferred(source, b"t", 1 << 20))
    assert not s.over_budget
    assert [len(v) for _, v in s.merged()] == [1 << 20] * 200


@pytest.mark.parametrize("budget", [1 << 20, 24 << 20])
def test_merge_buffers_share_half_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """The runs' read buffers of a merge share half the budget (at most 256 KiB each), and
    an in-memory tail over the other half is spilled as the last run first; the order is
    the in-memory sort's, equal keys in insertion order."""
    from elastickv_async._core.scratch import iter_records

    opened: list[int] = []

    def reading(path: Path, *args: Any, buffering: int) -> Any:
        opened.append(buffering)
        return iter_records(path, *args, buffering=buffering)

    monkeypatch.setattr(extsort, "iter_records", reading)
    s = ExternalSorter(tmp_path, budget=budget)
    recs = [(b"k%07d" % (i * 7919 % 30_000), b"%d" % i) for i in range(30_000)]
    runs = 40
    step = len(recs) // runs
    for start in range(0, len(recs), step):
        s.add_many(recs[start : start + step])
        s.spill()
    # Over half the budget, in memory: spilled before the merge.
    tail = (b"k0000000", b"t" * (budget // 2))
    s.add(*tail)
    assert not s.over_budget
    out = list(s.merged())
    assert out == sorted([*recs, tail], key=lambda r: r[0])
    assert s.spills == runs + 1
    each = min(256 << 10, budget // (2 * (runs + 1)))
    assert opened == [each] * (runs + 1)
    assert sum(opened) <= budget // 2


def test_a_small_budget_merges_fewer_runs_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half the budget pays for the merge's read buffers, a page each at least: when that
    cannot give every run one, fewer runs are merged at once (in more rounds), and the
    buffers of the runs read together fit that half."""
    budget = 40_000
    #: The read buffers of the runs open at once, whenever one is opened.
    reads: list[int] = []
    reading = [0]
    most = [0]
    iter_run = ExternalSorter._iter_run

    def counted(self: ExternalSorter, path: Path, buffering: int) -> Any:
        reading[0] += 1
        reads.append(buffering * reading[0])
        most[0] = max(most[0], reading[0])
        try:
            yield from iter_run(self, path, buffering)
        finally:
            reading[0] -= 1

    monkeypatch.setattr(ExternalSorter, "_iter_run", counted)
    recs = _records(2000, seed=11)
    s = ExternalSorter(tmp_path, budget=budget)
    assert s.fan_in == budget // 2 // 4096 == 4
    for k, v in recs:
        s.add(k, v)
        if s.over_budget:
            s.spill()
    assert s.spills > 2 * s.fan_in
    assert list(s.merged()) == sorted(recs)
    assert most[0] <= s.fan_in
    assert max(reads) <= budget // 2
    s.close()


def test_a_spill_leaves_room_for_its_write_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sorter asks to be spilled when its records and the spill's write buffer (a read
    buffer's size at the fan-in) would fill the budget, and spills through that buffer."""
    buffers: list[int] = []
    create = scratch.create_record_file

    def created(path: Path, records: Any, *, buffering: int) -> None:
        buffers.append(buffering)
        create(path, records, buffering=buffering)

    monkeypatch.setattr(extsort, "create_record_file", created)
    budget = 1 << 20
    s = ExternalSorter(tmp_path, budget=budget)
    assert 0 < s.write_buffer <= budget // (2 * s.fan_in)
    filler = budget - s.write_buffer - extsort.ENTRY_OVERHEAD - 2
    s.add(b"k", b"v" * filler)
    assert not s.over_budget
    s.add(b"", b"")
    assert s.over_budget
    s.spill()
    assert buffers == [s.write_buffer]
    s.close()


@pytest.mark.parametrize(
    ("count", "width", "keep"), [(230, 64, 62), (2000, 40, 38), (5, 3, 2), (3, 3, 2), (2, 2, 1)]
)
def test_compaction_groups_rewrite_each_run_once_a_pass(count: int, width: int, keep: int) -> None:
    """Each pass merges consecutive groups of at most ``width`` runs, from the oldest, each run
    once at most, and no more than needed; passes end with at most ``keep`` runs."""
    passes = 0
    while count > keep:
        spans = extsort.compaction_groups(count, width, keep)
        assert spans and spans[0][0] == 0
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert all(2 <= stop - start <= width for start, stop in spans)
        merged = count - sum(stop - start - 1 for start, stop in spans)
        # No more merged than needed: one run fewer in the last group would leave too many.
        assert merged >= keep or spans[-1][1] == count
        count, passes = merged, passes + 1
    assert extsort.compaction_groups(count, width, keep) == []
    assert passes <= 2 if width > 2 else passes == 1


def test_a_long_compaction_rewrites_each_record_a_few_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With many more runs than the fan-in, runs are merged a pass at a time: each record is
    rewritten a logarithmic number of times, not once per group merged."""
    monkeypatch.setattr(extsort, "MERGE_FAN_IN", 3)
    written = [0]
    write_run = ExternalSorter._write_run

    def counted(self: ExternalSorter, path: Path, entries: Any, buffering: int) -> None:
        def each() -> Any:
            for entry in entries:
                written[0] += 1
                yield entry

        write_run(self, path, each(), buffering)

    monkeypatch.setattr(ExternalSorter, "_write_run", counted)
    s = ExternalSorter(tmp_path, budget=1)
    recs = _records(256, seed=4)
    for k, v in recs:
        s.add(k, v)
        s.spill()
    written[0] = 0
    assert list(s.merged()) == sorted(recs)
    # Pairs merged level by level: at most log2(256) = 8 rewrites of each record.
    assert written[0] <= 8 * len(recs)
    s.close()
