"""Byte-exact JSON in the style of Go's ``encoding/json``.

The dump tree must match the reference byte for byte, so every JSON artifact goes through
this module. orjson does the work (about 3x the stdlib on this workload); Go's extra
escaping is applied to its output bytes, which is safe because ``<``, ``>``, ``&``, U+2028
and U+2029 can only occur inside JSON strings.

Conventions callers follow: struct fields are plain dicts in declaration order; Go maps are
dicts whose keys the caller sorts (:func:`sorted_map`); floats are wrapped with
:func:`go_float`; bytes from the wire that may not be UTF-8 go through :func:`go_str`.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import orjson

__all__ = [
    "Fragment",
    "encoder_indent",
    "encoder_line",
    "go_float",
    "go_str",
    "marshal",
    "marshal_indent",
    "sorted_map",
]

Fragment = orjson.Fragment

_HTML: Final = ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"))
_HTML_CHARS: Final = b"<>&"
_LINE_SEPARATORS: Final = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def _go_escape(output: bytes, *, escape_html: bool) -> bytes:
    data = output
    # One C pass that drops the three characters beats three substring searches.
    if escape_html and len(data.translate(None, _HTML_CHARS)) != len(data):
        for raw, esc in _HTML:
            data = data.replace(raw, esc)
    # isascii is a word-at-a-time scan, far cheaper than the two-byte search it skips.
    if not data.isascii() and b"\xe2\x80" in data:
        for raw, esc in _LINE_SEPARATORS:
            data = data.replace(raw, esc)
    # orjson's own result keeps the whole buffer it wrote into (at least 4 KiB): kept
    # around, a 300-byte document would cost ten times its size. A copy is right-sized.
    return memoryview(data).tobytes() if data is output else data


def marshal(obj: Any) -> bytes:
    """``json.Marshal``: compact, HTML-escaped, no trailing newline."""
    return _go_escape(orjson.dumps(obj), escape_html=True)


def marshal_indent(obj: Any) -> bytes:
    """``json.MarshalIndent(v, "", "  ")``: HTML-escaped, no trailing newline."""
    return _go_escape(orjson.dumps(obj, option=orjson.OPT_INDENT_2), escape_html=True)


def encoder_line(obj: Any, *, escape_html: bool = False) -> bytes:
    """``json.Encoder.Encode`` (compact) plus its trailing newline; HTML escaping off by default."""
    return _go_escape(orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE), escape_html=escape_html)


def encoder_indent(obj: Any, *, escape_html: bool) -> bytes:
    """``json.Encoder`` with ``SetIndent("", "  ")``: indented plus a trailing newline."""
    opts = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
    return _go_escape(orjson.dumps(obj, option=opts), escape_html=escape_html)


def sorted_map(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``mapping`` with keys in Go's map order (bytewise; code-point order for ``str``)."""
    return {key: mapping[key] for key in sorted(mapping)}


def go_float(value: float) -> Fragment:
    """Format ``value`` exactly like Go's ``json.Marshal(float64)``.

    Go uses the shortest round-trip digits, fixed notation for 1e-6 <= |x| < 1e21 and
    exponent notation otherwise, with the exponent's leading zeros removed.
    """
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"JSON cannot represent {value!r}")
    if value == 0:
        return Fragment(b"-0" if math.copysign(1.0, value) < 0 else b"0")
    magnitude = abs(value)
    dec = Decimal(repr(value))
    if 1e-6 <= magnitude < 1e21:
        text = format(dec, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return Fragment(text.encode())
    sign, digits, exponent = dec.as_tuple()
    assert isinstance(exponent, int)
    digit_text = "".join(map(str, digits)).rstrip("0") or "0"
    exp10 = exponent + len(digits) - 1
    mantissa = digit_text[0] + ("." + digit_text[1:] if len(digit_text) > 1 else "")
    text = f"{'-' if sign else ''}{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10)}"
    return Fragment(text.encode())


def _per_byte_replace(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    return "\ufffd", error.start + 1


codecs.register_error("elastickv-go-replace", _per_byte_replace)


def go_str(raw: bytes) -> str:
    """Decode bytes like Go converts them to a JSON string: each invalid byte becomes U+FFFD."""
    return raw.decode("utf-8", "elastickv-go-replace")
