"""Hypothesis strategies for canonical dump trees of all four adapters.

A tree is ``{relative posix path: file bytes}`` in exactly the form the decoder writes, so a
round trip must reproduce it byte for byte. Layouts and orders are restated here from
REFERENCE_NOTES §3-§6 and the golden ``enc_*`` inputs rather than taken from the adapters:

* names: the percent/SHA-fallback/``b64.`` segment encoding (§4), written out independently;
* DynamoDB: ``_schema.json`` and one item file per primary key, attributes and map members
  sorted, item files named after the key (``N`` keys as ``big.Rat.RatString``);
* S3: bodies at their key path with a sidecar, ``_bucket.json``, and ``KEYMAP.jsonl`` for the
  renames the decoder makes (leaf data of a key that is also a directory, reserved root
  names, directory markers), lines sorted by original key;
* Redis: one file per key and type, TTL sidecars and KEYMAP lines in the order the decoder
  meets their rows (snapshot key order for strings/HLLs, then collections type by type);
* SQS: ``_queue.json`` and ``messages.jsonl`` as a restore decodes it (generation 1,
  visibility state zeroed), sorted by send time, sequence number, message id.

Only JSON byte rendering goes through :mod:`elastickv_async._core.gojson` (the project's one
Go-compatible JSON writer), as every canonical file is Go JSON.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final, TypeVar

from hypothesis import strategies as st

from elastickv_async._core import gojson

__all__ = [
    "LAST_COMMIT_MS",
    "TTL_FLOOR_MS",
    "DumpTree",
    "b64url",
    "binary_segment",
    "ddb_number_segment",
    "dump_trees",
    "fnv1a32",
    "manifest_json",
    "s3_placements",
    "segment",
]

T = TypeVar("T")
Files = dict[str, bytes]
Draw = st.DrawFn

#: The snapshots' clock: every generated last_commit_ts is an HLC in early 2026.
LAST_COMMIT_MS: Final = 1_770_000_000_000
#: Redis TTLs lie after this, so no node header ceiling near LAST_COMMIT_MS expires them.
TTL_FLOOR_MS: Final = 1_800_000_000_000
_INT64_MAX: Final = (1 << 63) - 1
_TS_MASK: Final = (1 << 64) - 1
#: S3 bodies that span more than one 1 MiB chunk (drawn only occasionally).
_BIG_BODY_SIZES: Final = ((1 << 20) + 1, (1 << 20) + 4099, (2 << 20) + 17)

# --- names (REFERENCE_NOTES §4) ----------------------------------------------------------------

_SEGMENT_MAX: Final = 240
_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_SHA_SHAPE: Final = re.compile(r"[0-9a-fA-F]{32}__")


def _percent(raw: bytes) -> str:
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in raw)


def _sha_fallback(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:32] + "__" + _percent(raw[:64])


def segment(raw: bytes) -> str:
    """A key segment as a file name: percent-encoded, or the SHA fallback when too long or
    when it would look like a SHA-fallback or ``b64.`` name."""
    encoded = _percent(raw)
    if len(raw) > _SEGMENT_MAX or len(encoded) > _SEGMENT_MAX:
        return _sha_fallback(raw)
    if _SHA_SHAPE.match(encoded) or encoded.startswith("b64."):
        return _sha_fallback(raw)
    return encoded


def b64url(raw: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64std(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def binary_segment(raw: bytes) -> str:
    """A DynamoDB ``B`` key segment: ``b64.<base64url>``, SHA fallback beyond 240 bytes."""
    name = "b64." + b64url(raw)
    return _sha_fallback(raw) if len(name) > _SEGMENT_MAX else name


def _rfc3339_ms(ms: int) -> str:
    """Go's ``time.RFC3339Nano`` of a UTC millisecond instant (fraction zeros trimmed)."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}".rstrip("0")
    return text + "Z"


