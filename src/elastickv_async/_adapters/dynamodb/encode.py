"""DynamoDB encoder: ``dynamodb/<table>/`` -> internal records (REFERENCE_NOTES §6.4).

Per table: the schema record (restore generation 1, ordered key encoding 2), the generation
counter ``"1"``, one record per item keyed by its ordered primary key, and the derived GSI
rows (index keys, then the primary key; the value points at the item key). Items come from
``items/<hash>.json`` and ``items/<hash>/<range>.json``, or from ``items/data-*.jsonl`` parts
when the manifest says ``dynamodb_layout: "jsonl"``.

The tree is read in worker threads through directory file descriptors opened with
``O_NOFOLLOW``: symlinks, FIFOs, devices and hard-linked files are refused, never followed.
Records are produced in chunks so memory stays bounded whatever the table size.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import AsyncGenerator, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import anyio
import anyio.to_thread

from ..._core.concurrency import first_error
from ..._core.dump.names import encode_segment
from ..._proto.dynamodb_internal_pb2 import DynamoAttributeValue, DynamoItem, DynamoTableSchema
from ..base import EncodeContext
from .errors import (
    DynamoDBEncodeHardLink,
    DynamoDBEncodeInvalidItem,
    DynamoDBEncodeInvalidSchema,
    DynamoDBEncodeNotRegular,
)
from .keys import (
    RESTORE_GENERATION,
    gsi_key_prefix,
    item_key_prefix,
    ordered_segment,
    table_gen_key,
    table_meta_key,
)
from .layout import load_json, public_to_item, public_to_schema
from .numbers import numeric_key_bytes
from .values import encode_item, encode_schema

__all__ = ["DynamoDBEncoder", "gsi_rows", "item_key"]

Record = tuple[bytes, bytes]

#: Records and item files handed over per walk step (and a bound on the records' bytes).
CHUNK_UNITS: Final = 256
CHUNK_BYTES: Final = 4 << 20
#: Item files of a chunk are read by this many threads at once.
READ_LANES: Final = 4
SCHEMA_FILE: Final = "_schema.json"
ITEMS_DIR: Final = "items"
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


# --- key derivation -------------------------------------------------------------------------


def _key_bytes(av: DynamoAttributeValue, where: str) -> bytes:
    kind = av.WhichOneof("value")
    if kind == "s":
        return av.s.encode("utf-8")
    if kind == "b":
        return av.b
    if kind == "n":
        return numeric_key_bytes(av.n)
    raise DynamoDBEncodeInvalidItem(f"{where}: key attribute is not S, N or B")


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
            raise DynamoDBEncodeInvalidItem(f"{where}: item missing {role}-key attribute {name!r}")
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


# --- safe tree access (worker threads only) -------------------------------------------------


def _kind(dir_fd: int, name: str) -> int:
    return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode


def _open_dir(dir_fd: int, name: str, rel: str) -> int:
    """Open a subdirectory without following a symlink; FileNotFoundError passes through."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except NotADirectoryError:
        if stat.S_ISLNK(_kind(dir_fd, name)):
            raise DynamoDBEncodeNotRegular(f"{rel} is a symlink") from None
        raise
    except OSError as exc:
        raise DynamoDBEncodeNotRegular(f"cannot open directory {rel}: {exc.strerror}") from None


