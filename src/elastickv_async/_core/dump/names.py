"""Filename segment encoding for the dump tree (one user key segment -> one file name).

Bytes in ``[A-Za-z0-9._-]`` pass through, every other byte becomes ``%HH`` (uppercase).
A segment whose encoding would exceed :data:`SEGMENT_MAX_BYTES`, or that could be confused
with the two special shapes (SHA fallback, ``b64.`` binary), takes the SHA-256 fallback,
which is not reversible without a KEYMAP record.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from typing import Final

from ..errors import DumpTreeError

__all__ = [
    "BINARY_PREFIX",
    "SEGMENT_MAX_BYTES",
    "b64url_decode",
    "b64url_encode",
    "b64url_segment",
    "decode_segment",
    "encode_binary_segment",
    "encode_segment",
    "is_b64url",
    "is_binary_segment",
    "is_sha_fallback",
    "sha_fallback",
]

SEGMENT_MAX_BYTES: Final = 240
BINARY_PREFIX: Final = "b64."
_SHA_HEX_CHARS: Final = 32
_SHA_SUFFIX_RAW_BYTES: Final = 64

_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_UNRESERVED_BYTES: Final = bytes(sorted(_UNRESERVED))
_ENCODE_TABLE: Final = tuple(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in range(256))
_URL_ALPHABET: Final = bytes.maketrans(b"+/", b"-_")
_SHA_SHAPE: Final = re.compile(r"[0-9a-fA-F]{32}__")


# Compiled on first use (a name read back from a tree): most runs decode none, and
# compiling at import is paid by every start-up.
@functools.cache
def _percent_decodable() -> re.Pattern[str]:
    return re.compile(r"(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2})*")


#: The base64url alphabet (RFC 4648 section 5), without padding.
_B64URL_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _percent_encode(raw: bytes) -> str:
    return "".join([_ENCODE_TABLE[b] for b in raw])


def sha_fallback(raw: bytes) -> str:
    """The SHA-256 fallback name: 32 hex chars, ``__``, then the first 64 bytes percent-encoded."""
    digest = hashlib.sha256(raw).hexdigest()[:_SHA_HEX_CHARS]
    return f"{digest}__{_percent_encode(raw[:_SHA_SUFFIX_RAW_BYTES])}"


def is_sha_fallback(segment: str) -> bool:
    """Whether ``segment`` has the SHA-fallback shape (hex in either case, then ``__``)."""
    return _SHA_SHAPE.match(segment) is not None


def is_binary_segment(segment: str) -> bool:
    """Whether ``segment`` is a ``b64.`` binary segment."""
    return segment.startswith(BINARY_PREFIX)


def encode_segment(raw: bytes) -> str:
    """Encode one key segment as a file name exactly like the reference's ``EncodeSegment``."""
    if len(raw) > SEGMENT_MAX_BYTES:
        return sha_fallback(raw)
    # Every escaped byte triples, so the bound can be checked before building the string;
    # translate counts them in C, and a name with none is its own ASCII text.
    escaped = len(raw.translate(None, _UNRESERVED_BYTES))
    if len(raw) + 2 * escaped > SEGMENT_MAX_BYTES:
        return sha_fallback(raw)
    encoded = _percent_encode(raw) if escaped else raw.decode("ascii")
    if is_sha_fallback(encoded) or encoded.startswith(BINARY_PREFIX):
        return sha_fallback(raw)
    return encoded


def b64url_segment(raw: bytes) -> bytes:
    """Base64url without padding (Go ``base64.RawURLEncoding``), as key bytes."""
    # binascii directly: the base64 module's wrappers cost more than the encoding of a key.
    return binascii.b2a_base64(raw, newline=False).rstrip(b"=").translate(_URL_ALPHABET)


def b64url_encode(raw: bytes) -> str:
    """Base64url without padding (Go ``base64.RawURLEncoding``)."""
    return b64url_segment(raw).decode("ascii")


def is_b64url(data: bytes) -> bool:
    """Whether ``data`` holds only base64url alphabet bytes (no padding; empty is)."""
    # Deleting the alphabet is one C pass, cheaper than a regular expression and nothing to
    # compile at start-up.
    return not data.translate(None, _B64URL_ALPHABET)


def b64url_decode(text: str | bytes) -> bytes:
    """Decode base64url without padding like Go's non-strict ``RawURLEncoding``.

    Raises ``ValueError`` on characters outside the alphabet, padding or an impossible length.
    """
    data = text.encode("ascii") if isinstance(text, str) else text
    # b64decode maps the URL alphabet onto the standard one first, so '+' and '/' would pass.
    if not is_b64url(data) or len(data) % 4 == 1:
        raise ValueError("invalid base64url text")
    try:
        decoded = base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
    return decoded


def encode_binary_segment(raw: bytes) -> str:
    """Encode a binary key as ``b64.<base64url>``, or the SHA fallback."""
    if (len(raw) * 4 + 2) // 3 + len(BINARY_PREFIX) > SEGMENT_MAX_BYTES:
        return sha_fallback(raw)
    return BINARY_PREFIX + b64url_encode(raw)


def decode_segment(segment: str) -> bytes:
    """Invert :func:`encode_segment` / :func:`encode_binary_segment`.

    Raises :class:`DumpTreeError`: ``ErrShaFallbackNeedsKeymap`` for SHA-fallback names,
    ``ErrInvalidEncodedSegment`` for anything that is not a valid encoding.
    """
    if len(segment.encode("utf-8", "surrogatepass")) > SEGMENT_MAX_BYTES:
        raise DumpTreeError(
            f"segment longer than {SEGMENT_MAX_BYTES} bytes", code="ErrInvalidEncodedSegment"
        )
    if is_sha_fallback(segment):
        raise DumpTreeError(
            f"segment {segment!r} is a SHA fallback; KEYMAP required",
            code="ErrShaFallbackNeedsKeymap",
        )
    if is_binary_segment(segment):
        try:
            return b64url_decode(segment[len(BINARY_PREFIX) :])
        except ValueError as exc:
            raise DumpTreeError(
                f"bad binary segment {segment!r}: {exc}", code="ErrInvalidEncodedSegment"
            ) from None
    if _percent_decodable().fullmatch(segment) is None:
        raise DumpTreeError(
            f"segment {segment!r} is not percent-encoded", code="ErrInvalidEncodedSegment"
        )
    # Validated above: only unreserved ASCII and %HH escapes remain, so every piece between
    # escapes is ASCII text (decoded in C rather than character by character).
    head, *escaped = segment.split("%")
    if not escaped:
        return head.encode("ascii")
    return head.encode("ascii") + b"".join(
        [bytes.fromhex(part[:2]) + part[2:].encode("ascii") for part in escaped]
    )
