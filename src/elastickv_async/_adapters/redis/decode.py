"""The Redis decoder: ``!redis|…``, ``!hs|``, ``!lst|``, ``!st|``, ``!zs|``, ``!stream|`` rows ->
``redis/db_0/`` (REFERENCE_NOTES §3.3).

Strings and HLLs are written as they arrive (their inline TTL lines too). Everything else
becomes facts in an external sort (:mod:`.facts`), so memory holds one sort buffer and one
key's rows, never the keyspace; :meth:`RedisDecoder.finalize` merges the facts key by key and
writes each collection once all its rows, TTL and legacy blob are known (:mod:`.assemble`).
Sidecar lines and KEYMAP records go through scratch files and are installed at the end.

Expired keys: a key whose TTL is not after the snapshot's "now" (``ctx.now_ms``: the
header's HLC ceiling, else the physical part of ``last_commit_ts``) is gone for every client,
so it is omitted and counted, unless ``keep_expired`` is set. A decoded tree holds no such key,
and re-encoding it at the same ``last_commit_ts`` keeps every TTL in the future.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio
import anyio.to_thread

from ..._core.dump.keymap import KEYMAP_FILE, KIND_SHA_FALLBACK, keymap_line
from ..._core.dump.names import encode_segment, is_sha_fallback
from ..._core.extsort import ExternalSorter
from ..._core.snapshot.entry import Entry
from ..base import DecodeContext, Routed
from . import keys, layout
from .assemble import SUB_BLOB, SUB_TTL, KeyOutput, arrival_tag, assemble_key
from .errors import RecordCode
from .facts import (
    Kind,
    Row,
    SimpleFact,
    fact_key,
    pack,
    pack_count_meta,
    pack_delta,
    pack_entries,
    pack_list_meta,
    pack_simple,
    pack_stream_meta,
    pack_ttl,
    split_fact_key,
    user_key_of,
)
from .options import RedisOptions
from .values import (
    CountMeta,
    ListMeta,
    SimpleValue,
    StreamEntry,
    StreamMeta,
    decode_count_delta,
    decode_count_meta,
    decode_hll_value,
    decode_legacy_hash,
    decode_legacy_set,
    decode_legacy_stream,
    decode_legacy_zset,
    decode_list_delta,
    decode_list_meta,
    decode_score,
    decode_stream_entry,
    decode_stream_meta,
    decode_string_value,
    decode_ttl_value,
    encode_score,
    is_list_meta_value,
    shifted_ttl,
)

__all__ = ["RedisDecoder"]

#: A decoded value or meta row carrying an expiry deadline (``ttl_ms``; 0: none).
_WithTTL = TypeVar("_WithTTL", SimpleValue, CountMeta, ListMeta, StreamMeta)

#: In-memory budget of each external sort before it spills a run to scratch.
SORT_BUDGET: Final = 32 << 20
#: A run of one key's rows is cut into several facts beyond this size.
RUN_LIMIT: Final = 8 << 20
#: Merged facts pulled per worker-thread hop (by count and by size), and output gathered
#: per write batch.
MERGE_CHUNK: Final = 4096
MERGE_BYTES: Final = 8 << 20
WRITE_BATCH_BYTES: Final = 4 << 20
WRITE_BATCH_FILES: Final = 512
_SIDECARS: Final = (layout.STRINGS_TTL, layout.HLL_TTL)
_LATE_KEY: Final = struct.Struct(">BQ")
_ORPHAN_TTL_HINT: Final = (
    "TTL records whose user key never appeared in a typed record — possible store corruption "
    "or an unknown type prefix"
)


def _take(source: Iterator[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The next merged facts: at most ``MERGE_CHUNK`` of them, or about ``MERGE_BYTES``."""
    out = []
    size = 0
    for record in source:
        out.append(record)
        size += len(record[0]) + len(record[1])
        if len(out) >= MERGE_CHUNK or size >= MERGE_BYTES:
            break
    return out


def _merged(sorter: ExternalSorter) -> Generator[tuple[bytes, bytes], None, None]:
    """The sorter's merge as a generator that can be closed (closing its run files)."""
    yield from sorter.merged()


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def _write_merged(path: Path, records: Iterator[tuple[bytes, bytes]]) -> None:
    with open(path, "wb") as fh:
        for _tag, line in records:
            fh.write(line)


class _Run:
    """Consecutive rows of one row class and one user key, packed into a single fact."""

    __slots__ = ("items", "row", "size", "user_key")

    def __init__(self, row: Row, user_key: bytes) -> None:
        self.row = row
        self.user_key = user_key
        self.items: list[Any] = []
        self.size = 0


