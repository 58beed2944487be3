"""Reading JSON the way Go's ``encoding/json`` unmarshals it: the reader side of :mod:`.gojson`.

A module of its own rather than more of :mod:`.gojson`: that one renders bytes for the dump
tree, this one parses and type-checks what the encoders read (dump files) and what the
decoders read (live JSON values). The two halves share no code; together they would make one
500-line module with two unrelated concerns.

Every parser here follows Go's text rules: invalid UTF-8 becomes U+FFFD per byte (like
:func:`~.gojson.go_str`), an unpaired surrogate escape (``"\\ud800"``) becomes U+FFFD,
``NaN``/``Infinity`` are refused, and only JSON whitespace may surround a value. Parsed
values come in two shapes:

* Plain Python values (:func:`loads`, :func:`iter_values`): dicts (a duplicate key keeps its
  last value), lists, ``str``, ``int``, ``float``, ``bool``, ``None``. The getters
  (:func:`get_str`, :func:`get_int`, ...) and converters (:func:`as_str`, ...) read them with
  Go's rules for a field spelled exactly as the writer spells it: absent or ``null`` is the
  zero value, a wrong JSON type or an out-of-range integer is an error.
* Trees (:func:`parse_tree`): objects as their ordered ``(key, value)`` pairs with duplicates
  kept, numbers as their literal text, so that :func:`decode_struct` can apply every struct
  rule: keys match a field exactly or case-insensitively, duplicates apply in order, ``null``
  clears a map or slice, integer literals are checked as Go's ``strconv`` does.

:func:`raw_member`, :func:`raw_object_members` and :func:`compact` give ``json.RawMessage``
values: source text, compacted. Errors are :class:`GoJSONError`; callers wrap it into their
typed error.
"""

from __future__ import annotations

import binascii
import functools
import json
import json.decoder
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Literal

import msgspec
import orjson

from .gojson import go_str

__all__ = [
    "Field",
    "GoJSONError",
    "IntKind",
    "as_bool",
    "as_float",
    "as_int",
    "as_object",
    "as_str",
    "compact",
    "decode_struct",
    "get_bool",
    "get_bytes",
    "get_int",
    "get_list",
    "get_str",
    "iter_values",
    "loads",
    "object_items",
    "parse_tree",
    "raw_member",
    "raw_object_members",
]

#: Go integer types, by the names used here.
IntKind = Literal["i64", "u32", "u64"]
#: Go kinds a :class:`Field` can have.
Kind = Literal["str", "bool", "u32", "u64", "i64", "map_str", "list_u64", "list_struct"]

_INT_RANGES: Final[Mapping[str, tuple[int, int]]] = {
    "i64": (-(1 << 63), (1 << 63) - 1),
    "u32": (0, (1 << 32) - 1),
    "u64": (0, (1 << 64) - 1),
}
_INT_LITERAL: Final = re.compile(r"-?[0-9]+")
# Possibly a "-0" number (or text inside a string, which only costs the slower exact path).
_NEG_ZERO: Final = re.compile(rb"-0(?![0-9.eE])")


# Compiled on first use (a lone surrogate, a document to compact): most runs never need
# them, and compiling at import is paid by every start-up.
@functools.cache
def _surrogate() -> re.Pattern[str]:
    return re.compile("[\ud800-\udfff]")


@functools.cache
def _string_or_ws() -> re.Pattern[str]:
    return re.compile(r'("(?:[^"\\]|\\.)*")|[ \t\n\r]+', re.DOTALL)


_WHITESPACE: Final = " \t\n\r"
#: The C string scanner json itself uses: (decoded string, index after the closing quote).
_scanstring: Final[Callable[[str, int], tuple[str, int]]] = json.decoder.scanstring  # type: ignore[attr-defined]


class GoJSONError(ValueError):
    """The JSON text, or one of its fields, would make Go's unmarshal fail."""


class _Number(str):
    """A JSON number of a tree, kept as its literal text (Go converts it per target type)."""

    __slots__ = ()


class _NegZero(int):
    """The literal ``-0`` of a plain value: 0 as an integer, but Go's float64 keeps the sign."""

    __slots__ = ()


