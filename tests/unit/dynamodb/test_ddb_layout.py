"""The dump's JSON forms: _schema.json and item files, both directions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ddb_support import golden_case
from support import raises_code

from elastickv_async._adapters.dynamodb.dynamodb_internal_pb2 import (
    DynamoAttributeValue,
    DynamoItem,
    DynamoTableSchema,
)
from elastickv_async._adapters.dynamodb.layout import (
    item_key_segments,
    item_public,
    load_json,
    public_to_item,
    public_to_schema,
    schema_json,
)
from elastickv_async._core.errors import AdapterRecordError, DumpTreeError


def _schema_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format_version": 1,
        "table_name": "t",
        "primary_key": {"hash_key": {"name": "id", "type": "S"}, "range_key": {}},
        "attribute_definitions": [{"name": "id", "type": "S"}],
    }
    doc.update(changes)
    return doc


def test_schema_json_matches_golden_gsi_schema() -> None:
    """Rebuilding the golden users schema (3 GSIs) prints the reference's bytes."""
    expected = (golden_case("ddb_gsi") / "expected/dynamodb/users/_schema.json").read_bytes()
    schema = public_to_schema(json.loads(expected), "x")
    assert schema_json(schema) == expected


def test_schema_json_hash_only_and_missing_types() -> None:
    schema = DynamoTableSchema(table_name="a<b")
    schema.primary_key.hash_key = "h"
    schema.primary_key.range_key = "r"
    schema.attribute_definitions["h"] = "N"
    assert schema_json(schema) == (
        b'{\n  "format_version": 1,\n  "table_name": "a\\u003cb",\n  "primary_key": {\n'
        b'    "hash_key": {\n      "name": "h",\n      "type": "N"\n    },\n'
        b'    "range_key": {\n      "name": "r"\n    }\n  },\n'
        b'  "attribute_definitions": [\n    {\n      "name": "h",\n      "type": "N"\n    }\n  ]\n}'
    )
    assert b'"attribute_definitions": []' in schema_json(DynamoTableSchema(table_name="x"))


def test_public_to_schema_restore_fields() -> None:
    schema = public_to_schema(_schema_doc(), "s")
    assert (schema.generation, schema.key_encoding_version, schema.migrating_from_generation) == (
        1,
        2,
        0,
    )
    assert dict(schema.attribute_definitions) == {"id": "S"}
    assert schema.primary_key.hash_key == "id"


def test_public_to_schema_go_struct_rules() -> None:
    # Unknown fields ignored, null keeps the zero value, names match case-insensitively.
    doc = _schema_doc(extra=[1, 2], TABLE_NAME="upper", global_secondary_indexes=None)
    doc["Primary_Key"] = doc.pop("primary_key")
    schema = public_to_schema(doc, "s")
    assert schema.table_name == "upper"
    assert schema.primary_key.hash_key == "id"
    assert not schema.global_secondary_indexes


@pytest.mark.parametrize(
    "changes",
    [
        {"format_version": 2},
        {"format_version": 0},
        {"format_version": None},
        {"format_version": "1"},
        {"format_version": 1.0},
        {"format_version": True},
        {"format_version": -1},
        {"format_version": 2**32 + 1},
        {"table_name": 5},
        {"primary_key": []},
        {"attribute_definitions": {}},
        {"attribute_definitions": [{"name": "id", "type": "S"}, {"name": "id", "type": "N"}]},
        {
            "global_secondary_indexes": [
                {"name": "g", "key_schema": {"hash_key": {"name": "id"}}, "projection": {}},
                {"name": "g", "key_schema": {"hash_key": {"name": "id"}}, "projection": {}},
            ]
        },
        {"global_secondary_indexes": [{"name": "g", "projection": {"non_key_attributes": [1]}}]},
    ],
)
def test_public_to_schema_rejects(changes: dict[str, Any]) -> None:
    with raises_code(DumpTreeError, "ErrDDBEncodeInvalidSchema"):
        public_to_schema(_schema_doc(**changes), "s")


