"""Framing the sorted records into the output stream."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import anyio.to_thread
import pytest
from support import raises_code

from elastickv_async._core.encode.output import (
    HANDOFF_DEPTH,
    FrameWriter,
    SnapshotStream,
    hash_beside,
)
from elastickv_async._core.errors import DumpTreeError

pytestmark = pytest.mark.anyio


async def test_exact_bytes_for_one_entry() -> None:
    """Header, then keyLen/key/valLen/value; bytes written out by hand (no footer)."""
    sink = io.BytesIO()
    key = b"k" + bytes.fromhex("fefdfcfbfaf9f8f7")
    stream = SnapshotStream(sink, iter([(key, b"v")]), 0x0102030405060708)
    await stream.write()
    expected = (
        b"EKVPBBL1"
        + bytes.fromhex("0807060504030201")
        + bytes.fromhex("0900000000000000")
        + b"k"
        + bytes.fromhex("fefdfcfbfaf9f8f7")
        + bytes.fromhex("0a00000000000000")
        + b"\x00"
        + b"\x00" * 8
        + b"v"
    )
    assert sink.getvalue() == expected
    assert stream.bytes_written == len(expected) and stream.entries == 1
    assert stream.sha256 == hashlib.sha256(expected).hexdigest()


async def test_header_only_stream() -> None:
    """No records: just the 16-byte header (the golden enc_empty .fsm)."""
    sink = io.BytesIO()
    stream = SnapshotStream(sink, iter([]), 1234)
    await stream.write()
    assert sink.getvalue() == b"EKVPBBL1\xd2\x04" + bytes(6)
    assert stream.sha256 == "ec7730b5cbdb0e484d33ce411b85ce55936252184b7ff93801fa919775d3bbcc"


async def test_slices_produce_the_same_bytes_and_hash() -> None:
    """Writing in many small slices, each hashed while the next is written, gives the same
    stream and hash as one pass."""
    recs = [(bytes([i]) + b"\xff" * 8, bytes([i]) * 700_000) for i in range(6)]
    whole, sliced = io.BytesIO(), io.BytesIO()
    one = SnapshotStream(whole, iter(recs), 9)
    await one.write(slice_bytes=1 << 30)
    stream = SnapshotStream(sliced, iter(recs), 9)
    await stream.write(slice_bytes=1)
    assert sliced.getvalue() == whole.getvalue()
    assert stream.sha256 == one.sha256 == hashlib.sha256(whole.getvalue()).hexdigest()


async def test_adjacent_duplicate_keys_are_refused() -> None:
    """Two equal encoded keys are a data error naming the user key (timestamp suffix cut)."""
    key = b"dup" + b"\xff" * 8
    stream = SnapshotStream(io.BytesIO(), iter([(key, b"1"), (key, b"2")]), 0)
    with raises_code(DumpTreeError, "ErrEncodeDuplicateKey", match="b'dup'") as info:
        await stream.write()
    assert info.value.exit_code == 2


def _framed(recs: list[tuple[bytes, bytes]], ts: int) -> bytes:
    """The expected stream, built from the format's definition."""
    out = b"EKVPBBL1" + ts.to_bytes(8, "little")
    for key, body in recs:
        out += len(key).to_bytes(8, "little") + key
        out += (len(body) + 9).to_bytes(8, "little") + bytes(9) + body
    return out


async def test_small_and_large_values_mixed_in_slices() -> None:
    """Small records (gathered into blocks), values on both sides of the large-value size and
    block boundaries give the defined bytes and hash, whatever the slice budget."""
    recs = []
    for i in range(3000):
        size = (256 << 10) - 1 + i % 3 if i % 1000 == 7 else (1 << 20) + 5 if i == 1500 else i % 97
        recs.append((b"k%06d" % i + b"\xff" * 8, bytes([i % 251]) * size))
    expected = _framed(recs, 77)
    for budget in (1, 4096, 1 << 20, 16 << 20):
        sink = io.BytesIO()
        stream = SnapshotStream(sink, iter(recs), 77)
        await stream.write(slice_bytes=budget)
        assert sink.getvalue() == expected
        assert stream.entries == len(recs)
        assert stream.bytes_written == len(expected)
        assert stream.sha256 == hashlib.sha256(expected).hexdigest()


