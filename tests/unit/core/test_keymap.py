"""KEYMAP.jsonl records (REFERENCE_NOTES §4.5): the line writer and the reference's reader rules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import raises_code

from elastickv_async._core.dump.keymap import (
    KeymapRecord,
    keymap_line,
    load_keymap,
    read_keymap,
    read_keymap_blocks,
)
from elastickv_async._core.errors import DumpTreeError


def test_line_shape() -> None:
    """Field order encoded/original/kind, unpadded base64url, no HTML escaping, newline."""
    assert keymap_line("path/to.elastickv-leaf-data", b"path/to", "s3-leaf-data") == (
        b'{"encoded":"path/to.elastickv-leaf-data","original":"cGF0aC90bw","kind":"s3-leaf-data"}\n'
    )
    assert keymap_line("a<b>&", b"\xff\xfe", "sha-fallback") == (
        b'{"encoded":"a<b>&","original":"__4","kind":"sha-fallback"}\n'
    )


@pytest.mark.parametrize(("encoded", "kind"), [("", "sha-fallback"), ("x", "")])
def test_writer_refuses_empty_encoded_or_kind(encoded: str, kind: str) -> None:
    with pytest.raises(ValueError):
        keymap_line(encoded, b"k", kind)


def test_reader_round_trips_the_writer_in_file_order() -> None:
    data = keymap_line("b", b"\x00", "k1") + keymap_line("a", b"", "k2")
    assert list(read_keymap(data, "KEYMAP.jsonl")) == [
        KeymapRecord("b", b"\x00", "k1"),
        KeymapRecord("a", b"", "k2"),
    ]


def test_line_endings() -> None:
    """CRLF is accepted and the last line may lack its newline, like bufio.ScanLines."""
    data = (
        b'{"encoded":"a","original":"YQ","kind":"k"}\r\n{"encoded":"b","original":"Yg","kind":"k"}'
    )
    assert load_keymap(data, "KEYMAP.jsonl") == {"a": b"a", "b": b"b"}
    assert load_keymap(b"", "KEYMAP.jsonl") == {}


def test_load_keeps_the_last_record_per_name() -> None:
    data = keymap_line("a", b"first", "k") + keymap_line("a", b"second", "k")
    assert load_keymap(data, "KEYMAP.jsonl") == {"a": b"second"}


def test_struct_pass_matches_keys_case_insensitively() -> None:
    """The three exact keys must be present; a later differently-cased key still overrides."""
    line = b'{"encoded":"a","original":"YQ","kind":"k","ENCODED":"b"}\n'
    assert list(read_keymap(line, "KEYMAP.jsonl")) == [KeymapRecord("b", b"a", "k")]
    with raises_code(DumpTreeError, "ErrInvalidKeymapRecord", match="missing field 'encoded'"):
        list(read_keymap(b'{"ENCODED":"a","original":"YQ","kind":"k"}\n', "KEYMAP.jsonl"))


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"", "invalid JSON"),
        (b"[1]", "expected a JSON object"),
        (b'{"encoded":"x","original":"AA"}', "missing field 'kind'"),
        (b'{"encoded":"x","original":null,"kind":"k"}', "field 'original' is null"),
        (b'{"encoded":"","original":"AA","kind":"k"}', "missing encoded or kind"),
        (b'{"encoded":"x","original":"AA","kind":""}', "missing encoded or kind"),
        (b'{"encoded":"x","original":"AA==","kind":"k"}', "bad original"),
        (b'{"encoded":"x","original":"A+","kind":"k"}', "bad original"),
        (b'{"encoded":1,"original":"AA","kind":"k"}', "string"),
        (b'{"encoded":"x","original":"AA","kind":"k"} {}', "invalid JSON"),
    ],
)
def test_bad_lines_name_the_file_and_line(line: bytes, problem: str) -> None:
    data = keymap_line("ok", b"k", "sha-fallback") + line + b"\n"
    with raises_code(
        DumpTreeError,
        "ErrInvalidKeymapRecord",
        match=f"^redis/db_0/KEYMAP.jsonl line 2: .*{problem}",
    ):
        list(read_keymap(data, "redis/db_0/KEYMAP.jsonl"))


def test_line_length_limit_is_4_mib() -> None:
    """The reference's scanner holds lines of up to 4 MiB."""
    filler = 4 * 1024 * 1024 - len(b'{"encoded":"x","original":"","kind":"k","pad":""}')
    line = b'{"encoded":"x","original":"","kind":"k","pad":"' + b"p" * filler + b'"}'
    assert load_keymap(line + b"\n", "K") == {"x": b""}
    with raises_code(DumpTreeError, "ErrInvalidKeymapRecord", match="longer than 4 MiB"):
        load_keymap(line[:-2] + b'p"}\n', "K")


def _blocks(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("size", [1, 3, 64, 1 << 20])
def test_blocks_read_as_the_whole_file(size: int) -> None:
    """A file given in blocks (lines cut anywhere, CRLF split between two blocks, no final
    newline) gives the records and errors of the file read whole."""
    data = (
        keymap_line("a", b"first", "k")
        + b'{"encoded":"b","original":"Yg","kind":"k"}\r\n'
        + keymap_line("a", b"second", "k")
        + b'{"encoded":"c","original":"Yw","kind":"k"}'
    )
    assert list(read_keymap_blocks(_blocks(data, size), "K")) == list(read_keymap(data, "K"))
    with raises_code(DumpTreeError, "ErrInvalidKeymapRecord", match="^K line 2: .*invalid JSON"):
        list(read_keymap_blocks(_blocks(data.replace(b"\n{", b"\n\n{", 1), size), "K"))


def test_a_line_too_long_is_refused_before_it_is_read_whole() -> None:
    """A line past 4 MiB is refused as soon as the blocks read so far make it too long."""
    line = b'{"encoded":"x","original":"","kind":"k","pad":"' + b"p" * (4 << 20) + b'"}\n'
    read: list[int] = []

    def blocks() -> Iterator[bytes]:
        for block in _blocks(line * 3, 1 << 20):
            read.append(len(block))
            yield block

    with raises_code(DumpTreeError, "ErrInvalidKeymapRecord", match="^K line 1: .*4 MiB"):
        list(read_keymap_blocks(blocks(), "K"))
    assert sum(read) < len(line) + (1 << 20)
