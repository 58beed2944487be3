"""The ``redis/db_0/`` dump-tree format, both directions (REFERENCE_NOTES §3.3, §6.3).

Rendering reproduces the reference's bytes: collection files are ``json.MarshalIndent``
documents, stream files one ``json.Marshal`` line per entry plus a ``_meta`` line, TTL sidecars
``json.Encoder`` lines without HTML escaping (KEYMAP.jsonl is
:mod:`elastickv_async._core.dump.keymap`).
Parsing follows the reference encoder's ``encoding/json`` rules (through
:mod:`elastickv_async._core.gojson_read`) where a hand-edited tree could differ: unknown keys are
ignored, ``null`` means absent, integers must be integral and in range, strings with invalid
UTF-8 decode to U+FFFD. Malformed input raises ``ErrRedisEncodeInvalidJSON``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import msgspec.json

from ..._core import gojson
from ..._core.dump.names import b64url_decode, b64url_encode
from ..._core.errors import DumpTreeError
from ..._core.gojson_read import (
    GoJSONError,
    as_float,
    as_object,
    get_bool,
    get_int,
    get_list,
    get_str,
    iter_values,
    loads,
)
from .errors import tree_error
from .values import StreamEntry, parse_stream_id

__all__ = [
    "BIN_EXT",
    "DB_DIR",
    "DB_NAME",
    "FORMAT_VERSION",
    "HASHES",
    "HLL",
    "HLL_TTL",
    "JSONL_EXT",
    "JSON_EXT",
    "LISTS",
    "SETS",
    "STREAMS",
    "STRINGS",
    "STRINGS_TTL",
    "ZSETS",
    "Collection",
    "StreamDoc",
    "StreamLine",
    "parse_collection",
    "parse_stream",
    "parse_ttl_sidecar",
    "render_hash",
    "render_list",
    "render_set",
    "render_stream",
    "render_zset",
    "ttl_line",
]

#: The one database the reference reads and writes.
#: The adapter's subtree of the dump, and its only database directory (db 0).
ROOT: Final = "redis"
DB_NAME: Final = "db_0"
DB_DIR: Final = f"{ROOT}/{DB_NAME}"
STRINGS: Final = "strings"
HLL: Final = "hll"
HASHES: Final = "hashes"
LISTS: Final = "lists"
SETS: Final = "sets"
ZSETS: Final = "zsets"
STREAMS: Final = "streams"
BIN_EXT: Final = ".bin"
JSON_EXT: Final = ".json"
JSONL_EXT: Final = ".jsonl"
STRINGS_TTL: Final = "strings_ttl.jsonl"
HLL_TTL: Final = "hll_ttl.jsonl"

FORMAT_VERSION: Final = 1
_BASE64: Final = "base64"
_POS_INF: Final = "+inf"
_NEG_INF: Final = "-inf"


# --- rendering (decode direction) -------------------------------------------------------------


def _binary(raw: bytes) -> Any:
    """The reference's binary-safe envelope: UTF-8 as a JSON string, else base64url."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {_BASE64: b64url_encode(raw)}


def _score(score: float) -> Any:
    if math.isinf(score):
        return _POS_INF if score > 0 else _NEG_INF
    return gojson.go_float(score)


def _collection(kind: str, elements: list[Any], expire_at_ms: int | None) -> bytes:
    return gojson.marshal_indent(
        {"format_version": FORMAT_VERSION, kind: elements, "expire_at_ms": expire_at_ms}
    )


def render_hash(fields: Iterable[tuple[bytes, bytes]], expire_at_ms: int | None) -> bytes:
    """``hashes/<key>.json``: fields in the order given (the caller sorts by name bytes)."""
    elements = [{"name": _binary(n), "value": _binary(v)} for n, v in fields]
    return _collection("fields", elements, expire_at_ms)


def render_list(items: Iterable[bytes], expire_at_ms: int | None) -> bytes:
    """``lists/<key>.json``: items in list order."""
    return _collection("items", [_binary(i) for i in items], expire_at_ms)


def render_set(members: Iterable[bytes], expire_at_ms: int | None) -> bytes:
    """``sets/<key>.json``: members in the order given (the caller sorts by bytes)."""
    return _collection("members", [_binary(m) for m in members], expire_at_ms)


def render_zset(members: Iterable[tuple[bytes, float]], expire_at_ms: int | None) -> bytes:
    """``zsets/<key>.json``: members in the order given; infinities as ``"+inf"``/``"-inf"``."""
    elements = [{"member": _binary(m), "score": _score(s)} for m, s in members]
    return _collection("members", elements, expire_at_ms)


