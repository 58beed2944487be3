"""Incomplete multipart uploads: ``<bucket>/_incomplete_uploads/records.jsonl``.

The file holds raw store records, one JSON object per line: ``{"prefix", "key", "value"}``
with the key and value in standard base64 (the reference's layout for
``--include-incomplete-uploads``: the upload meta and part records). A full-fidelity decode
adds the blob chunks of every upload still in progress (prefix ``!s3|blob|``), so the file
holds everything a node needs to list the upload's parts and complete it.

A restore writes each record at the restore generation (buckets come back at generation 1),
plus the upload's ``!s3|gc|upload|`` row, the node's handle for cleaning up an upload that
is never completed (same suffix and value as the upload meta).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from typing import Final

import orjson

from ..._core.errors import AdapterRecordError
from ..._core.gojson import encoder_line
from ..._core.gojson_read import GoJSONError
from . import keys
from .values import RESTORE_GENERATION

__all__ = ["parse_line", "record_line", "restore_records", "same_after_restore"]

#: The record families a ``records.jsonl`` may hold, each keyed ``prefix + seg(bucket) +
#: u64(generation) + ...``.
_FAMILIES: Final = (keys.UPLOAD_META_PREFIX, keys.UPLOAD_PART_PREFIX, keys.BLOB_PREFIX)


#: The upload meta value's generation (Go's json.Marshal of a flat struct: a key can only be
#: an unescaped quote-name-quote-colon, which no string value contains).
@functools.cache
def _meta_generation() -> re.Pattern[bytes]:
    # Compiled on first use: only a tree with incomplete uploads needs it, and compiling at
    # import is paid by every start-up.
    return re.compile(rb'"generation":\d+')


def record_line(prefix: bytes, key: bytes, value: bytes) -> bytes:
    """One ``records.jsonl`` line."""
    return encoder_line(
        {
            "prefix": prefix.decode("ascii"),
            "key": base64.b64encode(key).decode("ascii"),
            "value": base64.b64encode(value).decode("ascii"),
        }
    )


def parse_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    """``(prefix, key, value)`` of a line; raises :class:`GoJSONError` when it is not one."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise GoJSONError(f"not a JSON object: {exc}") from None
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(f), str) for f in ("prefix", "key", "value")
    ):
        raise GoJSONError('expected {"prefix", "key", "value"} strings')
    prefix = doc["prefix"].encode()
    if prefix not in _FAMILIES:
        raise GoJSONError(f"unexpected record prefix {doc['prefix']!r}")
    try:
        key = base64.b64decode(doc["key"], validate=True)
        value = base64.b64decode(doc["value"], validate=True)
    except binascii.Error as exc:
        raise GoJSONError(f"bad base64 ({exc})") from None
    if not key.startswith(prefix):
        raise GoJSONError(f"key does not start with its prefix {doc['prefix']!r}")
    return prefix, key, value


def _at_restore_generation(prefix: bytes, key: bytes, value: bytes) -> tuple[bytes, bytes]:
    key = keys.with_generation(key, prefix, RESTORE_GENERATION)
    if prefix == keys.UPLOAD_META_PREFIX:
        value = _meta_generation().sub(b'"generation":%d' % RESTORE_GENERATION, value, count=1)
    return key, value


def restore_records(prefix: bytes, key: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    """The store records a restore writes for one line's record."""
    key, value = _at_restore_generation(prefix, key, value)
    out = [(key, value)]
    if prefix == keys.UPLOAD_META_PREFIX:
        out.append((keys.GC_UPLOAD_PREFIX + key[len(prefix) :], value))
    return out


def same_after_restore(input_line: bytes, decoded_line: bytes) -> bool:
    """Whether a re-decoded line is ``input_line`` after a restore (generation 1)."""
    try:
        prefix, key, value = parse_line(input_line)
        return record_line(prefix, *_at_restore_generation(prefix, key, value)) == decoded_line
    except (GoJSONError, AdapterRecordError):
        return False