def _envelope(raw: bytes) -> Any:
    """The Redis/SQS binary-safe value: a string when UTF-8, else ``{"base64": url64}``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": b64url(raw)}


def _long_bytes(over: int) -> st.SearchStrategy[bytes]:
    """Short random bytes repeated past ``over`` bytes (long keys without drawing each byte)."""
    return st.builds(
        lambda unit, extra: unit * (over // len(unit) + 1 + extra),
        st.binary(min_size=1, max_size=6),
        st.integers(0, 12),
    )


def _long_text(over: int) -> st.SearchStrategy[str]:
    """Short random text repeated past ``over`` UTF-8 bytes."""
    return st.builds(
        lambda unit, extra: unit * (over // len(unit.encode()) + 1 + extra),
        st.text(min_size=1, max_size=5),
        st.integers(0, 12),
    )


_TEXT: Final = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["<b>&amp;", "a\u2028b", "\u2029", "é", "\x7f", "\x00", "\t\n", "💡"]),
)
_SHORT_BYTES: Final = st.one_of(st.text(max_size=8).map(str.encode), st.binary(max_size=8))
_TTL: Final = st.one_of(
    st.none(), st.integers(TTL_FLOOR_MS, 4_000_000_000_000), st.just(_INT64_MAX)
)


def _unique(draw: Draw, strategy: st.SearchStrategy[T], key: Callable[[T], Any], n: int) -> list[T]:
    return list(draw(st.lists(strategy, max_size=n, unique_by=key)))


# --- DynamoDB ------------------------------------------------------------------------------------

_DDB_SPECIAL_KEYS: Final = (
    "c/3 special",
    "100%",
    "b64.looks-binary",
    "0123456789abcdef0123456789abcdef__fake-sha",
    "客户-2",
    "🚀launch",
    "a\x00b",
    "UPPER_lower-123.~",
    "?query=1&x",
    "<b>&amp;",
    "...",
)
_DDB_KEY_TEXT: Final = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(_DDB_SPECIAL_KEYS),
    _long_text(240),
    st.builds(lambda c, n: c * n, st.sampled_from(["%", "ř", "/", " "]), st.integers(81, 120)),
).filter(lambda s: s not in (".", ".."))
_DDB_KEY_BYTES: Final = st.one_of(
    st.binary(min_size=1, max_size=24),
    _long_bytes(177),
)


@st.composite
def _ddb_number(draw: Draw) -> str:
    """A DynamoDB number literal in the forms clients send (sign, fraction, exponent)."""
    special = draw(
        st.sampled_from(
            (None,) * 6 + ("0", "-0", "0.5", "12.50", "1E+3", "1e125", "007", "-1E-130", "9" * 38)
        )
    )
    if special is not None:
        return str(special)
    if draw(st.booleans()):
        # What boto3 sends: str() of a Decimal ("1E-7", "5E+2", "-0.00").
        mantissa = draw(st.integers(-(10**38) + 1, 10**38 - 1))
        digits = tuple(int(d) for d in str(abs(mantissa)))
        return str(Decimal((int(mantissa < 0), digits, draw(st.integers(-130, 87)))))
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(st.integers(0, 10**15))
    frac = draw(st.one_of(st.none(), st.from_regex(r"[0-9]{1,6}", fullmatch=True)))
    exp = draw(st.one_of(st.none(), st.integers(-40, 40)))
    text = f"{sign}{whole}"
    if frac is not None:
        text += "." + frac
    if exp is not None:
        text += f"e{exp}"
    return text


def ddb_number_segment(number: str) -> str:
    """The file segment of an ``N`` key: Go's ``big.Rat.RatString`` of the literal
    (``"12.50"`` -> ``25/2``), percent-encoded."""
    value = Fraction(Decimal(number))
    text = str(value.numerator)
    if value.denominator != 1:
        text += f"/{value.denominator}"
    return segment(text.encode())


@dataclass(frozen=True, slots=True)
class _DDBKey:
    """One key attribute value: its JSON, its identity (for uniqueness), its file segment."""

    json: dict[str, str]
    identity: tuple[str, Any]
    segment: str


def _ddb_key(kind: str) -> st.SearchStrategy[_DDBKey]:
    if kind == "S":
        return _DDB_KEY_TEXT.map(lambda s: _DDBKey({"S": s}, ("S", s), segment(s.encode())))
    if kind == "N":
        return _ddb_number().map(
            lambda n: _DDBKey({"N": n}, ("N", Fraction(Decimal(n))), ddb_number_segment(n))
        )
    return _DDB_KEY_BYTES.map(lambda b: _DDBKey({"B": _b64std(b)}, ("B", b), binary_segment(b)))


_ATTR_NAMES: Final = st.one_of(
    st.text(min_size=1, max_size=8),
    st.sampled_from(["id", "name", "email", "score", "paid", "total", "<tag>", "a&b"]),
)


def _ddb_scalars() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        _TEXT.map(lambda s: {"S": s}),
        _ddb_number().map(lambda n: {"N": n}),
        st.binary(max_size=10).map(lambda b: {"B": _b64std(b)}),
        st.booleans().map(lambda b: {"BOOL": b}),
        st.booleans().map(lambda b: {"NULL": b}),
        st.lists(st.text(max_size=6), max_size=3, unique=True).map(lambda v: {"SS": v}),
        st.lists(_ddb_number(), max_size=3).map(lambda v: {"NS": v}),
        st.lists(st.binary(max_size=6), max_size=3).map(lambda v: {"BS": [_b64std(b) for b in v]}),
    )


_DDB_VALUES: Final = st.recursive(
    _ddb_scalars(),
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda v: {"L": v}),
        st.dictionaries(_ATTR_NAMES, children, max_size=3).map(
            lambda d: {"M": gojson.sorted_map(d)}
        ),
    ),
    max_leaves=5,
)


def _key_json(name: str, kind: str) -> dict[str, str]:
    return {"name": name, "type": kind}


_TABLE_NAMES: Final = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(["orders", "prod table:ü%", "b64.looks-binary", "x" * 250]),
).filter(lambda n: n not in (".", ".."))


def _item_path(table_dir: str, hash_key: _DDBKey, range_key: _DDBKey | None) -> str:
    path = f"dynamodb/{table_dir}/items/{hash_key.segment}"
    return path + (f"/{range_key.segment}.json" if range_key is not None else ".json")


@st.composite
def _ddb_table(draw: Draw, table: str) -> Files:
    """One table: ``_schema.json`` (hash-only or composite, 0-2 GSIs) and its item files."""
    table_dir = segment(table.encode())
    kinds = st.sampled_from("SNB")
    # Distinct names: primary hash, primary range, then candidates for GSI key attributes.
    names = draw(st.lists(_ATTR_NAMES, min_size=6, max_size=6, unique=True))
    hash_name = names[0]
    definitions = {hash_name: draw(kinds)}
    range_name = names[1] if draw(st.booleans()) else ""
    if range_name:
        definitions[range_name] = draw(kinds)

    indexes: list[dict[str, Any]] = []
    for index_name in draw(st.lists(_ATTR_NAMES, max_size=2, unique=True)):
        # A GSI key may reuse a primary key attribute or take an attribute of its own.
        gsi_hash, gsi_range = draw(st.permutations(names))[:2]
        if draw(st.booleans()):
            gsi_range = ""
        for attr in (gsi_hash, gsi_range):
            if attr:
                definitions.setdefault(attr, draw(kinds))
        projection: dict[str, Any] = {
            "type": draw(st.sampled_from(["ALL", "KEYS_ONLY", "INCLUDE"]))
        }
        if projection["type"] == "INCLUDE":
            projection["non_key_attributes"] = draw(
                st.lists(_ATTR_NAMES, min_size=1, max_size=3, unique=True)
            )
        indexes.append(
            {
                "name": index_name,
                "key_schema": {
                    "hash_key": _key_json(gsi_hash, definitions[gsi_hash]),
                    "range_key": _key_json(gsi_range, definitions[gsi_range]) if gsi_range else {},
                },
                "projection": projection,
            }
        )

    schema: dict[str, Any] = {
        "format_version": 1,
        "table_name": table,
        "primary_key": {
            "hash_key": _key_json(hash_name, definitions[hash_name]),
            "range_key": _key_json(range_name, definitions[range_name]) if range_name else {},
        },
        "attribute_definitions": [_key_json(n, definitions[n]) for n in sorted(definitions)],
    }
    if indexes:
        schema["global_secondary_indexes"] = sorted(indexes, key=lambda i: str(i["name"]))
    files = {f"dynamodb/{table_dir}/_schema.json": gojson.marshal_indent(schema)}

    keys: list[tuple[_DDBKey, _DDBKey | None]] = []
    for hash_key in _unique(draw, _ddb_key(definitions[hash_name]), lambda k: k.identity, 4):
        if not range_name:
            keys.append((hash_key, None))
            continue
        ranges = _unique(draw, _ddb_key(definitions[range_name]), lambda k: k.identity, 3)
        keys.extend((hash_key, r) for r in ranges)

    for hash_key, range_key in keys:
        others = draw(st.dictionaries(_ATTR_NAMES, _DDB_VALUES, max_size=4))
        # Attributes named like a key attribute must have its type (GSI keys are sparse).
        item = {n: v for n, v in others.items() if n not in definitions}
        for attr in sorted(set(definitions) - {hash_name, range_name}):
            if draw(st.booleans()):
                item[attr] = draw(_ddb_key(definitions[attr])).json
        item[hash_name] = hash_key.json
        if range_key is not None:
            item[range_name] = range_key.json
        files[_item_path(table_dir, hash_key, range_key)] = gojson.marshal_indent(
            gojson.sorted_map(item)
        )
    return files


# --- S3 ------------------------------------------------------------------------------------------

_META_SUFFIX: Final = ".elastickv-meta.json"
_LEAF_SUFFIX: Final = ".elastickv-leaf-data"
_USER_DATA: Final = ".user-data"
_DIR_MARKER: Final = ".elastickv-dir-marker"
_RESERVED_ROOT: Final = frozenset(
    {"_bucket.json", "KEYMAP.jsonl", "_orphans", "_incomplete_uploads"}
)


def _plain_s3_segment(seg: str) -> bool:
    """A segment whose key keeps its natural path or takes one of the simple renames; suffixes
    that would make two renames meet are left out (the decoder then uses SHA fallbacks)."""
    return (
        seg not in ("", ".", "..", _DIR_MARKER)
        and not seg.endswith((_META_SUFFIX, _LEAF_SUFFIX, _USER_DATA))
        and len(seg.encode()) <= 200
    )


_S3_SEGMENTS: Final = st.one_of(
    st.sampled_from(
        [
            "a",
            "b",
            "2026",
            "greeting.txt",
            "ファイル名 with spaces.txt",
            "special !$&'()*+,;=@.txt",
            "100%",
            "ü",
            "ñ.txt",
            "x.json",
            ".hidden",
            "...",
            "_bucket.json",
        ]
    ),
    st.text(
        st.characters(exclude_characters="/\\\x00", exclude_categories=["Cs"]),
        min_size=1,
        max_size=10,
    ),
).filter(_plain_s3_segment)


@st.composite
def _s3_key(draw: Draw) -> str:
    segs = draw(st.lists(_S3_SEGMENTS, min_size=1, max_size=4))
    if draw(st.sampled_from([False] * 5 + [True])):
        segs[0] = draw(st.sampled_from(sorted(_RESERVED_ROOT)))
    key = "/".join(segs)
    if draw(st.sampled_from([False] * 7 + [True])):
        key += "/"  # a directory marker object
    return key


def _prefixes(path: str) -> Iterable[str]:
    return (path[:i] for i, ch in enumerate(path) if ch == "/")


def s3_placements(keys: Iterable[str]) -> dict[str, tuple[str, str | None]]:
    """Where each key's body goes and the KEYMAP kind of that rename (None: natural path).

    Covers the keys ``_S3_SEGMENTS`` can form: a key that is also a directory takes the
    leaf-data suffix, a reserved first segment takes ``.user-data``, a trailing ``/`` becomes
    a directory marker file.
    """

    def mapped(key: str) -> str:
        first, sep, rest = key.partition("/")
        return first + _USER_DATA + sep + rest if first in _RESERVED_ROOT else key

    dirs = {p for k in keys for p in _prefixes(mapped(k))}
    out: dict[str, tuple[str, str | None]] = {}
    for key in keys:
        path = mapped(key)
        if path.endswith("/"):
            out[key] = (path + _DIR_MARKER, "s3-dir-marker")
        elif path in dirs:
            out[key] = (path + _LEAF_SUFFIX, "s3-leaf-data")
        else:
            out[key] = (path, "s3-reserved-name" if path != key else None)
    return out


@st.composite
def _s3_body(draw: Draw, allow_big: bool) -> bytes:
    if allow_big and draw(st.sampled_from([False] * 9 + [True])):
        pattern = draw(st.binary(min_size=1, max_size=16))
        size = draw(st.sampled_from(_BIG_BODY_SIZES))
        return (pattern * (size // len(pattern) + 1))[:size]
    return bytes(draw(st.binary(max_size=48)))


_OPTIONAL_TEXT: Final = st.one_of(st.just(""), st.text(min_size=1, max_size=8))


_BUCKET_NAMES: Final = st.one_of(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=3, max_size=16),
    st.sampled_from(["photos", "ü-bucket", "my bucket", "b" * 250]),
).filter(lambda n: n not in (".", ".."))


@st.composite
def _s3_bucket(draw: Draw, name: str, allow_big: list[bool]) -> Files:
    bucket_dir = segment(name.encode())
    bucket: dict[str, Any] = {"format_version": 1, "name": name}
    for attr, values in (
        ("owner", _OPTIONAL_TEXT),
        ("region", st.sampled_from(["", "us-east-1", "ap-northeast-1"])),
        ("acl", st.sampled_from(["", "private", "public-read"])),
    ):
        value = draw(values)
        if value:
            bucket[attr] = value
    root = f"s3/{bucket_dir}"
    files = {f"{root}/_bucket.json": gojson.marshal_indent(bucket)}

    keys = draw(st.lists(_s3_key(), max_size=6, unique=True))
    keymap: list[tuple[bytes, bytes]] = []
    for key, (path, kind) in s3_placements(keys).items():
        body = draw(_s3_body(allow_big[0]))
        if len(body) > 1 << 20:
            allow_big[0] = False  # at most one multi-chunk body per tree keeps runs short
        sidecar: dict[str, Any] = {"format_version": 1}
        etag = draw(st.sampled_from(["md5", "", "multipart"]))
        if etag == "md5":
            sidecar["etag"] = f'"{hashlib.md5(body).hexdigest()}"'
        elif etag:
            sidecar["etag"] = '"0123456789abcdef0123456789abcdef-2"'
        sidecar["size_bytes"] = len(body)
        modified = draw(st.one_of(st.none(), st.integers(1, 2_500_000_000_000)))
        if modified is not None:
            sidecar["last_modified"] = _rfc3339_ms(modified)
        for attr, values in (
            ("content_type", st.sampled_from(["", "text/plain", "application/octet-stream"])),
            ("content_encoding", st.sampled_from(["", "gzip", "identity"])),
            ("cache_control", st.sampled_from(["", "max-age=60"])),
            ("content_disposition", st.sampled_from(["", "inline", 'attachment; filename="a<b>"'])),
        ):
            value = draw(values)
            if value:
                sidecar[attr] = value
        metadata = draw(st.dictionaries(st.text(min_size=1, max_size=6), _TEXT, max_size=2))
        if metadata:
            sidecar["user_metadata"] = gojson.sorted_map(metadata)
        files[f"{root}/{path}"] = body
        files[f"{root}/{path}{_META_SUFFIX}"] = gojson.marshal_indent(sidecar)
        if kind is not None:
            original = key.encode()
            record = {"encoded": path, "original": b64url(original), "kind": kind}
            keymap.append((original, gojson.encoder_line(record)))
    if keymap:
        files[f"{root}/KEYMAP.jsonl"] = b"".join(line for _, line in sorted(keymap))
    return files


# --- Redis ---------------------------------------------------------------------------------------

_REDIS_DIR: Final = "redis/db_0"
_REDIS_KEYS: Final = st.one_of(
    st.text(min_size=1, max_size=12).map(str.encode),
    st.binary(min_size=1, max_size=12),
    _long_bytes(240),
    st.sampled_from(
        [
            "ключ/with spaces?".encode(),
            b"b64.literal",
            b"binary\x00key\xff",
            b"0123456789abcdef0123456789abcdef__x",
            b"d|list-named-like-a-delta",
            b"session:abc",
            b"%" * 100,
            b"",
        ]
    ),
)
_REDIS_TYPES: Final = ("string", "hll", "hash", "list", "set", "zset", "stream")
_SCORES: Final = st.one_of(
    st.floats(allow_nan=False),
    st.sampled_from([0.0, -0.0, 1.5, -2.25, 1e21, 1e-7, 123456789.0, 2.0**53 + 2]),
)


def _collection(kind: str, elements: list[Any], ttl: int | None) -> bytes:
    return gojson.marshal_indent({"format_version": 1, kind: elements, "expire_at_ms": ttl})


def _score(score: float) -> Any:
    if math.isinf(score):
        return "+inf" if score > 0 else "-inf"
    return gojson.go_float(score)


@st.composite
def _stream(draw: Draw, ttl: int | None) -> bytes:
    ids = sorted(draw(st.sets(st.tuples(st.integers(0, 2**48), st.integers(0, 5)), max_size=4)))
    lines = []
    for ms, seq in ids:
        pairs = draw(st.lists(st.tuples(_TEXT, _TEXT), min_size=1, max_size=3))
        fields = [{"name": n, "value": v} for n, v in pairs]
        lines.append(gojson.marshal({"id": f"{ms}-{seq}", "fields": fields}))
    last = ids[-1] if ids else (0, 0)
    if draw(st.booleans()):
        last = (last[0] + draw(st.integers(0, 1000)), last[1] + draw(st.integers(0, 9)))
    meta = {
        "_meta": True,
        "length": len(ids),
        "last_ms": last[0],
        "last_seq": last[1],
        "expire_at_ms": ttl,
    }
    lines.append(gojson.marshal(meta))
    return b"".join(line + b"\n" for line in lines)


@st.composite
def _redis_db(draw: Draw, last_commit_ts: int) -> Files:
    """``redis/db_0``: every type, TTL sidecars, KEYMAP for SHA-fallback names."""
    keys = draw(st.lists(_REDIS_KEYS, max_size=10, unique=True))
    files: Files = {}
    suffix = struct.pack(">Q", last_commit_ts ^ _TS_MASK)
    simple: dict[str, list[tuple[bytes, int | None]]] = {"hll": [], "string": []}
    collections: dict[str, list[bytes]] = {t: [] for t in ("hash", "list", "set", "zset", "stream")}
    for key in keys:
        kind = draw(st.sampled_from(_REDIS_TYPES))
        ttl = draw(_TTL)
        name = segment(key)
        if kind in simple:
            body = draw(st.binary(max_size=24))
            if kind == "hll":
                body = b"HYLL" + body  # a real sketch's magic; raw bytes must not look like FF 02
            files[f"{_REDIS_DIR}/{'hll' if kind == 'hll' else 'strings'}/{name}.bin"] = body
            simple[kind].append((key, ttl))
            continue
        collections[kind].append(key)
        if kind == "hash":
            fields = draw(st.dictionaries(_SHORT_BYTES, _SHORT_BYTES, max_size=4))
            elements: list[Any] = [
                {"name": _envelope(k), "value": _envelope(fields[k])} for k in sorted(fields)
            ]
            files[f"{_REDIS_DIR}/hashes/{name}.json"] = _collection("fields", elements, ttl)
        elif kind == "list":
            items = draw(st.lists(_SHORT_BYTES, max_size=5))
            files[f"{_REDIS_DIR}/lists/{name}.json"] = _collection(
                "items", [_envelope(i) for i in items], ttl
            )
        elif kind == "set":
            members = sorted(draw(st.sets(_SHORT_BYTES, max_size=5)))
            files[f"{_REDIS_DIR}/sets/{name}.json"] = _collection(
                "members", [_envelope(m) for m in members], ttl
            )
        elif kind == "zset":
            scored = draw(st.dictionaries(_SHORT_BYTES, _SCORES, max_size=5))
            elements = [
                {"member": _envelope(m), "score": _score(scored[m])} for m in sorted(scored)
            ]
            files[f"{_REDIS_DIR}/zsets/{name}.json"] = _collection("members", elements, ttl)
        else:
            files[f"{_REDIS_DIR}/streams/{name}.jsonl"] = draw(_stream(ttl))

    keymap: list[bytes] = []
    for kind, sidecar, prefix in (
        ("hll", "hll_ttl.jsonl", b"!redis|hll|"),
        ("string", "strings_ttl.jsonl", b"!redis|str|"),
    ):
        # Strings and HLLs are met in snapshot key order: user key then the inverted ts.
        ordered = sorted(simple[kind], key=lambda kt: prefix + kt[0] + suffix)
        lines = []
        for key, ttl in ordered:
            name = segment(key)
            sha = _SHA_SHAPE.match(name) is not None
            if sha:
                keymap.append(_keymap_line(name, key))
            if ttl is not None:
                lines.append(gojson.encoder_line({"key": name, "expire_at_ms": ttl}))
                if sha:
                    keymap.append(_keymap_line(name, key))
        if lines:
            files[f"{_REDIS_DIR}/{sidecar}"] = b"".join(lines)
    for kind in ("hash", "list", "set", "zset", "stream"):
        for key in sorted(collections[kind]):
            name = segment(key)
            if _SHA_SHAPE.match(name):
                keymap.append(_keymap_line(name, key))
    if keymap:
        files[f"{_REDIS_DIR}/KEYMAP.jsonl"] = b"".join(keymap)
    return files


def _keymap_line(name: str, key: bytes) -> bytes:
    return gojson.encoder_line({"encoded": name, "original": b64url(key), "kind": "sha-fallback"})


# --- SQS -----------------------------------------------------------------------------------------

_QUEUE_CHARS: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def fnv1a32(data: bytes) -> int:
    """FNV-1a 32 (the live HT-FIFO router hashes the message group id with it)."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def _raw_attributes(attrs: dict[str, dict[str, str]]) -> bytes:
    """``message_attributes`` as the decoder writes it: a Go map of raw JSON values, whose text
    is what ``json.Marshal`` stored (compact, HTML-escaped), keys unescaped."""
    members = [
        gojson.encoder_line(name)[:-1] + b":" + gojson.marshal(attrs[name])
        for name in sorted(attrs)
    ]
    return b"{" + b",".join(members) + b"}"