def test_load_json() -> None:
    assert load_json(b' {"a": "\xff"} \n', "f", "ErrDDBEncodeInvalidItem") == {"a": "\ufffd"}
    for bad in (b"{} {}", b"", b"{", b"NaN", b'"\\ud800"'):
        with raises_code(DumpTreeError, "ErrDDBEncodeInvalidItem"):
            load_json(bad, "f", "ErrDDBEncodeInvalidItem")


def test_item_round_trip_all_kinds() -> None:
    """Golden ddb_all_kinds item k1: JSON -> proto -> JSON gives the same document."""
    path = golden_case("ddb_all_kinds") / "expected/dynamodb/kinds/items/k1.json"
    doc = json.loads(path.read_bytes())
    item = public_to_item(doc, "k1")
    assert item_public(item) == doc
    assert item.attributes["bool_f"].WhichOneof("value") == "bool_value"
    assert item.attributes["empty_m"].WhichOneof("value") == "m"
    assert item.attributes["m"].m.values["list"].WhichOneof("value") == "l"


def test_item_public_edge_values() -> None:
    item = DynamoItem()
    item.attributes["b"].b = b""
    item.attributes["empty"].CopyFrom(DynamoAttributeValue())
    item.attributes["ss"].ss.SetInParent()
    item.attributes["null_false"].null_value = False
    assert item_public(item) == {
        "b": {"B": ""},
        "empty": {"NULL": True},
        "null_false": {"NULL": False},
        "ss": {"SS": []},
    }


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"a": "x"},
        {"a": {}},
        {"a": {"S": "x", "N": "1"}},
        {"a": {"X": "1"}},
        {"a": {"S": 1}},
        {"a": {"N": 1}},
        {"a": {"B": "not base64!"}},
        {"a": {"B": "AA"}},  # padding is required
        {"a": {"BOOL": "true"}},
        {"a": {"NULL": 1}},
        {"a": {"SS": "x"}},
        {"a": {"NS": [1]}},
        {"a": {"BS": ["AA=="], "x": 1}},
        {"a": {"BS": [1]}},
        {"a": {"L": {}}},
        {"a": {"L": ["x"]}},
        {"a": {"M": []}},
        {"a": {"M": {"k": "v"}}},
    ],
)
def test_public_to_item_rejects(doc: Any) -> None:
    with raises_code(DumpTreeError, "ErrDDBEncodeInvalidItem"):
        public_to_item(doc, "item")


def test_public_to_item_accepts_go_base64_and_null() -> None:
    item = public_to_item({"a": {"B": "AP9i\naW4="}}, "i")  # Go skips newlines
    assert item.attributes["a"].b == b"\x00\xffbin"
    assert len(public_to_item(None, "i").attributes) == 0


def _item(**attrs: DynamoAttributeValue) -> DynamoItem:
    item = DynamoItem()
    for name, value in attrs.items():
        item.attributes[name].CopyFrom(value)
    return item


def test_item_key_segments() -> None:
    s = DynamoAttributeValue(s="a/b")
    n = DynamoAttributeValue(n="0.5")
    b = DynamoAttributeValue(b=b"\x00\x01\xff")
    assert item_key_segments(_item(h=s), "h", "") == ("a%2Fb", None)
    assert item_key_segments(_item(h=n, r=b), "h", "r") == ("1%2F2", "b64.AAH_")


@pytest.mark.parametrize(
    ("attrs", "range_key"),
    [
        ({}, ""),  # hash attribute missing
        ({"h": DynamoAttributeValue(s="x")}, "r"),  # range attribute missing
        ({"h": DynamoAttributeValue(bool_value=True)}, ""),
        ({"h": DynamoAttributeValue()}, ""),  # empty oneof
        ({"h": DynamoAttributeValue(s=".")}, ""),
        ({"h": DynamoAttributeValue(n="..")}, ""),  # unparseable N stays "..": still a dot path
        ({"h": DynamoAttributeValue(s="x"), "r": DynamoAttributeValue(s="..")}, "r"),
    ],
)
def test_item_key_segments_reject(attrs: dict[str, DynamoAttributeValue], range_key: str) -> None:
    with raises_code(AdapterRecordError, "ErrDDBInvalidItem"):
        item_key_segments(_item(**attrs), "h", range_key)