class RedisDecoder:
    """Decodes one snapshot's Redis rows into ``redis/db_0/`` (one instance per run)."""

    def __init__(self, ctx: DecodeContext) -> None:
        self._ctx = ctx
        options: RedisOptions = ctx.adapter_options
        self._cutoff: int | None = None if options.keep_expired else ctx.now_ms
        # Undoes an encode --rebase-time (the self-test's decode); 0 otherwise.
        self._unshift_ms = -ctx.options.time_shift_ms
        # Each sort spills into its own scratch subdirectory, created by its first spill.
        self._facts = ExternalSorter(ctx.scratch / "facts", SORT_BUDGET)
        self._keymap = ExternalSorter(ctx.scratch / "keymap", SORT_BUDGET)
        # Sidecar lines of !redis|ttl| rows, produced key by key but written in row order.
        self._late = ExternalSorter(ctx.scratch / "late", SORT_BUDGET)
        self._sorters = (self._facts, self._keymap, self._late)
        self._sidecar_paths = {name: ctx.scratch / name for name in _SIDECARS}
        self._sidecar_lines: dict[str, list[bytes]] = {name: [] for name in self._sidecar_paths}
        self._sidecar_used: set[str] = set()
        self._files: list[tuple[str, bytes]] = []
        self._run: _Run | None = None
        self._arrival = 0
        self._written = 0
        self._expired = 0
        self._orphan_ttl = 0
        self._handlers: dict[bytes, Callable[[Entry], None]] = {
            keys.STRING: self._string,
            keys.HLL: self._hll,
            keys.TTL: self._ttl,
            keys.HASH_LEGACY: self._hash_legacy,
            keys.SET_LEGACY: self._set_legacy,
            keys.STREAM_LEGACY: self._stream_legacy,
            keys.ZSET_LEGACY: self._zset_legacy,
            keys.HASH_FIELD: self._hash_field,
            keys.HASH_META: self._hash_meta,
            keys.HASH_DELTA: self._hash_delta,
            keys.LIST_ITEM: self._list_item,
            keys.LIST_META: self._list_meta,
            keys.LIST_DELTA: self._list_delta,
            keys.SET_MEMBER: self._set_member,
            keys.SET_META: self._set_meta,
            keys.SET_DELTA: self._set_delta,
            keys.ZSET_MEMBER: self._zset_member,
            keys.ZSET_META: self._zset_meta,
            keys.ZSET_DELTA: self._zset_delta,
            keys.STREAM_ENTRY: self._stream_entry,
            keys.STREAM_META: self._stream_meta,
        }

    # --- the DecodeAdapter protocol ----------------------------------------------------------

    async def handle(self, batch: Sequence[Routed]) -> None:
        """Consume a batch of visible Redis rows (snapshot key order)."""
        handlers = self._handlers
        for prefix, entry in batch:
            handlers[prefix](entry)
        await self._flush_io()

    async def finalize(self) -> dict[str, Any]:
        """Assemble every buffered key, then install the sidecars and KEYMAP.jsonl."""
        try:
            self._close_run()
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

    def _fact(self, user_key: bytes, row: Row, value: bytes) -> int:
        self._arrival += 1
        self._facts.add(fact_key(user_key, row, self._arrival), value)
        return self._arrival

    def _file(self, path: str, data: bytes) -> None:
        self._files.append((f"{layout.DB_DIR}/{path}", data))

    def _keymap_line(self, user_key: bytes, segment: str, tag: bytes) -> None:
        if is_sha_fallback(segment):
            self._keymap.add(tag, keymap_line(segment, user_key, KIND_SHA_FALLBACK))

    def _run_for(self, row: Row, user_key: bytes) -> _Run:
        run = self._run
        if run is None or run.row != row or run.user_key != user_key or run.size > RUN_LIMIT:
            self._close_run()
            run = self._run = _Run(row, user_key)
        return run

    def _close_run(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        if run.row in (Row.HASH_DELTA, Row.LIST_DELTA, Row.SET_DELTA, Row.ZSET_DELTA):
            value = pack_delta(sum(run.items))
        elif run.row == Row.STREAM_ENTRY:
            value = pack_entries(run.items)
        else:
            value = pack(run.items)
        self._fact(run.user_key, run.row, value)

    def _extend(self, row: Row, user_key: bytes, *items: bytes) -> None:
        run = self._run_for(row, user_key)
        run.items.extend(items)
        run.size += sum(len(i) for i in items) + 8

    def _add_delta(self, row: Row, user_key: bytes, delta: int) -> None:
        self._run_for(row, user_key).items.append(delta)

    def _count_delta(
        self,
        entry: Entry,
        prefix: bytes,
        row: Row,
        key_code: RecordCode,
        meta_code: RecordCode,
    ) -> None:
        user_key = keys.parse_delta_key(entry.key, prefix, key_code)
        self._add_delta(row, user_key, decode_count_delta(entry.value, meta_code))

    async def _flush_io(self) -> None:
        if self._files:
            files, self._files = self._files, []
            await self._ctx.writer.write_many(files)
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
                name = _SIDECARS[tag[0]]
                if name not in handles:
                    handles[name] = open(self._sidecar_paths[name], "ab")  # noqa: SIM115 - closed below
                    self._sidecar_used.add(name)
                handles[name].write(line)
        finally:
            for fh in handles.values():
                fh.close()

    # --- finalize ----------------------------------------------------------------------------

    async def _assemble_all(self) -> None:
        merged = _merged(self._facts)
        current: bytes | None = None
        facts: dict[Row, list[bytes]] = {}
        arrivals: dict[Row, int] = {}
        pending = 0
        try:
            while chunk := await anyio.to_thread.run_sync(_take, merged):
                for sort_key, value in chunk:
                    ordered, row, arrival = split_fact_key(sort_key)
                    if ordered != current:
                        if current is not None:
                            pending += self._assemble(current, facts, arrivals)
                        current, facts, arrivals = ordered, {}, {}
                    facts.setdefault(row, []).append(value)
                    arrivals.setdefault(row, arrival)
                if pending >= WRITE_BATCH_BYTES or len(self._files) >= WRITE_BATCH_FILES:
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
            self._late.add(_LATE_KEY.pack(_SIDECARS.index(name), arrival), line)
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

    # --- strings and HLLs --------------------------------------------------------------------

    def _simple(
        self, entry: Entry, prefix: bytes, row: Row, kind: Kind, value: SimpleValue
    ) -> None:
        user_key = entry.key[len(prefix) :]
        directory, sidecar = (
            (layout.STRINGS, layout.STRINGS_TTL)
            if kind == Kind.STRING
            else (layout.HLL, layout.HLL_TTL)
        )
        cutoff = self._cutoff
        if cutoff is not None and not value.new_format:
            # Its TTL lives in !redis|ttl|, which sorts later: decide when it is known.
            self._fact(user_key, row, pack_simple(SimpleFact(False, False, 0, value.body)))
            return
        omitted = cutoff is not None and value.ttl_flag and value.ttl_ms <= cutoff
        fact = SimpleFact(value.new_format, value.ttl_flag, value.ttl_ms, omitted=omitted)
        arrival = self._fact(user_key, row, pack_simple(fact))
        if omitted:
            self._expired += 1
            return
        segment = encode_segment(user_key)
        self._file(f"{directory}/{segment}{layout.BIN_EXT}", value.body)
        self._keymap_line(user_key, segment, arrival_tag(arrival, SUB_BLOB))
        if value.ttl_ms:
            self._sidecar_lines[sidecar].append(layout.ttl_line(segment, value.ttl_ms))
            self._keymap_line(user_key, segment, arrival_tag(arrival, SUB_TTL))

    def _string(self, entry: Entry) -> None:
        value = self._unshift(decode_string_value(entry.value))
        self._simple(entry, keys.STRING, Row.STRING, Kind.STRING, value)

    def _hll(self, entry: Entry) -> None:
        value = self._unshift(decode_hll_value(entry.value))
        self._simple(entry, keys.HLL, Row.HLL, Kind.HLL, value)

    def _unshift(self, value: _WithTTL) -> _WithTTL:
        if not self._unshift_ms:
            return value
        return dataclasses.replace(value, ttl_ms=shifted_ttl(value.ttl_ms, self._unshift_ms) or 0)

    def _ttl(self, entry: Entry) -> None:
        ttl = shifted_ttl(decode_ttl_value(entry.value), self._unshift_ms) or 0
        self._fact(entry.key[len(keys.TTL) :], Row.TTL, pack_ttl(ttl))

    # --- legacy blobs ------------------------------------------------------------------------

    def _hash_legacy(self, entry: Entry) -> None:
        pairs = decode_legacy_hash(entry.value)
        flat = [part for pair in pairs for part in pair]
        self._fact(entry.key[len(keys.HASH_LEGACY) :], Row.HASH_LEGACY, pack(flat))

    def _set_legacy(self, entry: Entry) -> None:
        members = decode_legacy_set(entry.value)
        self._fact(entry.key[len(keys.SET_LEGACY) :], Row.SET_LEGACY, pack(members))

    def _zset_legacy(self, entry: Entry) -> None:
        flat = [part for m, s in decode_legacy_zset(entry.value) for part in (m, encode_score(s))]
        self._fact(entry.key[len(keys.ZSET_LEGACY) :], Row.ZSET_LEGACY, pack(flat))

    def _stream_legacy(self, entry: Entry) -> None:
        entries = decode_legacy_stream(entry.value)
        self._fact(entry.key[len(keys.STREAM_LEGACY) :], Row.STREAM_LEGACY, pack_entries(entries))

    # --- hashes ------------------------------------------------------------------------------

    def _hash_field(self, entry: Entry) -> None:
        user_key, name = keys.parse_wide_key(entry.key, keys.HASH_FIELD, "ErrRedisInvalidHashKey")
        self._extend(Row.HASH_FIELD, user_key, name, entry.value)

    def _hash_meta(self, entry: Entry) -> None:
        user_key = keys.parse_meta_key(entry.key, keys.HASH_META, "ErrRedisInvalidHashKey")
        meta = self._unshift(decode_count_meta(entry.value, "ErrRedisInvalidHashMeta"))
        self._fact(user_key, Row.HASH_META, pack_count_meta(meta))

    def _hash_delta(self, entry: Entry) -> None:
        self._count_delta(
            entry,
            keys.HASH_DELTA,
            Row.HASH_DELTA,
            "ErrRedisInvalidHashKey",
            "ErrRedisInvalidHashMeta",
        )

    # --- lists -------------------------------------------------------------------------------

    def _list_item(self, entry: Entry) -> None:
        user_key, _seq = keys.parse_list_item_key(entry.key)
        # Items of one list arrive in sequence order; a run never reorders them.
        self._extend(Row.LIST_ITEM, user_key, entry.value)

    def _list_meta(self, entry: Entry) -> None:
        meta = self._unshift(decode_list_meta(entry.value))
        self._fact(entry.key[len(keys.LIST_META) :], Row.LIST_META, pack_list_meta(meta))

    def _list_delta(self, entry: Entry) -> None:
        if is_list_meta_value(entry.value):
            # The meta of a list whose own name starts with "d|" (a delta value is 16 bytes).
            self._list_meta(entry)
            return
        user_key = keys.parse_delta_key(entry.key, keys.LIST_DELTA, "ErrRedisInvalidListKey")
        self._add_delta(Row.LIST_DELTA, user_key, decode_list_delta(entry.value))

    # --- sets --------------------------------------------------------------------------------

    def _set_member(self, entry: Entry) -> None:
        user_key, member = keys.parse_wide_key(entry.key, keys.SET_MEMBER, "ErrRedisInvalidSetKey")
        self._extend(Row.SET_MEMBER, user_key, member)

    def _set_meta(self, entry: Entry) -> None:
        user_key = keys.parse_meta_key(entry.key, keys.SET_META, "ErrRedisInvalidSetKey")
        meta = self._unshift(decode_count_meta(entry.value, "ErrRedisInvalidSetMeta"))
        self._fact(user_key, Row.SET_META, pack_count_meta(meta))

    def _set_delta(self, entry: Entry) -> None:
        self._count_delta(
            entry, keys.SET_DELTA, Row.SET_DELTA, "ErrRedisInvalidSetKey", "ErrRedisInvalidSetMeta"
        )

    # --- sorted sets -------------------------------------------------------------------------

    def _zset_member(self, entry: Entry) -> None:
        user_key, member = keys.parse_wide_key(
            entry.key, keys.ZSET_MEMBER, "ErrRedisInvalidZSetKey"
        )
        decode_score(entry.value)  # validates: 8 bytes, not NaN
        self._extend(Row.ZSET_MEMBER, user_key, member, entry.value)

    def _zset_meta(self, entry: Entry) -> None:
        user_key = keys.parse_meta_key(entry.key, keys.ZSET_META, "ErrRedisInvalidZSetKey")
        meta = self._unshift(decode_count_meta(entry.value, "ErrRedisInvalidZSetMeta"))
        self._fact(user_key, Row.ZSET_META, pack_count_meta(meta))

    def _zset_delta(self, entry: Entry) -> None:
        self._count_delta(
            entry,
            keys.ZSET_DELTA,
            Row.ZSET_DELTA,
            "ErrRedisInvalidZSetKey",
            "ErrRedisInvalidZSetMeta",
        )

    # --- streams -----------------------------------------------------------------------------

    def _stream_entry(self, entry: Entry) -> None:
        user_key, ms, seq = keys.parse_stream_entry_key(entry.key)
        fields = decode_stream_entry(entry.value)
        run = self._run_for(Row.STREAM_ENTRY, user_key)
        run.items.append(StreamEntry(ms, seq, fields))
        run.size += len(entry.value) + 16

    def _stream_meta(self, entry: Entry) -> None:
        user_key = keys.parse_meta_key(entry.key, keys.STREAM_META, "ErrRedisInvalidStreamKey")
        meta = self._unshift(decode_stream_meta(entry.value))
        self._fact(user_key, Row.STREAM_META, pack_stream_meta(meta))