def test_frame_writer_add_and_slices_interleave() -> None:
    """Records pushed one at a time (the cluster encoder) and in slices share one stream."""
    recs = [(b"k%03d" % i + b"\xff" * 8, b"v" * i) for i in range(50)]
    sink = io.BytesIO()
    writer = FrameWriter(sink, 5)
    for key, body in recs[:20]:
        writer.add(key, body)
    assert writer.add_some(iter(recs[20:]), 16 << 20)
    assert sink.getvalue() == _framed(recs, 5)
    assert writer.position == writer.bytes_written == len(sink.getvalue())
    with raises_code(DumpTreeError, "ErrEncodeDuplicateKey", match="b'k049'"):
        writer.add(*recs[-1])


class _Writes(io.BytesIO):
    """A sink that remembers the size of every write."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def write(self, data: Any, /) -> int:
        self.sizes.append(len(data))
        return super().write(data)


@pytest.mark.parametrize("block_size", [4096, 64 << 10, 1 << 20])
def test_frame_writer_gathers_small_records_into_blocks_of_its_size(block_size: int) -> None:
    """Whatever the block size, the stream is the same; small records go out in writes of
    about the block (one record past it at most), a value of a quarter block or more on its
    own."""
    recs = [(b"k%05d" % i + b"\xff" * 8, bytes([i % 251]) * (i % 700)) for i in range(3000)]
    recs[1234] = (recs[1234][0], b"L" * (block_size // 4))
    sink = _Writes()
    writer = FrameWriter(sink, 9, block_size=block_size)
    for key, body in recs[:1000]:
        writer.add(key, body)
    assert writer.add_some(iter(recs[1000:]), 1 << 30)
    assert sink.getvalue() == _framed(recs, 9)
    assert block_size // 4 in sink.sizes
    assert max(size for size in sink.sizes if size != block_size // 4) < block_size + 1024
    assert len(sink.sizes) >= len(sink.getvalue()) // (block_size + 1024)


async def test_duplicate_after_a_slice_boundary_is_refused() -> None:
    """The previous key survives the end of a slice."""
    key = b"dup" + b"\xff" * 8
    stream = SnapshotStream(io.BytesIO(), iter([(key, b"1" * 100), (key, b"2")]), 0)
    with raises_code(DumpTreeError, "ErrEncodeDuplicateKey", match="b'dup'"):
        await stream.write(slice_bytes=1)
    assert stream.entries == 1


def test_deferred_hashing_hands_back_every_written_block() -> None:
    """With deferred hashing, every written byte is handed back once, in order, and nothing is
    hashed until it is; the hash is then the stream's."""
    recs = [(b"k%03d" % i + b"\xff" * 8, bytes([i]) * (i * 5000)) for i in range(80)]
    sink = io.BytesIO()
    writer = FrameWriter(sink, 3, defer_hashing=True)
    taken: list[bytes] = []
    for i in range(0, len(recs), 10):
        writer.add_some(iter(recs[i : i + 10]), 1 << 30)
        taken += writer.take_written()
        assert b"".join(taken) == sink.getvalue()
    assert writer.take_written() == []
    assert writer.sha256 == hashlib.sha256(b"").hexdigest()
    writer.hash_blocks(taken)
    assert sink.getvalue() == _framed(recs, 3)
    assert writer.sha256 == hashlib.sha256(sink.getvalue()).hexdigest()


