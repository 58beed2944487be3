"""Scratch record files: append per key, read back in order and in bounded chunks."""

from __future__ import annotations

from pathlib import Path

import pytest

from elastickv_async._adapters.dynamodb.spill import SpillFiles
from elastickv_async._core.errors import OutputError


def test_records_come_back_per_key_in_order(tmp_path: Path) -> None:
    spill: SpillFiles[tuple[str, int]] = SpillFiles(tmp_path / "s")
    expected: dict[tuple[str, int], list[bytes]] = {}
    for i in range(60):
        key = (f"t{i % 5}", i % 3)
        record = b"r%d" % i + b"\x00" * (i % 4)
        spill.append([(key, record), (("other", 0), b"")])
        expected.setdefault(key, []).append(record)
    assert spill.counts == {k: len(v) for k, v in expected.items()} | {("other", 0): 60}
    assert spill.reader(("absent", 0)) is None
    for key, records in expected.items():
        reader = spill.reader(key)
        assert reader is not None
        got: list[bytes] = []
        while chunk := reader.next_chunk(5):
            assert len(chunk) <= 2  # about 5 bytes per chunk, at least one record
            got.extend(chunk)
        assert got == records
        assert reader.next_chunk(5) == []


def test_empty_records_survive(tmp_path: Path) -> None:
    spill: SpillFiles[str] = SpillFiles(tmp_path)
    spill.append([("k", b""), ("k", b"x"), ("k", b"")])
    reader = spill.reader("k")
    assert reader is not None
    assert reader.next_chunk(1 << 20) == [b"", b"x", b""]


def test_torn_file_is_an_output_error(tmp_path: Path) -> None:
    spill: SpillFiles[str] = SpillFiles(tmp_path)
    spill.append([("k", b"abcdef")])
    path = next(tmp_path.glob("*.rec"))
    path.write_bytes(path.read_bytes()[:-2])
    reader = spill.reader("k")
    assert reader is not None
    with pytest.raises(OutputError):
        reader.next_chunk(1 << 20)