class _Object(list[tuple[str, Any]]):
    """A JSON object of a tree: its ordered ``(key, value)`` pairs, duplicates kept."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    raise GoJSONError(f"invalid JSON literal {name}")


def _parse_int(literal: str) -> int:
    return _NegZero(0) if literal == "-0" else int(literal)


_PLAIN: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_parse_int)
_TREE: Final = json.JSONDecoder(
    object_pairs_hook=_Object,
    parse_int=_Number,
    parse_float=_Number,
    parse_constant=_reject_constant,
)


# --- parsing -------------------------------------------------------------------------------


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def _fix_text(value: Any) -> Any:
    if isinstance(value, str) and not isinstance(value, _Number):
        return _surrogate().sub("\ufffd", value)
    return value


def _fix(value: Any) -> Any:
    """Replace lone surrogates (from ``\\ud800``-style escapes) by U+FFFD, as Go does.

    Freshly parsed containers are fixed in place with an explicit stack: a document nested
    as deep as the parser allows must not exhaust Python's recursion limit here.
    """
    if not isinstance(value, (list, dict)):
        return _fix_text(value)
    pending: list[Any] = [value]
    while pending:
        node = pending.pop()
        if isinstance(node, _Object):
            for i, (key, item) in enumerate(node):
                node[i] = (_fix_text(key), _fix_text(item))
                if isinstance(item, (list, dict)):
                    pending.append(item)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                node[i] = _fix_text(item)
                if isinstance(item, (list, dict)):
                    pending.append(item)
        else:
            members = list(node.items())
            node.clear()
            for key, item in members:
                node[_fix_text(key)] = _fix_text(item)
                if isinstance(item, (list, dict)):
                    pending.append(item)
    return value


def _decode_at(decoder: json.JSONDecoder, text: str, pos: int) -> tuple[Any, int]:
    """The value starting at ``text[pos]`` (surrogates fixed) and the index after it."""
    try:
        value, end = decoder.raw_decode(text, pos)
    except RecursionError:
        raise GoJSONError("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise GoJSONError(f"invalid JSON: {exc}") from None
    if text.find("\\u", pos, end) >= 0:  # a lone surrogate can only come from an escape
        value = _fix(value)
    return value, end


def _decode_one(decoder: json.JSONDecoder, text: str, *, more: bool = False) -> Any:
    value, end = _decode_at(decoder, text, _skip_ws(text, 0))
    rest = _skip_ws(text, end)
    if rest < len(text) and not (more and text[rest] in "]}"):
        raise GoJSONError("invalid JSON: data after the top-level value")
    return value


def loads(data: bytes) -> Any:
    """``json.Unmarshal`` into ``any``: exactly one value as plain Python values.

    Numbers stay ``int`` or ``float``; read them through :func:`as_int` / :func:`as_float`,
    which also know the sign of a literal ``-0``.
    """
    if _NEG_ZERO.search(data) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    else:
        return _decode_one(_PLAIN, go_str(data))
    # Slow path, only for input orjson refuses: Go accepts bad UTF-8 and lone surrogates.
    text = go_str(data)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _decode_one(_PLAIN, text)


def iter_values(data: bytes) -> Iterator[tuple[Any, str]]:
    """A ``json.Decoder.Decode`` loop to the end of ``data``: each value with its source text.

    Values may be separated by any whitespace (or none, where the grammar allows); a syntax
    error raises :class:`GoJSONError` once the values before it have been yielded.
    """
    text = go_str(data)
    pos = _skip_ws(text, 0)
    while pos < len(text):
        value, end = _decode_at(_PLAIN, text, pos)
        yield value, text[pos:end]
        pos = _skip_ws(text, end)


def parse_tree(data: bytes, *, more: bool = False) -> Any:
    """Parse one JSON value as a tree (for :func:`decode_struct` and :func:`object_items`).

    ``more=False`` is ``json.Unmarshal`` (only whitespace may follow the value); ``more=True``
    is ``json.Decoder.Decode`` followed by a ``More()`` check, which also tolerates a trailing
    ``]`` or ``}``.
    """
    return _decode_one(_TREE, go_str(data), more=more)


# --- plain values: typed access ------------------------------------------------------------


def _describe(value: Any) -> str:
    if isinstance(value, _Number) or (
        isinstance(value, (int, float)) and not isinstance(value, bool)
    ):
        return f"number {value}"
    if isinstance(value, (dict, _Object)):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    return "null"


def _wrong(name: str, expected: str, value: Any) -> GoJSONError:
    return GoJSONError(f"field {name!r}: expected {expected}, got {_describe(value)}")


def as_str(value: Any, name: str) -> str:
    """A Go ``string``: ``null`` -> ``""``; ``name`` labels the error."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    raise _wrong(name, "a string", value)


def as_bool(value: Any, name: str) -> bool:
    """A Go ``bool``: ``null`` -> ``False``."""
    if type(value) is bool:
        return value
    if value is None:
        return False
    raise _wrong(name, "a boolean", value)


def as_int(value: Any, name: str, kind: IntKind = "i64") -> int:
    """A Go integer of ``kind``: ``null`` -> 0; fractions, exponents and overflow are errors."""
    low, high = _INT_RANGES[kind]
    if type(value) is int:
        number = value
    elif type(value) is _NegZero:
        number = 0 if low < 0 else -1  # strconv.ParseUint refuses any sign, "-0" included
    elif isinstance(value, _Number) and _INT_LITERAL.fullmatch(value):
        number = int(value)
        if value[0] == "-" and low == 0:
            number = -1  # strconv.ParseUint refuses any sign, "-0" included
    elif value is None:
        return 0
    else:
        raise _wrong(name, f"an integer ({kind})", value)
    if not low <= number <= high:
        raise GoJSONError(f"field {name!r}: {value} out of range for {kind}")
    return number


def as_float(value: Any, name: str) -> float:
    """A Go float64 from a plain number (``-0`` keeps its sign); anything else is an error."""
    if type(value) is _NegZero:
        return -0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong(name, "a number", value)
    try:
        return float(value)
    except OverflowError:
        raise GoJSONError(f"field {name!r}: {value} out of range for float64") from None


