"""DynamoDB encoder: ``dynamodb/<table>/`` -> internal records (REFERENCE_NOTES §6.4).

Per table: the schema record (restore generation 1, ordered key encoding 2), the generation
counter ``"1"``, one record per item keyed by its ordered primary key, and the derived GSI
rows (index keys, then the primary key; the value points at the item key). Items come from
``items/<hash>.json`` and ``items/<hash>/<range>.json``, or from ``items/data-*.jsonl`` parts
when the manifest says ``dynamodb_layout: "jsonl"``.

The tree is read in one worker thread at a time through the context's
:class:`~elastickv_async._core.dump.tree.DumpTree` (symlinks, special files and hard links are
refused, never followed), a chunk of item files per call. The items of a chunk are parsed and
encoded in the context's worker processes while the next chunk is read, so memory stays
bounded whatever the table size.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import anyio
import anyio.to_thread

from ..._core.concurrency import task_group
from ..._core.dump.names import encode_segment
from ..._core.dump.tree import MAX_RECORD_FILE, TreeDir, TreeEntry
from ..._core.errors import DumpTreeError
from ..base import EncodeContext
from .dynamodb_internal_pb2 import DynamoAttributeValue, DynamoItem, DynamoTableSchema
from .errors import tree_error
from .keys import (
    RESTORE_GENERATION,
    gsi_key_prefix,
    item_key_prefix,
    ordered_segment,
    table_gen_key,
    table_meta_key,
)
from .layout import (
    ITEMS_DIR,
    LAYOUT_JSONL,
    ROOT,
    SCHEMA_FILE,
    binary_value,
    load_json,
    public_to_item,
    public_to_schema,
)
from .numbers import numeric_key_bytes
from .values import encode_item, encode_item_json, encode_schema

__all__ = ["DynamoDBEncoder", "gsi_rows", "item_key"]

Record = tuple[bytes, bytes]

#: Records and items read per walk step, and a bound on their bytes: a step's items are
#: encoded in the worker processes while the walk reads the next one.
CHUNK_UNITS: Final = 2048
CHUNK_BYTES: Final = 4 << 20


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


# --- item encoding (worker processes) ------------------------------------------------------


class _RawItem(NamedTuple):
    """An item's JSON as read from the tree, waiting to be encoded (a named tuple: a
    chunk's items are pickled to the worker processes, and tuples pickle fastest)."""

    #: Where it came from (a path, or ``path:line`` for a JSON-lines part).
    where: str
    raw: bytes
    #: The table's schema, serialised (generated message classes do not pickle).
    schema: bytes
    #: A JSON-lines item, which must be an object (an item file may also be ``null``).
    line: bool


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


def _encode_items(items: Sequence[_RawItem]) -> list[Record]:
    """Parse and encode a batch of items: each item's record, then its GSI rows."""
    records: list[Record] = []
    for unit in items:
        doc = load_json(unit.raw, unit.where, "ErrDDBEncodeInvalidItem")
        if unit.line and not isinstance(doc, dict):
            raise tree_error(
                "ErrDDBEncodeInvalidItem", f"{unit.where}: a line must be one JSON object"
            )
        plan = _plan(unit.schema)
        fast = _fast_records(plan, doc)
        if fast is None:
            item = public_to_item(doc, unit.where)
            records.extend(_item_records(plan.schema, item, unit.where))
        else:
            records.extend(fast)
    return records


# --- tree walk (worker threads only) ---------------------------------------------------------

Unit = Record | _RawItem


