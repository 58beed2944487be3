"""Running adapter encoders concurrently into the sorter."""

from __future__ import annotations

import mmap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
import structlog
from support import raises_code

from elastickv_async._adapters.base import AdapterSpec, EncodeAdapter, EncodeContext
from elastickv_async._core.encode.collect import collect_records
from elastickv_async._core.errors import DumpTreeError
from elastickv_async._core.extsort import ExternalSorter
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


def _spec(name: str, encoder: EncodeAdapter) -> AdapterSpec:
    return AdapterSpec(name, (), (), decoder=lambda c: pytest.fail("no"), encoder=lambda c: encoder)


def _context(tmp_path: Path) -> Callable[[AdapterSpec], EncodeContext]:
    def make(spec: AdapterSpec) -> EncodeContext:
        return EncodeContext(tmp_path, structlog.get_logger(), Report(), tmp_path)

    return make


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
