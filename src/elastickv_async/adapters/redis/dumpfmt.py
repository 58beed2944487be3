"""The ``redis/db_0/`` dump-tree format, both directions (REFERENCE_NOTES §3.3, §6.3).

Rendering reproduces the reference's bytes: collection files are ``json.MarshalIndent``
documents, stream files one ``json.Marshal`` line per entry plus a ``_meta`` line, sidecars and
KEYMAP ``json.Encoder`` lines without HTML escaping. Parsing follows the reference encoder's
``encoding/json`` rules where a hand-edited tree could differ: unknown keys are ignored, ``null``
means absent, integers must be integral and in range, strings with invalid UTF-8 decode to
U+FFFD. Malformed input raises :class:`RedisEncodeInvalidJSON` (KEYMAP lines:
:class:`InvalidKeymapRecord`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ... import gojson
from ...dump.names import b64url_decode, b64url_encode
from ...errors import InvalidKeymapRecord
from .errors import RedisEncodeInvalidJSON
from .values import StreamEntry, parse_stream_id

__all__ = [
    "BIN_EXT",
    "DB_DIR",
    "FORMAT_VERSION",
    "HASHES",
    "HLL",
    "HLL_TTL",
    "JSONL_EXT",
    "JSON_EXT",
    "KEYMAP",
    "KIND_SHA_FALLBACK",
    "LISTS",
    "SETS",
    "STREAMS",
    "STRINGS",
    "STRINGS_TTL",
    "ZSETS",
    "Collection",
    "StreamDoc",
    "StreamLine",
    "keymap_line",
    "parse_collection",
    "parse_keymap",
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
DB_DIR: Final = "redis/db_0"
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
KEYMAP: Final = "KEYMAP.jsonl"
KIND_SHA_FALLBACK: Final = "sha-fallback"

FORMAT_VERSION: Final = 1
_BASE64: Final = "base64"
_POS_INF: Final = "+inf"
_NEG_INF: Final = "-inf"
_UINT64_MAX: Final = (1 << 64) - 1
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_KEYMAP_LINE_MAX: Final = 4 << 20


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


def keymap_line(encoded: str, original: bytes) -> bytes:
    """One ``KEYMAP.jsonl`` line for a SHA-fallback name."""
    return gojson.encoder_line(
        {"encoded": encoded, "original": b64url_encode(original), "kind": KIND_SHA_FALLBACK}
    )


# --- parsing (encode direction) ---------------------------------------------------------------


def _invalid(where: str, problem: str) -> RedisEncodeInvalidJSON:
    return RedisEncodeInvalidJSON(f"{where}: {problem}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON literal {name}")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _values(data: bytes, where: str) -> Iterator[Any]:
    """Every JSON value of ``data`` (any whitespace between them), like a Go ``json.Decoder``."""
    text = gojson.go_str(data)
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n":
            pos += 1
        if pos == end:
            return
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except ValueError as exc:
            raise _invalid(where, f"invalid JSON: {exc}") from None
        yield value


def _one_value(data: bytes, where: str) -> Any:
    values = _values(data, where)
    first = next(values, None)
    if next(values, None) is not None:
        raise _invalid(where, "trailing data after the JSON value")
    return first


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(where, "expected a JSON object")
    return value


def _int(value: Any, where: str, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(where, f"{name} must be an integer in [{low}, {high}]")
    return value


def _uint64(doc: dict[str, Any], name: str, where: str) -> int | None:
    value = doc.get(name)
    return None if value is None else _int(value, where, name, 0, _UINT64_MAX)


def _utf8(text: str) -> bytes:
    # Go decodes an unpaired surrogate escape to U+FFFD.
    return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def _parse_binary(value: Any, where: str) -> bytes:
    if isinstance(value, str):
        return _utf8(value)
    if isinstance(value, dict):
        encoded = value.get(_BASE64)
        if isinstance(encoded, str):
            try:
                return b64url_decode(encoded)
            except ValueError as exc:
                raise _invalid(where, f"bad base64 envelope: {exc}") from None
    raise _invalid(where, "binary value is neither a string nor a base64 envelope")


def _array(doc: dict[str, Any], name: str, where: str) -> list[Any]:
    value = doc.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(where, f"{name} must be an array")
    return value


def _parse_score(value: Any, where: str) -> float:
    if value == _POS_INF:
        return math.inf
    if value == _NEG_INF:
        return -math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(where, 'score must be a number, "+inf" or "-inf"')
    score = float(value)
    if math.isinf(score):
        raise _invalid(where, "score out of range")
    return score


@dataclass(frozen=True, slots=True)
class Collection:
    """A parsed hash/list/set/zset file: its elements (pairs for hash and zset) and TTL."""

    elements: list[Any]
    expire_at_ms: int | None


def parse_collection(data: bytes, kind: str, where: str) -> Collection:
    """Parse ``hashes/``, ``lists/``, ``sets/`` or ``zsets/`` JSON (``kind`` is the directory)."""
    doc = _object(_one_value(data, where), where)
    version = doc.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise _invalid(where, f"unsupported format_version {version!r}")
    expire = _uint64(doc, "expire_at_ms", where)
    elements: list[Any] = []
    if kind == HASHES:
        for item in _array(doc, "fields", where):
            field = _object(item, where)
            elements.append(
                (
                    _parse_binary(field.get("name"), f"{where} field name"),
                    _parse_binary(field.get("value"), f"{where} field value"),
                )
            )
    elif kind == ZSETS:
        for item in _array(doc, "members", where):
            member = _object(item, where)
            elements.append(
                (
                    _parse_binary(member.get("member"), f"{where} member"),
                    _parse_score(member.get("score"), f"{where} score"),
                )
            )
    else:
        name = "items" if kind == LISTS else "members"
        elements = [_parse_binary(v, f"{where} {name}") for v in _array(doc, name, where)]
    return Collection(elements, expire)


@dataclass(frozen=True, slots=True)
class StreamLine:
    """One entry line of a stream file: the ID as written, its parsed form, the fields."""

    entry_id: str
    ms: int
    seq: int
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StreamDoc:
    """A parsed ``streams/<key>.jsonl`` file, validated like the reference encoder does."""

    entries: list[StreamLine]
    length: int
    last_ms: int
    last_seq: int
    expire_at_ms: int | None


def _stream_entry(line: dict[str, Any], where: str) -> StreamLine:
    entry_id = line.get("id")
    if entry_id is None:
        entry_id = ""
    if not isinstance(entry_id, str):
        raise _invalid(where, "stream id must be a string")
    parsed = parse_stream_id(entry_id)
    if parsed is None:
        raise _invalid(where, f"stream id {entry_id!r} is not <ms>-<seq>")
    fields: list[str] = []
    for item in _array(line, "fields", where):
        field = _object(item, where)
        for part in ("name", "value"):
            raw = _parse_binary(field.get(part), f"{where} entry {entry_id} field {part}")
            try:
                fields.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise _invalid(where, f"entry {entry_id} field {part} is not UTF-8") from None
    return StreamLine(entry_id, parsed[0], parsed[1], tuple(fields))


def parse_stream(data: bytes, where: str) -> StreamDoc:
    """Parse a stream file: entry lines in any order and exactly one ``_meta`` line."""
    entries: list[StreamLine] = []
    meta: dict[str, Any] | None = None
    for value in _values(data, where):
        line = _object(value, where)
        is_meta = line.get("_meta", False)
        if not isinstance(is_meta, bool):
            raise _invalid(where, "_meta must be a boolean")
        if not is_meta:
            entries.append(_stream_entry(line, where))
            continue
        if meta is not None:
            raise _invalid(where, "multiple _meta lines")
        meta = line
    if meta is None:
        raise _invalid(where, "missing _meta line")
    raw_length = meta.get("length", 0)
    length = _int(0 if raw_length is None else raw_length, where, "length", _INT64_MIN, _INT64_MAX)
    if length < 0:
        raise _invalid(where, f"negative _meta length {length}")
    if length != len(entries):
        raise _invalid(where, f"_meta length {length} disagrees with {len(entries)} entries")
    last_ms = _uint64(meta, "last_ms", where) or 0
    last_seq = _uint64(meta, "last_seq", where) or 0
    if entries:
        top = max(entries, key=lambda e: (e.ms, e.seq))
        if (top.ms, top.seq) > (last_ms, last_seq):
            raise _invalid(
                where, f"_meta last {last_ms}-{last_seq} is behind max entry {top.ms}-{top.seq}"
            )
    return StreamDoc(entries, length, last_ms, last_seq, _uint64(meta, "expire_at_ms", where))


def parse_ttl_sidecar(data: bytes, where: str) -> dict[str, int]:
    """``strings_ttl.jsonl`` / ``hll_ttl.jsonl`` as encoded name -> TTL (the last line wins)."""
    ttls: dict[str, int] = {}
    for value in _values(data, where):
        record = _object(value, where)
        key = record.get("key")
        if key is None:
            key = ""
        if not isinstance(key, str):
            raise _invalid(where, "key must be a string")
        ttls[key] = _uint64(record, "expire_at_ms", where) or 0
    return ttls


def parse_keymap(data: bytes, where: str) -> dict[str, bytes]:
    """``KEYMAP.jsonl`` as encoded name -> original key (the last record per name wins)."""
    originals: dict[str, bytes] = {}
    lines: Sequence[bytes] = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    for number, raw in enumerate(lines, 1):
        line = raw.removesuffix(b"\r")
        here = f"{where} line {number}"
        if len(line) > _KEYMAP_LINE_MAX:
            raise InvalidKeymapRecord(f"{here}: line longer than 4 MiB")
        try:
            record = _one_value(line, here)
        except RedisEncodeInvalidJSON as exc:
            raise InvalidKeymapRecord(str(exc)) from None
        if not isinstance(record, dict):
            raise InvalidKeymapRecord(f"{here}: not a JSON object")
        for name in ("encoded", "original", "kind"):
            if record.get(name) is None:
                raise InvalidKeymapRecord(f"{here}: missing field {name!r}")
        encoded, original, kind = record["encoded"], record["original"], record["kind"]
        if not all(isinstance(v, str) for v in (encoded, original, kind)):
            raise InvalidKeymapRecord(f"{here}: fields must be strings")
        if not encoded or not kind:
            raise InvalidKeymapRecord(f"{here}: missing encoded or kind")
        try:
            originals[encoded] = b64url_decode(original)
        except ValueError as exc:
            raise InvalidKeymapRecord(f"{here}: bad original: {exc}") from None
    return originals