async def test_written_slices_are_handed_to_writeback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each written slice of a real file is advised to the kernel once, in order, covering the
    stream; the file holds the defined bytes. An in-memory sink gets no advice."""
    advised: list[tuple[int, int, int]] = []

    def record(fd: int, offset: int, length: int, advice: int) -> None:
        advised.append((offset, length, advice))

    monkeypatch.setattr(os, "posix_fadvise", record, raising=False)
    monkeypatch.setattr(os, "POSIX_FADV_DONTNEED", 4, raising=False)
    recs = [(b"k%04d" % i + b"\xff" * 8, bytes([i % 251]) * (i * 97 % 300_000)) for i in range(300)]
    fh = await anyio.to_thread.run_sync(lambda: (tmp_path / "out.fsm").open("wb"))
    try:
        stream = SnapshotStream(fh, iter(recs), 7)
        await stream.write(slice_bytes=1 << 20)
    finally:
        fh.close()
    assert (tmp_path / "out.fsm").read_bytes() == _framed(recs, 7)
    assert len(advised) > 3 and {advice for *_, advice in advised} == {4}
    ends = [offset + length for offset, length, _ in advised]
    assert [offset for offset, _, _ in advised] == [0, *ends[:-1]]
    assert ends[-1] == stream.bytes_written
    advised.clear()
    await SnapshotStream(io.BytesIO(), iter(recs), 7).write(slice_bytes=1 << 20)
    assert advised == []


def test_hash_beside_outside_a_stream_queues_nothing() -> None:
    assert hash_beside(lambda: None) is False


async def test_jobs_hashed_beside_run_in_order_beside_the_stream_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job queued while a slice is written runs after that slice, in the order queued, in a
    thread of its own: neither the writing one nor the one hashing the stream (so the two
    hashes take two cores); the output and its hash are unchanged."""
    ran: list[tuple[int, int]] = []
    readers: set[int] = set()
    stream_hashers: set[int] = set()
    recs = [(b"k%03d" % i + b"\xff" * 8, bytes([i]) * 100_000) for i in range(40)]
    hash_blocks = FrameWriter.hash_blocks

    def hashing(writer: FrameWriter, blocks: list[bytes]) -> None:
        stream_hashers.add(threading.get_ident())
        hash_blocks(writer, blocks)

    monkeypatch.setattr(FrameWriter, "hash_blocks", hashing)

    def job(i: int) -> None:
        ran.append((i, threading.get_ident()))

    def records() -> Iterator[tuple[bytes, bytes]]:
        for i, rec in enumerate(recs):
            readers.add(threading.get_ident())
            assert hash_beside(functools.partial(job, i))
            yield rec

    sink = io.BytesIO()
    stream = SnapshotStream(sink, records(), 5)
    await stream.write(slice_bytes=300_000)
    assert [i for i, _ in ran] == list(range(40))
    beside = {ident for _, ident in ran}
    assert len(readers) == len(stream_hashers) == len(beside) == 1
    assert len(readers | stream_hashers | beside) == 3
    assert stream.sha256 == hashlib.sha256(sink.getvalue()).hexdigest()


async def test_a_failing_job_beside_ends_the_write() -> None:
    """An error raised by a job queued with :func:`hash_beside` ends the write with that
    error (no hang: the writing thread stops at the next hand-over)."""
    recs = [(b"k%03d" % i + b"\xff" * 8, bytes([i]) * 100_000) for i in range(40)]

    def fail() -> None:
        raise DumpTreeError("body changed", code="ErrEncodeAdapterData")

    def records() -> Iterator[tuple[bytes, bytes]]:
        for rec in recs:
            assert hash_beside(fail)
            yield rec

    with raises_code(DumpTreeError, "ErrEncodeAdapterData", match="body changed"):
        await SnapshotStream(io.BytesIO(), records(), 5).write(slice_bytes=1)


async def test_the_writer_runs_ahead_of_a_late_hasher(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the stream's hashing is held up on the first slice, the writing thread goes on
    until HANDOFF_DEPTH slices wait behind it (and it writes the next): a hashing thread slow
    to wake does not stall it at every slice. The stream and its hash are unchanged."""
    recs = [(b"k%03d" % i + b"\xff" * 8, bytes([i]) * 100_000) for i in range(12)]
    ahead = HANDOFF_DEPTH + 2  # the slice being hashed, those waiting, the one being written
    produced = 0
    reached = threading.Event()
    hash_blocks = FrameWriter.hash_blocks

    def held_up(writer: FrameWriter, blocks: list[bytes]) -> None:
        # A deadlock guard, not a timing: the writer gets there at once or never.
        assert reached.wait(60), f"the writer stopped after {produced} records"
        hash_blocks(writer, blocks)

    def records() -> Iterator[tuple[bytes, bytes]]:
        nonlocal produced
        for rec in recs:
            produced += 1
            if produced == ahead:
                reached.set()
            yield rec

    monkeypatch.setattr(FrameWriter, "hash_blocks", held_up)
    sink = io.BytesIO()
    stream = SnapshotStream(sink, records(), 5)
    await stream.write(slice_bytes=1)
    assert sink.getvalue() == _framed(recs, 5)
    assert stream.sha256 == hashlib.sha256(sink.getvalue()).hexdigest()
