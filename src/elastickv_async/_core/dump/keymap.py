"""KEYMAP.jsonl: the records that give a renamed dump file its original key (REFERENCE_NOTES §4.5).

One ``{"encoded", "original", "kind"}`` object per line, in that field order, written like Go's
``json.Encoder`` without HTML escaping; ``original`` is the key in unpadded base64url. An
adapter writes one where its file names cannot be the keys themselves (SHA-fallback names,
renamed paths). :func:`read_keymap` applies the reference reader's rules to every line;
which records make sense for an adapter is that adapter's check.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

import msgspec

from ..errors import DumpTreeError
from ..gojson import encoder_line
from ..gojson_read import Field, GoJSONError, decode_struct, object_items, parse_tree
from .names import b64url_decode, b64url_encode

__all__ = [
    "KEYMAP_FILE",
    "KIND_SHA_FALLBACK",
    "MAX_LINE",
    "KeymapRecord",
    "keymap_line",
    "load_keymap",
    "read_keymap",
    "read_keymap_blocks",
]

KEYMAP_FILE: Final = "KEYMAP.jsonl"

#: The kind of a name too long or unsafe for the filesystem; adapters define their other kinds.
KIND_SHA_FALLBACK: Final = "sha-fallback"

#: The reference reads KEYMAP lines with a 4 MiB scanner buffer.
MAX_LINE: Final = 4 << 20

_FIELDS: Final = (Field("encoded", "str"), Field("original", "str"), Field("kind", "str"))


class KeymapRecord(msgspec.Struct, frozen=True):
    """One KEYMAP line: the name in the dump tree, the original key bytes and the kind."""

    encoded: str
    original: bytes
    kind: str


def keymap_line(encoded: str, original: bytes, kind: str) -> bytes:
    """One ``KEYMAP.jsonl`` line, trailing newline included.

    Like the reference's writer, an empty ``encoded`` or ``kind`` is refused (``ValueError``):
    no reader would accept the line.
    """
    if not encoded or not kind:
        raise ValueError("a KEYMAP record needs a non-empty encoded name and kind")
    return encoder_line({"encoded": encoded, "original": b64url_encode(original), "kind": kind})


def _record(line: bytes) -> KeymapRecord:
    """Parse one line; raises :class:`GoJSONError` or ``ValueError`` naming the problem."""
    tree = parse_tree(line)
    # The three keys must be spelled exactly and be non-null (last duplicate wins), then the
    # line is read as a struct (exact-or-case-insensitive keys): the reference's two passes.
    present = dict(object_items(tree))
    for name in ("encoded", "original", "kind"):
        if name not in present:
            raise GoJSONError(f"missing field {name!r}")
        if present[name] is None:
            raise GoJSONError(f"field {name!r} is null")
    doc = decode_struct(tree, _FIELDS)
    if not doc["encoded"] or not doc["kind"]:
        raise GoJSONError("missing encoded or kind")
    try:
        original = b64url_decode(doc["original"])
    except ValueError as exc:
        raise ValueError(f"bad original of {doc['encoded']!r}: {exc}") from None
    return KeymapRecord(doc["encoded"], original, doc["kind"])


def read_keymap(data: bytes, where: str) -> Iterator[KeymapRecord]:
    """Every record of a KEYMAP.jsonl file, in file order.

    Lines end in LF (a CR before it is dropped, and the last line may lack it); a blank line,
    a line over :data:`MAX_LINE` bytes or a malformed record raises
    :class:`~elastickv_async._core.errors.DumpTreeError` (``ErrInvalidKeymapRecord``) naming
    ``where`` and the line number.
    """
    return read_keymap_blocks((data,), where)


def _lines(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """The LF-ended lines of ``blocks`` (the last one may lack its LF). A line that grew
    past :data:`MAX_LINE` (and its CR) without ending is given as it stands: it is refused."""
    rest = b""
    for block in blocks:
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        yield from lines
        if len(rest) > MAX_LINE + 1:
            yield rest
            return
    if rest:
        yield rest


def read_keymap_blocks(blocks: Iterable[bytes], where: str) -> Iterator[KeymapRecord]:
    """:func:`read_keymap` of a file given in ``blocks``, holding one line at a time."""
    for number, raw in enumerate(_lines(blocks), 1):
        line = raw.removesuffix(b"\r")
        try:
            if len(line) > MAX_LINE:
                raise ValueError("line longer than 4 MiB")
            record = _record(line)
        except ValueError as exc:
            raise DumpTreeError(
                f"{where} line {number}: {exc}", code="ErrInvalidKeymapRecord"
            ) from None
        yield record


def load_keymap(data: bytes, where: str) -> dict[str, bytes]:
    """The reference's ``LoadKeymap``: encoded name -> original key, the last record winning."""
    return {record.encoded: record.original for record in read_keymap(data, where)}
