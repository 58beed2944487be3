"""MVCC stamping, framing pieces and the reader's size limits."""

from __future__ import annotations

import mmap
from typing import cast

from support import raises_code

from elastickv_async._core.encode.framing import check_record, frame_entry, header, ts_suffix
from elastickv_async._core.errors import DumpTreeError


def test_header_is_magic_and_le_timestamp() -> None:
    """16 bytes: ``EKVPBBL1`` then the timestamp little-endian (golden enc_empty: ts 1234)."""
    assert header(1234) == b"EKVPBBL1\xd2\x04\x00\x00\x00\x00\x00\x00"


def test_ts_suffix_is_big_endian_complement() -> None:
    """``BE(^T)``: T=0x0102030405060708 gives FE FD FC FB FA F9 F8 F7; T=0 gives all FF."""
    assert ts_suffix(0x0102030405060708) == bytes.fromhex("fefdfcfbfaf9f8f7")
    assert ts_suffix(0) == b"\xff" * 8
    assert ts_suffix((1 << 64) - 1) == b"\x00" * 8


def test_frame_entry_pieces() -> None:
    """Key with LE length, then LE value length (body + 9) and the 9-byte live header."""
    key_part, value_head = frame_entry(b"abc", b"xy")
    assert key_part == b"\x03" + b"\x00" * 7 + b"abc"
    assert value_head == b"\x0b" + b"\x00" * 7 + b"\x00" * 9


def test_key_limit_is_one_mib_user_key() -> None:
    """A 1 MiB user key fits (1,048,584 encoded); one byte more is refused (exit 2)."""
    check_record(b"k" * (1 << 20), b"")
    with raises_code(DumpTreeError, "ErrEncodeKeyTooLarge") as info:
        check_record(b"k" * ((1 << 20) + 1), b"")
    assert info.value.exit_code == 2


def test_value_limit_includes_envelope_slack() -> None:
    """256 MiB + 34 bytes of body fit (268,435,499 encoded); one byte more is refused."""
    limit = (256 << 20) + 34
    with mmap.mmap(-1, limit + 1) as big:  # untouched anonymous pages: no real memory
        check_record(b"k", cast(bytes, memoryview(big)[:limit]))
        with raises_code(DumpTreeError, "ErrEncodeValueTooLarge"):
            check_record(b"k", cast(bytes, big))
