"""DynamoDB decoder: schema and item records -> ``dynamodb/<table>/`` (REFERENCE_NOTES §3.1).

Item records sort before their table's schema record, so item bodies are spilled to scratch
files per (table, generation) as they arrive and written once the schemas are known. At
:meth:`DynamoDBDecoder.finalize` each table with a schema gets ``_schema.json`` and its items:
the migration-source generation first, then the active generation, so the active version
wins where both hold the same key. Items of other generations are counted and warned about
(``ddb_stale_generation_items``); items of tables without a schema likewise
(``ddb_orphan_items``). Tables are written in parallel.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.to_thread

from ..._core import gojson
from ..._core.concurrency import task_group
from ..._core.dump.names import encode_segment
from ..._core.scratch import Record, RecordFiles, RecordReader
from ..base import DecodeContext, Routed
from .bundle import JsonlTable, part_name
from .dynamodb_internal_pb2 import DynamoTableSchema
from .keys import ITEM_PREFIX, TABLE_META_PREFIX, parse_item_key, parse_table_meta_key
from .layout import (
    ITEMS_DIR,
    LAYOUT_JSONL,
    ROOT,
    SCHEMA_FILE,
    item_key_segments,
    item_public,
    schema_json,
)
from .values import decode_item, decode_schema, item_body

__all__ = ["DynamoDBDecoder"]

#: Item bodies read back (and files written) per worker-thread hop.
CHUNK_BYTES: Final = 1 << 20
STALE_HINT: Final = (
    "stale-gen rows excluded; restore would otherwise emit them under the new schema"
)

SpillKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class _Table:
    """A table with a schema: its key segment, name (from the key) and schema."""

    encoded: str
    name: bytes
    schema: DynamoTableSchema
    #: Position in key order; names the table's scratch directory.
    index: int

    @property
    def directory(self) -> str:
        return f"{ROOT}/{encode_segment(self.name)}"


class DynamoDBDecoder:
    """Decodes the ``!ddb|`` routes of one snapshot; see the module docstring."""

    def __init__(self, ctx: DecodeContext) -> None:
        self._ctx = ctx
        self._schemas: dict[str, _Table] = {}
        self._index = itertools.count()
        self._spill: RecordFiles[SpillKey] = RecordFiles(ctx.scratch / "items")
        self._jsonl = ctx.adapter_options.layout == LAYOUT_JSONL

    async def handle(self, batch: Sequence[Routed]) -> None:
        """Keep schemas, spill item bodies; ignore generation counters and GSI rows."""
        pending: list[tuple[SpillKey, Record]] = []
        for prefix, entry in batch:
            if prefix == TABLE_META_PREFIX:
                key = parse_table_meta_key(entry.key)
                schema = decode_schema(entry.value)
                self._schemas[key.encoded] = _Table(
                    key.encoded, key.name, schema, next(self._index)
                )
            elif prefix == ITEM_PREFIX:
                item_key = parse_item_key(entry.key)
                spill_key = (item_key.encoded_table, item_key.generation)
                pending.append((spill_key, (b"", item_body(entry.value))))
        if pending:
            await anyio.to_thread.run_sync(self._spill.append, pending)

    async def finalize(self) -> dict[str, Any]:
        """Write every table that has a schema; return ``{"tables": [sorted names]}``."""
        counts = self._spill.counts
        orphans: dict[str, int] = {}
        for (encoded, _), n in counts.items():
            if encoded not in self._schemas:
                orphans[encoded] = orphans.get(encoded, 0) + n
        for encoded in sorted(orphans):
            self._ctx.log.warning(
                "ddb_orphan_items", encoded_table=encoded, buffered_items=orphans[encoded]
            )
        # Tables whose names share a directory (only possible through lenient base64) are
        # written one after the other so the result does not depend on scheduling.
        by_directory: dict[str, list[_Table]] = {}
        for encoded in sorted(self._schemas):
            table = self._schemas[encoded]
            by_directory.setdefault(table.directory, []).append(table)
        limiter = anyio.CapacityLimiter(max(1, self._ctx.options.jobs))
        async with task_group() as tg:
            for tables in by_directory.values():
                tg.start_soon(self._flush_tables, tables, counts, limiter)
        names = {gojson.go_str(t.name) for t in self._schemas.values()}
        return {"tables": sorted(names)}

    async def _flush_tables(
        self, tables: list[_Table], counts: dict[SpillKey, int], limiter: anyio.CapacityLimiter
    ) -> None:
        async with limiter:
            for table in tables:
                await self._flush_table(table, counts)

    async def _flush_table(self, table: _Table, counts: dict[SpillKey, int]) -> None:
        schema = table.schema
        await self._ctx.writer.write(f"{table.directory}/{SCHEMA_FILE}", schema_json(schema))
        active = schema.generation
        source = schema.migrating_from_generation
        generations = [source] if source not in (0, active) else []
        generations.append(active)
        stale = sum(
            n
            for (encoded, gen), n in counts.items()
            if encoded == table.encoded and gen not in generations
        )
        if stale:
            self._ctx.log.warning(
                "ddb_stale_generation_items",
                table=gojson.go_str(table.name),
                active_generation=active,
                migration_source_generation=source,
                stale_count=stale,
                hint=STALE_HINT,
            )
        readers = [self._spill.reader((table.encoded, gen)) for gen in generations]
        present = [reader for reader in readers if reader is not None]
        written = 0
        if self._jsonl:
            bundle = JsonlTable(
                self._ctx.scratch / "jsonl" / str(table.index),
                part_bytes=self._ctx.adapter_options.part_bytes,
            )
            for reader in present:
                while n := await anyio.to_thread.run_sync(
                    self._bundle_chunk, table, reader, bundle
                ):
                    written += n
            parts = await anyio.to_thread.run_sync(bundle.finish)
            for number, path in enumerate(parts):
                await self._ctx.writer.install(
                    f"{table.directory}/{ITEMS_DIR}/{part_name(number)}", path
                )
        else:
            for reader in present:
                while files := await anyio.to_thread.run_sync(self._item_files, table, reader):
                    await self._ctx.writer.write_many(files)
                    written += len(files)
        self._ctx.report.count("dynamodb.items", written)

    @staticmethod
    def _item_files(table: _Table, reader: RecordReader) -> list[tuple[str, bytes]]:
        keys = table.schema.primary_key
        files = []
        for _, body in reader.next_chunk(CHUNK_BYTES):
            item = decode_item(body)
            hash_segment, range_segment = item_key_segments(item, keys.hash_key, keys.range_key)
            if range_segment is None:
                name = hash_segment
            elif hash_segment:
                name = f"{hash_segment}/{range_segment}"
            else:
                # The reference joins paths with filepath.Join, which drops an empty hash
                # segment: the item lands at items/<range>.json. Keep that placement.
                name = range_segment
            files.append(
                (
                    f"{table.directory}/{ITEMS_DIR}/{name}.json",
                    gojson.marshal_indent(item_public(item)),
                )
            )
        return files

    @staticmethod
    def _bundle_chunk(table: _Table, reader: RecordReader, bundle: JsonlTable) -> int:
        """Add the next chunk of items to ``bundle``; return how many (0 when exhausted)."""
        keys = table.schema.primary_key
        lines = []
        for _, body in reader.next_chunk(CHUNK_BYTES):
            item = decode_item(body)
            hash_segment, range_segment = item_key_segments(item, keys.hash_key, keys.range_key)
            sort_key = f"{hash_segment}\x00{range_segment or ''}".encode()
            lines.append((sort_key, gojson.marshal(item_public(item)) + b"\n"))
        bundle.add(lines)
        return len(lines)
