"""Scratch record files: one framing, chunked and sectioned reads, the stable k-way merge."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from elastickv_async._core.errors import OutputError
from elastickv_async._core.scratch import (
    Record,
    RecordFiles,
    RecordReader,
    create_record_file,
    iter_records,
    merge,
    read_records,
    write_records,
)


def test_framing_is_little_endian_lengths_then_bytes() -> None:
    """A record is len(key) as 8 bytes little-endian, the key, then the same for the value."""
    out = io.BytesIO()
    write_records(out, [(b"k", b"vv"), (b"", b"")])
    assert out.getvalue() == (
        (1).to_bytes(8, "little") + b"k" + (2).to_bytes(8, "little") + b"vv" + bytes(16)
    )
    out.seek(0)
    assert list(read_records(out)) == [(b"k", b"vv"), (b"", b"")]


def test_sections_read_only_their_records(tmp_path: Path) -> None:
    """A section (offset, length) yields exactly the records written there."""
    path = tmp_path / "run"
    with open(path, "wb") as fh:
        write_records(fh, [(b"a", b"1")])
        start = fh.tell()
        write_records(fh, [(b"b", b"2"), (b"c", b"3")])
        length = fh.tell() - start
        write_records(fh, [(b"d", b"4")])
    assert list(iter_records(path, start, length)) == [(b"b", b"2"), (b"c", b"3")]
    reader = RecordReader(path, start, length)
    assert reader.next_chunk(1) == [(b"b", b"2")]
    assert reader.next_chunk(1 << 20) == [(b"c", b"3")]
    assert reader.next_chunk(1 << 20) == []


@pytest.mark.parametrize("cut", [1, 9, 17, 20])
def test_a_torn_file_is_an_output_error(tmp_path: Path, cut: int) -> None:
    """A record cut anywhere (length, key, value) is refused, whole file or section."""
    path = tmp_path / "run"
    create_record_file(path, [(b"key", b"value")])
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    with pytest.raises(OutputError, match="truncated"):
        list(iter_records(path))
    with pytest.raises(OutputError, match="truncated"):
        list(iter_records(path, 0, len(data)))


def test_create_never_overwrites(tmp_path: Path) -> None:
    """A record file is created, never written over an existing file."""
    path = tmp_path / "run"
    path.write_bytes(b"")
    with pytest.raises(FileExistsError):
        create_record_file(path, [])


def test_merge_is_sorted_and_stable() -> None:
    """Equal keys keep the order of their streams, then their order within a stream."""
    a: list[Record] = [(b"a", b"a1"), (b"b", b"a2"), (b"b", b"a3")]
    b: list[Record] = [(b"a", b"b1"), (b"b", b"b2"), (b"c", b"b3")]
    assert list(merge([a, b])) == [
        (b"a", b"a1"),
        (b"a", b"b1"),
        (b"b", b"a2"),
        (b"b", b"a3"),
        (b"b", b"b2"),
        (b"c", b"b3"),
    ]


def test_record_files_per_key_in_order_and_in_chunks(tmp_path: Path) -> None:
    """Records come back per key in append order, in chunks of about the asked size."""
    files: RecordFiles[tuple[str, int]] = RecordFiles(tmp_path / "s")
    expected: dict[tuple[str, int], list[Record]] = {}
    for i in range(60):
        key = (f"t{i % 5}", i % 3)
        record = (b"", b"r%d" % i + b"\x00" * (i % 4))
        files.append([(key, record), (("other", 0), (b"", b""))])
        expected.setdefault(key, []).append(record)
    assert files.counts == {k: len(v) for k, v in expected.items()} | {("other", 0): 60}
    assert files.reader(("absent", 0)) is None
    for key, records in expected.items():
        reader = files.reader(key)
        assert reader is not None
        got: list[Record] = []
        while chunk := reader.next_chunk(5):
            assert len(chunk) <= 2  # about 5 bytes per chunk, at least one record
            got.extend(chunk)
        assert got == records
        assert reader.next_chunk(5) == []
