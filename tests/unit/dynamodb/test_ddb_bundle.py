"""The jsonl bundle writer: external sort, last-wins per key, size-bounded parts."""

from __future__ import annotations

from pathlib import Path

from elastickv_async._adapters.dynamodb.bundle import JsonlTable, part_name


def _read(parts: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in parts]


def test_part_names() -> None:
    assert part_name(0) == "data-00000.jsonl"
    assert part_name(123456) == "data-123456.jsonl"


def test_no_lines_no_parts(tmp_path: Path) -> None:
    assert JsonlTable(tmp_path).finish() == []


def test_sorted_by_key_and_later_lines_win(tmp_path: Path) -> None:
    table = JsonlTable(tmp_path / "t", run_bytes=8)  # every couple of lines spills a run
    table.add([(b"b\x00", b"B1\n"), (b"a\x00", b"A1\n"), (b"c\x00", b"C1\n")])
    table.add([(b"a\x00", b"A2\n"), (b"d\x00", b"D1\n")])
    table.add([(b"b\x00", b"B2\n"), (b"b\x00", b"B3\n")])
    parts = table.finish()
    assert _read(parts) == [b"A2\nB3\nC1\nD1\n"]
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["data-00000.jsonl"]  # runs removed


def test_tuple_order_of_hash_and_range(tmp_path: Path) -> None:
    # "a-b" sorts after "a" as a hash segment, although "-" < "/" in a joined path.
    table = JsonlTable(tmp_path)
    table.add([(b"a-b\x00x", b"2\n"), (b"a\x00y", b"1\n")])
    assert _read(table.finish()) == [b"1\n2\n"]


def test_parts_are_bounded(tmp_path: Path) -> None:
    table = JsonlTable(tmp_path, part_bytes=10)
    table.add([(b"%02d" % i, b"%04d\n" % i) for i in range(5)])  # five 5-byte lines
    table.add([(b"99", b"x" * 25 + b"\n")])  # longer than a part: a part of its own
    parts = table.finish()
    assert [p.name for p in parts] == [part_name(i) for i in range(4)]
    assert _read(parts) == [b"0000\n0001\n", b"0002\n0003\n", b"0004\n", b"x" * 25 + b"\n"]
