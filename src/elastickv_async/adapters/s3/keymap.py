"""Reading a bucket's ``KEYMAP.jsonl`` back (the encoder's side of :mod:`.layout`).

Lines are ``{"encoded", "original", "kind"}`` objects. Like the reference's strict tracker
reader, every key must be present and non-null, ``encoded`` must be unique, and each record
must be something the decoder could have written, so a hand-edited or corrupt KEYMAP fails
closed instead of silently restoring wrong keys. The checks follow the reference's, widened
to the kinds and keys that only this project writes (see :mod:`.layout`).
"""

from __future__ import annotations

from typing import Final

from ...dump.names import b64url_decode
from ...errors import InvalidKeymapRecord
from .gojsonread import Field, GoJSONError, decode_struct, object_items, parse_document
from .layout import (
    BUCKET_FILE,
    DIR_MARKER_NAME,
    INCOMPLETE_DIR,
    KEYMAP_FILE,
    KIND_DIR_MARKER,
    KIND_LEAF_DATA,
    KIND_META_RENAME,
    KIND_RESERVED_NAME,
    KINDS,
    LEAF_SUFFIX,
    META_SUFFIX,
    ORPHANS_DIR,
    RESERVED_ROOT,
    USER_DATA_SUFFIX,
)

__all__ = ["parse_keymap"]

_RECORD: Final = (Field("encoded", "str"), Field("original", "str"), Field("kind", "str"))
_REQUIRED: Final = ("encoded", "original", "kind")
#: The reference reads KEYMAP lines with a 4 MiB scanner buffer.
_MAX_LINE: Final = 4 << 20


def _plain_key(key: bytes) -> bool:
    """A key the decoder keeps at its natural path: non-empty segments, no dots, no NUL."""
    return b"\x00" not in key and all(s not in (b"", b".", b"..") for s in key.split(b"/"))


def _check_encoded(encoded: str) -> None:
    segs = encoded.split("/")
    if any(s in ("", ".", "..") for s in segs):
        raise InvalidKeymapRecord(f"KEYMAP encoded path {encoded!r} has an empty or dot segment")
    if segs[-1].encode("utf-8").endswith(META_SUFFIX):
        raise InvalidKeymapRecord(f"KEYMAP encoded path {encoded!r} is a sidecar name")
    first = segs[0].encode("utf-8")
    if (len(segs) == 1 and first in (BUCKET_FILE, KEYMAP_FILE)) or first in (
        ORPHANS_DIR,
        INCOMPLETE_DIR,
    ):
        raise InvalidKeymapRecord(f"KEYMAP encoded path {encoded!r} names a dump control file")


def _check_kind(encoded: str, original: bytes, kind: str) -> None:
    raw = encoded.encode("utf-8")
    if kind == KIND_LEAF_DATA:
        ok = raw.endswith(LEAF_SUFFIX) and _plain_key(original)
    elif kind == KIND_META_RENAME:
        ok = original.endswith(META_SUFFIX) and _plain_key(original)
    elif kind == KIND_RESERVED_NAME:
        first = original.split(b"/", 1)[0]
        ok = first in RESERVED_ROOT and raw.split(b"/", 1)[0] == first + USER_DATA_SUFFIX
        ok = ok and _plain_key(original)
    elif kind == KIND_DIR_MARKER:
        ok = raw.rsplit(b"/", 1)[-1] == DIR_MARKER_NAME and original.endswith(b"/")
        ok = ok and _plain_key(original[:-1])
    else:  # sha-fallback: any key at all
        ok = True
    if not ok:
        raise InvalidKeymapRecord(
            f"KEYMAP record {encoded!r} of kind {kind!r} does not fit its original key "
            f"{original[:200]!r}"
        )


def _parse_line(line: bytes) -> tuple[str, bytes, str]:
    try:
        doc = parse_document(line)
        present = dict(object_items(doc))
        for name in _REQUIRED:
            if name not in present:
                raise GoJSONError(f"missing field {name!r}")
            if present[name] is None:
                raise GoJSONError(f"field {name!r} is null")
        record = decode_struct(doc, _RECORD)
    except GoJSONError as exc:
        raise InvalidKeymapRecord(f"invalid KEYMAP.jsonl line: {exc}") from None
    if not record["encoded"] or not record["kind"]:
        raise InvalidKeymapRecord("KEYMAP.jsonl record without encoded or kind")
    try:
        original = b64url_decode(record["original"])
    except ValueError as exc:
        raise InvalidKeymapRecord(f"KEYMAP original of {record['encoded']!r}: {exc}") from None
    return record["encoded"], original, record["kind"]


def parse_keymap(raw: bytes) -> dict[str, bytes]:
    """Parse and check a bucket's KEYMAP.jsonl: ``{encoded path: original key}``.

    Raises :class:`~elastickv_async.errors.InvalidKeymapRecord`.
    """
    out: dict[str, bytes] = {}
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    for line in lines:
        line = line.removesuffix(b"\r")
        if len(line) > _MAX_LINE:
            raise InvalidKeymapRecord("KEYMAP.jsonl line longer than 4 MiB")
        encoded, original, kind = _parse_line(line)
        if encoded in out:
            raise InvalidKeymapRecord(f"KEYMAP.jsonl records {encoded!r} twice")
        if kind not in KINDS:
            raise InvalidKeymapRecord(f"KEYMAP record {encoded!r} has unknown kind {kind!r}")
        _check_encoded(encoded)
        _check_kind(encoded, original, kind)
        out[encoded] = original
    return out