def render_stream(
    entries: Iterable[StreamEntry],
    length: int,
    last_ms: int,
    last_seq: int,
    expire_at_ms: int | None,
) -> bytes:
    """``streams/<key>.jsonl``: one line per entry (in the order given), then the ``_meta`` line."""
    lines = []
    for entry in entries:
        fields = entry.fields
        pairs = [{"name": fields[i], "value": fields[i + 1]} for i in range(0, len(fields) - 1, 2)]
        lines.append(gojson.marshal({"id": f"{entry.ms}-{entry.seq}", "fields": pairs}))
    meta = {
        "_meta": True,
        "length": length,
        "last_ms": last_ms,
        "last_seq": last_seq,
        "expire_at_ms": expire_at_ms,
    }
    lines.append(gojson.marshal(meta))
    lines.append(b"")
    return b"\n".join(lines)


def ttl_line(encoded: str, expire_at_ms: int) -> bytes:
    """One ``strings_ttl.jsonl`` / ``hll_ttl.jsonl`` line."""
    return gojson.encoder_line({"key": encoded, "expire_at_ms": expire_at_ms})


# --- parsing (encode direction) ---------------------------------------------------------------


def _invalid(where: str, problem: str) -> DumpTreeError:
    return tree_error("ErrRedisEncodeInvalidJSON", f"{where}: {problem}")


def _expire_at(doc: dict[str, Any]) -> int | None:
    """``expire_at_ms``, a Go ``*uint64``: absent or ``null`` is no TTL."""
    return None if doc.get("expire_at_ms") is None else get_int(doc, "expire_at_ms", "u64")


def _parse_binary(value: Any, where: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict):
        encoded = value.get(_BASE64)
        if isinstance(encoded, str):
            try:
                return b64url_decode(encoded)
            except ValueError as exc:
                raise _invalid(where, f"bad base64 envelope: {exc}") from None
    raise _invalid(where, "binary value is neither a string nor a base64 envelope")


def _parse_score(value: Any, where: str) -> float:
    if value == _POS_INF:
        return math.inf
    if value == _NEG_INF:
        return -math.inf
    try:
        score = as_float(value, "score")
    except GoJSONError:
        raise _invalid(where, 'score must be a number, "+inf" or "-inf"') from None
    if math.isinf(score):
        raise _invalid(where, "score out of range")
    return score


@dataclass(frozen=True, slots=True)
class Collection:
    """A parsed hash/list/set/zset file: its elements (pairs for hash and zset) and TTL."""

    elements: list[Any]
    expire_at_ms: int | None


class _HashField(msgspec.Struct):
    name: str
    value: str


class _HashDoc(msgspec.Struct):
    format_version: int
    fields: list[_HashField] = msgspec.field(default_factory=list)
    expire_at_ms: int | None = None


class _SetDoc(msgspec.Struct):
    format_version: int
    members: list[str] = msgspec.field(default_factory=list)
    expire_at_ms: int | None = None


class _ListDoc(msgspec.Struct):
    format_version: int
    items: list[str] = msgspec.field(default_factory=list)
    expire_at_ms: int | None = None


_PLAIN_DECODERS: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    HASHES: msgspec.json.Decoder(_HashDoc),
    SETS: msgspec.json.Decoder(_SetDoc),
    LISTS: msgspec.json.Decoder(_ListDoc),
}
_U64_MAX: Final = (1 << 64) - 1


def _plain_collection(data: bytes, kind: str) -> Collection | None:
    """The common document of ``kind`` (plain strings, no envelope) in one typed decode;
    ``None`` for anything else, which the Go-rules reader then parses (and names).

    Any input where the two could differ is left to that reader: what msgspec refuses
    (invalid UTF-8, lone surrogates, a float or ``null`` where an integer or array belongs,
    a base64 envelope), an unsupported version, an expiry outside ``uint64``, and any
    ``-0`` (Go refuses it for an unsigned integer; msgspec reads it as 0).
    """
    decoder = _PLAIN_DECODERS.get(kind)
    if decoder is None or b"-0" in data:
        return None
    try:
        doc = decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    expire = doc.expire_at_ms
    if doc.format_version != FORMAT_VERSION or (expire is not None and not 0 <= expire <= _U64_MAX):
        return None
    if kind == HASHES:
        pairs = [(f.name.encode("utf-8"), f.value.encode("utf-8")) for f in doc.fields]
        return Collection(pairs, expire)
    strings = doc.members if kind == SETS else doc.items
    return Collection([member.encode("utf-8") for member in strings], expire)


def parse_collection(data: bytes, kind: str, where: str) -> Collection:
    """Parse ``hashes/``, ``lists/``, ``sets/`` or ``zsets/`` JSON (``kind`` is the directory)."""
    plain = _plain_collection(data, kind)
    if plain is not None:
        return plain
    try:
        return _collection_doc(as_object(loads(data)), kind, where)
    except GoJSONError as exc:
        raise _invalid(where, str(exc)) from None


