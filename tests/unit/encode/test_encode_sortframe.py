"""The encoder's framed sort: the stream of the general sort and framing, in bulk."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from support import raises_code

from elastickv_async._core import extsort, sortedruns
from elastickv_async._core.encode import sortframe
from elastickv_async._core.encode.output import FramedBlocks, FrameWriter, SnapshotStream
from elastickv_async._core.encode.sortframe import FramedSorter
from elastickv_async._core.errors import DumpTreeError, OutputError
from elastickv_async._core.extsort import ENTRY_OVERHEAD, Deferred
from elastickv_async._core.sortedruns import Entry

pytestmark = pytest.mark.anyio

LARGE = 4096
SUFFIX = b"\xff" * 8


class _Source:
    """Deferred values by token."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}

    def read(self, token: bytes, length: int) -> bytes:
        value = self.values[token]
        assert len(value) == length
        return value


def _records(seed: int, count: int, source: _Source) -> list[tuple[bytes, bytes | Deferred]]:
    """Distinct keys of many lengths (prefixes of each other too), in random order, with
    empty, small, large and deferred values."""
    rng = random.Random(seed)
    keys = {rng.randbytes(rng.randrange(0, 12)) for _ in range(count)}
    keys |= {b"p" * n for n in range(6)}
    records: list[tuple[bytes, bytes | Deferred]] = []
    for i, key in enumerate(sorted(keys)):
        kind = i % 7
        if kind == 3:
            records.append((key, rng.randbytes(LARGE + rng.randrange(0, 3000))))
        elif kind == 5:
            token = b"t%d" % i
            source.values[token] = rng.randbytes(rng.randrange(0, 9000))
            records.append((key, Deferred(source, token, len(source.values[token]))))
        else:
            records.append((key, rng.randbytes(rng.randrange(0, 300))))
    rng.shuffle(records)
    return records


def _expected(
    records: list[tuple[bytes, bytes | Deferred]], source: _Source, suffix: bytes = SUFFIX
) -> bytes:
    """The stream by the format's definition: header, then each entry sorted by its
    encoded (stamped) key."""
    out = b"EKVPBBL1" + (7).to_bytes(8, "little")
    for key, value in sorted(records, key=lambda r: r[0] + suffix):
        body = source.values[value.token] if isinstance(value, Deferred) else value
        stamped = key + suffix
        out += len(stamped).to_bytes(8, "little") + stamped
        out += (len(body) + 9).to_bytes(8, "little") + bytes(9) + body
    return out


def _fill(sorter: FramedSorter, records: list[tuple[bytes, bytes | Deferred]], batch: int) -> None:
    for start in range(0, len(records), batch):
        sorter.add_many(records[start : start + batch], SUFFIX)
        if sorter.over_budget:
            sorter.spill()


def _written(sorter: FramedSorter) -> bytes:
    sink = io.BytesIO()
    writer = FrameWriter(sink, 7)
    for block, entries in sorter.blocks():
        writer.add_framed(block, entries)
    writer.finish()
    return sink.getvalue()