def _open_file(dir_fd: int, name: str, rel: str) -> int:
    """Open a regular, singly linked file for reading; FileNotFoundError passes through."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if stat.S_ISLNK(_kind(dir_fd, name)):
            raise DynamoDBEncodeNotRegular(f"{rel} is a symlink") from None
        raise DynamoDBEncodeNotRegular(f"cannot open {rel}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DynamoDBEncodeNotRegular(f"{rel} is not a regular file")
        if st.st_nlink > 1:
            raise DynamoDBEncodeHardLink(f"{rel} has {st.st_nlink} hard links")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_fd(fd: int) -> bytes:
    """Read an open file to its end and close it."""
    with open(fd, "rb", closefd=True) as fh:
        return fh.read()


def _read_file(dir_fd: int, name: str, rel: str) -> bytes:
    """Read a regular, singly linked file; FileNotFoundError passes through."""
    return _read_fd(_open_file(dir_fd, name, rel))


@dataclass(slots=True)
class _ItemFile:
    """An item file opened (and checked) by the walk, waiting to be read; ``fd`` is -1 once
    it has been closed."""

    fd: int
    rel: str
    schema: DynamoTableSchema

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _load_items(files: Sequence[_ItemFile]) -> list[Record]:
    """Read, parse and encode opened item files (closing every one of them)."""
    records: list[Record] = []
    try:
        for file in files:
            fd, file.fd = file.fd, -1
            doc = load_json(_read_fd(fd), file.rel, DynamoDBEncodeInvalidItem)
            records.extend(_item_records(file.schema, public_to_item(doc, file.rel), file.rel))
    finally:
        for file in files:
            file.close()
    return records


def _close_files(units: Sequence[Record | _ItemFile]) -> None:
    for unit in units:
        if isinstance(unit, _ItemFile):
            unit.close()


class _Entries:
    """The entries of one open directory, streamed; symlinks are refused."""

    def __init__(self, dir_fd: int, rel: str) -> None:
        self.fd = dir_fd
        self.rel = rel

    def __iter__(self) -> Iterator[tuple[str, bool]]:
        """Yield ``(name, is_directory)`` for every entry."""
        with os.scandir(self.fd) as it:
            for entry in it:
                if entry.is_symlink():
                    raise DynamoDBEncodeNotRegular(f"{self.rel}/{entry.name} is a symlink")
                yield entry.name, entry.is_dir(follow_symlinks=False)


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


class _Walker:
    """Walks ``dynamodb/`` lazily. :meth:`next_chunk` runs in worker threads, one call at a
    time; :meth:`close` ends the walk, which closes the directories it holds open."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._ctx = ctx
        self._jsonl = ctx.manifest.get("dynamodb_layout") == "jsonl"
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
        root = self._ctx.input_root
        try:
            root_fd = os.open(root, _DIR_FLAGS)
        except OSError as exc:
            raise DynamoDBEncodeNotRegular(f"cannot open input root: {exc.strerror}") from None
        with _closing(root_fd):
            try:
                top = _open_dir(root_fd, "dynamodb", "dynamodb")
            except FileNotFoundError:
                return
            except NotADirectoryError:
                raise DynamoDBEncodeNotRegular("dynamodb is not a directory") from None
        with _closing(top):
            tables = sorted(name for name, is_dir in _Entries(top, "dynamodb") if is_dir)
            for name in tables:
                with _closing(_open_dir(top, name, f"dynamodb/{name}")) as table_fd:
                    yield from self._table(table_fd, name)

    def _table(self, table_fd: int, directory: str) -> Iterator[Record | _ItemFile]:
        rel = f"dynamodb/{directory}/{SCHEMA_FILE}"
        try:
            raw = _read_file(table_fd, SCHEMA_FILE, rel)
        except FileNotFoundError:
            raise DynamoDBEncodeInvalidSchema(f"{rel} is missing") from None
        schema = public_to_schema(load_json(raw, rel, DynamoDBEncodeInvalidSchema), rel)
        name = schema.table_name
        if not name:
            raise DynamoDBEncodeInvalidSchema(f"{rel}: empty table_name")
        expected = encode_segment(name.encode("utf-8"))
        if expected != directory:
            raise DynamoDBEncodeInvalidSchema(
                f"{rel}: table_name {name!r} belongs in directory {expected!r}"
            )
        if not schema.primary_key.hash_key:
            raise DynamoDBEncodeInvalidSchema(f"{rel}: empty primary hash key")
        yield table_meta_key(name), encode_schema(schema)
        yield table_gen_key(name), str(RESTORE_GENERATION).encode("ascii")
        items_rel = f"dynamodb/{directory}/{ITEMS_DIR}"
        try:
            items_fd = _open_dir(table_fd, ITEMS_DIR, items_rel)
        except FileNotFoundError:
            return
        except NotADirectoryError:
            raise DynamoDBEncodeInvalidItem(f"{items_rel} is not a directory") from None
        with _closing(items_fd):
            if self._jsonl:
                yield from self._bundle_items(items_fd, items_rel, schema)
            else:
                yield from self._file_items(items_fd, items_rel, schema)

    def _file_items(
        self, items_fd: int, rel: str, schema: DynamoTableSchema
    ) -> Iterator[_ItemFile]:
        for name, is_dir in _Entries(items_fd, rel):
            if not is_dir:
                if name.endswith(".json"):
                    item_rel = f"{rel}/{name}"
                    yield _ItemFile(_open_file(items_fd, name, item_rel), item_rel, schema)
                continue
            with _closing(_open_dir(items_fd, name, f"{rel}/{name}")) as hash_fd:
                for child, child_is_dir in _Entries(hash_fd, f"{rel}/{name}"):
                    child_rel = f"{rel}/{name}/{child}"
                    if child_is_dir:
                        raise DynamoDBEncodeInvalidItem(
                            f"{child_rel}: items are at most two directory levels deep"
                        )
                    if child.endswith(".json"):
                        yield _ItemFile(_open_file(hash_fd, child, child_rel), child_rel, schema)

    @staticmethod
    def _bundle_items(items_fd: int, rel: str, schema: DynamoTableSchema) -> Iterator[Record]:
        parts = []
        for name, is_dir in _Entries(items_fd, rel):
            if is_dir:
                raise DynamoDBEncodeInvalidItem(
                    f"{rel}/{name}: jsonl layout has no item directories"
                )
            if name.endswith(".jsonl"):
                parts.append(name)
        for name in sorted(parts):
            part_rel = f"{rel}/{name}"
            data = _read_file(items_fd, name, part_rel)
            lines = data.split(b"\n")
            if lines[-1] == b"":
                lines.pop()
            for number, line in enumerate(lines, 1):
                where = f"{part_rel}:{number}"
                doc = load_json(line, where, DynamoDBEncodeInvalidItem)
                if not isinstance(doc, dict):
                    raise DynamoDBEncodeInvalidItem(f"{where}: a line must be one JSON object")
                yield from _item_records(schema, public_to_item(doc, where), where)


