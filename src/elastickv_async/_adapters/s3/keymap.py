"""A bucket's ``KEYMAP.jsonl`` as the encoder's rename tracker (the reverse of :mod:`.layout`).

:func:`~elastickv_async._core.dump.keymap.read_keymap` applies the reference's per-line rules; on
top of them, like the reference's strict tracker reader, ``encoded`` must be unique and each
record must be something the decoder could have written, so a hand-edited or corrupt KEYMAP
fails closed instead of silently restoring wrong keys. The checks follow the reference's,
widened to the kinds and keys that only this project writes (see :mod:`.layout`).
"""

from __future__ import annotations

from typing import Final

from ..._core.dump.keymap import KIND_SHA_FALLBACK, read_keymap
from ..._core.errors import DumpTreeError
from .layout import (
    BUCKET_FILE,
    DIR_MARKER_NAME,
    INCOMPLETE_DIR,
    KEYMAP_FILE,
    KIND_DIR_MARKER,
    KIND_LEAF_DATA,
    KIND_META_RENAME,
    KIND_RESERVED_NAME,
    LEAF_SUFFIX,
    META_SUFFIX,
    ORPHANS_DIR,
    RESERVED_ROOT,
    USER_DATA_SUFFIX,
)

__all__ = ["parse_keymap"]

#: The kinds the S3 decoder writes.
_KINDS: Final = frozenset(
    {KIND_SHA_FALLBACK, KIND_LEAF_DATA, KIND_META_RENAME, KIND_RESERVED_NAME, KIND_DIR_MARKER}
)


def _plain_key(key: bytes) -> bool:
    """A key the decoder keeps at its natural path: non-empty segments, no dots, no NUL."""
    return b"\x00" not in key and all(s not in (b"", b".", b"..") for s in key.split(b"/"))


def _check_encoded(encoded: str) -> None:
    segs = encoded.split("/")
    if any(s in ("", ".", "..") for s in segs):
        raise DumpTreeError(
            f"KEYMAP encoded path {encoded!r} has an empty or dot segment",
            code="ErrInvalidKeymapRecord",
        )
    if segs[-1].encode("utf-8").endswith(META_SUFFIX):
        raise DumpTreeError(
            f"KEYMAP encoded path {encoded!r} is a sidecar name", code="ErrInvalidKeymapRecord"
        )
    first = segs[0].encode("utf-8")
    if (len(segs) == 1 and first in (BUCKET_FILE, KEYMAP_FILE)) or first in (
        ORPHANS_DIR,
        INCOMPLETE_DIR,
    ):
        raise DumpTreeError(
            f"KEYMAP encoded path {encoded!r} names a dump control file",
            code="ErrInvalidKeymapRecord",
        )


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
        raise DumpTreeError(
            f"KEYMAP record {encoded!r} of kind {kind!r} does not fit its original key "
            f"{original[:200]!r}",
            code="ErrInvalidKeymapRecord",
        )


def parse_keymap(raw: bytes, where: str) -> dict[str, bytes]:
    """Parse and check a bucket's KEYMAP.jsonl (``where`` names it): ``{encoded path: key}``.

    Raises :class:`~elastickv_async._core.errors.DumpTreeError` (``ErrInvalidKeymapRecord``).
    """
    out: dict[str, bytes] = {}
    for record in read_keymap(raw, where):
        encoded, original, kind = record.encoded, record.original, record.kind
        if encoded in out:
            raise DumpTreeError(f"{where} records {encoded!r} twice", code="ErrInvalidKeymapRecord")
        if kind not in _KINDS:
            raise DumpTreeError(
                f"KEYMAP record {encoded!r} has unknown kind {kind!r}",
                code="ErrInvalidKeymapRecord",
            )
        _check_encoded(encoded)
        _check_kind(encoded, original, kind)
        out[encoded] = original
    return out
