"""Stored DynamoDB values: magic + protobuf, byte-identical to Go's deterministic Marshal."""

from __future__ import annotations

from typing import Any

import pytest
from ddb_support import golden_case, read_fsm
from hypothesis import given
from hypothesis import strategies as st
from support import raises_code

from elastickv_async._adapters.dynamodb.dynamodb_internal_pb2 import DynamoItem, DynamoTableSchema
from elastickv_async._adapters.dynamodb.layout import public_to_item
from elastickv_async._adapters.dynamodb.values import (
    decode_item,
    decode_schema,
    encode_item,
    encode_item_json,
    encode_schema,
    item_body,
)
from elastickv_async._core.errors import AdapterRecordError


@pytest.mark.parametrize(
    "case", ["enc_ddb_kinds_numbers", "enc_ddb_gsi", "enc_ddb_pct_names", "enc_ddb_binary"]
)
def test_reencoding_go_values_is_byte_identical(case: str) -> None:
    """Every schema/item value Go wrote re-encodes to the same bytes (map order included)."""
    records = read_fsm(golden_case(case) / "expected.fsm")
    checked = 0
    for key, value in records:
        if key.startswith(b"!ddb|item|"):
            assert encode_item(decode_item(item_body(value))) == value
            checked += 1
        elif key.startswith(b"!ddb|meta|table|"):
            assert encode_schema(decode_schema(value)) == value
            checked += 1
    assert checked >= 2


def test_map_entries_are_sorted_by_key_bytes() -> None:
    item = DynamoItem()
    for name in ("bs", "bool_f", "b", ""):
        item.attributes[name].s = ""

    def entry(name: bytes) -> bytes:
        # Key field (0a len name) + value field (12 02 <AttributeValue s="" = 0a 00>).
        return bytes([0x0A, 2 + len(name) + 4, 0x0A, len(name)]) + name + b"\x12\x02\x0a\x00"

    expected = b"\x00DI\x01" + b"".join(entry(n) for n in (b"", b"b", b"bool_f", b"bs"))
    assert encode_item(item) == expected


def test_schema_fields_in_number_order_with_empty_map_values() -> None:
    schema = DynamoTableSchema(table_name="t", generation=1, key_encoding_version=2)
    schema.attribute_definitions["a"] = ""
    schema.primary_key.hash_key = "a"
    expected = (
        b"\x00DS\x01"
        + b"\x0a\x01t"  # 1 table_name
        + b"\x12\x05\x0a\x01a\x12\x00"  # 2 attribute_definitions entry, empty value kept
        + b"\x1a\x03\x0a\x01a"  # 3 primary_key
        + b"\x28\x02"  # 5 key_encoding_version
        + b"\x38\x01"  # 7 generation
    )
    assert encode_schema(schema) == expected


def test_decode_schema_requires_magic_and_proto() -> None:
    with raises_code(AdapterRecordError, "ErrDDBInvalidSchema"):
        decode_schema(b"\x00DI\x01")  # the item magic
    with raises_code(AdapterRecordError, "ErrDDBInvalidSchema"):
        decode_schema(b"\x00DS\x01\x0a\x02\xff\xfe")  # table_name with invalid UTF-8
    with raises_code(AdapterRecordError, "ErrDDBInvalidSchema"):
        decode_schema(b"\x00DS\x01\x0a\x05ab")  # truncated
    assert decode_schema(b"\x00DS\x01").table_name == ""


def test_item_body_requires_magic_and_proto() -> None:
    with raises_code(AdapterRecordError, "ErrDDBInvalidItem"):
        item_body(b"\x00DS\x01")
    with raises_code(AdapterRecordError, "ErrDDBInvalidItem"):
        item_body(b"")
    with raises_code(AdapterRecordError, "ErrDDBInvalidItem"):
        item_body(b"\x00DI\x01\x0a\x03\x0a\x01")  # truncated map entry
    assert item_body(b"\x00DI\x01") == b""


# Long ones too: an entry, a list element or a map past 127 bytes needs a longer length.
_names = st.one_of(st.text(max_size=4), st.text(min_size=60, max_size=130))
_strings = st.one_of(st.text(max_size=6), st.text(min_size=60, max_size=130))
_scalars = st.one_of(
    st.builds(lambda v: {"S": v}, _strings),
    st.builds(lambda v: {"N": v}, _strings),
    st.builds(lambda v: {"BOOL": v}, st.booleans()),
    st.builds(lambda v: {"NULL": v}, st.booleans()),
    st.builds(lambda v: {"SS": v}, st.lists(_strings, max_size=3)),
    st.builds(lambda v: {"NS": v}, st.lists(_strings, max_size=3)),
    st.builds(lambda v: {"B": v}, st.sampled_from(["", "AAE=", "/w==", "AA\r\nE="])),
    st.builds(lambda v: {"BS": v}, st.lists(st.sampled_from(["", "AAE=", "/w=="]), max_size=3)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.builds(lambda v: {"L": v}, st.lists(inner, max_size=3)),
        st.builds(lambda v: {"M": v}, st.dictionaries(_names, inner, max_size=3)),
    ),
    max_leaves=8,
)


@given(st.dictionaries(_names, _values, max_size=5))
def test_json_fast_path_gives_the_checked_paths_bytes(doc: dict[str, Any]) -> None:
    fast = encode_item_json(doc)
    assert fast is not None
    assert fast == encode_item(public_to_item(doc, "x"))


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"a": "x"},
        {"a": {}},
        {"a": {"S": 1}},
        {"a": {"S": "x", "N": "1"}},
        {"a": {"BOOL": 1}},
        {"a": {"SS": ["x", 1]}},
        {"a": {"L": [{"S": "x"}, {"Q": "y"}]}},
        {"a": {"M": {"b": {"NULL": "yes"}}}},
        {"a": {"B": "AAE"}},
        {"a": {"B": "!!!!"}},
        {"a": {"BS": ["AAE=", 1]}},
        {"a": {"S": "\ud800"}},
        {"\ud800": {"S": "x"}},
    ],
)
def test_json_fast_path_leaves_unusual_items_to_the_checked_path(doc: Any) -> None:
    assert encode_item_json(doc) is None
