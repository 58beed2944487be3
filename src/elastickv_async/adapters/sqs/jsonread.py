"""Reading JSON the way Go's ``encoding/json`` unmarshals it into a typed struct.

Both directions of the SQS adapter read Go-written JSON (live values, dump files) and must
accept and reject what the reference accepts and rejects: ``null`` leaves a field at its zero
value, a wrong JSON type or an out-of-range integer is an error, invalid UTF-8 inside a string
becomes U+FFFD per byte. ``json.RawMessage`` values (SQS message attributes) keep their exact
source text, only compacted. Field names match exactly (Go would also accept other letter
cases; the writers never produce them).
"""

from __future__ import annotations

import binascii
import json
import json.decoder
import re
from collections.abc import Callable
from typing import Any, Final

import orjson

from ...gojson import go_str

__all__ = [
    "GoJSONError",
    "compact",
    "get_bool",
    "get_bytes",
    "get_int",
    "get_str",
    "parse_document",
    "raw_member",
    "raw_object_members",
]

INT64: Final = (-(1 << 63), (1 << 63) - 1)
UINT64: Final = (0, (1 << 64) - 1)
UINT32: Final = (0, (1 << 32) - 1)

_STRING_OR_WS: Final = re.compile(r'("(?:[^"\\]|\\.)*")|[ \t\n\r]+', re.DOTALL)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_DECODER: Final = json.JSONDecoder()
#: The C string scanner json itself uses: (decoded string, index after the closing quote).
_scanstring: Final[Callable[[str, int], tuple[str, int]]] = json.decoder.scanstring  # type: ignore[attr-defined]


class GoJSONError(ValueError):
    """The JSON text (or one field of it) would make Go's unmarshal fail."""


def _reject_constant(name: str) -> Any:
    raise GoJSONError(f"invalid JSON literal {name}")


def _fix_surrogates(value: Any) -> Any:
    """Replace lone surrogates (from ``\\ud800``-style escapes) by U+FFFD, as Go does."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_fix_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_fix_surrogates(k): _fix_surrogates(v) for k, v in value.items()}
    return value


def parse_document(data: bytes | str) -> Any:
    """Parse one complete JSON document with Go's leniency for bad UTF-8 and lone surrogates."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        first_error = exc
    # Slow path, only for input orjson refuses but Go accepts.
    text = go_str(data) if isinstance(data, bytes) else data
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise GoJSONError(str(first_error)) from None
    return _fix_surrogates(value)


def get_str(obj: dict[str, Any], name: str) -> str:
    """A Go ``string`` field: absent or ``null`` -> ``""``."""
    value = obj.get(name)
    if type(value) is str:
        return value
    if value is None:
        return ""
    if not isinstance(value, str):
        raise GoJSONError(f"field {name!r}: expected a string, got {type(value).__name__}")
    return value


def get_bool(obj: dict[str, Any], name: str) -> bool:
    """A Go ``bool`` field: absent or ``null`` -> ``False``."""
    value = obj.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise GoJSONError(f"field {name!r}: expected a boolean, got {type(value).__name__}")
    return value


def get_int(obj: dict[str, Any], name: str, bounds: tuple[int, int] = INT64) -> int:
    """A Go integer field within ``bounds``: absent or ``null`` -> 0; fractions are errors."""
    value = obj.get(name)
    if type(value) is int and bounds[0] <= value <= bounds[1]:
        return value
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise GoJSONError(f"field {name!r}: expected an integer, got {value!r}")
    if not bounds[0] <= value <= bounds[1]:
        raise GoJSONError(f"field {name!r}: {value} out of range")
    return value


def get_bytes(obj: dict[str, Any], name: str) -> bytes | None:
    """A Go ``[]byte`` field (padded standard base64): absent or ``null`` -> ``None`` (nil)."""
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise GoJSONError(f"field {name!r}: expected a base64 string, got {type(value).__name__}")
    # Go's decoder skips CR and LF inside base64 text.
    text = value.replace("\r", "").replace("\n", "")
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise GoJSONError(f"field {name!r}: bad base64 ({exc})") from None


def compact(raw: str) -> str:
    """Go's ``json.Compact`` without HTML escaping: drop whitespace outside strings."""
    if not any(c in raw for c in " \t\n\r"):
        return raw
    return _STRING_OR_WS.sub(lambda m: m.group(1) or "", raw)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def _members(text: str, pos: int) -> list[tuple[str, int, int]]:
    """Members of the JSON object starting at ``text[pos]``: (key, value start, value end).

    ``text`` must already be known to be valid JSON.
    """
    if text[pos] != "{":
        raise GoJSONError("expected a JSON object")
    out: list[tuple[str, int, int]] = []
    pos = _skip_ws(text, pos + 1)
    if text[pos] == "}":
        return out
    while True:
        key, pos = _scanstring(text, pos + 1)
        start = _skip_ws(text, _skip_ws(text, pos) + 1)  # past the ':'
        _, end = _DECODER.raw_decode(text, start)
        out.append((_SURROGATE.sub("\ufffd", key), start, end))
        pos = _skip_ws(text, end)
        if text[pos] == "}":
            return out
        pos = _skip_ws(text, pos + 1)  # past the ','


def raw_member(text: str, name: str) -> str | None:
    """Exact source text of the top-level member ``name`` of a JSON object (last one wins)."""
    found = None
    for key, start, end in _members(text, _skip_ws(text, 0)):
        if key == name:
            found = text[start:end]
    return found


def raw_object_members(raw: str) -> dict[str, str]:
    """A raw JSON object as Go's ``map[string]json.RawMessage``: key -> compacted raw value."""
    return {key: compact(raw[start:end]) for key, start, end in _members(raw, 0)}