class DynamoDBEncoder:
    """The DynamoDB encode adapter (see the module docstring)."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._ctx = ctx

    async def records(self) -> AsyncGenerator[Record, None]:
        """Yield every record of the ``dynamodb/`` subtree (none when it is absent)."""
        walker = _Walker(self._ctx)
        try:
            upcoming = await anyio.to_thread.run_sync(walker.next_chunk)
            while upcoming:
                chunk = upcoming
                try:
                    records, upcoming = await self._step(walker, chunk)
                finally:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(_close_files, chunk)
                try:
                    for record in records:
                        yield record
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(_close_files, upcoming)
                    raise
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(walker.close)

    @staticmethod
    async def _step(
        walker: _Walker, chunk: list[Record | _ItemFile]
    ) -> tuple[list[Record], list[Record | _ItemFile]]:
        """Resolve ``chunk`` (its item files read by several threads: per-file latency
        dominates) while the walk fetches the next chunk; return both."""
        records = [unit for unit in chunk if isinstance(unit, tuple)]
        files = [unit for unit in chunk if isinstance(unit, _ItemFile)]
        lanes = [files[i::READ_LANES] for i in range(min(READ_LANES, len(files)))]
        loaded: dict[int, list[Record]] = {}
        upcoming: list[Record | _ItemFile] = []

        async def load(index: int) -> None:
            loaded[index] = await anyio.to_thread.run_sync(_load_items, lanes[index])

        async def walk() -> None:
            upcoming.extend(await anyio.to_thread.run_sync(walker.next_chunk))

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(walk)
                for index in range(len(lanes)):
                    tg.start_soon(load, index)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_close_files, upcoming)
            if isinstance(exc, BaseExceptionGroup):
                raise first_error(exc) from None
            raise
        for index in range(len(lanes)):
            records.extend(loaded[index])
        return records, upcoming
