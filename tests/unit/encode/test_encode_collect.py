"""Running adapter encoders concurrently into the sorter."""

from __future__ import annotations

import mmap
import os
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pytest
import structlog
from encode_support import fake_specs, hand_built_fsm, make_tree, use_specs
from support import raises_code

from elastickv_async._adapters.base import (
    AdapterSpec,
    BatchEncodeAdapter,
    EncodeAdapter,
    EncodeContext,
    SendBatch,
)
from elastickv_async._core.encode import api
from elastickv_async._core.encode.api import encode_snapshot
from elastickv_async._core.encode.collect import BATCH_RECORDS, LARGE_VALUE, collect_records
from elastickv_async._core.encode.sortframe import FramedSorter
from elastickv_async._core.errors import DumpTreeError, UnsafeDumpEntry
from elastickv_async._core.extsort import ExternalSorter
from elastickv_async._core.options import EncodeOptions
from elastickv_async._core.report import Report

pytestmark = pytest.mark.anyio


class _Endless:
    """Yields forever; records whether its generator was closed."""

    closed = False

    async def records(self) -> AsyncIterator[tuple[bytes, bytes]]:
        i = 0
        try:
            while True:
                await anyio.lowlevel.checkpoint()
                yield b"e%d" % i, b""
                i += 1
        finally:
            _Endless.closed = True


class _Failing:
    async def records(self) -> AsyncIterator[tuple[bytes, bytes]]:
        for i in range(3):
            await anyio.sleep(0.01)
            yield b"f%d" % i, b""
        raise DumpTreeError("broken tree")


class _Fixed:
    def __init__(self, records: list[tuple[bytes, bytes]]) -> None:
        self._records = records

    async def records(self) -> AsyncIterator[tuple[bytes, bytes]]:
        for record in self._records:
            await anyio.lowlevel.checkpoint()
            yield record


def _spec(name: str, encoder: EncodeAdapter | BatchEncodeAdapter) -> AdapterSpec:
    return AdapterSpec(name, (), (), decoder=lambda c: pytest.fail("no"), encoder=lambda c: encoder)


def _context(tmp_path: Path) -> Callable[[AdapterSpec], EncodeContext]:
    def make(spec: AdapterSpec) -> EncodeContext:
        return EncodeContext(tmp_path, structlog.get_logger(), Report(), tmp_path)

    return make


async def test_records_are_gathered_in_lists_of_batch_bytes(tmp_path: Path) -> None:
    """An encoder that yields records one by one has them sent in lists of ``batch_bytes``
    (the run's budget gives it), a list closing at the value that crosses it."""
    sizes: list[int] = []

    class Sorter(ExternalSorter):
        def add_many(self, records: Any) -> None:
            sizes.append(sum(len(value) for _, value in records))
            super().add_many(records)

    spec = _spec("redis", _Fixed([(b"r%04d" % i, b"x" * 100) for i in range(64)]))
    await collect_records([spec], _context(tmp_path), Sorter(tmp_path), b"", batch_bytes=1000)
    assert sum(sizes) == 6400
    assert sizes[0] == 1000 and max(sizes) <= 1000 + 100


async def test_all_records_reach_the_sorter_stamped(tmp_path: Path) -> None:
    """Every adapter's records arrive, each key with the timestamp suffix appended."""
    specs = [
        _spec("redis", _Fixed([(b"r%04d" % i, b"x") for i in range(1500)])),
        _spec("sqs", _Fixed([(b"s%04d" % i, b"y" * 10) for i in range(700)])),
    ]
    sorter = ExternalSorter(tmp_path, budget=10_000)
    await collect_records(specs, _context(tmp_path), sorter, b"SUFFIX!!")
    out = await anyio.to_thread.run_sync(lambda: list(sorter.merged()))
    await anyio.to_thread.run_sync(sorter.close)
    assert len(out) == 2200 and sorter.spills > 0
    assert out[0] == (b"r0000SUFFIX!!", b"x") and out[-1] == (b"s0699SUFFIX!!", b"y" * 10)


async def test_one_failure_cancels_and_closes_the_others(tmp_path: Path) -> None:
    """An adapter error surfaces as itself; a still-running adapter's generator is closed."""
    _Endless.closed = False
    specs = [_spec("redis", _Endless()), _spec("s3", _Failing())]
    sorter = ExternalSorter(tmp_path)
    with pytest.raises(DumpTreeError, match="broken tree"):
        await collect_records(specs, _context(tmp_path), sorter, b"")
    assert _Endless.closed


