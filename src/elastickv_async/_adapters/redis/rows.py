"""The per-row half of the Redis decoder: snapshot rows -> facts, string/HLL files, sidecar
lines and KEYMAP records.

It keeps no state beyond one batch (a run of one key's rows is cut at the batch's end, which
the assembly treats like any other cut run), so :func:`decode_rows` can run in a worker
process while the event loop's process reads the next rows and writes the previous files.
Arrival numbers are snapshot positions (the caller's count of rows before the batch, plus
the row's place in it): the order they give is the snapshot order, whatever the batching.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import msgspec
import msgspec.structs

from ..._core.dump.keymap import KIND_SHA_FALLBACK, keymap_line
from ..._core.dump.names import encode_segment, is_sha_fallback
from ..._core.errors import AdapterRecordError
from . import keys, layout
from .assemble import SUB_BLOB, SUB_TTL, arrival_tag
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
)
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

__all__ = ["RUN_LIMIT", "SIDECARS", "Rows", "decode_rows"]

#: A decoded value or meta row carrying an expiry deadline (``ttl_ms``; 0: none).
_WithTTL = TypeVar("_WithTTL", SimpleValue, CountMeta, ListMeta, StreamMeta)

#: A run of one key's rows is cut into several facts beyond this size.
RUN_LIMIT: Final = 8 << 20
#: The sidecars of strings and HLLs whose TTL is inline, filled as their rows arrive.
SIDECARS: Final = (layout.STRINGS_TTL, layout.HLL_TTL)

#: Where a string's or HLL's file goes (the path up to its name), and its sidecar.
_SIMPLE_OUT: Final = {
    Kind.STRING: (f"{layout.DB_DIR}/{layout.STRINGS}/", layout.STRINGS_TTL),
    Kind.HLL: (f"{layout.DB_DIR}/{layout.HLL}/", layout.HLL_TTL),
}

#: ``(routing prefix, key, value)`` of one visible row.
Row3 = tuple[bytes, bytes, bytes]


@dataclass(slots=True)
class Rows:
    """What a batch of rows produced, in row order."""

    #: ``(fact sort key, fact value)`` for the external sort.
    facts: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: The facts of ``!redis|ttl|`` rows and the (empty) facts of new-format strings, sorted
    #: apart: such a string owns its key's TTL row and ignores it, so neither reaches the
    #: assembly (see :func:`.assemble.unowned_ttls`).
    ttl_facts: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: ``(path, content)`` of string and HLL files.
    files: list[tuple[str, bytes]] = field(default_factory=list)
    #: Lines per sidecar name.
    sidecar: dict[str, list[bytes]] = field(default_factory=lambda: {n: [] for n in SIDECARS})
    #: ``(sort tag, KEYMAP line)``.
    keymap: list[tuple[bytes, bytes]] = field(default_factory=list)
    expired: int = 0


def decode_rows(rows: Sequence[Row3], first: int, cutoff: int | None, unshift_ms: int) -> Rows:
    """Decode ``rows`` (snapshot order; ``first`` is the snapshot position of the first one).

    ``cutoff`` is the "now" at or before which an inline TTL counts as expired (``None``:
    keep every key), ``unshift_ms`` the time shift to undo. A malformed row raises
    :class:`~elastickv_async._core.errors.AdapterRecordError`.
    """
    decoder = _RowDecoder(cutoff, unshift_ms)
    handlers = decoder.handlers()
    key = b""
    try:
        for index, (prefix, key, value) in enumerate(rows, first):
            decoder._position = index
            handlers[prefix](key, value)
    except AdapterRecordError as exc:
        # Name the row: the error may surface far from this call.
        if exc.key is None:
            exc.key = key
        raise
    decoder._close_run()
    return decoder.out


class _Run:
    """Consecutive rows of one row class and one user key, packed into a single fact."""

    __slots__ = ("first", "items", "row", "size", "user_key")

    def __init__(self, row: Row, user_key: bytes, first: int) -> None:
        self.row = row
        self.user_key = user_key
        #: Snapshot position of its first row: the fact's arrival.
        self.first = first
        self.items: list[Any] = []
        self.size = 0


class _RowDecoder:
    def __init__(self, cutoff: int | None, unshift_ms: int) -> None:
        self._cutoff = cutoff
        self._unshift_ms = unshift_ms
        self._position = 0
        self._run: _Run | None = None
        self.out = Rows()

    def handlers(self) -> dict[bytes, Callable[[bytes, bytes], None]]:
        """The row handlers by prefix. Built per call, not kept on the decoder: a dict of its
        own bound methods would make the decoder (and the whole output it holds) a reference
        cycle that outlives the call until a full garbage collection."""
        return {
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

    def _fact(self, user_key: bytes, row: Row, value: bytes, arrival: int = -1) -> int:
        if arrival < 0:
            arrival = self._position
        self.out.facts.append((fact_key(user_key, row, arrival), value))
        return arrival

    def _ttl_fact(self, user_key: bytes, row: Row, value: bytes) -> None:
        self.out.ttl_facts.append((fact_key(user_key, row, self._position), value))

    def _run_for(self, row: Row, user_key: bytes) -> _Run:
        run = self._run
        if run is None or run.row != row or run.user_key != user_key or run.size > RUN_LIMIT:
            self._close_run()
            run = self._run = _Run(row, user_key, self._position)
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
        self._fact(run.user_key, run.row, value, run.first)

    def _extend(self, row: Row, user_key: bytes, *items: bytes) -> None:
        run = self._run_for(row, user_key)
        run.items.extend(items)
        run.size += sum(len(i) for i in items) + 8

    def _add_delta(self, row: Row, user_key: bytes, delta: int) -> None:
        self._run_for(row, user_key).items.append(delta)

    def _count_delta(
        self,
        key: bytes,
        value: bytes,
        prefix: bytes,
        row: Row,
        key_code: RecordCode,
        meta_code: RecordCode,
    ) -> None:
        user_key = keys.parse_delta_key(key, prefix, key_code)
        self._add_delta(row, user_key, decode_count_delta(value, meta_code))

    # --- strings and HLLs --------------------------------------------------------------------

    def _simple(self, key: bytes, prefix: bytes, row: Row, kind: Kind, value: SimpleValue) -> None:
        user_key = key[len(prefix) :]
        cutoff = self._cutoff
        out = self.out
        if not value.new_format:
            if cutoff is not None:
                # Its TTL lives in !redis|ttl|, which sorts later: decide when it is known.
                self._fact(user_key, row, pack_simple(SimpleFact(False, False, 0, value.body)))
                return
            # Kept whatever its TTL: only that TTL's sidecar line waits for the row.
            self._fact(user_key, row, pack_simple(SimpleFact(False, False, 0)))
            omitted = False
        else:
            omitted = cutoff is not None and value.ttl_flag and value.ttl_ms <= cutoff
            if kind == Kind.STRING:
                self._ttl_fact(user_key, row, b"")
            else:
                fact = SimpleFact(True, value.ttl_flag, value.ttl_ms, omitted=omitted)
                self._fact(user_key, row, pack_simple(fact))
        if omitted:
            out.expired += 1
            return
        head, sidecar = _SIMPLE_OUT[kind]
        segment = encode_segment(user_key)
        out.files.append((f"{head}{segment}{layout.BIN_EXT}", value.body))
        ttl_ms = value.ttl_ms
        if ttl_ms:
            out.sidecar[sidecar].append(layout.ttl_line(segment, ttl_ms))
        if is_sha_fallback(segment):
            line = keymap_line(segment, user_key, KIND_SHA_FALLBACK)
            out.keymap.append((arrival_tag(self._position, SUB_BLOB), line))
            if ttl_ms:
                out.keymap.append((arrival_tag(self._position, SUB_TTL), line))

    def _string(self, key: bytes, value: bytes) -> None:
        simple = self._unshift(decode_string_value(value))
        self._simple(key, keys.STRING, Row.STRING, Kind.STRING, simple)

    def _hll(self, key: bytes, value: bytes) -> None:
        simple = self._unshift(decode_hll_value(value))
        self._simple(key, keys.HLL, Row.HLL, Kind.HLL, simple)

    def _unshift(self, value: _WithTTL) -> _WithTTL:
        if not self._unshift_ms:
            return value
        return msgspec.structs.replace(
            value, ttl_ms=shifted_ttl(value.ttl_ms, self._unshift_ms) or 0
        )

    def _ttl(self, key: bytes, value: bytes) -> None:
        ttl = shifted_ttl(decode_ttl_value(value), self._unshift_ms) or 0
        self._ttl_fact(key[len(keys.TTL) :], Row.TTL, pack_ttl(ttl))

    # --- legacy blobs ------------------------------------------------------------------------

    def _hash_legacy(self, key: bytes, value: bytes) -> None:
        pairs = decode_legacy_hash(value)
        flat = [part for pair in pairs for part in pair]
        self._fact(key[len(keys.HASH_LEGACY) :], Row.HASH_LEGACY, pack(flat))

    def _set_legacy(self, key: bytes, value: bytes) -> None:
        members = decode_legacy_set(value)
        self._fact(key[len(keys.SET_LEGACY) :], Row.SET_LEGACY, pack(members))

    def _zset_legacy(self, key: bytes, value: bytes) -> None:
        flat = [part for m, s in decode_legacy_zset(value) for part in (m, encode_score(s))]
        self._fact(key[len(keys.ZSET_LEGACY) :], Row.ZSET_LEGACY, pack(flat))

    def _stream_legacy(self, key: bytes, value: bytes) -> None:
        entries = decode_legacy_stream(value)
        self._fact(key[len(keys.STREAM_LEGACY) :], Row.STREAM_LEGACY, pack_entries(entries))

    # --- hashes ------------------------------------------------------------------------------

    def _hash_field(self, key: bytes, value: bytes) -> None:
        user_key, name = keys.parse_wide_key(key, keys.HASH_FIELD, "ErrRedisInvalidHashKey")
        self._extend(Row.HASH_FIELD, user_key, name, value)

    def _hash_meta(self, key: bytes, value: bytes) -> None:
        user_key = keys.parse_meta_key(key, keys.HASH_META, "ErrRedisInvalidHashKey")
        meta = self._unshift(decode_count_meta(value, "ErrRedisInvalidHashMeta"))
        self._fact(user_key, Row.HASH_META, pack_count_meta(meta))

    def _hash_delta(self, key: bytes, value: bytes) -> None:
        self._count_delta(
            key,
            value,
            keys.HASH_DELTA,
            Row.HASH_DELTA,
            "ErrRedisInvalidHashKey",
            "ErrRedisInvalidHashMeta",
        )

    # --- lists -------------------------------------------------------------------------------

    def _list_item(self, key: bytes, value: bytes) -> None:
        user_key, _seq = keys.parse_list_item_key(key)
        # Items of one list arrive in sequence order; a run never reorders them.
        self._extend(Row.LIST_ITEM, user_key, value)

    def _list_meta(self, key: bytes, value: bytes) -> None:
        meta = self._unshift(decode_list_meta(value))
        self._fact(key[len(keys.LIST_META) :], Row.LIST_META, pack_list_meta(meta))

    def _list_delta(self, key: bytes, value: bytes) -> None:
        if is_list_meta_value(value):
            # The meta of a list whose own name starts with "d|" (a delta value is 16 bytes).
            self._list_meta(key, value)
            return
        user_key = keys.parse_delta_key(key, keys.LIST_DELTA, "ErrRedisInvalidListKey")
        self._add_delta(Row.LIST_DELTA, user_key, decode_list_delta(value))

    # --- sets --------------------------------------------------------------------------------

    def _set_member(self, key: bytes, value: bytes) -> None:
        user_key, member = keys.parse_wide_key(key, keys.SET_MEMBER, "ErrRedisInvalidSetKey")
        self._extend(Row.SET_MEMBER, user_key, member)

    def _set_meta(self, key: bytes, value: bytes) -> None:
        user_key = keys.parse_meta_key(key, keys.SET_META, "ErrRedisInvalidSetKey")
        meta = self._unshift(decode_count_meta(value, "ErrRedisInvalidSetMeta"))
        self._fact(user_key, Row.SET_META, pack_count_meta(meta))

    def _set_delta(self, key: bytes, value: bytes) -> None:
        self._count_delta(
            key,
            value,
            keys.SET_DELTA,
            Row.SET_DELTA,
            "ErrRedisInvalidSetKey",
            "ErrRedisInvalidSetMeta",
        )

    # --- sorted sets -------------------------------------------------------------------------

    def _zset_member(self, key: bytes, value: bytes) -> None:
        user_key, member = keys.parse_wide_key(key, keys.ZSET_MEMBER, "ErrRedisInvalidZSetKey")
        decode_score(value)  # validates: 8 bytes, not NaN
        self._extend(Row.ZSET_MEMBER, user_key, member, value)

    def _zset_meta(self, key: bytes, value: bytes) -> None:
        user_key = keys.parse_meta_key(key, keys.ZSET_META, "ErrRedisInvalidZSetKey")
        meta = self._unshift(decode_count_meta(value, "ErrRedisInvalidZSetMeta"))
        self._fact(user_key, Row.ZSET_META, pack_count_meta(meta))

    def _zset_delta(self, key: bytes, value: bytes) -> None:
        self._count_delta(
            key,
            value,
            keys.ZSET_DELTA,
            Row.ZSET_DELTA,
            "ErrRedisInvalidZSetKey",
            "ErrRedisInvalidZSetMeta",
        )

    # --- streams -----------------------------------------------------------------------------

    def _stream_entry(self, key: bytes, value: bytes) -> None:
        user_key, ms, seq = keys.parse_stream_entry_key(key)
        fields = decode_stream_entry(value)
        run = self._run_for(Row.STREAM_ENTRY, user_key)
        run.items.append(StreamEntry(ms, seq, fields))
        run.size += len(value) + 16

    def _stream_meta(self, key: bytes, value: bytes) -> None:
        user_key = keys.parse_meta_key(key, keys.STREAM_META, "ErrRedisInvalidStreamKey")
        meta = self._unshift(decode_stream_meta(value))
        self._fact(user_key, Row.STREAM_META, pack_stream_meta(meta))
