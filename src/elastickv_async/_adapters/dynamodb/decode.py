"""DynamoDB decoder: schema and item records -> ``dynamodb/<table>/`` (REFERENCE_NOTES §3.1).

Item records sort before their table's schema record, so item bodies are spilled to scratch
files per (table, generation) as they arrive and written once the schemas are known. At
:meth:`DynamoDBDecoder.finalize` each table with a schema gets ``_schema.json`` and its items:
the migration-source generation first, then the active generation, so the active version
wins where both hold the same key. Items of other generations are counted and warned about
(``ddb_stale_generation_items``); items of tables without a schema likewise
(``ddb_orphan_items``). Tables are rendered in parallel (in worker processes); under
:meth:`DynamoDBDecoder.consume` their files are written behind, in the writer's lane, while
the next chunks are read back and rendered.
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
from ..base import DecodeContext, Routed, WritesBehind
from .bundle import JsonlTable, part_name
from .dynamodb_internal_pb2 import DynamoTableSchema
from .keys import ITEM_PREFIX, TABLE_META_PREFIX, parse_item_key, parse_table_meta_key
from .layout import ITEMS_DIR, LAYOUT_JSONL, ROOT, SCHEMA_FILE, schema_json
from .render import RenderPlan, bundle_lines, item_files
from .values import decode_schema, item_body

__all__ = ["DynamoDBDecoder"]

#: Item bodies read back, rendered in a worker process and written, per step (at most: a
#: table's chunks in flight share its part of the adapter's memory).
CHUNK_BYTES: Final = 512 << 10
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


class DynamoDBDecoder(WritesBehind):
    """Decodes the ``!ddb|`` routes of one snapshot; see the module docstring."""

    def __init__(self, ctx: DecodeContext) -> None:
        self._ctx = ctx
        self._schemas: dict[str, _Table] = {}
        self._index = itertools.count()
        self._spill: RecordFiles[SpillKey] = RecordFiles(ctx.scratch / "items")
        self._jsonl = ctx.adapter_options.layout == LAYOUT_JSONL
        #: ``!ddb|item|<table>|<generation>|`` of the last item key parsed, and its spill key.
        self._head = b""
        self._head_spill_key: SpillKey = ("", 0)
        self._run_bytes = ctx.memory
        self._chunk_bytes = CHUNK_BYTES

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
                pending.append((self._spill_key(entry.key), (b"", item_body(entry.value))))
        if pending:
            await anyio.to_thread.run_sync(self._spill.append, pending)

    def _spill_key(self, key: bytes) -> SpillKey:
        # Items come in key order, so runs of keys share their table and generation: a key
        # that starts with the last parsed key's head (and has a primary key after it)
        # would parse to the same values.
        head = self._head
        if head and key.startswith(head) and len(key) > len(head):
            return self._head_spill_key
        item_key = parse_item_key(key)
        table_end = key.index(b"|", len(ITEM_PREFIX))
        self._head = key[: key.index(b"|", table_end + 1) + 1]
        self._head_spill_key = (item_key.encoded_table, item_key.generation)
        return self._head_spill_key

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
        lanes = max(1, min(self._ctx.options.jobs, len(by_directory)))
        # The tables flushed at once share the adapter's memory (jsonl: their sorts' runs;
        # per item: the chunk read, the one rendering, the one handed to the lane and the one
        # it writes, rendered files taking up to about twice their bodies' bytes).
        self._run_bytes = self._ctx.flush_memory() // lanes
        self._chunk_bytes = max(1, min(CHUNK_BYTES, self._run_bytes // 8))
        limiter = anyio.CapacityLimiter(lanes)
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
        keys = table.schema.primary_key
        plan = RenderPlan(table.directory, keys.hash_key, keys.range_key)
        written = 0
        if self._jsonl:
            bundle = JsonlTable(
                self._ctx.scratch / "jsonl" / str(table.index),
                part_bytes=self._ctx.adapter_options.part_bytes,
                run_bytes=self._run_bytes,
            )
            for reader in present:
                while bodies := await _next_bodies(reader, self._chunk_bytes):
                    lines = await self._ctx.workers.run(bundle_lines, plan, bodies)
                    await anyio.to_thread.run_sync(bundle.add, lines)
                    written += len(lines)
            parts = await anyio.to_thread.run_sync(bundle.finish)
            for number, path in enumerate(parts):
                await self._ctx.writer.install(
                    f"{table.directory}/{ITEMS_DIR}/{part_name(number)}", path
                )
        else:
            # Handing a chunk to the lane returns once the lane takes it, so the next chunk is
            # read back and rendered while this one is written.
            out = self.files_out
            for reader in present:
                while bodies := await _next_bodies(reader, self._chunk_bytes):
                    files = await self._ctx.workers.run(item_files, plan, bodies)
                    await out.write_many(files)
                    written += len(files)
        self._ctx.report.count("dynamodb.items", written)


async def _next_bodies(reader: RecordReader, size: int) -> list[bytes]:
    """The next chunk of about ``size`` bytes of spilled item bodies (``[]`` when the spill
    is exhausted)."""
    chunk = await anyio.to_thread.run_sync(reader.next_chunk, size)
    return [body for _, body in chunk]
