"""DynamoDB key layouts: parsing (decode) and building (encode)."""

from __future__ import annotations

import pytest
from support import raises_code

from elastickv_async._adapters.dynamodb.keys import (
    ItemKey,
    TableKey,
    gsi_key_prefix,
    item_key_prefix,
    ordered_segment,
    parse_item_key,
    parse_table_meta_key,
    table_gen_key,
    table_meta_key,
)
from elastickv_async._core.errors import AdapterRecordError


def test_table_meta_key_round_trip() -> None:
    # "dXNlcnM" is base64url("users"), as in the golden enc_ddb_gsi snapshot.
    assert parse_table_meta_key(b"!ddb|meta|table|dXNlcnM") == TableKey("dXNlcnM", b"users")
    assert table_meta_key("users") == b"!ddb|meta|table|dXNlcnM"
    assert table_gen_key("users") == b"!ddb|meta|gen|dXNlcnM"


def test_table_meta_key_tolerates_newlines_like_go() -> None:
    # Go's base64 decoder skips CR/LF; the segment is kept verbatim as the table's identity.
    assert parse_table_meta_key(b"!ddb|meta|table|dXNl\ncnM") == TableKey("dXNl\ncnM", b"users")


@pytest.mark.parametrize(
    "key",
    [
        b"!ddb|meta|table|",  # empty segment
        b"!ddb|meta|table|dXNlcnM=",  # padding is not part of RawURLEncoding
        b"!ddb|meta|table|dXN+cnM",  # '+' is not in the URL alphabet
        b"!ddb|meta|table|d",  # impossible length
        b"!ddb|meta|table|dXNlcnM|x",  # the whole rest is the segment
    ],
)
def test_table_meta_key_rejects_malformed(key: bytes) -> None:
    with raises_code(AdapterRecordError, "ErrDDBMalformedKey"):
        parse_table_meta_key(key)


@pytest.mark.parametrize("segment", [b"Lg", b"Li4", b"\n"])
def test_table_names_that_escape_are_rejected(segment: bytes) -> None:
    # "Lg" = ".", "Li4" = "..", "\n" decodes to the empty name.
    with raises_code(AdapterRecordError, "ErrDDBMalformedKey") as info:
        parse_table_meta_key(b"!ddb|meta|table|" + segment)
    assert isinstance(info.value, AdapterRecordError)
    assert info.value.exit_code == 2


def test_item_key_parses_table_and_generation() -> None:
    key = b"!ddb|item|aW52ZW50b3J5|3|live-1\x00\x01"  # golden ddb_stale_gen
    assert parse_item_key(key) == ItemKey("aW52ZW50b3J5", 3)
    assert parse_item_key(b"!ddb|item|aW52ZW50b3J5|007|x") == ItemKey("aW52ZW50b3J5", 7)
    assert parse_item_key(b"!ddb|item|YQ|18446744073709551615|x").generation == 2**64 - 1


@pytest.mark.parametrize(
    "key",
    [
        b"!ddb|item|",
        b"!ddb|item||1|x",  # empty table segment
        b"!ddb|item|YQ",  # no separator after the table
        b"!ddb|item|YQ|1",  # no separator after the generation
        b"!ddb|item|YQ||x",  # empty generation
        b"!ddb|item|YQ|+1|x",  # ParseUint takes no sign
        b"!ddb|item|YQ|1_0|x",  # nor separators
        b"!ddb|item|YQ|18446744073709551616|x",  # 2**64 overflows
        b"!ddb|item|YQ|1|",  # no primary-key payload
        b"!ddb|item|Y!|1|x",  # bad base64
    ],
)
def test_item_key_rejects_malformed(key: bytes) -> None:
    with raises_code(AdapterRecordError, "ErrDDBMalformedKey"):
        parse_item_key(key)


def test_ordered_segment_escapes_zero_and_terminates() -> None:
    assert ordered_segment(b"") == b"\x00\x01"
    assert ordered_segment(b"a\x00b") == b"a\x00\xffb\x00\x01"
    assert ordered_segment(b"\x00\x01") == b"\x00\xff\x01\x00\x01"


def test_ordered_segments_keep_byte_order() -> None:
    raw = sorted([b"", b"\x00", b"\x00\x00", b"\x00\x01", b"\x01", b"a", b"a\x00", b"ab"])
    assert sorted(raw, key=ordered_segment) == raw


def test_item_and_gsi_prefixes_match_golden_keys() -> None:
    # Keys of golden/public/enc_ddb_gsi/expected.fsm: table "users", index "by_email".
    assert item_key_prefix("users", 1) == b"!ddb|item|dXNlcnM|1|"
    assert gsi_key_prefix("users", 1, "by_email") == b"!ddb|gsi|dXNlcnM|1|YnlfZW1haWw|"
