"""DynamoDB encoder: ``dynamodb/<table>/`` -> internal records (REFERENCE_NOTES §6.4).

Per table: the schema record (restore generation 1, ordered key encoding 2), the generation
counter ``"1"``, one record per item keyed by its ordered primary key, and the derived GSI
rows (index keys, then the primary key; the value points at the item key). Items come from
``items/<hash>.json`` and ``items/<hash>/<range>.json``, or from ``items/data-*.jsonl`` parts
when the manifest says ``dynamodb_layout: "jsonl"``.

The tree is read in worker threads through the context's
:class:`~elastickv_async._core.dump.tree.DumpTree` (symlinks, special files and hard links are
refused, never followed). Records are produced in chunks so memory stays bounded whatever the
table size.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import anyio
import anyio.to_thread

from ..._core.concurrency import task_group
from ..._core.dump.names import encode_segment
from ..._core.dump.tree import MAX_RECORD_FILE, DumpTree, TreeDir, TreeFile
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
    load_json,
    public_to_item,
    public_to_schema,
)
from .numbers import numeric_key_bytes
from .values import encode_item, encode_schema

__all__ = ["DynamoDBEncoder", "gsi_rows", "item_key"]

Record = tuple[bytes, bytes]

#: Records and item files handed over per walk step (and a bound on the records' bytes).
CHUNK_UNITS: Final = 256
CHUNK_BYTES: Final = 4 << 20
#: Item files of a chunk are read by this many threads at once.
READ_LANES: Final = 4


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


# --- tree walk (worker threads only) ---------------------------------------------------------


@dataclass(slots=True)
class _ItemFile:
    """An item file opened (and checked) by the walk, waiting to be read."""

    file: TreeFile
    schema: DynamoTableSchema


def _load_items(files: Sequence[_ItemFile]) -> list[Record]:
    """Read, parse and encode opened item files (closing every one of them)."""
    records: list[Record] = []
    try:
        for unit in files:
            with unit.file as file:
                doc = load_json(file.read_all(), file.rel, "ErrDDBEncodeInvalidItem")
            records.extend(_item_records(unit.schema, public_to_item(doc, file.rel), file.rel))
    finally:
        _close_files(files)
    return records


def _close_files(units: Sequence[Record | _ItemFile]) -> None:
    for unit in units:
        if isinstance(unit, _ItemFile):
            unit.file.close()


class _Walker:
    """Walks ``dynamodb/`` lazily. :meth:`next_chunk` runs in worker threads, one call at a
    time; :meth:`close` ends the walk, which closes the directories it holds open."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._tree = ctx.tree
        self._jsonl = ctx.decoded_with.layout == LAYOUT_JSONL
        self._units = self._walk()

    def next_chunk(self) -> list[Record | _ItemFile]:
        """The next records and opened item files (``[]`` when the tree is exhausted)."""
        chunk: list[Record | _ItemFile] = []
        size = 0
        try:
            for unit in self._units:
                chunk.append(unit)
                size += len(unit[1]) if isinstance(unit, tuple) else 0
                if len(chunk) >= CHUNK_UNITS or size >= CHUNK_BYTES:
                    break
        except BaseException:
            _close_files(chunk)
            raise
        return chunk

    def close(self) -> None:
        """Stop the walk (its ``with`` blocks close the descriptors)."""
        self._units.close()

    def _walk(self) -> Generator[Record | _ItemFile, None, None]:
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

    def _table(self, table_dir: TreeDir, directory: str) -> Iterator[Record | _ItemFile]:
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
            if self._jsonl:
                yield from self._bundle_items(items, schema)
            else:
                yield from self._file_items(items, schema)

    @staticmethod
    def _file_items(items: TreeDir, schema: DynamoTableSchema) -> Iterator[_ItemFile]:
        for entry in items.entries():
            if not entry.is_dir:
                if entry.name.endswith(".json"):
                    yield _ItemFile(items.open_file(entry), schema)
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
                        yield _ItemFile(hash_dir.open_file(child), schema)

    @staticmethod
    def _bundle_items(items: TreeDir, schema: DynamoTableSchema) -> Iterator[Record]:
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
                    doc = load_json(line, where, "ErrDDBEncodeInvalidItem")
                    if not isinstance(doc, dict):
                        raise tree_error(
                            "ErrDDBEncodeInvalidItem", f"{where}: a line must be one JSON object"
                        )
                    yield from _item_records(schema, public_to_item(doc, where), where)


class DynamoDBEncoder:
    """The DynamoDB encode adapter (see the module docstring)."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._ctx = ctx

    async def records(self) -> AsyncGenerator[Record, None]:
        """Yield every record of the ``dynamodb/`` subtree (none when it is absent)."""
        tree = self._ctx.tree
        walker = _Walker(self._ctx)
        try:
            upcoming = await tree.run(walker.next_chunk)
            while upcoming:
                chunk = upcoming
                try:
                    records, upcoming = await self._step(tree, walker, chunk)
                finally:
                    with anyio.CancelScope(shield=True):
                        await tree.run(_close_files, chunk)
                try:
                    for record in records:
                        yield record
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await tree.run(_close_files, upcoming)
                    raise
        finally:
            with anyio.CancelScope(shield=True):
                await tree.run(walker.close)

    @staticmethod
    async def _step(
        tree: DumpTree, walker: _Walker, chunk: list[Record | _ItemFile]
    ) -> tuple[list[Record], list[Record | _ItemFile]]:
        """Resolve ``chunk`` (its item files read by several threads: per-file latency
        dominates) while the walk fetches the next chunk; return both."""
        records = [unit for unit in chunk if isinstance(unit, tuple)]
        files = [unit for unit in chunk if isinstance(unit, _ItemFile)]
        lanes = [files[i::READ_LANES] for i in range(min(READ_LANES, len(files)))]
        loaded: dict[int, list[Record]] = {}
        upcoming: list[Record | _ItemFile] = []

        async def load(index: int) -> None:
            loaded[index] = await tree.run(_load_items, lanes[index])

        async def walk() -> None:
            upcoming.extend(await tree.run(walker.next_chunk))

        try:
            async with task_group() as tg:
                tg.start_soon(walk)
                for index in range(len(lanes)):
                    tg.start_soon(load, index)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await tree.run(_close_files, upcoming)
            raise
        for index in range(len(lanes)):
            records.extend(loaded[index])
        return records, upcoming