async def test_limit_violation_in_the_consumer(tmp_path: Path) -> None:
    """The size check runs as records arrive and stops every adapter."""
    _Endless.closed = False
    # Untouched anonymous pages: a 256 MiB value without using the memory.
    value = cast(bytes, memoryview(mmap.mmap(-1, (256 << 20) + 35)))
    specs = [_spec("redis", _Endless()), _spec("s3", _Fixed([(b"k", value)]))]
    with raises_code(DumpTreeError, "ErrEncodeValueTooLarge"):
        await collect_records(specs, _context(tmp_path), ExternalSorter(tmp_path), b"")
    assert _Endless.closed


class _Batched:
    """Hands its records over in the given lists; records whether it was stopped."""

    def __init__(self, batches: list[list[tuple[bytes, bytes]]], endless: bool = False) -> None:
        self._batches = batches
        self._endless = endless
        self.closed = False

    async def produce(self, send: SendBatch) -> None:
        try:
            for batch in self._batches:
                await anyio.lowlevel.checkpoint()
                await send(batch)
            while self._endless:
                await anyio.lowlevel.checkpoint()
                await send([(b"e", b"")])
        finally:
            self.closed = True


async def _collected(
    tmp_path: Path, specs: list[AdapterSpec], budget: int, suffix: bytes = b"SUFFIX!!"
) -> tuple[list[tuple[bytes, bytes]], ExternalSorter]:
    sorter = ExternalSorter(tmp_path, budget=budget, large_value=LARGE_VALUE)
    await collect_records(specs, _context(tmp_path), sorter, suffix)
    try:
        return await anyio.to_thread.run_sync(lambda: list(sorter.merged())), sorter
    finally:
        await anyio.to_thread.run_sync(sorter.close)


async def test_batches_and_records_collect_the_same(tmp_path: Path) -> None:
    """An encoder's lists (empty ones included) reach the sorter as its records one by one
    would, large values and spills included."""
    rng = random.Random(3)
    records = [
        (b"k%05d" % rng.randrange(10**5), rng.randbytes(LARGE_VALUE if i % 50 == 0 else i % 90))
        for i in range(1200)
    ]
    cuts = sorted(rng.sample(range(len(records)), 40))
    lists = [records[a:b] for a, b in zip([0, *cuts], [*cuts, len(records)], strict=True)]
    lists.insert(3, [])
    by_batch, sorter = await _collected(
        tmp_path / "b", [_spec("redis", _Batched(lists))], budget=20_000
    )
    assert sorter.spills > 0 and sorter.side_bytes == LARGE_VALUE * 24
    by_record, _ = await _collected(tmp_path / "r", [_spec("redis", _Fixed(records))], 20_000)
    assert by_batch == by_record
    assert by_batch == sorted(((k + b"SUFFIX!!", v) for k, v in records), key=lambda r: r[0])


async def test_a_failure_closes_a_batch_encoder(tmp_path: Path) -> None:
    """Another adapter's error cancels a batch encoder and closes its generator."""
    endless = _Batched([], endless=True)
    specs = [_spec("redis", endless), _spec("s3", _Failing())]
    with pytest.raises(DumpTreeError, match="broken tree"):
        await collect_records(specs, _context(tmp_path), ExternalSorter(tmp_path), b"")
    assert endless.closed


async def test_limit_violation_inside_a_batch(tmp_path: Path) -> None:
    """One over-limit key among fine ones in a list is refused, naming that key."""
    batch = [(b"a", b""), (b"big" + b"k" * (1 << 20), b""), (b"z", b"")]
    specs = [_spec("redis", _Batched([batch]))]
    with raises_code(DumpTreeError, "ErrEncodeKeyTooLarge", match="bigkkk"):
        await collect_records(specs, _context(tmp_path), ExternalSorter(tmp_path), b"")


async def test_large_values_frame_identically_across_spills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run with large values parked in the side file and small ones spilled to runs writes
    the bytes of the hand-built snapshot, and leaves no scratch behind."""
    rng = random.Random(8)
    records = {
        "s3": [(b"s3|%03d" % i, rng.randbytes(LARGE_VALUE + i if i % 2 else i)) for i in range(40)],
        "redis": [(b"r|%05d" % i, rng.randbytes(i % 60)) for i in range(3000)],
    }
    use_specs(monkeypatch, fake_specs(records))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "o.fsm"
    options = EncodeOptions(adapters=("redis", "s3"), scratch_root=scratch)
    result = await encode_snapshot(
        make_tree(tmp_path / "in"), out, options, sort_budget=4 * LARGE_VALUE, force=True
    )
    assert result.report.counters["encode.sort_spills"] > 0
    assert out.read_bytes() == hand_built_fsm(1234, records["redis"] + records["s3"])
    assert list(scratch.iterdir()) == []


async def test_an_object_body_replaced_before_the_write_stops_the_encode_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An S3 body is read only when the snapshot is written; replaced after the walk, it
    fails the encode with a typed data error, leaving no output and nothing beside it."""
    root = make_tree(tmp_path / "in")
    bucket = root / "s3" / "b"
    bucket.mkdir(parents=True)
    (bucket / "_bucket.json").write_text('{"format_version": 1, "name": "b"}')
    size = 3 << 20
    (bucket / "big").write_bytes(b"b" * size)
    (bucket / "big.elastickv-meta.json").write_text(
        f'{{"format_version": 1, "size_bytes": {size}, "etag": "e"}}'
    )

    def replace() -> None:
        (bucket / "big.new").write_bytes(b"B" * size)  # a new inode, then renamed over
        os.replace(bucket / "big.new", bucket / "big")

    async def collect_then_replace(*args: Any, **kwargs: Any) -> None:
        await collect_records(*args, **kwargs)
        await anyio.to_thread.run_sync(replace)

    monkeypatch.setattr(api, "collect_records", collect_then_replace)
    out = tmp_path / "out" / "o.fsm"
    out.parent.mkdir()
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="replaced") as info:
        await encode_snapshot(root, out, EncodeOptions(adapters=("s3",)))
    assert info.value.exit_code == 2
    assert list(out.parent.iterdir()) == []