class _Walker:
    """Walks ``dynamodb/`` lazily. :meth:`next_chunk` runs in worker threads, one call at a
    time; :meth:`close` ends the walk, which closes the directories it holds open."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._tree = ctx.tree
        self._jsonl = ctx.decoded_with.layout == LAYOUT_JSONL
        self._units = self._walk()

    def next_chunk(self) -> list[Unit]:
        """The next records and items read (``[]`` when the tree is exhausted).

        The item files of a chunk are read here, one after the other in this one thread:
        spreading small reads over threads only queues them behind the GIL.
        """
        chunk: list[Unit] = []
        size = 0
        for unit in self._units:
            chunk.append(unit)
            size += len(unit.raw) if isinstance(unit, _RawItem) else len(unit[1])
            if len(chunk) >= CHUNK_UNITS or size >= CHUNK_BYTES:
                break
        return chunk

    def close(self) -> None:
        """Stop the walk (its ``with`` blocks close the descriptors)."""
        self._units.close()

    def _walk(self) -> Generator[Unit, None, None]:
        top = self._tree.open_dir((ROOT,))
        if top is None:
            return
        with top:
            for entry in top.entries():
                if not entry.is_dir:
                    continue
                table_dir = top.subdir(entry.name)
                if table_dir is not None:
                    with table_dir:
                        yield from self._table(table_dir, entry.name)

    def _table(self, table_dir: TreeDir, directory: str) -> Iterator[Unit]:
        rel = table_dir.path(SCHEMA_FILE)
        raw = table_dir.read(SCHEMA_FILE)
        if raw is None:
            raise tree_error("ErrDDBEncodeInvalidSchema", f"{rel} is missing")
        schema = public_to_schema(load_json(raw, rel, "ErrDDBEncodeInvalidSchema"), rel)
        name = schema.table_name
        if not name:
            raise tree_error("ErrDDBEncodeInvalidSchema", f"{rel}: empty table_name")
        expected = encode_segment(name.encode("utf-8"))
        if expected != directory:
            raise tree_error(
                "ErrDDBEncodeInvalidSchema",
                f"{rel}: table_name {name!r} belongs in directory {expected!r}",
            )
        if not schema.primary_key.hash_key:
            raise tree_error("ErrDDBEncodeInvalidSchema", f"{rel}: empty primary hash key")
        yield table_meta_key(name), encode_schema(schema)
        yield table_gen_key(name), str(RESTORE_GENERATION).encode("ascii")
        items = table_dir.subdir(ITEMS_DIR)
        if items is None:
            return
        with items:
            blob = schema.SerializeToString()
            if self._jsonl:
                yield from self._bundle_items(items, blob)
            else:
                yield from self._file_items(items, blob)

    @staticmethod
    def _file_items(items: TreeDir, schema: bytes) -> Iterator[_RawItem]:
        for entry in items.entries():
            if not entry.is_dir:
                if entry.name.endswith(".json"):
                    yield _read_item(items, entry, schema)
                continue
            hash_dir = items.subdir(entry.name)
            if hash_dir is None:
                continue
            with hash_dir:
                for child in hash_dir.entries():
                    if child.is_dir:
                        where = hash_dir.path(child.name)
                        raise tree_error(
                            "ErrDDBEncodeInvalidItem",
                            f"{where}: items are at most two directory levels deep",
                        )
                    if child.name.endswith(".json"):
                        yield _read_item(hash_dir, child, schema)

    @staticmethod
    def _bundle_items(items: TreeDir, schema: bytes) -> Iterator[_RawItem]:
        parts = []
        for entry in items.entries():
            if entry.is_dir:
                raise tree_error(
                    "ErrDDBEncodeInvalidItem",
                    f"{items.path(entry.name)}: jsonl layout has no item directories",
                )
            if entry.name.endswith(".jsonl"):
                parts.append(entry)
        for entry in parts:
            # A part is streamed line by line: only one item is held at a time.
            with items.open_file(entry).stream() as fh:
                number = 0
                while line := fh.readline(MAX_RECORD_FILE + 1):
                    number += 1
                    where = f"{items.path(entry.name)}:{number}"
                    if line.endswith(b"\n"):
                        line = line[:-1]
                    elif len(line) > MAX_RECORD_FILE:
                        raise tree_error(
                            "ErrDDBEncodeInvalidItem",
                            f"{where}: a line is longer than {MAX_RECORD_FILE:,} bytes",
                        )
                    yield _RawItem(where, line, schema, line=True)


def _read_item(directory: TreeDir, entry: TreeEntry, schema: bytes) -> _RawItem:
    with directory.open_file(entry) as file:
        return _RawItem(file.rel, file.read_all(), schema, line=False)


class DynamoDBEncoder:
    """The DynamoDB encode adapter (see the module docstring)."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._ctx = ctx

    async def batches(self) -> AsyncGenerator[list[Record], None]:
        """Yield every record of the ``dynamodb/`` subtree (none when it is absent), a walk
        step's records at a time."""
        tree = self._ctx.tree
        walker = _Walker(self._ctx)
        try:
            upcoming = await tree.run(walker.next_chunk)
            while upcoming:
                records, upcoming = await self._step(walker, upcoming)
                yield records
        finally:
            with anyio.CancelScope(shield=True):
                await tree.run(walker.close)

    async def _step(self, walker: _Walker, chunk: list[Unit]) -> tuple[list[Record], list[Unit]]:
        """Encode ``chunk``'s items in the workers (a share per worker process) while the
        walk reads the next chunk; return the chunk's records in walk order, and the next
        chunk."""
        workers = self._ctx.workers
        shares = max(1, workers.processes)
        # Records as they are, or items to encode (results[i] for parts[i]); in walk order.
        parts: list[list[_RawItem]] = []
        results: list[list[Record]] = []
        items: list[_RawItem] = []
        for unit in chunk:
            if not isinstance(unit, _RawItem):
                for share in _shares(items, shares):
                    parts.append(share)
                    results.append([])
                items = []
                parts.append([])
                results.append([unit])
            else:
                items.append(unit)
        for share in _shares(items, shares):
            parts.append(share)
            results.append([])
        upcoming: list[Unit] = []

        async def encode(index: int) -> None:
            results[index] = await workers.run(_encode_items, parts[index])

        async def walk() -> None:
            upcoming.extend(await self._ctx.tree.run(walker.next_chunk))

        async with task_group() as tg:
            tg.start_soon(walk)
            for index, part in enumerate(parts):
                if part:
                    tg.start_soon(encode, index)
        return [record for result in results for record in result], upcoming


def _shares(items: list[_RawItem], shares: int) -> list[list[_RawItem]]:
    """``items`` cut into up to ``shares`` consecutive runs of near-equal length."""
    if not items:
        return []
    size = -(-len(items) // shares)
    return [items[i : i + size] for i in range(0, len(items), size)]
