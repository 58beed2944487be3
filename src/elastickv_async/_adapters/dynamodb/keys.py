"""Key layouts and value magics of the DynamoDB keyspace (REFERENCE_NOTES §3.1, §6.4).

Tables are named in keys by the base64url (no padding) of their name. Item keys carry the
table generation in decimal and, after it, the ordered primary-key encoding: each key
segment with ``00`` escaped as ``00 FF`` and terminated by ``00 01``.
"""

from __future__ import annotations

import functools
import re
from typing import Final

import msgspec

from ..._core.dump.names import b64url_decode, b64url_segment, is_b64url
from ..._core.errors import AdapterRecordError
from .errors import record_error

__all__ = [
    "GSI_PREFIX",
    "ITEM_MAGIC",
    "ITEM_PREFIX",
    "ORDERED_KEY_ENCODING",
    "RESTORE_GENERATION",
    "ROUTE_PREFIX",
    "SCHEMA_MAGIC",
    "TABLE_GEN_PREFIX",
    "TABLE_META_PREFIX",
    "ItemKey",
    "TableKey",
    "gsi_key_prefix",
    "item_key_prefix",
    "ordered_segment",
    "parse_item_key",
    "parse_table_meta_key",
    "partition_unit",
    "route_key",
    "table_gen_key",
    "table_meta_key",
]

TABLE_META_PREFIX: Final = b"!ddb|meta|table|"
TABLE_GEN_PREFIX: Final = b"!ddb|meta|gen|"
ITEM_PREFIX: Final = b"!ddb|item|"
GSI_PREFIX: Final = b"!ddb|gsi|"
#: Live routing rows of the DynamoDB adapter; not table data.
ROUTE_PREFIX: Final = b"!ddb|route|"

SCHEMA_MAGIC: Final = b"\x00DS\x01"
ITEM_MAGIC: Final = b"\x00DI\x01"

#: The generation a restored table gets: in its schema, its counter and every item/GSI key
#: (the dump does not keep the original one).
RESTORE_GENERATION: Final = 1
#: ``key_encoding_version`` of the ordered primary-key encoding the encoder writes.
ORDERED_KEY_ENCODING: Final = 2

_SEGMENT_ESCAPE: Final = b"\x00\xff"
_SEGMENT_TERMINATOR: Final = b"\x00\x01"
_UINT64_LIMIT: Final = 1 << 64
#: Table names whose directory would not be a child of dynamodb/ (the empty name is
#: reachable because the base64 decoder skips CR/LF).
_UNSAFE_NAMES: Final = frozenset({b"", b".", b".."})


# Compiled on first use: only DynamoDB rows need it, and compiling at import is paid by
# every start-up (the spec loads these keys).
@functools.cache
def _decimal() -> re.Pattern[bytes]:
    return re.compile(rb"[0-9]+")


class TableKey(msgspec.Struct, frozen=True):
    """A parsed ``!ddb|meta|table|`` key: the encoded segment and the table name it names."""

    encoded: str
    name: bytes


class ItemKey(msgspec.Struct, frozen=True):
    """A parsed ``!ddb|item|`` key (the primary-key payload is not interpreted)."""

    encoded_table: str
    generation: int


def _decode_table_segment(segment: bytes, key: bytes) -> bytes:
    # Go's base64 decoder skips CR and LF anywhere in the input; do the same so a key the
    # reference accepts is accepted here too.
    cleaned = segment.replace(b"\r", b"").replace(b"\n", b"")
    # b64url_decode maps the URL alphabet onto the standard one, so it would also take "+"
    # and "/"; Go's RawURLEncoding rejects them.
    if not is_b64url(cleaned):
        raise record_error(
            "ErrDDBMalformedKey", f"table segment of key {key[:64]!r} is not base64url"
        )
    try:
        return b64url_decode(cleaned)
    except ValueError as exc:
        raise record_error(
            "ErrDDBMalformedKey", f"bad table segment in key {key[:64]!r}: {exc}"
        ) from None


def parse_table_meta_key(key: bytes) -> TableKey:
    """Parse ``!ddb|meta|table|<b64url(table)>``; the whole rest of the key is the segment."""
    if not key.startswith(TABLE_META_PREFIX):
        raise record_error(
            "ErrDDBMalformedKey", f"key {key[:64]!r} does not start with {TABLE_META_PREFIX!r}"
        )
    segment = key[len(TABLE_META_PREFIX) :]
    if not segment:
        raise record_error("ErrDDBMalformedKey", f"empty table segment in key {key[:64]!r}")
    name = _decode_table_segment(segment, key)
    if name in _UNSAFE_NAMES:
        raise record_error(
            "ErrDDBMalformedKey", f"table name {name!r} would escape dynamodb/ (key {key!r})"
        )
    return TableKey(segment.decode("ascii"), name)


