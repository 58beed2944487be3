"""Go ``encoding/json`` unmarshal semantics used by the SQS adapter (expectations from Go's
documented behaviour: null leaves zero values, wrong types fail, bad UTF-8 -> U+FFFD)."""

from __future__ import annotations

import pytest

from elastickv_async.adapters.sqs import jsonread
from elastickv_async.adapters.sqs.jsonread import GoJSONError


def test_parse_document_replaces_bad_utf8_and_lone_surrogates() -> None:
    """Each invalid byte and each lone surrogate escape becomes U+FFFD; pairs combine."""
    assert jsonread.parse_document(b'["a\xffb\xe2\x82"]') == ["a\ufffdb\ufffd\ufffd"]
    assert jsonread.parse_document(b'{"k":"\\ud800x\\ud83d\\ude00"}') == {"k": "\ufffdx\U0001f600"}


@pytest.mark.parametrize("text", [b"NaN", b'{"a":1', b'{"a":1} x', b"", b"[Infinity]"])
def test_parse_document_rejects_what_go_rejects(text: bytes) -> None:
    """Syntax errors, trailing data and non-JSON constants fail."""
    with pytest.raises(GoJSONError):
        jsonread.parse_document(text)


def test_typed_fields() -> None:
    """Absent and null are zero values; types and ranges are enforced."""
    obj = {"s": "v", "n": None, "i": 5, "b": True, "f": 1.0, "big": 1 << 64, "neg": -1}
    assert jsonread.get_str(obj, "s") == "v"
    assert jsonread.get_str(obj, "n") == jsonread.get_str(obj, "absent") == ""
    assert jsonread.get_int(obj, "i") == 5
    assert jsonread.get_int(obj, "n") == 0
    assert jsonread.get_bool(obj, "b") is True
    assert jsonread.get_bool(obj, "absent") is False
    for name in ("f", "b", "s"):
        with pytest.raises(GoJSONError):
            jsonread.get_int(obj, name)
    with pytest.raises(GoJSONError, match="out of range"):
        jsonread.get_int(obj, "big", jsonread.UINT64)
    with pytest.raises(GoJSONError, match="out of range"):
        jsonread.get_int(obj, "neg", jsonread.UINT32)
    with pytest.raises(GoJSONError):
        jsonread.get_str(obj, "i")
    with pytest.raises(GoJSONError):
        jsonread.get_bool(obj, "i")


def test_bytes_fields() -> None:
    """Padded standard base64; CR/LF skipped; null -> nil (None); bad padding fails."""
    assert jsonread.get_bytes({"t": "AQID\r\nBA=="}, "t") == b"\x01\x02\x03\x04"
    assert jsonread.get_bytes({"t": None}, "t") is None
    assert jsonread.get_bytes({"t": ""}, "t") == b""
    for bad in ("AQIDBA", "AQ==AQ==", "A-_B", "é"):
        with pytest.raises(GoJSONError):
            jsonread.get_bytes({"t": bad}, "t")


def test_compact_keeps_strings() -> None:
    """Whitespace goes only outside strings; escapes stay as written."""
    assert jsonread.compact('{ "a b" : [ 1 ,\n\t"x\\" y" ] }') == '{"a b":[1,"x\\" y"]}'


def test_raw_members() -> None:
    """The raw text of a member (last duplicate wins) and of an object's values."""
    text = '{"a": {"x" : 1}, "m": [1, "\\u003c"], "a": {"y":2}}'
    assert jsonread.raw_member(text, "a") == '{"y":2}'
    assert jsonread.raw_member(text, "zz") is None
    assert jsonread.raw_object_members('{ "k\\u00e9" : "v" , "e": {} }') == {
        "k\u00e9": '"v"',
        "e": "{}",
    }
