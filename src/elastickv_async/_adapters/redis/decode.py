"""The Redis decoder: ``!redis|…``, ``!hs|``, ``!lst|``, ``!st|``, ``!zs|``, ``!stream|`` rows ->
``redis/db_0/`` (REFERENCE_NOTES §3.3).

Rows are decoded in batches by :func:`.rows.decode_rows`, in the run's worker processes
(``ctx.workers``), so that the event loop's process keeps reading rows and writing files
meanwhile. Strings and HLLs are written as they arrive (their inline TTL lines too).
Everything else becomes facts in an external sort (:mod:`.facts`), so memory holds one sort
buffer and one key's rows, never the keyspace; :meth:`RedisDecoder.finalize` merges the facts
key by key and writes each collection once all its rows, TTL and legacy blob are known
(:mod:`.assemble`).
Sidecar lines and KEYMAP records go through scratch files and are installed at the end.

Expired keys: a key whose TTL is not after the snapshot's "now" (``ctx.now_ms``: the
header's HLC ceiling, else the physical part of ``last_commit_ts``) is gone for every client,
so it is omitted and counted, unless ``keep_expired`` is set. A decoded tree holds no such key,
and re-encoding it at the same ``last_commit_ts`` keeps every TTL in the future.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Generator, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread

from ..._core.concurrency import task_group
from ..._core.dump.keymap import KEYMAP_FILE
from ..._core.extsort import ExternalSorter
from ..base import DecodeContext, Routed, WritesBehind
from . import layout
from .assemble import KeyOutput, assemble_key, unowned_ttls
from .facts import Row, split_fact_key, user_key_of
from .options import RedisOptions
from .rows import SIDECARS, Row3, Rows, decode_rows

__all__ = ["RedisDecoder"]

#: Merged facts pulled per worker-thread hop (by count and by size), and output gathered
#: per write batch (the sizes at most: an eighth of the adapter's memory each).
MERGE_CHUNK: Final = 4096
MERGE_BYTES: Final = 8 << 20
WRITE_BATCH_BYTES: Final = 4 << 20
WRITE_BATCH_FILES: Final = 512
#: Rows (or row bytes, at most an eighth of the adapter's memory) gathered before one call of
#: :func:`decode_rows`: the pipeline's batches are small, and each call to a worker process
#: has a fixed cost.
DECODE_ROWS: Final = 4096
DECODE_BYTES: Final = 4 << 20
_LATE_KEY: Final = struct.Struct(">BQ")
_ORPHAN_TTL_HINT: Final = (
    "TTL records whose user key never appeared in a typed record — possible store corruption "
    "or an unknown type prefix"
)


def _take(source: Iterator[tuple[bytes, bytes]], limit: int) -> list[tuple[bytes, bytes]]:
    """The next merged facts: at most ``MERGE_CHUNK`` of them, or about ``limit`` bytes."""
    out = []
    size = 0
    for record in source:
        out.append(record)
        size += len(record[0]) + len(record[1])
        if len(out) >= MERGE_CHUNK or size >= limit:
            break
    return out


def _merged(
    facts: ExternalSorter, ttl_facts: ExternalSorter
) -> Generator[tuple[bytes, bytes], None, None]:
    """Every fact to assemble, in sort order, as a generator that can be closed (closing the
    sorters' run files)."""
    yield from heapq.merge(facts.merged(), unowned_ttls(ttl_facts.merged()), key=itemgetter(0))


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def _write_merged(path: Path, records: Iterator[tuple[bytes, bytes]]) -> None:
    with open(path, "wb") as fh:
        for _tag, line in records:
            fh.write(line)


class RedisDecoder(WritesBehind):
    """Decodes one snapshot's Redis rows into ``redis/db_0/`` (one instance per run)."""

    def __init__(self, ctx: DecodeContext) -> None:
        self._ctx = ctx
        options: RedisOptions = ctx.adapter_options
        self._cutoff: int | None = None if options.keep_expired else ctx.now_ms
        # Undoes an encode --rebase-time (the self-test's decode); 0 otherwise.
        self._unshift_ms = -ctx.options.time_shift_ms
        # Each sort spills into its own scratch subdirectory, created by its first spill. They
        # share the adapter's memory, in eighths: two for the facts (every collection's
        # rows), one for the TTL facts (with the strings that own them), one each for the
        # KEYMAP records and the late sidecar lines (one short line per key); the rows
        # gathered for a decode call, the merged facts taken per hop and the files gathered
        # per write batch have an eighth each.
        eighth = max(1, ctx.memory // 8)
        self._facts = ExternalSorter(ctx.scratch / "facts", 2 * eighth)
        self._ttl_facts = ExternalSorter(ctx.scratch / "ttl", eighth)
        self._keymap = ExternalSorter(ctx.scratch / "keymap", eighth)
        # Sidecar lines of !redis|ttl| rows, produced key by key but written in row order.
        self._late = ExternalSorter(ctx.scratch / "late", eighth)
        self._decode_bytes = min(DECODE_BYTES, eighth)
        self._merge_bytes = min(MERGE_BYTES, eighth)
        self._write_bytes = min(WRITE_BATCH_BYTES, eighth)
        self._sorters = (self._facts, self._ttl_facts, self._keymap, self._late)
        self._sidecar_paths = {name: ctx.scratch / name for name in SIDECARS}
        self._sidecar_lines: dict[str, list[bytes]] = {name: [] for name in self._sidecar_paths}
        self._sidecar_used: set[str] = set()
        self._files: list[tuple[str, bytes]] = []
        #: Rows waiting for :func:`decode_rows`, their value bytes, and the snapshot position
        #: of the first of them.
        self._rows: list[Row3] = []
        self._rows_bytes = 0
        self._position = 0
        self._written = 0
        self._expired = 0
        self._orphan_ttl = 0

    # --- the DecodeAdapter protocol ----------------------------------------------------------

    async def handle(self, batch: Sequence[Routed]) -> None:
        """Consume a batch of visible Redis rows (snapshot key order)."""
        rows = self._rows
        for prefix, entry in batch:
            rows.append((prefix, entry.key, entry.value))
            self._rows_bytes += len(entry.value)
        if len(rows) >= DECODE_ROWS or self._rows_bytes >= self._decode_bytes:
            await self._decode_rows()

    async def finalize(self) -> dict[str, Any]:
        """Assemble every buffered key, then install the sidecars and KEYMAP.jsonl."""
        try:
            await self._decode_rows()
            await self._assemble_all()
            await self._flush_io()
            if self._late.records:
                await anyio.to_thread.run_sync(self._append_late)
            for name, path in self._sidecar_paths.items():
                if name in self._sidecar_used:
                    await self._ctx.writer.install(f"{layout.DB_DIR}/{name}", path)
                    self._written += 1
            await self._install_keymap()
        finally:
            await anyio.to_thread.run_sync(self._close_sorters)
        spills = sum(sorter.spills for sorter in self._sorters)
        if spills:
            self._ctx.report.count("redis.sort_spills", spills)
        if self._orphan_ttl:
            self._ctx.log.warning("redis_orphan_ttl", count=self._orphan_ttl, hint=_ORPHAN_TTL_HINT)
        if self._expired:
            self._ctx.report.count("redis.expired_keys_omitted", self._expired)
        return {"databases": [0] if self._written else []}

    # --- plumbing ----------------------------------------------------------------------------

    async def _decode_rows(self) -> None:
        """Decode the gathered rows while the previous call's files and lines are written;
        this call's output waits for the next one (or for :meth:`finalize`)."""
        rows, self._rows, self._rows_bytes = self._rows, [], 0
        if not rows:
            await self._flush_io()
            return
        first, self._position = self._position, self._position + len(rows)
        decoded: list[Rows] = []

        async def decode() -> None:
            workers = self._ctx.workers
            decoded.append(
                await workers.run(decode_rows, rows, first, self._cutoff, self._unshift_ms)
            )

        async with task_group() as tg:
            tg.start_soon(self._flush_io)
            tg.start_soon(decode)
        self._apply(decoded[0])

    def _apply(self, out: Rows) -> None:
        self._facts.add_many(out.facts)
        self._ttl_facts.add_many(out.ttl_facts)
        self._files += out.files
        for name, lines in out.sidecar.items():
            self._sidecar_lines[name] += lines
        for tag, line in out.keymap:
            self._keymap.add(tag, line)
        self._expired += out.expired

    def _file(self, path: str, data: bytes) -> None:
        self._files.append((f"{layout.DB_DIR}/{path}", data))

    async def _flush_io(self) -> None:
        if self._files:
            files, self._files = self._files, []
            await self.files_out.write_many(files)
            self._written += len(files)
        for name, lines in self._sidecar_lines.items():
            if lines:
                self._sidecar_lines[name] = []
                self._sidecar_used.add(name)
                await anyio.to_thread.run_sync(_append, self._sidecar_paths[name], b"".join(lines))
        for sorter in self._sorters:
            if sorter.over_budget:
                await anyio.to_thread.run_sync(sorter.spill)

    def _close_sorters(self) -> None:
        for sorter in self._sorters:
            sorter.close()

    def _append_late(self) -> None:
        handles = {}
        try:
            for tag, line in self._late.merged():
                name = SIDECARS[tag[0]]
                if name not in handles:
                    handles[name] = open(self._sidecar_paths[name], "ab")  # noqa: SIM115 - closed below
                    self._sidecar_used.add(name)
                handles[name].write(line)
        finally:
            for fh in handles.values():
                fh.close()

    # --- finalize ----------------------------------------------------------------------------

    async def _assemble_all(self) -> None:
        merged = _merged(self._facts, self._ttl_facts)
        current: bytes | None = None
        facts: dict[Row, list[bytes]] = {}
        arrivals: dict[Row, int] = {}
        pending = 0
        try:
            while chunk := await anyio.to_thread.run_sync(_take, merged, self._merge_bytes):
                for sort_key, value in chunk:
                    ordered, row, arrival = split_fact_key(sort_key)
                    if ordered != current:
                        if current is not None:
                            pending += self._assemble(current, facts, arrivals)
                        current, facts, arrivals = ordered, {}, {}
                    facts.setdefault(row, []).append(value)
                    arrivals.setdefault(row, arrival)
                if pending >= self._write_bytes or len(self._files) >= WRITE_BATCH_FILES:
                    await self._flush_io()
                    pending = 0
        finally:
            merged.close()  # closes the run files of an interrupted merge
        if current is not None:
            self._assemble(current, facts, arrivals)

    def _assemble(
        self, ordered: bytes, facts: dict[Row, list[bytes]], arrivals: dict[Row, int]
    ) -> int:
        return self._collect(assemble_key(user_key_of(ordered), facts, arrivals, self._cutoff))

    def _collect(self, out: KeyOutput) -> int:
        size = 0
        for path, data in out.files:
            self._file(path, data)
            size += len(data)
        for name, arrival, line in out.sidecar:
            self._late.add(_LATE_KEY.pack(SIDECARS.index(name), arrival), line)
        for tag, line in out.keymap:
            self._keymap.add(tag, line)
        for event, fields in out.warnings:
            self._ctx.log.warning(event, **fields)
        self._expired += out.expired
        self._orphan_ttl += out.orphan_ttl
        return size

    async def _install_keymap(self) -> None:
        if not self._keymap.records:
            return
        path = self._ctx.scratch / KEYMAP_FILE
        await anyio.to_thread.run_sync(_write_merged, path, self._keymap.merged())
        await self._ctx.writer.install(f"{layout.DB_DIR}/{KEYMAP_FILE}", path)
        self._written += 1
