"""Stored DynamoDB values: a 4-byte magic, then a protobuf message (REFERENCE_NOTES §3.1).

Encoding must give the bytes of Go's ``proto.MarshalOptions{Deterministic: true}``: fields in
number order and map entries sorted by key bytes, each entry with both its key and value
written. The Python runtime's deterministic mode orders string map keys differently, so the
messages that hold maps (schema, item, attribute maps) are framed here; map-free messages
(key schemas, GSIs, scalars, sets) still come from ``SerializeToString``, whose layout for
them is the same as Go's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from google.protobuf.message import DecodeError

from ..._core.errors import DumpTreeError
from .dynamodb_internal_pb2 import DynamoAttributeValue, DynamoItem, DynamoTableSchema
from .errors import record_error
from .keys import ITEM_MAGIC, SCHEMA_MAGIC
from .layout import binary_value

__all__ = [
    "decode_item",
    "decode_schema",
    "encode_item",
    "encode_item_json",
    "encode_schema",
    "item_body",
]


def decode_schema(value: bytes) -> DynamoTableSchema:
    """Parse a ``!ddb|meta|table|`` value; ``ErrDDBInvalidSchema`` if it is not one."""
    if not value.startswith(SCHEMA_MAGIC):
        raise record_error(
            "ErrDDBInvalidSchema", f"schema value lacks its magic (starts {value[:8]!r})"
        )
    schema = DynamoTableSchema()
    try:
        schema.ParseFromString(value[len(SCHEMA_MAGIC) :])
    except DecodeError as exc:
        raise record_error(
            "ErrDDBInvalidSchema", f"schema value is not a DynamoTableSchema: {exc}"
        ) from None
    return schema


def item_body(value: bytes) -> bytes:
    """Check a ``!ddb|item|`` value and return its protobuf body (without the magic).

    The body is parsed once here so a corrupt item fails where it is met; callers that keep
    the body for later parse it again with :func:`decode_item`.
    """
    if not value.startswith(ITEM_MAGIC):
        raise record_error(
            "ErrDDBInvalidItem", f"item value lacks its magic (starts {value[:8]!r})"
        )
    body = value[len(ITEM_MAGIC) :]
    decode_item(body)
    return body


def decode_item(body: bytes) -> DynamoItem:
    """Parse an item body (the bytes after the magic)."""
    item = DynamoItem()
    try:
        item.ParseFromString(body)
    except DecodeError as exc:
        raise record_error("ErrDDBInvalidItem", f"item value is not a DynamoItem: {exc}") from None
    return item


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _map_field(number: int, entries: Iterable[tuple[str, bytes]]) -> bytes:
    """A map field: one entry per key, in key-byte order (str order is UTF-8 byte order)."""
    return b"".join(
        _length_delimited(number, _length_delimited(1, key.encode()) + _length_delimited(2, value))
        for key, value in sorted(entries)
    )


def _attribute_value_bytes(av: DynamoAttributeValue) -> bytes:
    kind = av.WhichOneof("value")
    if kind == "m":
        values = av.m.values
        body = _map_field(1, ((k, _attribute_value_bytes(values[k])) for k in values))
        return _length_delimited(10, body)
    if kind == "l":
        body = b"".join(_length_delimited(1, _attribute_value_bytes(v)) for v in av.l.values)
        return _length_delimited(9, body)
    return av.SerializeToString()


def encode_schema(schema: DynamoTableSchema) -> bytes:
    """The stored schema value: magic + Go-deterministic protobuf."""
    body = b""
    if schema.table_name:
        body += _length_delimited(1, schema.table_name.encode())
    body += _map_field(2, ((k, v.encode()) for k, v in schema.attribute_definitions.items()))
    if schema.HasField("primary_key"):
        body += _length_delimited(3, schema.primary_key.SerializeToString())
    indexes = schema.global_secondary_indexes
    body += _map_field(4, ((k, indexes[k].SerializeToString()) for k in indexes))
    for number, value in (
        (5, schema.key_encoding_version),
        (6, schema.migrating_from_generation),
        (7, schema.generation),
    ):
        if value:
            body += _varint(number << 3) + _varint(value)
    return SCHEMA_MAGIC + body


def encode_item(item: DynamoItem) -> bytes:
    """The stored item value: magic + Go-deterministic protobuf."""
    attrs = item.attributes
    return ITEM_MAGIC + _map_field(1, ((k, _attribute_value_bytes(attrs[k])) for k in attrs))


# --- fast path: AWS DynamoDB JSON straight to the stored bytes ------------------------------

#: A length prefix below 128 is its own one-byte varint.
_SHORT: Final = tuple(bytes((n,)) for n in range(0x80))
#: DynamoAttributeValue's oneof tags (field << 3 | wire type) by JSON type key.
_STRING_TAGS: Final = {"S": b"\x0a", "N": b"\x12"}
_BOOL_VALUES: Final = {
    ("BOOL", False): b"\x20\x00",
    ("BOOL", True): b"\x20\x01",
    ("NULL", False): b"\x28\x00",
    ("NULL", True): b"\x28\x01",
}
_SET_TAGS: Final = {"SS": b"\x32", "NS": b"\x3a"}
_BINARY_TAG: Final = b"\x1a"
_BINARY_SET_TAG: Final = b"\x42"
_LIST_TAG: Final = b"\x4a"
_MAP_TAG: Final = b"\x52"
#: Tag of field 1 (map entries, repeated values, map keys) and of field 2 (map values).
_FIELD1: Final = b"\x0a"
_FIELD2: Final = b"\x12"


def _framed(tag: bytes, payload: bytes) -> bytes:
    size = len(payload)
    return tag + (_SHORT[size] if size < 0x80 else _varint(size)) + payload


def _json_value_bytes(obj: Any) -> bytes | None:
    """One attribute value's message from its JSON, or ``None`` when the value is not one of
    the common well-formed shapes (the caller then takes the checked path)."""
    if type(obj) is not dict or len(obj) != 1:
        return None
    ((kind, value),) = obj.items()
    tag = _STRING_TAGS.get(kind)
    if tag is not None:
        if type(value) is not str:
            return None
        data = value.encode()
        size = len(data)
        return tag + _SHORT[size] + data if size < 0x80 else tag + _varint(size) + data
    if type(value) is bool:
        return _BOOL_VALUES.get((kind, value))
    tag = _SET_TAGS.get(kind)
    if tag is not None:
        if type(value) is not list or not all(type(v) is str for v in value):
            return None
        return _framed(tag, b"".join([_framed(_FIELD1, v.encode()) for v in value]))
    if kind == "B":
        return _framed(_BINARY_TAG, binary_value(value, ""))
    if kind == "BS" and type(value) is list:
        return _framed(
            _BINARY_SET_TAG, b"".join([_framed(_FIELD1, binary_value(v, "")) for v in value])
        )
    if kind == "L" and type(value) is list:
        elements = []
        for element in value:
            encoded = _json_value_bytes(element)
            if encoded is None:
                return None
            size = len(encoded)
            elements.append(
                _FIELD1 + _SHORT[size] + encoded if size < 0x80 else _framed(_FIELD1, encoded)
            )
        return _framed(_LIST_TAG, b"".join(elements))
    if kind == "M" and type(value) is dict:
        body = _json_map_bytes(value)
        if body is None:
            return None
        size = len(body)
        return _MAP_TAG + _SHORT[size] + body if size < 0x80 else _framed(_MAP_TAG, body)
    return None


def _json_map_bytes(attributes: dict[str, Any]) -> bytes | None:
    entries = []
    for name in sorted(attributes):
        encoded = _json_value_bytes(attributes[name])
        if encoded is None:
            return None
        key = name.encode()
        # The common entry: every length a one-byte varint, the entry built in one step.
        inner = len(key) + len(encoded) + 4
        if inner < 0x80:
            entries.append(
                b"\x0a%c\x0a%c%b\x12%c%b" % (inner, len(key), key, len(encoded), encoded)
            )
        else:
            entries.append(_framed(_FIELD1, _framed(_FIELD1, key) + _framed(_FIELD2, encoded)))
    return b"".join(entries)


def encode_item_json(doc: Any) -> bytes | None:
    """The stored item value of a parsed item JSON object, as :func:`encode_item` would give
    it for the item that :func:`~.layout.public_to_item` builds; ``None`` when ``doc`` needs
    that checked path (binary values, anything malformed, strings that are not UTF-8)."""
    if type(doc) is not dict:
        return None
    try:
        body = _json_map_bytes(doc)
    except (UnicodeEncodeError, DumpTreeError):
        return None
    return None if body is None else ITEM_MAGIC + body
