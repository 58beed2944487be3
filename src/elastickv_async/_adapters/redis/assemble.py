"""Turning every fact of one user key into its dump files (REFERENCE_NOTES §3.3).

The rules are the reference's, applied to a key whose rows are all known:

* **TTL routing.** A ``!redis|ttl|`` row belongs to the type the reference had registered last
  when it reached the row: among the types whose first row sorts before ``!redis|ttl|`` the one
  that comes last; otherwise the first type created after it (sets, zsets and streams sort
  after the TTL range and claim the parked TTL). With no such type the TTL is an orphan.
* **Inline TTLs win.** A collection meta carrying an inline TTL (16-byte count meta, 32-byte
  list/stream meta, 48-byte stream meta) is authoritative; 0 there means "no TTL". New-format
  strings and HLLs own their TTL too, so their ``!redis|ttl|`` row is ignored.
* **Wide rows win over legacy blobs.** Hash fields, set members and zset members replace the
  legacy single-blob value; a stream's legacy blob is used only when it has no meta row.
* **Expiry.** With a cutoff (the snapshot's "now"), a key whose TTL is not after it is omitted,
  as the live server no longer returns it (``hasExpired``: ``!ttl.After(now)``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from ..._core.dump.keymap import KIND_SHA_FALLBACK, keymap_line
from ..._core.dump.names import encode_segment, is_sha_fallback
from . import layout
from .facts import (
    CREATING_ROWS,
    ROW_KIND,
    Kind,
    Row,
    SimpleFact,
    ordered_key,
    unpack,
    unpack_count_meta,
    unpack_delta,
    unpack_entries,
    unpack_list_meta,
    unpack_simple,
    unpack_stream_meta,
    unpack_ttl,
)
from .values import CountMeta, ListMeta, StreamEntry, StreamMeta, decode_score

__all__ = [
    "SUB_BLOB",
    "SUB_TTL",
    "KeyOutput",
    "arrival_tag",
    "assemble_key",
    "collection_tag",
    "ttl_owner",
    "unowned_ttls",
]

Facts = Mapping[Row, Sequence[bytes]]
_Meta = TypeVar("_Meta", CountMeta, ListMeta)

_ROW_AT: Final = -9  # a fact key's row class byte, before its 8-byte arrival
_SIMPLE_GROUP: Final = b"\x00"
_WIDE_GROUP: Final = b"\x01"
_ARRIVAL: Final = struct.Struct(">Q")
#: Order of a string/HLL's own KEYMAP events: the blob first, then its inline TTL line.
SUB_BLOB: Final = 0
SUB_TTL: Final = 1
_HINTS: Final = {
    Kind.HASH: (
        "redis_hash_length_mismatch",
        "observed_fields",
        "meta record's Len does not match the count of !hs|fld| keys for this user key",
    ),
    Kind.LIST: (
        "redis_list_length_mismatch",
        "observed_items",
        "meta record's Len does not match the count of !lst|itm| keys for this user key",
    ),
    Kind.SET: (
        "redis_set_length_mismatch",
        "observed_members",
        "meta record's Len does not match the count of !st|mem| keys for this user key",
    ),
    Kind.ZSET: (
        "redis_zset_length_mismatch",
        "observed_members",
        "meta record's Len does not match the count of !zs|mem| keys for this user key",
    ),
    Kind.STREAM: (
        "redis_stream_length_mismatch",
        "observed_entries",
        "meta record's Length does not match the count of !stream|entry| keys for this user key",
    ),
}
_ORPHAN_ENTRIES_HINT: Final = (
    "!stream|entry| rows arrived without a !stream|meta| row; live read treats this as a "
    "non-existent stream, so the backup skips emitting a file to avoid resurrecting orphan "
    "entries on restore"
)


def arrival_tag(arrival: int, sub: int = SUB_BLOB) -> bytes:
    """KEYMAP sort tag of a string/HLL event: the reference records those while streaming, so
    in snapshot order (blob, then its inline TTL line; ``!redis|ttl|`` lines in the TTL range)."""
    return _SIMPLE_GROUP + _ARRIVAL.pack(arrival) + bytes((sub,))


def collection_tag(user_key: bytes, kind: Kind) -> bytes:
    """KEYMAP sort tag of a collection file: the reference writes those at the end, type by
    type (hashes, lists, sets, zsets, streams), keys sorted bytewise."""
    return _WIDE_GROUP + bytes((kind,)) + ordered_key(user_key)


@dataclass(slots=True)
class KeyOutput:
    """Everything one key contributes to the dump."""

    #: ``(path under redis/db_0, content)``.
    files: list[tuple[str, bytes]] = field(default_factory=list)
    #: ``(sidecar name, arrival of the TTL row, line)`` for strings_ttl.jsonl / hll_ttl.jsonl.
    sidecar: list[tuple[str, int, bytes]] = field(default_factory=list)
    #: ``(sort tag, KEYMAP line)``.
    keymap: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: ``(event, fields)`` warnings.
    warnings: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    expired: int = 0
    orphan_ttl: int = 0


def ttl_owner(rows: set[Row]) -> Kind | None:
    """The type a key's ``!redis|ttl|`` row belongs to, given the row classes present."""
    first: dict[Kind, Row] = {}
    for row in sorted(rows & CREATING_ROWS):
        first.setdefault(ROW_KIND[row], row)
    before = [(row, kind) for kind, row in first.items() if row < Row.TTL]
    if before:
        return max(before)[1]
    after = [(row, kind) for kind, row in first.items() if row > Row.TTL]
    return min(after)[1] if after else None