def parse_item_key(key: bytes) -> ItemKey:
    """Parse ``!ddb|item|<b64url(table)>|<generation>|<primary key>`` (key non-empty)."""
    if not key.startswith(ITEM_PREFIX):
        raise record_error(
            "ErrDDBMalformedKey", f"key {key[:64]!r} does not start with {ITEM_PREFIX!r}"
        )
    rest = key[len(ITEM_PREFIX) :]
    table_end = rest.find(b"|")
    if table_end <= 0:
        raise record_error(
            "ErrDDBMalformedKey", f"item key {key[:64]!r} lacks its table/generation separator"
        )
    segment = rest[:table_end]
    _decode_table_segment(segment, key)
    after_table = rest[table_end + 1 :]
    gen_end = after_table.find(b"|")
    if gen_end <= 0:
        raise record_error(
            "ErrDDBMalformedKey", f"item key {key[:64]!r} lacks its generation/key separator"
        )
    gen_text = after_table[:gen_end]
    if _decimal().fullmatch(gen_text) is None or int(gen_text) >= _UINT64_LIMIT:
        raise record_error(
            "ErrDDBMalformedKey", f"item key {key[:64]!r} has a bad generation {gen_text!r}"
        )
    if gen_end + 1 == len(after_table):
        raise record_error(
            "ErrDDBMalformedKey", f"item key {key[:64]!r} lacks its primary-key payload"
        )
    return ItemKey(segment.decode("ascii"), int(gen_text))


def ordered_segment(raw: bytes) -> bytes:
    """One ordered key segment: ``00`` escaped as ``00 FF``, then the ``00 01`` terminator."""
    return raw.replace(b"\x00", _SEGMENT_ESCAPE) + _SEGMENT_TERMINATOR


def _table_segment(table: str) -> bytes:
    return b64url_segment(table.encode("utf-8"))


def table_meta_key(table: str) -> bytes:
    """``!ddb|meta|table|<b64url(table)>``: the key of a table's schema record."""
    return TABLE_META_PREFIX + _table_segment(table)


def table_gen_key(table: str) -> bytes:
    """``!ddb|meta|gen|<b64url(table)>``: the key of a table's generation counter."""
    return TABLE_GEN_PREFIX + _table_segment(table)


def item_key_prefix(table: str, generation: int) -> bytes:
    """``!ddb|item|<b64url(table)>|<generation>|``; the ordered primary key follows."""
    return b"%s%s|%d|" % (ITEM_PREFIX, _table_segment(table), generation)


def gsi_key_prefix(table: str, generation: int, index: str) -> bytes:
    """``!ddb|gsi|<b64url(table)>|<generation>|<b64url(index)>|``; ordered keys follow."""
    index_segment = b64url_segment(index.encode("utf-8"))
    return b"%s%s|%d|%s|" % (GSI_PREFIX, _table_segment(table), generation, index_segment)


#: The store routes every row of a table by ``!ddb|route|table|<table segment>``.
_TABLE_ROUTE: Final = ROUTE_PREFIX + b"table|"


def route_key(key: bytes) -> bytes | None:
    """The key the store routes ``key`` by, or ``None`` when no DynamoDB rule applies."""
    for prefix in (TABLE_META_PREFIX, TABLE_GEN_PREFIX):
        if key.startswith(prefix):
            table = key[len(prefix) :]
            return _TABLE_ROUTE + table if table else key
    for prefix in (ITEM_PREFIX, GSI_PREFIX):
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            sep = rest.find(b"|")
            return _TABLE_ROUTE + rest[:sep] if sep > 0 else key
    return None


@functools.lru_cache(maxsize=1024)
def _table_name(segment: bytes) -> bytes:
    # Cached: every item key of a table repeats its segment, and a group has millions.
    return parse_table_meta_key(TABLE_META_PREFIX + segment).name


def partition_unit(prefix: bytes, key: bytes) -> bytes | None:
    """The table a row belongs to, by decoded name (``AdapterSpec.partition_unit``).

    Schema, generation counter, items and GSI rows all name their table by its key segment;
    decoding it joins every segment Go's lenient base64 reads as one name, as those tables
    share a directory. ``None`` for a segment the decoder would reject.
    """
    segment = key[len(prefix) :]
    if prefix in (ITEM_PREFIX, GSI_PREFIX):
        end = segment.find(b"|")
        segment = segment[:end] if end > 0 else b""
    try:
        return _table_name(segment)
    except AdapterRecordError:
        return None
