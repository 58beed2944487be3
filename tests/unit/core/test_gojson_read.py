"""Go ``encoding/json`` unmarshal semantics of the shared reader (expectations from Go's
documented behaviour: null leaves zero values, wrong types and overflow fail, bad UTF-8 and
lone surrogates become U+FFFD, struct keys match case-insensitively)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from elastickv_async._core import gojson_read
from elastickv_async._core.gojson_read import Field, GoJSONError, decode_struct, parse_tree

# --- parsing ---------------------------------------------------------------------------------


def test_loads_replaces_bad_utf8_and_lone_surrogates() -> None:
    """Each invalid byte and each lone surrogate escape becomes U+FFFD; pairs combine."""
    assert gojson_read.loads(b'["a\xffb\xe2\x82"]') == ["a\ufffdb\ufffd\ufffd"]
    assert gojson_read.loads(b'{"k":"\\ud800x\\ud83d\\ude00"}') == {"k": "\ufffdx\U0001f600"}
    assert gojson_read.loads(b'{"\\udfff":1}') == {"\ufffd": 1}


@pytest.mark.parametrize(
    "text",
    [b"NaN", b'{"a":1', b'{"a":1} x', b'{"a":1} {}', b"", b"  ", b"[Infinity]", b"\xef\xbb\xbf{}"],
)
def test_loads_rejects_what_go_rejects(text: bytes) -> None:
    """Syntax errors, trailing data, empty input, non-JSON constants and a BOM fail."""
    with pytest.raises(GoJSONError):
        gojson_read.loads(text)


def test_loads_accepts_surrounding_whitespace_and_keeps_the_last_duplicate() -> None:
    assert gojson_read.loads(b' \t\r\n{"a":1,"a":2}\n ') == {"a": 2}
    # The slow path (a lone surrogate forces it) keeps the same rules.
    assert gojson_read.loads(b'{"a":1,"a":"\\ud800"} ') == {"a": "\ufffd"}


def test_loads_refuses_nesting_deeper_than_the_parsers_allow() -> None:
    with pytest.raises(GoJSONError):
        gojson_read.loads(b"[" * 100_000 + b"]" * 100_000)


def test_iter_values_is_a_decoder_loop_with_source_text() -> None:
    data = b'{"a": 1}\n\n [2,3]"s"  4 {"k":"\\ud800"}\n'
    assert list(gojson_read.iter_values(data)) == [
        ({"a": 1}, '{"a": 1}'),
        ([2, 3], "[2,3]"),
        ("s", '"s"'),
        (4, "4"),
        ({"k": "\ufffd"}, '{"k":"\\ud800"}'),
    ]
    assert list(gojson_read.iter_values(b" \n")) == []


def test_iter_values_yields_what_precedes_a_syntax_error() -> None:
    values = gojson_read.iter_values(b'{"a":1}\n{"b":NaN}\n')
    assert next(values) == ({"a": 1}, '{"a":1}')
    with pytest.raises(GoJSONError):
        next(values)


def test_parse_tree_more_tolerates_a_trailing_closing_bracket_like_decoder_more() -> None:
    assert decode_struct(parse_tree(b'{"name":"a"} }', more=True), _SPEC)["name"] == "a"
    assert decode_struct(parse_tree(b'{"name":"a"}\n]', more=True), _SPEC)["name"] == "a"
    with pytest.raises(GoJSONError):
        parse_tree(b'{"name":"a"} {}', more=True)
    with pytest.raises(GoJSONError):
        parse_tree(b'{"name":"a"} }')


# --- plain values: typed access --------------------------------------------------------------


def test_typed_fields() -> None:
    """Absent and null are zero values; types and ranges are enforced."""
    obj = {"s": "v", "n": None, "i": 5, "b": True, "f": 1.0, "big": 1 << 64, "neg": -1}
    assert gojson_read.get_str(obj, "s") == "v"
    assert gojson_read.get_str(obj, "n") == gojson_read.get_str(obj, "absent") == ""
    assert gojson_read.get_int(obj, "i") == 5
    assert gojson_read.get_int(obj, "n") == 0
    assert gojson_read.get_bool(obj, "b") is True
    assert gojson_read.get_bool(obj, "absent") is False
    for name in ("f", "b", "s"):
        with pytest.raises(GoJSONError, match="integer"):
            gojson_read.get_int(obj, name)
    with pytest.raises(GoJSONError, match="out of range"):
        gojson_read.get_int(obj, "big", "u64")
    with pytest.raises(GoJSONError, match="out of range"):
        gojson_read.get_int(obj, "neg", "u32")
    with pytest.raises(GoJSONError, match="string"):
        gojson_read.get_str(obj, "i")
    with pytest.raises(GoJSONError, match="boolean"):
        gojson_read.get_bool(obj, "i")


@pytest.mark.parametrize(
    ("kind", "low", "high"),
    [("i64", -(1 << 63), (1 << 63) - 1), ("u32", 0, (1 << 32) - 1), ("u64", 0, (1 << 64) - 1)],
)
def test_integer_bounds(kind: Any, low: int, high: int) -> None:
    assert gojson_read.as_int(low, "x", kind) == low
    assert gojson_read.as_int(high, "x", kind) == high
    for outside in (low - 1, high + 1):
        with pytest.raises(GoJSONError, match="out of range"):
            gojson_read.as_int(outside, "x", kind)


def test_lists_and_objects() -> None:
    """A nil slice or struct from absent/null; any other JSON type is an error."""
    assert gojson_read.get_list({"l": [1]}, "l") == [1]
    assert gojson_read.get_list({"l": None}, "l") == gojson_read.get_list({}, "l") == []
    with pytest.raises(GoJSONError, match="array"):
        gojson_read.get_list({"l": {}}, "l")
    assert gojson_read.as_object(None) == {}
    assert gojson_read.as_object({"a": 1}) == {"a": 1}
    with pytest.raises(GoJSONError, match="'attrs': expected a JSON object, got array"):
        gojson_read.as_object([1], "attrs")


def test_bytes_fields() -> None:
    """Padded standard base64; CR/LF skipped; null -> nil (None); bad padding fails."""
    assert gojson_read.get_bytes({"t": "AQID\r\nBA=="}, "t") == b"\x01\x02\x03\x04"
    assert gojson_read.get_bytes({"t": None}, "t") is None
    assert gojson_read.get_bytes({"t": ""}, "t") == b""
    for bad in ("AQIDBA", "AQ==AQ==", "A-_B", "é", 5):
        with pytest.raises(GoJSONError):
            gojson_read.get_bytes({"t": bad}, "t")


# --- trees: struct unmarshalling -------------------------------------------------------------

_SPEC = (
    Field("name", "str"),
    Field("size_bytes", "i64"),
    Field("generation", "u64"),
    Field("meta", "map_str"),
    Field("flag", "bool"),
)
_PARTS = (Field("sizes", "list_u64"), Field("parts", "list_struct", (Field("n", "u32"),)))


def _decode(raw: bytes) -> dict[str, object]:
    return decode_struct(parse_tree(raw), _SPEC)


def test_go_matches_keys_case_insensitively_and_in_order() -> None:
    doc = _decode(b'{"NAME":"a","name":"b","Size_Bytes":-3,"GENERATION":7,"\\u017fize_bytes":4}')
    # U+017F (long s) folds to "s" in Go's EqualFold, so the last key also sets size_bytes.
    assert doc == {"name": "b", "size_bytes": 4, "generation": 7, "meta": None, "flag": False}


def test_go_null_semantics() -> None:
    doc = _decode(b'{"name":"a","name":null,"meta":{"k":"v","k":null},"flag":null}')
    assert doc["name"] == "a"  # null leaves a string untouched
    assert doc["meta"] == {"k": ""}  # a null map element stores ""
    assert _decode(b'{"meta":{"k":"v"},"meta":null}')["meta"] is None
    assert _decode(b'{"meta":{"a":"1"},"meta":{"b":"2"}}')["meta"] == {"a": "1", "b": "2"}
    assert _decode(b"null") == {
        "name": "",
        "size_bytes": 0,
        "generation": 0,
        "meta": None,
        "flag": False,
    }


def test_slices() -> None:
    doc = decode_struct(parse_tree(b'{"sizes":[1,null,3],"parts":[{"N":2},null]}'), _PARTS)
    assert doc == {"sizes": [1, 0, 3], "parts": [{"n": 2}, {"n": 0}]}
    assert decode_struct(parse_tree(b'{"sizes":null,"parts":null}'), _PARTS) == {
        "sizes": None,
        "parts": None,
    }


def test_invalid_utf8_and_lone_surrogates_become_replacement_characters() -> None:
    assert _decode(b'{"name":"a\xffb\\ud800"}')["name"] == "a\ufffdb\ufffd"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"generation":-1}',
        b'{"generation":-0}',  # strconv.ParseUint refuses any sign
        b'{"generation":1.0}',
        b'{"generation":1e2}',
        b'{"generation":18446744073709551616}',
        b'{"size_bytes":9223372036854775808}',
        b'{"size_bytes":"5"}',
        b'{"name":5}',
        b'{"flag":"true"}',
        b'{"meta":{"k":1}}',
        b'{"meta":[]}',
        b"[1]",
        b'{"name":"a"} x',
        b"",
        b"NaN",
    ],
)
def test_go_rejects(raw: bytes) -> None:
    with pytest.raises(GoJSONError):
        _decode(raw)


def test_signed_zero_fits_a_signed_field() -> None:
    assert _decode(b'{"size_bytes":-0}')["size_bytes"] == 0


def test_object_items_keeps_duplicates_in_order() -> None:
    assert gojson_read.object_items(parse_tree(b'{"a":1,"b":null,"a":"x"}')) == [
        ("a", "1"),
        ("b", None),
        ("a", "x"),
    ]
    with pytest.raises(GoJSONError):
        gojson_read.object_items(parse_tree(b"null"))


# --- raw text --------------------------------------------------------------------------------


def test_compact_keeps_strings() -> None:
    """Whitespace goes only outside strings; escapes stay as written."""
    assert gojson_read.compact('{ "a b" : [ 1 ,\n\t"x\\" y" ] }') == '{"a b":[1,"x\\" y"]}'


def test_raw_members() -> None:
    """The raw text of a member (last duplicate wins) and of an object's values."""
    text = '{"a": {"x" : 1}, "m": [1, "\\u003c"], "a": {"y":2}}'
    assert gojson_read.raw_member(text, "a") == '{"y":2}'
    assert gojson_read.raw_member(text, "zz") is None
    assert gojson_read.raw_object_members('{ "k\\u00e9" : "v" , "e": {} }') == {
        "k\u00e9": '"v"',
        "e": "{}",
    }


def test_negative_zero_keeps_its_sign_as_a_float() -> None:
    """Go's float64 keeps the sign of the literal -0; as an integer it is 0 (unsigned: error)."""
    doc = gojson_read.loads(b'{"score": -0, "n": -0, "f": -0.0, "s": "-0"}')
    assert math.copysign(1.0, gojson_read.as_float(doc["score"], "score")) == -1.0
    assert gojson_read.as_int(doc["n"], "n") == 0
    with pytest.raises(gojson_read.GoJSONError):
        gojson_read.as_int(doc["n"], "n", "u64")
    assert math.copysign(1.0, gojson_read.as_float(doc["f"], "f")) == -1.0
    assert doc["s"] == "-0"
    assert gojson_read.as_float(gojson_read.loads(b"7"), "x") == 7.0
    with pytest.raises(gojson_read.GoJSONError):
        gojson_read.as_float(gojson_read.loads(b"true"), "x")