def unowned_ttls(records: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    """The ``!redis|ttl|`` facts of ``records`` (TTL facts and new-format string facts,
    merged in sort order) whose key has no new-format string.

    A string's row sorts after every other type's row before the TTL range, so a key's
    string always owns its TTL row (:func:`ttl_owner`), and a new-format string ignores it:
    for the key's other types and the orphan count the row is then as good as absent.
    The string itself was written on arrival; nothing of either fact is left to assemble.
    """
    string_key = None
    string_row = int(Row.STRING)
    for record in records:
        sort_key = record[0]
        ordered = sort_key[:_ROW_AT]
        # A key's string fact sorts before its TTL fact (row class 11 before 12).
        if sort_key[_ROW_AT] == string_row:
            string_key = ordered
        elif ordered != string_key:
            yield record


class _Key:
    """One key's facts plus the output being built for it."""

    def __init__(
        self, user_key: bytes, facts: Facts, arrivals: Mapping[Row, int], cutoff: int | None
    ) -> None:
        self.user_key = user_key
        self.facts = facts
        self.arrivals = arrivals
        self.cutoff = cutoff
        self.out = KeyOutput()
        self.ttl = unpack_ttl(facts[Row.TTL][-1]) if Row.TTL in facts else None
        self.owner = ttl_owner(set(facts)) if self.ttl is not None else None
        self._segment: str | None = None

    @property
    def segment(self) -> str:
        if self._segment is None:
            self._segment = encode_segment(self.user_key)
        return self._segment

    def expired(self, expire_at_ms: int | None) -> bool:
        if self.cutoff is None or expire_at_ms is None or expire_at_ms > self.cutoff:
            return False
        self.out.expired += 1
        return True

    def keymap(self, tag: bytes) -> None:
        if is_sha_fallback(self.segment):
            self.out.keymap.append(
                (tag, keymap_line(self.segment, self.user_key, KIND_SHA_FALLBACK))
            )

    def owned_ttl(self, kind: Kind) -> int | None:
        return self.ttl if self.owner == kind else None

    def collection_ttl(
        self, kind: Kind, meta: CountMeta | ListMeta | StreamMeta | None
    ) -> int | None:
        if meta is not None and meta.inline:
            return meta.ttl_ms or None
        return self.owned_ttl(kind)

    def declared(
        self, meta_row: Row, delta_row: Row, unpack_meta: Callable[[bytes], _Meta]
    ) -> tuple[_Meta | None, int | None]:
        meta = unpack_meta(self.facts[meta_row][-1]) if meta_row in self.facts else None
        deltas = [unpack_delta(d) for d in self.facts.get(delta_row, ())]
        if meta is None and not deltas:
            return None, None
        return meta, (meta.declared_len if meta is not None else 0) + sum(deltas)

    def emit(self, kind: Kind, directory: str, ext: str, body: bytes) -> None:
        self.out.files.append((f"{directory}/{self.segment}{ext}", body))
        self.keymap(collection_tag(self.user_key, kind))

    def check_length(self, kind: Kind, declared: int | None, observed: int) -> None:
        if declared is None or declared == observed:
            return
        event, observed_name, hint = _HINTS[kind]
        self.out.warnings.append(
            (
                event,
                {
                    "user_key_len": len(self.user_key),
                    "declared_len": declared,
                    observed_name: observed,
                    "hint": hint,
                },
            )
        )

    def chunks(self, row: Row) -> list[bytes]:
        return [item for blob in self.facts.get(row, ()) for item in unpack(blob)]


def _simple(key: _Key, row: Row, kind: Kind, directory: str, sidecar: str) -> None:
    fact: SimpleFact = unpack_simple(key.facts[row][-1])
    if fact.omitted or fact.new_format:
        return  # written (or dropped as expired) on arrival; the TTL row is ignored
    ttl = key.owned_ttl(kind)
    if fact.body is not None:
        if key.expired(ttl):
            return
        key.out.files.append((f"{directory}/{key.segment}{layout.BIN_EXT}", fact.body))
        key.keymap(arrival_tag(key.arrivals[row]))
    if ttl is not None:
        arrival = key.arrivals[Row.TTL]
        key.out.sidecar.append((sidecar, arrival, layout.ttl_line(key.segment, ttl)))
        key.keymap(arrival_tag(arrival))


def _pairs(items: list[bytes]) -> list[tuple[bytes, bytes]]:
    return list(zip(items[::2], items[1::2], strict=True))


def _hash(key: _Key) -> None:
    # Row order is not byte order when one name is a prefix of another (the MVCC timestamp
    # suffix follows the name), so every collection is sorted here, as the reference does.
    fields = sorted(_pairs(key.chunks(Row.HASH_FIELD)) or _pairs(key.chunks(Row.HASH_LEGACY)))
    meta, declared = key.declared(Row.HASH_META, Row.HASH_DELTA, unpack_count_meta)
    key.check_length(Kind.HASH, declared, len(fields))
    expire = key.collection_ttl(Kind.HASH, meta)
    if not key.expired(expire):
        key.emit(Kind.HASH, layout.HASHES, layout.JSON_EXT, layout.render_hash(fields, expire))


def _list(key: _Key) -> None:
    items = key.chunks(Row.LIST_ITEM)
    meta, declared = key.declared(Row.LIST_META, Row.LIST_DELTA, unpack_list_meta)
    key.check_length(Kind.LIST, declared, len(items))
    expire = key.collection_ttl(Kind.LIST, meta)
    if not key.expired(expire):
        key.emit(Kind.LIST, layout.LISTS, layout.JSON_EXT, layout.render_list(items, expire))


def _set(key: _Key) -> None:
    members = sorted(key.chunks(Row.SET_MEMBER) or key.chunks(Row.SET_LEGACY))
    meta, declared = key.declared(Row.SET_META, Row.SET_DELTA, unpack_count_meta)
    key.check_length(Kind.SET, declared, len(members))
    expire = key.collection_ttl(Kind.SET, meta)
    if not key.expired(expire):
        key.emit(Kind.SET, layout.SETS, layout.JSON_EXT, layout.render_set(members, expire))


def _zset(key: _Key) -> None:
    row = Row.ZSET_MEMBER if Row.ZSET_MEMBER in key.facts else Row.ZSET_LEGACY
    members = [(member, decode_score(score)) for member, score in sorted(_pairs(key.chunks(row)))]
    meta, declared = key.declared(Row.ZSET_META, Row.ZSET_DELTA, unpack_count_meta)
    key.check_length(Kind.ZSET, declared, len(members))
    expire = key.collection_ttl(Kind.ZSET, meta)
    if not key.expired(expire):
        key.emit(Kind.ZSET, layout.ZSETS, layout.JSON_EXT, layout.render_zset(members, expire))


def _stream(key: _Key) -> None:
    entries: list[StreamEntry] = []
    for blob in key.facts.get(Row.STREAM_ENTRY, ()):
        entries.extend(unpack_entries(blob))
    entries.sort(key=lambda e: (e.ms, e.seq))
    if Row.STREAM_META in key.facts:
        meta = unpack_stream_meta(key.facts[Row.STREAM_META][-1])
        key.check_length(Kind.STREAM, meta.length, len(entries))
        expire = key.collection_ttl(Kind.STREAM, meta)
        last_ms, last_seq, length = meta.last_ms, meta.last_seq, meta.length
    else:
        if entries:
            key.out.warnings.append(
                (
                    "redis_stream_orphan_entries_without_meta",
                    {
                        "user_key_len": len(key.user_key),
                        "observed_entries": len(entries),
                        "hint": _ORPHAN_ENTRIES_HINT,
                    },
                )
            )
        if Row.STREAM_LEGACY not in key.facts:
            return
        # A legacy blob has no meta: its entries define the length and the last ID.
        entries = unpack_entries(key.facts[Row.STREAM_LEGACY][-1])
        last_ms, last_seq = (entries[-1].ms, entries[-1].seq) if entries else (0, 0)
        length = len(entries)
        expire = key.owned_ttl(Kind.STREAM)
    if not key.expired(expire):
        body = layout.render_stream(entries, length, last_ms, last_seq, expire)
        key.emit(Kind.STREAM, layout.STREAMS, layout.JSONL_EXT, body)


_COLLECTIONS: Final = (
    (Kind.HASH, _hash),
    (Kind.LIST, _list),
    (Kind.SET, _set),
    (Kind.ZSET, _zset),
    (Kind.STREAM, _stream),
)


def assemble_key(
    user_key: bytes, facts: Facts, arrivals: Mapping[Row, int], cutoff: int | None
) -> KeyOutput:
    """Build one key's files, sidecar lines, KEYMAP lines and warnings from all its facts.

    ``facts`` maps each row class present to its fact values in arrival order, ``arrivals``
    to the arrival number (snapshot position) of its first fact; ``cutoff`` is the "now"
    (Unix ms) at or before which a TTL counts as expired, or ``None`` to keep every key.
    """
    key = _Key(user_key, facts, arrivals, cutoff)
    kinds = {ROW_KIND[row] for row in facts if row in CREATING_ROWS}
    if Kind.HLL in kinds:
        _simple(key, Row.HLL, Kind.HLL, layout.HLL, layout.HLL_TTL)
    if Kind.STRING in kinds:
        _simple(key, Row.STRING, Kind.STRING, layout.STRINGS, layout.STRINGS_TTL)
    for kind, build in _COLLECTIONS:
        if kind in kinds:
            build(key)
    if key.ttl is not None and key.owner is None:
        key.out.orphan_ttl += 1
    return key.out
