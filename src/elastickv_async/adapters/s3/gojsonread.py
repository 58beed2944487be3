"""Reading JSON into typed fields the way Go's ``encoding/json`` unmarshals into a struct.

The S3 values (live bucket meta and manifests in the snapshot, ``_bucket.json`` and sidecars
in a dump tree) are Go structs, so accepting and rejecting exactly what the reference does
matters: object keys match field names exactly or case-insensitively, unknown keys are
ignored, duplicate keys apply in order, ``null`` leaves a scalar untouched and clears a map
or slice, a wrong JSON type or an out-of-range integer fails the whole value, invalid UTF-8
inside strings becomes U+FFFD per byte. Documents are described by :class:`Field` specs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from ...gojson import go_str

__all__ = ["Field", "GoJSONError", "decode_struct", "object_items", "parse_document"]

Kind = Literal["str", "bool", "u32", "u64", "i64", "map_str", "list_u64", "list_struct"]

_RANGES: Final = {
    "u32": (0, (1 << 32) - 1),
    "u64": (0, (1 << 64) - 1),
    "i64": (-(1 << 63), (1 << 63) - 1),
}
_UINT_LITERAL: Final = re.compile(r"[0-9]+")
_INT_LITERAL: Final = re.compile(r"-?[0-9]+")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_WHITESPACE: Final = " \t\n\r"
_DECODER: Final = json.JSONDecoder()


class GoJSONError(ValueError):
    """The JSON text, or one of its fields, would make Go's unmarshal fail."""


class _Number(str):
    """A JSON number kept as its literal text (Go converts it per target type)."""

    __slots__ = ()


class _Object(list[tuple[str, Any]]):
    """A JSON object as its ordered ``(key, value)`` pairs, duplicates kept."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    raise GoJSONError(f"invalid JSON literal {name}")


def _fix(value: Any) -> Any:
    """Replace lone surrogates (``\\ud800``-style escapes) by U+FFFD, as Go does."""
    if isinstance(value, str) and not isinstance(value, _Number):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, _Object):
        return _Object((_fix(k), _fix(v)) for k, v in value)
    if isinstance(value, list):
        return [_fix(v) for v in value]
    return value


def parse_document(raw: bytes, *, stream: bool = False) -> Any:
    """Parse one JSON value; objects come back as :class:`_Object` pairs, numbers as literals.

    ``stream=False`` is ``json.Unmarshal`` (only whitespace may follow the value);
    ``stream=True`` is ``json.Decoder.Decode`` followed by a ``More()`` check, which also
    tolerates a trailing ``]`` or ``}``.
    """
    text = go_str(raw)
    decoder = json.JSONDecoder(
        object_pairs_hook=_Object,
        parse_int=_Number,
        parse_float=_Number,
        parse_constant=_reject_constant,
    )
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = decoder.raw_decode(text, start)
    except (ValueError, RecursionError) as exc:
        raise GoJSONError(f"invalid JSON: {exc}") from None
    rest = text[end:].lstrip(_WHITESPACE)
    if rest and not (stream and rest[0] in "]}"):
        raise GoJSONError("invalid JSON: data after the top-level value")
    return _fix(value)


def object_items(value: Any) -> list[tuple[str, Any]]:
    """The ``(key, value)`` pairs of a parsed JSON object; :class:`GoJSONError` otherwise."""
    if not isinstance(value, _Object):
        raise GoJSONError(f"expected a JSON object, got {_describe(value)}")
    return list(value)


@dataclass(frozen=True, slots=True)
class Field:
    """One struct field: its JSON name, its Go kind and, for struct slices, the element spec."""

    name: str
    kind: Kind
    element: tuple[Field, ...] = ()


def _zero(field: Field) -> Any:
    if field.kind == "str":
        return ""
    if field.kind == "bool":
        return False
    if field.kind in _RANGES:
        return 0
    return None  # maps and slices start nil


def _integer(value: Any, kind: str, name: str) -> int:
    pattern = _UINT_LITERAL if kind in ("u32", "u64") else _INT_LITERAL
    if not isinstance(value, _Number) or pattern.fullmatch(value) is None:
        raise GoJSONError(f"field {name!r}: cannot unmarshal {_describe(value)} into {kind}")
    number = int(value)
    low, high = _RANGES[kind]
    if not low <= number <= high:
        raise GoJSONError(f"field {name!r}: number {value} overflows {kind}")
    return number


def _describe(value: Any) -> str:
    if isinstance(value, _Number):
        return f"number {value}"
    if isinstance(value, _Object):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    return "null"


def _assign(field: Field, current: Any, value: Any) -> Any:
    """The field's value after unmarshalling ``value`` into ``current``."""
    name, kind = field.name, field.kind
    if value is None:
        return None if kind in ("map_str", "list_u64", "list_struct") else current
    if kind == "str":
        if isinstance(value, str) and not isinstance(value, _Number):
            return value
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind in _RANGES:
        return _integer(value, kind, name)
    elif kind == "map_str":
        if isinstance(value, _Object):
            merged = dict(current) if current is not None else {}
            for key, item in value:
                if item is None:
                    merged[key] = ""  # a null element stores the zero string
                elif isinstance(item, str) and not isinstance(item, _Number):
                    merged[key] = item
                else:
                    raise GoJSONError(
                        f"field {name!r}: cannot unmarshal {_describe(item)} into string"
                    )
            return merged
    elif kind == "list_u64":
        if isinstance(value, list) and not isinstance(value, _Object):
            return [0 if item is None else _integer(item, "u64", name) for item in value]
    elif kind == "list_struct" and isinstance(value, list) and not isinstance(value, _Object):
        return [decode_struct(item, field.element) for item in value]
    raise GoJSONError(f"field {name!r}: cannot unmarshal {_describe(value)} into {kind}")


#: Non-ASCII runes whose simple case folding reaches an ASCII letter (Kelvin sign, long s).
_FOLD_EXTRA: Final = {"\u212a": "k", "\u017f": "s"}


def _fold(name: str) -> str:
    """Fold like Go's ``bytes.EqualFold`` as far as ASCII field names can be reached."""
    return "".join(c.lower() if c.isascii() else _FOLD_EXTRA.get(c, c) for c in name)


def decode_struct(value: Any, fields: tuple[Field, ...]) -> dict[str, Any]:
    """Unmarshal a parsed value into the struct ``fields``; return ``{json name: value}``.

    ``null`` yields the zero struct, as it does in Go. Raises :class:`GoJSONError`.
    """
    out: dict[str, Any] = {f.name: _zero(f) for f in fields}
    if value is None:
        return out
    if not isinstance(value, _Object):
        raise GoJSONError(f"cannot unmarshal {_describe(value)} into an object")
    exact: Mapping[str, Field] = {f.name: f for f in fields}
    folded: Mapping[str, Field] = {_fold(f.name): f for f in fields}
    for key, item in value:
        field = exact.get(key) or folded.get(_fold(key))
        if field is not None:
            out[field.name] = _assign(field, out[field.name], item)
    return out
