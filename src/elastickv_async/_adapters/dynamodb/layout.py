"""The dump tree's JSON forms of DynamoDB schemas and items, in both directions.

``_schema.json`` is the reference's ``ddbPublicSchema`` (REFERENCE_NOTES §3.1): internal
fields (generation, key encoding version) are dropped, attribute definitions and GSIs are
sorted by name. Items are AWS DynamoDB JSON (``{"attr": {"S": "x"}}``) with ``B``/``BS`` in
standard base64. Item files are named after their primary key: ``S`` and canonical ``N`` keys
percent-encoded, ``B`` keys as ``b64.<base64url>``.

Reading mirrors Go's ``encoding/json`` into the reference's structs: unknown fields are
ignored, ``null`` leaves a field at its zero value, a field name also matches
case-insensitively, and a value of the wrong type is an error.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Final

import orjson

from ..._core import gojson
from ..._core.dump.names import encode_binary_segment, encode_segment
from .dynamodb_internal_pb2 import (
    DynamoAttributeValue,
    DynamoItem,
    DynamoKeySchema,
    DynamoTableSchema,
)
from .errors import TreeCode, record_error, tree_error
from .keys import ORDERED_KEY_ENCODING, RESTORE_GENERATION
from .numbers import canonical_number
from .tree import ITEMS_DIR, LAYOUT_JSONL, LAYOUT_PER_ITEM, LAYOUTS, ROOT, SCHEMA_FILE

__all__ = [
    "FORMAT_VERSION",
    "ITEMS_DIR",
    "LAYOUTS",
    "LAYOUT_JSONL",
    "LAYOUT_PER_ITEM",
    "ROOT",
    "SCHEMA_FILE",
    "binary_value",
    "item_key_segments",
    "item_public",
    "load_json",
    "public_to_item",
    "public_to_schema",
    "schema_json",
]

#: The only ``_schema.json`` format version.
FORMAT_VERSION: Final = 1
_UINT32_LIMIT: Final = 1 << 32
_DOT_SEGMENTS: Final = frozenset({".", ".."})

# --- decode: protobuf -> JSON ---------------------------------------------------------------


def _key_attribute(name: str, kind: str) -> dict[str, str]:
    # Both fields are omitempty in the reference: an unnamed range key renders as {}.
    out: dict[str, str] = {}
    if name:
        out["name"] = name
    if kind:
        out["type"] = kind
    return out


def _key_schema(keys: DynamoKeySchema, definitions: Mapping[str, str]) -> dict[str, Any]:
    # The reference looks the hash key's type up even when it is unnamed, the range key's
    # only when it is named.
    range_type = definitions.get(keys.range_key, "") if keys.range_key else ""
    return {
        "hash_key": _key_attribute(keys.hash_key, definitions.get(keys.hash_key, "")),
        "range_key": _key_attribute(keys.range_key, range_type),
    }


def schema_json(schema: DynamoTableSchema) -> bytes:
    """``_schema.json`` for ``schema`` (indented, HTML-escaped, no trailing newline)."""
    definitions = dict(schema.attribute_definitions)
    public: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "table_name": schema.table_name,
        "primary_key": _key_schema(schema.primary_key, definitions),
        "attribute_definitions": [
            {"name": name, "type": definitions[name]} for name in sorted(definitions)
        ],
    }
    indexes = []
    for name in sorted(schema.global_secondary_indexes):
        gsi = schema.global_secondary_indexes[name]
        projection: dict[str, Any] = {"type": gsi.projection.projection_type}
        if gsi.projection.non_key_attributes:
            projection["non_key_attributes"] = list(gsi.projection.non_key_attributes)
        indexes.append(
            {
                "name": name,
                "key_schema": _key_schema(gsi.key_schema, definitions),
                "projection": projection,
            }
        )
    if indexes:
        public["global_secondary_indexes"] = indexes
    return gojson.marshal_indent(public)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _value_public(av: DynamoAttributeValue) -> dict[str, Any]:
    kind = av.WhichOneof("value")
    if kind == "s":
        return {"S": av.s}
    if kind == "n":
        return {"N": av.n}
    if kind == "b":
        return {"B": _b64(av.b)}
    if kind == "bool_value":
        return {"BOOL": av.bool_value}
    if kind == "null_value":
        return {"NULL": av.null_value}
    if kind == "ss":
        return {"SS": list(av.ss.values)}
    if kind == "ns":
        return {"NS": list(av.ns.values)}
    if kind == "bs":
        return {"BS": [_b64(v) for v in av.bs.values]}
    if kind == "l":
        return {"L": [_value_public(v) for v in av.l.values]}
    if kind == "m":
        return {"M": {name: _value_public(av.m.values[name]) for name in sorted(av.m.values)}}
    # An empty oneof is malformed; the reference keeps the attribute as NULL.
    return {"NULL": True}


def item_public(item: DynamoItem) -> dict[str, Any]:
    """The item as AWS DynamoDB JSON (a Go map: attribute names sorted)."""
    attrs = item.attributes
    return {name: _value_public(attrs[name]) for name in sorted(attrs)}


def _key_segment(item: DynamoItem, attribute: str, role: str) -> str:
    if attribute not in item.attributes:
        raise record_error("ErrDDBInvalidItem", f"item missing {role}-key attribute {attribute!r}")
    av = item.attributes[attribute]
    kind = av.WhichOneof("value")
    if kind == "s":
        segment = encode_segment(av.s.encode("utf-8"))
    elif kind == "n":
        segment = encode_segment(canonical_number(av.n).encode("utf-8"))
    elif kind == "b":
        segment = encode_binary_segment(av.b)
    else:
        raise record_error(
            "ErrDDBInvalidItem", f"{role} key {attribute!r} has unsupported kind {kind!r}"
        )
    if segment in _DOT_SEGMENTS:
        raise record_error("ErrDDBInvalidItem", f"{role}-key segment {segment!r} is a dot path")
    return segment


def item_key_segments(item: DynamoItem, hash_key: str, range_key: str) -> tuple[str, str | None]:
    """The file-name segments of the item's hash key and (composite tables) range key.

    Per-item files live at ``items/<hash>.json`` or ``items/<hash>/<range>.json``. Raises
    ``ErrDDBInvalidItem`` for a missing or non-S/N/B key and for ``.``/``..`` segments.
    """
    hash_segment = _key_segment(item, hash_key, "hash")
    if not range_key:
        return hash_segment, None
    return hash_segment, _key_segment(item, range_key, "range")


# --- encode: JSON -> protobuf ---------------------------------------------------------------


def load_json(raw: bytes, where: str, code: TreeCode) -> Any:
    """Parse one JSON document; bytes that are not UTF-8 become U+FFFD like Go's decoder."""
    try:
        return orjson.loads(gojson.go_str(raw))
    except orjson.JSONDecodeError as exc:
        raise tree_error(code, f"{where}: not one JSON value: {exc}") from None