def as_object(value: Any, name: str = "") -> dict[str, Any]:
    """A Go struct from a plain value: ``null`` leaves it zero (``{}``), a non-object fails."""
    if isinstance(value, dict):
        return value
    if value is None:
        return {}
    where = f"field {name!r}: " if name else ""
    raise GoJSONError(f"{where}expected a JSON object, got {_describe(value)}")


def get_str(obj: Mapping[str, Any], name: str) -> str:
    """The ``string`` field ``name`` of a plain object (absent or ``null`` -> ``""``)."""
    value = obj.get(name)
    return value if type(value) is str else as_str(value, name)


def get_bool(obj: Mapping[str, Any], name: str) -> bool:
    """The ``bool`` field ``name`` of a plain object (absent or ``null`` -> ``False``)."""
    value = obj.get(name)
    return value if type(value) is bool else as_bool(value, name)


def get_int(obj: Mapping[str, Any], name: str, kind: IntKind = "i64") -> int:
    """The integer field ``name`` of a plain object (absent or ``null`` -> 0)."""
    value = obj.get(name)
    if type(value) is int:  # the common case first: per-message fields add up
        low, high = _INT_RANGES[kind]
        if low <= value <= high:
            return value
    return as_int(value, name, kind)


def get_list(obj: Mapping[str, Any], name: str) -> list[Any]:
    """The slice field ``name`` of a plain object (absent or ``null`` -> a nil, empty slice)."""
    value = obj.get(name)
    if isinstance(value, list):
        return value
    if value is None:
        return []
    raise _wrong(name, "an array", value)


def get_bytes(obj: Mapping[str, Any], name: str) -> bytes | None:
    """A ``[]byte`` field (padded standard base64): absent or ``null`` -> ``None`` (nil)."""
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _wrong(name, "a base64 string", value)
    # Go's decoder skips CR and LF inside base64 text.
    text = value.replace("\r", "").replace("\n", "")
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise GoJSONError(f"field {name!r}: bad base64 ({exc})") from None


# --- trees: struct unmarshalling ------------------------------------------------------------


def object_items(value: Any) -> list[tuple[str, Any]]:
    """The ``(key, value)`` pairs of a tree's object; :class:`GoJSONError` otherwise."""
    if not isinstance(value, _Object):
        raise GoJSONError(f"expected a JSON object, got {_describe(value)}")
    return list(value)


class Field(msgspec.Struct, frozen=True):
    """One struct field: its JSON name, its Go kind and, for struct slices, the element spec."""

    name: str
    kind: Kind
    element: tuple[Field, ...] = ()


def _zero(field: Field) -> Any:
    if field.kind == "str":
        return ""
    if field.kind == "bool":
        return False
    if field.kind in _INT_RANGES:
        return 0
    return None  # maps and slices start nil


def _assign(field: Field, current: Any, value: Any) -> Any:
    """The field's value after unmarshalling tree ``value`` into ``current``."""
    name, kind = field.name, field.kind
    if value is None:
        return None if kind in ("map_str", "list_u64", "list_struct") else current
    if kind == "str":
        return as_str(value, name)
    if kind == "bool":
        return as_bool(value, name)
    if kind == "u32" or kind == "u64" or kind == "i64":
        return as_int(value, name, kind)
    if kind == "map_str":
        if not isinstance(value, _Object):
            raise _wrong(name, "an object", value)
        # Go merges into an existing map; a null element stores the zero string.
        merged = dict(current) if current is not None else {}
        for key, item in value:
            merged[key] = as_str(item, f"{name}.{key}")
        return merged
    if isinstance(value, list) and not isinstance(value, _Object):
        if kind == "list_u64":
            return [as_int(item, name, "u64") for item in value]
        return [decode_struct(item, field.element) for item in value]
    raise _wrong(name, "an array", value)


#: Non-ASCII runes whose simple case folding reaches an ASCII letter (Kelvin sign, long s).
_FOLD_EXTRA: Final = {"\u212a": "k", "\u017f": "s"}


def _fold(name: str) -> str:
    """Fold like Go's ``bytes.EqualFold`` as far as ASCII field names can be reached."""
    return "".join(c.lower() if c.isascii() else _FOLD_EXTRA.get(c, c) for c in name)


def decode_struct(value: Any, fields: tuple[Field, ...]) -> dict[str, Any]:
    """Unmarshal a tree into the struct ``fields``; return ``{json name: value}``.

    Unknown keys are ignored; ``null`` yields the zero struct, as it does in Go.
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


# --- raw text (json.RawMessage) -------------------------------------------------------------


def compact(raw: str) -> str:
    """Go's ``json.Compact`` without HTML escaping: drop whitespace outside strings."""
    if not any(c in raw for c in _WHITESPACE):
        return raw
    return _string_or_ws().sub(lambda m: m.group(1) or "", raw)


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
        _, end = _PLAIN.raw_decode(text, start)
        out.append((_surrogate().sub("\ufffd", key), start, end))
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