_ATTRIBUTE_VALUES: Final = st.one_of(
    _TEXT.map(lambda s: {"DataType": "String", "StringValue": s}),
    st.integers(-1000, 1000).map(lambda n: {"DataType": "Number", "StringValue": str(n)}),
    st.binary(max_size=6).map(lambda b: {"DataType": "Binary", "BinaryValue": _b64std(b)}),
)
_BODIES: Final = st.one_of(
    st.text(max_size=24).map(str.encode),
    st.binary(max_size=16).map(lambda b: b"\xff" + b),  # never valid UTF-8
    st.sampled_from([b"", "second job ✓ <b>&".encode(), "\u2028line".encode()]),
)


@dataclass(slots=True)
class _Queue:
    fifo: bool
    partitions: int
    per_queue: bool
    content_dedup: bool
    lines: list[tuple[tuple[int, int, bytes], bytes]] = field(default_factory=list)


_QUEUE_NAMES: Final = st.tuples(
    st.one_of(
        st.text(_QUEUE_CHARS, min_size=1, max_size=20),
        st.sampled_from(["jobs ü", "q<1>", "q" * 245]),
    ),
    st.booleans(),
).map(lambda stem_fifo: stem_fifo[0] + (".fifo" if stem_fifo[1] else ""))


@st.composite
def _sqs_queue(draw: Draw, name: str) -> Files:
    fifo = name.endswith(".fifo")
    directory = segment(name.encode())
    doc: dict[str, Any] = {"format_version": 1, "name": name}
    partitions, limit, scope, content_dedup = 0, "", "", False
    if fifo:
        doc["fifo"] = True
        content_dedup = draw(st.booleans())
        if content_dedup:
            doc["content_based_deduplication"] = True
        partitions = draw(st.sampled_from([0, 0, 1, 2, 4, 32]))
        choices = ["", "perQueue"] + (["perMessageGroupId"] if partitions > 1 else [])
        limit = draw(st.sampled_from(choices))
        scope = draw(st.sampled_from(["", "messageGroup"] + ([] if partitions > 1 else ["queue"])))
    doc["visibility_timeout_seconds"] = draw(st.integers(0, 43200))
    doc["message_retention_seconds"] = draw(st.sampled_from([60, 345600, 1209600]))
    doc["delay_seconds"] = draw(st.integers(0, 900))
    optional = {
        "receive_message_wait_seconds": draw(st.sampled_from([0, 20])),
        "maximum_message_size": draw(st.sampled_from([0, 262144])),
        "redrive_policy": draw(
            st.sampled_from(
                ["", '{"deadLetterTargetArn":"arn:aws:sqs:r:1:dlq","maxReceiveCount":3}']
            )
        ),
        "redrive_allow_policy": draw(st.sampled_from(["", '{"redrivePermission":"allowAll"}'])),
        "partition_count": partitions,
        "fifo_throughput_limit": limit,
        "deduplication_scope": scope,
    }
    doc.update({k: v for k, v in optional.items() if v})
    root = f"sqs/{directory}"
    files = {f"{root}/_queue.json": gojson.marshal_indent(doc)}

    queue = _Queue(fifo, partitions, limit == "perQueue", content_dedup)
    ids = draw(
        st.lists(
            st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=8)),
            max_size=6,
            unique=True,
        )
    )
    sequences = sorted(draw(st.sets(st.integers(1, 2**40), min_size=len(ids), max_size=len(ids))))
    for message_id, sequence in zip(ids, sequences, strict=True):
        queue.lines.append(draw(_sqs_message(queue, message_id, sequence)))
    if queue.lines:
        files[f"{root}/messages.jsonl"] = b"".join(line for _, line in sorted(queue.lines))
    return files


