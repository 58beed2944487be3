"""Item records from item JSON: an item's record and its GSI rows.

Pure computation, run in worker processes by :class:`~.encode.DynamoDBEncoder`: this
module imports only what encoding items needs, so that a worker process starts quickly.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..._core.errors import DumpTreeError
from .dynamodb_internal_pb2 import DynamoAttributeValue, DynamoItem, DynamoTableSchema
from .errors import tree_error
from .keys import RESTORE_GENERATION, gsi_key_prefix, item_key_prefix, ordered_segment
from .layout import binary_value, load_json, public_to_item
from .numbers import numeric_key_bytes
from .values import encode_item, encode_item_json

__all__ = ["ItemBatch", "RawItem", "Record", "encode_items", "gsi_rows", "item_key"]

Record = tuple[bytes, bytes]


# --- key derivation -------------------------------------------------------------------------


def _key_bytes(av: DynamoAttributeValue, where: str) -> bytes:
    kind = av.WhichOneof("value")
    if kind == "s":
        return av.s.encode("utf-8")
    if kind == "b":
        return av.b
    if kind == "n":
        return numeric_key_bytes(av.n)
    raise tree_error("ErrDDBEncodeInvalidItem", f"{where}: key attribute is not S, N or B")


def _primary_segments(schema: DynamoTableSchema, item: DynamoItem, where: str) -> bytes:
    attrs = item.attributes
    out = b""
    for role, name in (
        ("hash", schema.primary_key.hash_key),
        ("range", schema.primary_key.range_key),
    ):
        if role == "range" and not name:
            break
        if name not in attrs:
            raise tree_error(
                "ErrDDBEncodeInvalidItem", f"{where}: item missing {role}-key attribute {name!r}"
            )
        out += ordered_segment(_key_bytes(attrs[name], where))
    return out


def item_key(schema: DynamoTableSchema, item: DynamoItem, where: str) -> bytes:
    """``!ddb|item|<b64url(table)>|1|`` + ordered hash segment [+ ordered range segment]."""
    prefix = item_key_prefix(schema.table_name, RESTORE_GENERATION)
    return prefix + _primary_segments(schema, item, where)


def gsi_rows(schema: DynamoTableSchema, item: DynamoItem, key: bytes, where: str) -> list[Record]:
    """The item's GSI rows, indexes in name order; sparse: an item without an index's key
    attributes has no row in it. Each row's value is the item key ``key``."""
    indexes = schema.global_secondary_indexes
    if not indexes:
        return []
    primary = _primary_segments(schema, item, where)
    attrs = item.attributes
    rows = []
    for name in sorted(indexes):
        keys = indexes[name].key_schema
        if keys.hash_key not in attrs:
            continue
        index_key = ordered_segment(_key_bytes(attrs[keys.hash_key], where))
        if keys.range_key:
            if keys.range_key not in attrs:
                continue
            index_key += ordered_segment(_key_bytes(attrs[keys.range_key], where))
        prefix = gsi_key_prefix(schema.table_name, RESTORE_GENERATION, name)
        rows.append((prefix + index_key + primary, key))
    return rows


def _item_records(schema: DynamoTableSchema, item: DynamoItem, where: str) -> Iterator[Record]:
    key = item_key(schema, item, where)
    yield key, encode_item(item)
    yield from gsi_rows(schema, item, key, where)


class RawItem(NamedTuple):
    """An item's JSON as read from the tree, waiting to be encoded in an :class:`ItemBatch`."""

    #: Where it came from (a path, or ``path:line`` for a JSON-lines part).
    where: str
    raw: bytes
    #: The table's schema, serialised (generated message classes do not pickle).
    schema: bytes
    #: A JSON-lines item, which must be an object (an item file may also be ``null``).
    line: bool


class ItemBatch(NamedTuple):
    """Items of one table to encode in one call, as columns: a batch is pickled to a worker
    process as a few lists, not as an object per item (three times faster both ways)."""

    #: The table's schema, serialised (generated message classes do not pickle).
    schema: bytes
    #: JSON-lines items, which must be objects (an item file may also be ``null``).
    lines: bool
    #: Where each item came from (a path, or ``path:line`` for a JSON-lines part).
    wheres: list[str]
    raws: list[bytes]


@dataclass(frozen=True, slots=True)
class _Plan:
    """A table's schema with what every item's keys need, derived once per worker."""

    schema: DynamoTableSchema
    item_prefix: bytes
    #: The hash key's name, then the range key's if the table has one.
    keys: tuple[str, ...]
    #: Per GSI in name order: its key prefix, hash key and range key ("" if none).
    indexes: tuple[tuple[bytes, str, str], ...]


@functools.lru_cache(maxsize=16)
def _plan(blob: bytes) -> _Plan:
    schema = DynamoTableSchema()
    schema.ParseFromString(blob)
    name = schema.table_name
    primary = schema.primary_key
    indexes = schema.global_secondary_indexes
    return _Plan(
        schema,
        item_key_prefix(name, RESTORE_GENERATION),
        (primary.hash_key, primary.range_key) if primary.range_key else (primary.hash_key,),
        tuple(
            (
                gsi_key_prefix(name, RESTORE_GENERATION, index),
                indexes[index].key_schema.hash_key,
                indexes[index].key_schema.range_key,
            )
            for index in sorted(indexes)
        ),
    )


def _json_key_bytes(obj: Any) -> bytes | None:
    """A key attribute's bytes from its JSON when it is a well-formed ``S``, ``N`` or ``B``
    value (a malformed one raises or gives ``None``)."""
    if type(obj) is not dict or len(obj) != 1:
        return None
    ((kind, value),) = obj.items()
    if type(value) is not str:
        return None
    if kind == "S":
        return value.encode()
    if kind == "N":
        return numeric_key_bytes(value)
    if kind == "B":
        return binary_value(value, "")
    return None


def _fast_records(plan: _Plan, doc: Any) -> list[Record] | None:
    """What :func:`_item_records` gives for ``doc``, built from the JSON directly, or
    ``None`` when the item needs the checked path (which also raises its errors)."""
    value = encode_item_json(doc)
    if value is None:
        return None
    try:
        primary = b""
        for name in plan.keys:
            raw = _json_key_bytes(doc.get(name))
            if raw is None:
                return None
            primary += ordered_segment(raw)
        key = plan.item_prefix + primary
        records = [(key, value)]
        for prefix, hash_name, range_name in plan.indexes:
            if hash_name not in doc:
                continue
            raw = _json_key_bytes(doc[hash_name])
            if raw is None:
                return None
            index_key = ordered_segment(raw)
            if range_name:
                if range_name not in doc:
                    continue
                raw = _json_key_bytes(doc[range_name])
                if raw is None:
                    return None
                index_key += ordered_segment(raw)
            records.append((prefix + index_key + primary, key))
    except (DumpTreeError, UnicodeEncodeError):
        return None
    return records


def encode_items(batch: ItemBatch) -> list[Record]:
    """Parse and encode a batch of items: each item's record, then its GSI rows."""
    records: list[Record] = []
    plan = _plan(batch.schema)
    for where, raw in zip(batch.wheres, batch.raws, strict=True):
        doc = load_json(raw, where, "ErrDDBEncodeInvalidItem")
        if batch.lines and not isinstance(doc, dict):
            raise tree_error("ErrDDBEncodeInvalidItem", f"{where}: a line must be one JSON object")
        fast = _fast_records(plan, doc)
        if fast is None:
            item = public_to_item(doc, where)
            records.extend(_item_records(plan.schema, item, where))
        else:
            records.extend(fast)
    return records
