"""Go ``encoding/json`` parity of the gojson module."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import shared_dir

from elastickv_async._core import gojson

GOLDEN = shared_dir()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, b"0"),
        (-0.0, b"-0"),
        (1.0, b"1"),
        (100.0, b"100"),
        (1.5, b"1.5"),
        (-2.25, b"-2.25"),
        (0.1, b"0.1"),
        (123.456, b"123.456"),
        (1e20, b"100000000000000000000"),
        (1e21, b"1e+21"),
        (1.5e300, b"1.5e+300"),
        (0.000001, b"0.000001"),
        (1e-7, b"1e-7"),
        (-1.25e-10, b"-1.25e-10"),
        (5e-324, b"5e-324"),
        (1.7976931348623157e308, b"1.7976931348623157e+308"),
    ],
)
def test_go_float_matches_strconv(value: float, expected: bytes) -> None:
    """Floats render like Go's json.Marshal(float64) (values worked out from strconv rules)."""
    assert gojson.marshal(gojson.go_float(value)) == expected


def test_go_float_rejects_non_finite() -> None:
    """NaN and infinities have no JSON form, as in Go."""
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError):
            gojson.go_float(bad)


def test_html_and_line_separators_escaped_like_go() -> None:
    """marshal escapes <, >, & and U+2028/9; encoder_line keeps HTML characters raw."""
    doc = {"s": "<a href='x'>&\u2028\u2029</a>"}
    assert gojson.marshal(doc) == (
        b'{"s":"\\u003ca href=\'x\'\\u003e\\u0026\\u2028\\u2029\\u003c/a\\u003e"}'
    )
    assert gojson.encoder_line(doc) == b'{"s":"<a href=\'x\'>&\\u2028\\u2029</a>"}\n'


def test_control_characters_escaped_like_go() -> None:
    """C0 controls use Go's short escapes where it has them, else lowercase \\u00xx."""
    assert gojson.marshal("\b\f\n\r\t\x01\x1f\x7f") == b'"\\b\\f\\n\\r\\t\\u0001\\u001f\x7f"'


def test_go_str_replaces_each_invalid_byte() -> None:
    """Go turns every invalid UTF-8 byte into its own U+FFFD (Python's 'replace' does not)."""
    assert gojson.go_str(b"a\xe6\x97b") == "a\ufffd\ufffdb"
    assert gojson.go_str(b"\xff\xfe") == "\ufffd\ufffd"
    assert gojson.go_str("日本".encode()) == "日本"


def test_indent_shapes() -> None:
    """Empty containers stay on one line; nesting uses two spaces, like MarshalIndent."""
    doc = {"a": [], "b": {}, "c": [1, {"d": None}]}
    assert gojson.marshal_indent(doc) == (
        b'{\n  "a": [],\n  "b": {},\n  "c": [\n    1,\n    {\n      "d": null\n    }\n  ]\n}'
    )


@pytest.mark.skipif(GOLDEN is None, reason="../shared is absent")
def test_reproduces_golden_indented_files() -> None:
    """Re-marshalling golden JSON documents (written by Go) reproduces their exact bytes."""
    assert GOLDEN is not None
    root = GOLDEN / "golden" / "public"
    files = [
        *root.glob("ddb_*/expected/dynamodb/*/_schema.json"),
        *root.glob("ddb_*/expected/dynamodb/*/items/**/*.json"),
    ]
    assert files
    for path in files:
        raw = path.read_bytes()
        assert gojson.marshal_indent(json.loads(raw)) == raw, str(path.relative_to(root))


@pytest.mark.skipif(GOLDEN is None, reason="../shared is absent")
def test_reproduces_golden_manifest_style() -> None:
    """MANIFEST.json style (indent + newline, HTML escaping off) matches Go's encoder."""
    assert GOLDEN is not None
    path = GOLDEN / "golden" / "public" / "global_cluster_id" / "expected" / "MANIFEST.json"
    raw = path.read_bytes()
    assert gojson.encoder_indent(json.loads(raw), escape_html=False) == raw


@given(st.text(alphabet=st.sampled_from('a<>&\u2028\u2029é"\\\n'), max_size=12))
def test_escaped_output_never_holds_the_raw_characters(text: str) -> None:
    """Whichever of the characters a string holds, alone or mixed with non-ASCII text, marshal
    escapes each one and encoder_line the line separators only; both still decode to it."""
    html_safe = gojson.marshal(text)
    line = gojson.encoder_line(text)
    assert json.loads(html_safe) == text == json.loads(line)
    for raw in (b"<", b">", b"&", "\u2028".encode(), "\u2029".encode()):
        assert raw not in html_safe
    for raw in ("\u2028".encode(), "\u2029".encode()):
        assert raw not in line
    assert line.count(b"<") == text.count("<") and line.count(b"&") == text.count("&")


@pytest.mark.parametrize(
    "render",
    [
        gojson.marshal,
        gojson.marshal_indent,
        gojson.encoder_line,
        lambda obj: gojson.encoder_indent(obj, escape_html=True),
    ],
)
@pytest.mark.parametrize("text", ["plain", "a<b"])  # output kept as is, or escaped
def test_a_rendered_document_costs_about_its_size(render: Any, text: str) -> None:
    """Documents are kept by the thousand (channels, sort buffers): each must hold memory for
    its own bytes, not for the 4 KiB buffer the JSON library wrote it into."""
    import tracemalloc

    tracemalloc.start()
    try:
        docs = [render({"id": i, "text": text}) for i in range(1000)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(len(d) for d in docs) < 50_000
    assert held < 200_000, f"{held:,} bytes held for 1000 small documents"