def _collection_doc(doc: dict[str, Any], kind: str, where: str) -> Collection:
    version = get_int(doc, "format_version", "u32")
    if version != FORMAT_VERSION:
        raise _invalid(where, f"unsupported format_version {version}")
    elements: list[Any] = []
    if kind == HASHES:
        for item in get_list(doc, "fields"):
            field = as_object(item)
            elements.append(
                (
                    _parse_binary(field.get("name"), f"{where} field name"),
                    _parse_binary(field.get("value"), f"{where} field value"),
                )
            )
    elif kind == ZSETS:
        for item in get_list(doc, "members"):
            member = as_object(item)
            elements.append(
                (
                    _parse_binary(member.get("member"), f"{where} member"),
                    _parse_score(member.get("score"), f"{where} score"),
                )
            )
    else:
        name = "items" if kind == LISTS else "members"
        elements = [_parse_binary(v, f"{where} {name}") for v in get_list(doc, name)]
    return Collection(elements, _expire_at(doc))


@dataclass(frozen=True, slots=True)
class StreamLine:
    """One entry line of a stream file: the ID as written, its parsed form, the fields."""

    entry_id: str
    ms: int
    seq: int
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StreamDoc:
    """A parsed ``streams/<key>.jsonl`` file.

    ``length`` and ``last_ms``/``last_seq`` are the store's stream meta as decoded; they may
    disagree with the entries (the decoder warns and keeps them, because the snapshot held
    them so), and :meth:`inconsistencies` names such disagreements.
    """

    entries: list[StreamLine]
    length: int
    last_ms: int
    last_seq: int
    expire_at_ms: int | None

    def inconsistencies(self) -> list[tuple[str, dict[str, int]]]:
        """``(event, fields)`` for meta that disagrees with the entries (empty when none)."""
        found: list[tuple[str, dict[str, int]]] = []
        if self.length != len(self.entries):
            found.append(
                (
                    "redis_stream_length_mismatch",
                    {"declared_len": self.length, "observed_entries": len(self.entries)},
                )
            )
        if self.entries:
            top = max(self.entries, key=lambda e: (e.ms, e.seq))
            if (top.ms, top.seq) > (self.last_ms, self.last_seq):
                found.append(
                    (
                        "redis_stream_last_id_behind",
                        {
                            "last_ms": self.last_ms,
                            "last_seq": self.last_seq,
                            "max_entry_ms": top.ms,
                            "max_entry_seq": top.seq,
                        },
                    )
                )
        return found


def _stream_entry(line: dict[str, Any], where: str) -> StreamLine:
    entry_id = get_str(line, "id")
    parsed = parse_stream_id(entry_id)
    if parsed is None:
        raise _invalid(where, f"stream id {entry_id!r} is not <ms>-<seq>")
    fields: list[str] = []
    for item in get_list(line, "fields"):
        field = as_object(item)
        for part in ("name", "value"):
            raw = _parse_binary(field.get(part), f"{where} entry {entry_id} field {part}")
            try:
                fields.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise _invalid(where, f"entry {entry_id} field {part} is not UTF-8") from None
    return StreamLine(entry_id, parsed[0], parsed[1], tuple(fields))


def parse_stream(data: bytes, where: str) -> StreamDoc:
    """Parse a stream file: entry lines in any order and exactly one ``_meta`` line."""
    try:
        return _stream_doc(data, where)
    except GoJSONError as exc:
        raise _invalid(where, str(exc)) from None


def _stream_doc(data: bytes, where: str) -> StreamDoc:
    entries: list[StreamLine] = []
    meta: dict[str, Any] | None = None
    for value, _text in iter_values(data):
        line = as_object(value)
        if not get_bool(line, "_meta"):
            entries.append(_stream_entry(line, where))
            continue
        if meta is not None:
            raise _invalid(where, "multiple _meta lines")
        meta = line
    if meta is None:
        raise _invalid(where, "missing _meta line")
    length = get_int(meta, "length")
    if length < 0:
        raise _invalid(where, f"negative _meta length {length}")
    last_ms = get_int(meta, "last_ms", "u64")
    last_seq = get_int(meta, "last_seq", "u64")
    return StreamDoc(entries, length, last_ms, last_seq, _expire_at(meta))


def parse_ttl_sidecar(data: bytes, where: str) -> dict[str, int]:
    """``strings_ttl.jsonl`` / ``hll_ttl.jsonl`` as encoded name -> TTL (the last line wins)."""
    ttls: dict[str, int] = {}
    try:
        for value, _text in iter_values(data):
            record = as_object(value)
            ttls[get_str(record, "key")] = get_int(record, "expire_at_ms", "u64")
    except GoJSONError as exc:
        raise _invalid(where, str(exc)) from None
    return ttls