@st.composite
def _sqs_message(
    draw: Draw, queue: _Queue, message_id: str, sequence: int
) -> tuple[tuple[int, int, bytes], bytes]:
    """One ``messages.jsonl`` line and its sort key (send time, sequence, message id)."""
    body = draw(_BODIES)
    sent = LAST_COMMIT_MS - draw(st.integers(0, 10**6))
    line: dict[str, Any] = {"message_id": message_id}
    try:
        line["body"] = gojson.Fragment(gojson.marshal(body.decode("utf-8")))
    except UnicodeDecodeError:
        line["body"] = {"base64": b64url(body)}
    if draw(st.booleans()):
        line["md5_of_body"] = hashlib.md5(body).hexdigest()
    attrs = draw(st.dictionaries(st.text(min_size=1, max_size=6), _ATTRIBUTE_VALUES, max_size=2))
    if attrs:
        line["md5_of_message_attributes"] = "0123456789abcdef0123456789abcdef"
        line["message_attributes"] = gojson.Fragment(_raw_attributes(attrs))
    sender = draw(st.sampled_from(["", "AIDAEXAMPLE", "<svc>&co"]))
    if sender:
        line["sender_id"] = sender
    line["send_timestamp_millis"] = sent
    line["available_at_millis"] = sent + draw(st.sampled_from([0, 0, 5000]))
    line["visible_at_millis"] = 0
    line["receive_count"] = 0
    line["queue_generation"] = 1
    if queue.fifo:
        group = draw(st.sampled_from(["g1", "g2", "group-ü", "<grp>"]))
        line["message_group_id"] = group
        if not queue.content_dedup or draw(st.booleans()):
            line["message_deduplication_id"] = draw(st.text(min_size=1, max_size=8))
        line["sequence_number"] = sequence
    else:
        sequence = 0
    arn = draw(st.sampled_from(["", "arn:aws:sqs:us-east-1:1:src"]))
    if arn:
        line["dead_letter_source_arn"] = arn
    if queue.partitions > 1:
        group_hash = fnv1a32(str(line["message_group_id"]).encode())
        line["partition"] = 0 if queue.per_queue else group_hash & (queue.partitions - 1)
    return (sent, sequence, message_id.encode()), gojson.encoder_line(line)


