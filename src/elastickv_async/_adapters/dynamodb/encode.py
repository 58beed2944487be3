"""DynamoDB encoder: ``dynamodb/<table>/`` -> internal records (REFERENCE_NOTES §6.4).

Per table: the schema record (restore generation 1, ordered key encoding 2), the generation
counter ``"1"``, one record per item keyed by its ordered primary key, and the derived GSI
rows (index keys, then the primary key; the value points at the item key). Items come from
``items/<hash>.json`` and ``items/<hash>/<range>.json``, or from ``items/data-*.jsonl`` parts
when the manifest says ``dynamodb_layout: "jsonl"``.

The tree is read in one worker thread at a time through the context's
:class:`~elastickv_async._core.dump.tree.DumpTree` (symlinks, special files and hard links are
refused, never followed), a chunk of item files per call: an items directory is listed with
the entries' types, and its regular files are read one after the other, each checked as it is
opened. The items of a chunk are parsed and encoded (:mod:`.items`) in the context's worker
processes while the next chunk is read, so memory stays bounded whatever the table size.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Generator, Iterator
from typing import Final

import anyio
import anyio.to_thread

from ..._core.concurrency import task_group
from ..._core.dump.listing import sorted_listing
from ..._core.dump.names import encode_segment
from ..._core.dump.tree import MAX_RECORD_FILE, TreeDir
from ..base import EncodeContext, SendBatch, send_batches
from .errors import tree_error
from .items import ItemBatch, RawItem, Record, encode_items, gsi_rows, item_key
from .keys import RESTORE_GENERATION, table_gen_key, table_meta_key
from .layout import ITEMS_DIR, LAYOUT_JSONL, ROOT, SCHEMA_FILE, load_json, public_to_schema
from .values import encode_schema

__all__ = ["DynamoDBEncoder", "gsi_rows", "item_key"]

#: Records and items read per walk step, and a bound on their bytes: a step's items are
#: encoded in the worker processes while the walk reads the next one. The bytes are at most a
#: quarter of the encoder's memory share: a step holds its items and their records while the
#: next step's items are read.
CHUNK_UNITS: Final = 2048
CHUNK_BYTES: Final = 4 << 20


# --- tree walk (worker threads only) ---------------------------------------------------------

Unit = Record | RawItem


class _Walker:
    """Walks ``dynamodb/`` lazily. :meth:`next_chunk` runs in worker threads, one call at a
    time; :meth:`close` ends the walk, which closes the directories it holds open."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._tree = ctx.tree
        self._jsonl = ctx.decoded_with.layout == LAYOUT_JSONL
        self._chunk_bytes = max(1, min(CHUNK_BYTES, ctx.memory // 4))
        # An items directory's listing and a hash directory's in it are held at once.
        self._listing_memory = max(1, ctx.memory // 8)
        self._scratch = ctx.scratch / "dynamodb"
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
            size += len(unit.raw) if isinstance(unit, RawItem) else len(unit[1])
            if len(chunk) >= CHUNK_UNITS or size >= self._chunk_bytes:
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

    def _file_items(self, items: TreeDir, schema: bytes) -> Iterator[RawItem]:
        for unit in self._listed(items, schema, "items"):
            if isinstance(unit, RawItem):
                yield unit
                continue
            hash_dir = items.subdir(unit)
            if hash_dir is None:
                continue
            with hash_dir:
                for child in self._listed(hash_dir, schema, "hash"):
                    if not isinstance(child, RawItem):
                        where = hash_dir.path(child)
                        raise tree_error(
                            "ErrDDBEncodeInvalidItem",
                            f"{where}: items are at most two directory levels deep",
                        )
                    yield child

    def _listed(self, directory: TreeDir, schema: bytes, scratch: str) -> Iterator[RawItem | str]:
        """The items of ``directory``'s ``*.json`` files and the names of its subdirectories
        (``str``), in byte order of the names.

        A run of names the listing typed as regular files is read in one loop, each file
        checked as it is opened (no ``lstat`` per name); any other entry is looked up and
        checked first (a symlink or special file is refused, never followed).
        """
        listing = sorted_listing(
            directory, self._scratch / f"{scratch}-listing", CHUNK_UNITS, self._listing_memory
        )
        with contextlib.closing(listing):
            for names, odd in listing:
                run: list[str] = []
                for name in names:
                    if name not in odd:
                        if name.endswith(".json"):
                            run.append(name)
                        else:
                            directory.lookup(name)  # refused if hard-linked, else skipped
                        continue
                    yield from self._read_run(directory, run, schema)
                    run = []
                    entry = directory.lookup(name)
                    if entry is None:
                        continue
                    if entry.is_dir:
                        yield name
                    elif name.endswith(".json"):
                        with directory.open_file(entry) as file:
                            yield RawItem(file.rel, file.read_all(), schema, line=False)
                yield from self._read_run(directory, run, schema)

    @staticmethod
    def _read_run(directory: TreeDir, names: list[str], schema: bytes) -> Iterator[RawItem]:
        reads = directory.read_listed_many(names)
        with contextlib.closing(reads):
            for name, data in reads:
                if data is not None:  # else removed since the listing
                    yield RawItem(directory.path(name), data, schema, line=False)

    @staticmethod
    def _bundle_items(items: TreeDir, schema: bytes) -> Iterator[RawItem]:
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
                    yield RawItem(where, line, schema, line=True)


class DynamoDBEncoder:
    """The DynamoDB encode adapter (see the module docstring)."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._ctx = ctx

    async def produce(self, send: SendBatch) -> None:
        """Send the lists :meth:`batches` yields (a ``BatchEncodeAdapter``)."""
        await send_batches(self.batches(), send)

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
        parts: list[ItemBatch | None] = []
        results: list[list[Record]] = []
        items: list[RawItem] = []
        for unit in chunk:
            if not isinstance(unit, RawItem):
                for share in _shares(items, shares):
                    parts.append(share)
                    results.append([])
                items = []
                parts.append(None)
                results.append([unit])
            else:
                items.append(unit)
        for share in _shares(items, shares):
            parts.append(share)
            results.append([])
        upcoming: list[Unit] = []

        async def encode(index: int, batch: ItemBatch) -> None:
            results[index] = await workers.run(encode_items, batch)

        async def walk() -> None:
            upcoming.extend(await self._ctx.tree.run(walker.next_chunk))

        async with task_group() as tg:
            tg.start_soon(walk)
            for index, part in enumerate(parts):
                if part is not None:
                    tg.start_soon(encode, index, part)
        return [record for result in results for record in result], upcoming


def _shares(items: list[RawItem], shares: int) -> Iterator[ItemBatch]:
    """``items`` (consecutive, of one table) cut into up to ``shares`` batches of near-equal
    length."""
    if not items:
        return
    size = -(-len(items) // shares)
    first = items[0]
    for start in range(0, len(items), size):
        part = items[start : start + size]
        yield ItemBatch(
            first.schema, first.line, [item.where for item in part], [item.raw for item in part]
        )