def _go_struct(obj: Any, fields: tuple[str, ...], where: str, code: TreeCode) -> dict[str, Any]:
    """The JSON object ``obj`` as Go would fill a struct with ``fields`` (json tags)."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise tree_error(code, f"{where}: expected an object")
    folded = {name.casefold(): name for name in fields}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = key if key in fields else folded.get(key.casefold())
        if name is not None and value is not None:
            out[name] = value
    return out


def _go_string(value: Any, where: str, code: TreeCode) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise tree_error(code, f"{where}: expected a string")
    return value


def _go_list(value: Any, where: str, code: TreeCode) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise tree_error(code, f"{where}: expected an array")
    return value


def _key_names(obj: Any, where: str, code: TreeCode) -> tuple[str, str]:
    keys = _go_struct(obj, ("hash_key", "range_key"), where, code)
    names = []
    for role in ("hash_key", "range_key"):
        attribute = _go_struct(keys.get(role), ("name", "type"), f"{where}.{role}", code)
        _go_string(attribute.get("type"), f"{where}.{role}.type", code)
        names.append(_go_string(attribute.get("name"), f"{where}.{role}.name", code))
    return names[0], names[1]


def public_to_schema(doc: Any, where: str) -> DynamoTableSchema:
    """Rebuild the stored schema from a parsed ``_schema.json`` (restore: generation 1).

    Checks the format version and duplicate attribute/GSI names; the caller checks the table
    name and hash key against the directory.
    """
    code: TreeCode = "ErrDDBEncodeInvalidSchema"
    top = _go_struct(
        doc,
        (
            "format_version",
            "table_name",
            "primary_key",
            "attribute_definitions",
            "global_secondary_indexes",
        ),
        where,
        code,
    )
    version = top.get("format_version", 0)
    if (
        isinstance(version, bool)
        or not isinstance(version, int)
        or not 0 <= version < _UINT32_LIMIT
    ):
        raise tree_error(code, f"{where}: format_version is not a uint32")
    table_name = _go_string(top.get("table_name"), f"{where}: table_name", code)
    hash_key, range_key = _key_names(top.get("primary_key"), f"{where}: primary_key", code)
    definitions: list[tuple[str, str]] = []
    for entry in _go_list(
        top.get("attribute_definitions"), f"{where}: attribute_definitions", code
    ):
        fields = _go_struct(entry, ("name", "type"), f"{where}: attribute_definitions", code)
        definitions.append(
            (
                _go_string(fields.get("name"), f"{where}: attribute name", code),
                _go_string(fields.get("type"), f"{where}: attribute type", code),
            )
        )
    indexes: list[tuple[str, tuple[str, str], str, list[str]]] = []
    for entry in _go_list(
        top.get("global_secondary_indexes"), f"{where}: global_secondary_indexes", code
    ):
        fields = _go_struct(entry, ("name", "key_schema", "projection"), f"{where}: GSI", code)
        name = _go_string(fields.get("name"), f"{where}: GSI name", code)
        keys = _key_names(fields.get("key_schema"), f"{where}: GSI {name!r} key_schema", code)
        projection = _go_struct(
            fields.get("projection"), ("type", "non_key_attributes"), f"{where}: GSI", code
        )
        attributes = [
            _go_string(v, f"{where}: GSI {name!r} non_key_attributes", code)
            for v in _go_list(projection.get("non_key_attributes"), f"{where}: GSI", code)
        ]
        kind = _go_string(projection.get("type"), f"{where}: GSI {name!r} projection type", code)
        indexes.append((name, keys, kind, attributes))
    if version != FORMAT_VERSION:
        raise tree_error(code, f"{where}: unsupported format_version {version}")
    for label, names in (
        ("attribute definition", [n for n, _ in definitions]),
        ("GSI name", [n for n, _, _, _ in indexes]),
    ):
        if len(set(names)) != len(names):
            duplicate = next(n for n in names if names.count(n) > 1)
            raise tree_error(code, f"{where}: duplicate {label} {duplicate!r}")
    schema = DynamoTableSchema(
        table_name=table_name,
        attribute_definitions=dict(definitions),
        primary_key=DynamoKeySchema(hash_key=hash_key, range_key=range_key),
        key_encoding_version=ORDERED_KEY_ENCODING,
        generation=RESTORE_GENERATION,
    )
    for name, (index_hash, index_range), kind, attributes in indexes:
        gsi = schema.global_secondary_indexes[name]
        gsi.key_schema.hash_key = index_hash
        gsi.key_schema.range_key = index_range
        gsi.key_schema.SetInParent()
        gsi.projection.projection_type = kind
        gsi.projection.non_key_attributes.extend(attributes)
        gsi.projection.SetInParent()
    return schema


def binary_value(value: Any, where: str) -> bytes:
    """A ``B`` value's bytes from its standard base64 JSON string (Go's decoding rules)."""
    if not isinstance(value, str):
        raise tree_error("ErrDDBEncodeInvalidItem", f"{where}: binary value is not a base64 string")
    # Go's decoder skips CR/LF and demands canonical padding.
    text = value.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise tree_error(
            "ErrDDBEncodeInvalidItem", f"{where}: binary value is not valid base64: {exc}"
        ) from None


def _string_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise tree_error("ErrDDBEncodeInvalidItem", f"{where}: set value is not an array")
    if not all(isinstance(v, str) for v in value):
        raise tree_error("ErrDDBEncodeInvalidItem", f"{where}: set element is not a string")
    return value


def _fill_value(av: DynamoAttributeValue, obj: Any, where: str) -> None:
    if not isinstance(obj, dict):
        raise tree_error("ErrDDBEncodeInvalidItem", f"{where}: attribute value is not an object")
    if len(obj) != 1:
        raise tree_error(
            "ErrDDBEncodeInvalidItem", f"{where}: attribute object must have one type key"
        )
    ((kind, value),) = obj.items()
    if kind in ("S", "N"):
        if not isinstance(value, str):
            raise tree_error("ErrDDBEncodeInvalidItem", f"{where}: {kind} value is not a string")
        if kind == "S":
            av.s = value
        else:
            av.n = value
    elif kind == "B":
        av.b = binary_value(value, where)
    elif kind in ("BOOL", "NULL"):
        if not isinstance(value, bool):
            raise tree_error("ErrDDBEncodeInvalidItem", f"{where}: {kind} value is not a boolean")
        if kind == "BOOL":
            av.bool_value = value
        else:
            av.null_value = value
    elif kind == "SS":
        av.ss.values.extend(_string_list(value, where))
        av.ss.SetInParent()
    elif kind == "NS":
        av.ns.values.extend(_string_list(value, where))
        av.ns.SetInParent()
    elif kind == "BS":
        if not isinstance(value, list):
            raise tree_error("ErrDDBEncodeInvalidItem", f"{where}: BS value is not an array")
        av.bs.values.extend(binary_value(v, where) for v in value)
        av.bs.SetInParent()
    elif kind == "L":
        if not isinstance(value, list):
            raise tree_error("ErrDDBEncodeInvalidItem", f"{where}: L value is not an array")
        for element in value:
            _fill_value(av.l.values.add(), element, f"{where}[]")
        av.l.SetInParent()
    elif kind == "M":
        if not isinstance(value, dict):
            raise tree_error("ErrDDBEncodeInvalidItem", f"{where}: M value is not an object")
        for name, child in value.items():
            _fill_value(av.m.values[name], child, f"{where}.{name}")
        av.m.SetInParent()
    else:
        raise tree_error("ErrDDBEncodeInvalidItem", f"{where}: unknown attribute type {kind!r}")


def public_to_item(doc: Any, where: str) -> DynamoItem:
    """Rebuild an item from its parsed JSON (``null`` is an item without attributes)."""
    item = DynamoItem()
    if doc is None:
        return item
    if not isinstance(doc, dict):
        raise tree_error("ErrDDBEncodeInvalidItem", f"{where}: item is not a JSON object")
    for name, value in doc.items():
        _fill_value(item.attributes[name], value, f"{where}: attribute {name!r}")
    return item