# --- whole trees ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DumpTree:
    """A canonical dump tree: its files (without MANIFEST.json) and its last_commit_ts."""

    files: dict[str, bytes]
    last_commit_ts: int

    def summary(self) -> str:
        """A one-line description for failure messages."""
        counts: dict[str, int] = {}
        for path in self.files:
            top = path.split("/", 1)[0]
            counts[top] = counts.get(top, 0) + 1
        return f"last_commit_ts={self.last_commit_ts} files={counts}"


def manifest_json(last_commit_ts: int, adapters: Sequence[str]) -> bytes:
    """A phase-0 MANIFEST.json like the golden inputs' (empty adapter scopes)."""
    doc = {
        "format_version": 1,
        "phase": "phase0-snapshot-decode",
        "elastickv_version": "dev",
        "last_commit_ts": last_commit_ts,
        "wall_time_iso": "2026-11-22T01:36:46.297137082Z",
        "source": {"fsm_path": "generated.fsm"},
        "adapters": {name: {} for name in adapters},
        "exclusions": {
            "include_incomplete_uploads": False,
            "include_orphans": False,
            "preserve_sqs_visibility": False,
            "include_sqs_side_records": False,
        },
        "checksum_algorithm": "sha256",
        "checksum_format": "sha256sum",
        "encoded_filename_charset": "rfc3986-unreserved-plus-percent",
        "key_segment_max_bytes": 240,
        "s3_meta_suffix": _META_SUFFIX,
        "s3_collision_strategy": "leaf-data-suffix",
        "dynamodb_layout": "per-item",
    }
    return gojson.encoder_indent(doc, escape_html=False)


@st.composite
def dump_trees(draw: Draw, *, allow_big_bodies: bool = True) -> DumpTree:
    """A random canonical tree holding data of all four adapters (each possibly empty)."""
    last_commit_ts = (LAST_COMMIT_MS + draw(st.integers(0, 10**6))) << 16 | draw(
        st.integers(0, 0xFFFF)
    )
    files: Files = {}

    def names(strategy: st.SearchStrategy[str]) -> list[str]:
        # One directory per table/bucket/queue: names must differ as encoded segments.
        return list(draw(st.lists(strategy, max_size=2, unique_by=lambda n: segment(n.encode()))))

    for table in names(_TABLE_NAMES):
        files.update(draw(_ddb_table(table)))
    allow_big = [allow_big_bodies]
    for bucket in names(_BUCKET_NAMES):
        files.update(draw(_s3_bucket(bucket, allow_big)))
    files.update(draw(_redis_db(last_commit_ts)))
    for queue in names(_QUEUE_NAMES):
        files.update(draw(_sqs_queue(queue)))
    return DumpTree(files, last_commit_ts)