@pytest.mark.parametrize(("budget", "chunk"), [(1 << 30, 1 << 20), (20_000, 512), (1, 1)])
def test_blocks_are_the_defined_stream_in_memory_or_spilled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int, chunk: int
) -> None:
    """In memory, spilled in runs of many chunks, or one record per run and chunk (merged
    in several passes of a small fan-in): the framed blocks are the stream the format
    defines, deferred and large values included, and the records and spills are counted."""
    monkeypatch.setattr(sortframe, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(extsort, "MERGE_FAN_IN", 4)
    source = _Source()
    records = _records(1, 400, source)
    sorter = FramedSorter(tmp_path / "sort", budget, large_value=LARGE)
    _fill(sorter, records, 16)
    assert sorter.records == len(records)
    assert (sorter.spills > 0) == (budget < 1 << 30)
    assert sorter.defers_reads  # some values are read only when written
    assert _written(sorter) == _expected(records, source)
    sorter.close()
    assert not any(p.is_file() for p in (tmp_path / "sort").rglob("*"))


@pytest.mark.parametrize("budget", [1 << 30, 20_000, 1])
def test_long_values_are_written_as_read_not_copied_into_their_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """In memory or spilled, a deferred or large value of APART_BYTES or more is a block of
    its own (no records in it), a deferred one the very bytes its source read, not a copy.
    The stream and the records counted are those of every value copied into its frame."""
    monkeypatch.setattr(sortframe, "CHUNK_BYTES", 2048)
    source = _Source()
    records = _records(3, 400, source)
    resolved = [
        (key + SUFFIX, source.values[v.token] if isinstance(v, Deferred) else v)
        for key, v in records
    ]
    long_values = [v for _, v in sorted(resolved) if len(v) >= 1000]
    deferred = {id(source.values[v.token]) for _, v in records if isinstance(v, Deferred)}
    streams = []
    for apart in (1 << 40, 1000):
        monkeypatch.setattr(sortframe, "APART_BYTES", apart)
        sorter = FramedSorter(tmp_path / f"sort{apart}", budget, large_value=LARGE)
        _fill(sorter, records, 16)
        blocks = list(sorter.blocks())
        sorter.close()
        alone = [block for block, entries in blocks if entries == 0]
        assert alone == (long_values if apart == 1000 else [])
        assert len(deferred & {id(block) for block in alone}) == (
            len([v for v in long_values if id(v) in deferred]) if apart == 1000 else 0
        )
        assert sum(entries for _, entries in blocks) == len(records)
        streams.append(b"EKVPBBL1" + (7).to_bytes(8, "little") + b"".join(b for b, _ in blocks))
    assert streams[0] == streams[1] == _expected(records, source)
    assert len(long_values) > 20


@pytest.mark.parametrize("where", ["batch", "runs", "general", "plain-and-general"])
def test_a_duplicate_key_is_refused_wherever_its_twin_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Two equal keys are refused whether they meet in one batch, in two spilled runs (at
    a round's edge or inside one), among large values, or one large and one small."""
    monkeypatch.setattr(sortframe, "CHUNK_BYTES", 64)
    records: list[tuple[bytes, bytes | Deferred]] = [(b"k%04d" % i, b"v") for i in range(300)]
    twin = {
        "batch": (b"k0150", b"w"),
        "runs": (b"k0150", b"w"),
        "general": (b"k0150", b"L" * LARGE),
        "plain-and-general": (b"k0150", b"L" * LARGE),
    }[where]
    if where == "general":
        records[150] = (b"k0150", b"M" * LARGE)
    sorter = FramedSorter(tmp_path / "sort", 1 if where == "runs" else 1 << 30, large_value=LARGE)
    if where == "batch":
        sorter.add_many([*records, twin], SUFFIX)
    else:
        _fill(sorter, [*records, twin], 7)
    with raises_code(DumpTreeError, "ErrEncodeDuplicateKey", match="b'k0150'"):
        _written(sorter)
    sorter.close()


def test_a_truncated_run_is_an_output_error(tmp_path: Path) -> None:
    """A run cut short (the run's own scratch file) is reported, not read as fewer records."""
    sorter = FramedSorter(tmp_path / "sort", 1, large_value=LARGE)
    _fill(sorter, [(b"k%d" % i, b"v" * 50) for i in range(40)], 10)
    assert not sorter.defers_reads
    run = sorted((tmp_path / "sort").glob("framed-*"))[0]
    run.write_bytes(run.read_bytes()[:-3])
    with pytest.raises(OutputError, match="truncated"):
        _written(sorter)
    sorter.close()


async def test_a_stream_of_framed_blocks_is_written_and_hashed_like_records(
    tmp_path: Path,
) -> None:
    """A SnapshotStream of FramedBlocks gives the bytes, counts and hash of the same records
    framed one by one, whatever the slice size."""
    source = _Source()
    records = _records(2, 300, source)
    expected = _expected(records, source)
    for slice_bytes in (1, 5000, 1 << 30):
        sorter = FramedSorter(tmp_path / f"sort{slice_bytes}", 30_000, large_value=LARGE)
        await anyio.to_thread.run_sync(_fill, sorter, records, 32)
        sink = io.BytesIO()
        stream = SnapshotStream(sink, FramedBlocks(sorter.blocks()), 7)
        await stream.write(slice_bytes=slice_bytes)
        await anyio.to_thread.run_sync(sorter.close)
        plain = sorted(
            (k + SUFFIX, source.values[v.token] if isinstance(v, Deferred) else v)
            for k, v in records
        )
        one_by_one = SnapshotStream(io.BytesIO(), iter(plain), 7)
        await one_by_one.write()
        assert sink.getvalue() == expected
        assert stream.entries == len(records) == one_by_one.entries
        assert stream.bytes_written == len(expected)
        assert stream.sha256 == one_by_one.sha256


def test_the_merge_reads_chunks_and_runs_within_a_quarter_of_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runs' chunks get a quarter of the sorter's budget: every run, compacted ones
    too, is written in chunks of the size that quarter gives (a chunk ends at the entry
    that crosses it), no merge reads more runs at once than the fan-in, and the fan-in's
    chunks, each counted twice (held, and joined into the round), fit the quarter."""
    monkeypatch.setattr(extsort, "MERGE_FAN_IN", 4)
    budget = 256 << 10
    chunks: list[int] = []
    write_run = sortedruns.write_run

    def counted_write(path: Path, written: Iterator[list[Entry]], **kwargs: Any) -> None:
        def chunks_of() -> Iterator[list[Entry]]:
            for chunk in written:
                costs = [len(key) + len(frame) + ENTRY_OVERHEAD for key, frame in chunk]
                chunks.append(sum(costs) - costs[-1])
                yield chunk

        write_run(path, chunks_of(), **kwargs)

    reading = [0]
    most = [0]
    read_run = sortedruns.read_run

    def counted_read(path: Path) -> Iterator[list[Entry]]:
        reading[0] += 1
        most[0] = max(most[0], reading[0])
        try:
            yield from read_run(path)
        finally:
            reading[0] -= 1

    monkeypatch.setattr(sortframe, "write_run", counted_write)
    monkeypatch.setattr(sortframe, "read_run", counted_read)
    rng = random.Random(3)
    records: list[tuple[bytes, bytes | Deferred]] = [
        (b"k%06d" % i, rng.randbytes(rng.randrange(20, 400))) for i in range(4000)
    ]
    rng.shuffle(records)
    source = _Source()
    sorter = FramedSorter(tmp_path / "sort", budget, large_value=LARGE)
    _fill(sorter, records, 50)
    assert (sorter.fan_in, sorter.chunk_bytes) == (4, 8 << 10)
    assert 2 * sorter.fan_in * sorter.chunk_bytes <= budget // 4
    spilled = sorter.spills
    assert spilled > sorter.fan_in
    assert _written(sorter) == _expected(records, source)
    assert len(chunks) > spilled * 4  # compacted runs were written too
    assert max(chunks) < sorter.chunk_bytes
    assert most[0] <= sorter.fan_in
    sorter.close()


def test_beside_runs_the_tail_keeps_half_the_budget(tmp_path: Path) -> None:
    """At the merge, an in-memory tail over half the budget is spilled as the last run when
    runs wait beside it (their chunks take the rest), and kept when it is alone."""
    budget = 64 << 10
    record_cost = 2 * 6 + 8 + 8 + 9 + 100 + ENTRY_OVERHEAD  # key twice, lengths, header, value
    over_half = budget // 2 // record_cost + 2
    for spilled_first in (True, False):
        sorter = FramedSorter(tmp_path / f"sort-{spilled_first}", budget, large_value=LARGE)
        records: list[tuple[bytes, bytes | Deferred]] = []
        if spilled_first:
            while not sorter.over_budget:
                records.append((b"a%05d" % len(records), b"v" * 100))
                sorter.add_many(records[-1:])
            sorter.spill()
        tail = [(b"b%05d" % i, b"v" * 100) for i in range(over_half)]
        sorter.add_many(tail)
        assert not sorter.over_budget
        spills = sorter.spills
        assert (
            b"".join(block for block, _ in sorter.blocks())
            == _expected([*records, *tail], _Source(), suffix=b"")[16:]
        )
        assert sorter.spills == spills + spilled_first
        sorter.close()


def test_the_general_sorter_gets_a_quarter_of_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large and deferred values go to a general sorter of a quarter of the budget, the share
    its merge holds beside the frames'."""
    budgets: list[int] = []

    class General(extsort.ExternalSorter):
        def __init__(self, spill_dir: Path, budget: int, **kwargs: Any) -> None:
            budgets.append(budget)
            super().__init__(spill_dir, budget, **kwargs)

    monkeypatch.setattr(sortframe, "ExternalSorter", General)
    sorter = FramedSorter(tmp_path / "sort", 100_000, large_value=LARGE)
    sorter.add_many([(b"k", b"L" * LARGE)], SUFFIX)
    assert budgets == [25_000]
    sorter.close()