async def test_a_long_list_is_buffered_in_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An encoder's long list crosses the channel in slices of at most BATCH_RECORDS, so the
    channel holds no more records than with records() gathered into batches."""
    seen: list[int] = []
    add_many = ExternalSorter.add_many

    def counting(self: ExternalSorter, records: Any) -> None:
        seen.append(len(records))
        add_many(self, records)

    monkeypatch.setattr(ExternalSorter, "add_many", counting)
    records = [(b"k%05d" % i, b"v") for i in range(2 * BATCH_RECORDS + 7)]
    out, _ = await _collected(tmp_path, [_spec("redis", _Batched([records]))], budget=1 << 30)
    assert seen == [BATCH_RECORDS, BATCH_RECORDS, 7]
    assert [k for k, _ in out] == [k + b"SUFFIX!!" for k, _ in records]


def _redis_tree(root: Path, strings: int) -> Path:
    """A dump tree of ``strings`` Redis strings and one hash, holding no CHECKSUMS."""
    db = make_tree(root) / "redis" / "db_0"
    (db / "strings").mkdir(parents=True)
    (db / "hashes").mkdir()
    for i in range(strings):
        (db / "strings" / f"k{i:04d}.bin").write_bytes(b"v%d" % i)
    (db / "hashes" / "h.json").write_text('{"format_version": 1, "fields": []}')
    return root


async def test_an_encoder_error_after_records_were_sent_leaves_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad file met by a lane after earlier slices' records reached the sorter: the encode
    fails with that file's typed error (exit 2) and leaves no output, temp or scratch file."""
    from elastickv_async._adapters.redis import encode as redis_encode

    root = _redis_tree(tmp_path / "in", 200)
    (root / "redis/db_0/strings/zz-bad.bin").symlink_to(root / "redis/db_0/strings/k0000.bin")
    monkeypatch.setattr(redis_encode, "SLICE_FILES", 16)
    added: list[int] = []
    add_many = FramedSorter.add_many

    def counting(self: FramedSorter, records: Any, suffix: bytes = b"") -> None:
        added.append(len(records))
        add_many(self, records, suffix)

    monkeypatch.setattr(FramedSorter, "add_many", counting)
    out = tmp_path / "out" / "o.fsm"
    out.parent.mkdir()
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry") as caught:
        await encode_snapshot(root, out, EncodeOptions(adapters=("redis",), workers=1))
    assert caught.value.exit_code == 2
    assert caught.value.path == "redis/db_0/strings/zz-bad.bin"
    assert sum(added) >= 100  # the earlier slices' records had reached the sorter
    assert list(out.parent.iterdir()) == []


async def test_a_cancelled_encode_leaves_no_temp_or_scratch_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while the lanes build and the core sorts, the encode leaves nothing beside
    the output: no temp file, work directory or lock."""
    from elastickv_async._adapters.redis import encode as redis_encode
    from elastickv_async._adapters.redis.slices import Built, Slice, encode_slice

    root = _redis_tree(tmp_path / "in", 200)
    monkeypatch.setattr(redis_encode, "SLICE_FILES", 16)
    scope = anyio.CancelScope()
    built: list[int] = []

    def cancelling(job: Slice) -> Built:
        result = encode_slice(job)
        built.append(len(job.names))
        if len(built) == 5:
            anyio.from_thread.run_sync(scope.cancel)
        return result

    monkeypatch.setattr(redis_encode, "encode_slice", cancelling)
    out = tmp_path / "out" / "o.fsm"
    out.parent.mkdir()
    with scope:
        await encode_snapshot(root, out, EncodeOptions(adapters=("redis",), workers=0))
    assert scope.cancelled_caught
    assert list(out.parent.iterdir()) == []
