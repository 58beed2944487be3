"""S3 value shapes: live records, sidecar and bucket JSON bytes, HLC times."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastickv_async._adapters.s3 import values
from elastickv_async._adapters.s3.values import (
    _PUBLIC_MANIFEST,
    DeclaredPart,
    LiveBucketMeta,
    _plain_struct,
    bucket_json,
    format_hlc,
    live_manifest_json,
    parse_hlc_from_rfc3339,
    parse_live_bucket_meta,
    parse_live_manifest,
    parse_public_manifest,
)
from elastickv_async._core.gojson_read import GoJSONError, decode_struct, parse_tree

# Expected bytes below are copied from the golden corpus (public/s3_basic), i.e. written by
# the Go reference from the manifest values given here.
_UNICODE_MANIFEST = (
    b'{"upload_id":"elastickv-restore","etag":"\\"2d711b09bd0db0ad240cc83b30dd8014\\"",'
    b'"size_bytes":6,"last_modified_hlc":116487880704000000,'
    b'"content_type":"text/plain; charset=utf-8","content_encoding":"","cache_control":"",'
    b'"content_disposition":"","user_metadata":{"x-amz-meta-author":"\xc3\xbc"},'
    b'"parts":[{"part_no":1,"etag":"x","size_bytes":6,"chunk_count":1,"chunk_sizes":[6],'
    b'"part_version":0,"chunk_ref_version":0,"offloaded":false}]}'
)
_UNICODE_SIDECAR = (
    b'{\n  "format_version": 1,\n  "etag": "\\"2d711b09bd0db0ad240cc83b30dd8014\\"",\n'
    b'  "size_bytes": 6,\n  "last_modified": "2026-04-29T12:00:00Z",\n'
    b'  "content_type": "text/plain; charset=utf-8",\n  "user_metadata": {\n'
    b'    "x-amz-meta-author": "\xc3\xbc"\n  }\n}'
)


def test_manifest_sidecar_matches_the_reference() -> None:
    manifest = parse_live_manifest(_UNICODE_MANIFEST)
    assert manifest.sidecar == _UNICODE_SIDECAR
    assert manifest.upload_id == b"elastickv-restore"
    assert manifest.parts == {(1, 0, False): DeclaredPart(1, (6,))}


def test_bucket_json_omits_empty_fields() -> None:
    meta = parse_live_bucket_meta(
        b'{"bucket_name":"photos","generation":1,"created_at_hlc":0,"owner":"alice",'
        b'"region":"us-east-1","acl":""}'
    )
    assert meta == LiveBucketMeta(1, "alice", "us-east-1", "")
    assert bucket_json(b"photos", meta) == (
        b'{\n  "format_version": 1,\n  "name": "photos",\n  "owner": "alice",\n'
        b'  "region": "us-east-1"\n}'
    )


def test_offloaded_parts_are_keyed_by_chunk_ref_version() -> None:
    manifest = parse_live_manifest(
        b'{"upload_id":"u","parts":[{"part_no":1,"chunk_count":2,"chunk_sizes":[3,4],'
        b'"part_version":5,"chunk_ref_version":9,"offloaded":true}]}'
    )
    assert manifest.parts == {(1, 9, True): DeclaredPart(2, (3, 4))}
    with pytest.raises(ValueError, match="declares 2 chunks"):
        parse_live_manifest(
            b'{"parts":[{"part_no":1,"chunk_count":2,"chunk_sizes":[3],"offloaded":true}]}'
        )


@pytest.mark.parametrize(
    ("hlc", "text"),
    [
        (0, ""),
        (1777464000000 << 16, "2026-04-29T12:00:00Z"),
        ((1777464000120 << 16) | 0xFFFF, "2026-04-29T12:00:00.12Z"),  # logical bits dropped
        (1 << 16, "1970-01-01T00:00:00.001Z"),
        (253402300800000 << 16, "10000-01-01T00:00:00Z"),  # Go prints 5-digit years
    ],
)
def test_format_hlc(hlc: int, text: str) -> None:
    assert format_hlc(hlc) == text


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-04-29T12:00:00Z", 1777464000000),
        ("2026-04-29T12:00:00.12Z", 1777464000120),
        ("2026-04-29T12:00:00.1299999999Z", 1777464000129),  # digits past ns ignored
        ("2026-04-29T21:00:00+09:00", 1777464000000),
        ("2026-04-29T12:00:00,5Z", 1777464000500),
        ("2026-04-29T2:00:00Z", 1777428000000),  # one-digit hour (Go's general parser)
        ("", 0),
        ("2026-02-30T00:00:00Z", 0),
        ("1969-12-31T23:59:59Z", 0),  # negative milliseconds restore as 0
        ("2026-04-29 12:00:00Z", 0),
    ],
)
def test_parse_hlc_from_rfc3339(text: str, ms: int) -> None:
    assert parse_hlc_from_rfc3339(text) == ms << 16


def test_live_manifest_for_empty_and_chunked_bodies() -> None:
    sidecar = {
        "etag": "e",
        "size_bytes": 0,
        "last_modified": "",
        "content_type": "a<b",
        "content_encoding": "",
        "cache_control": "",
        "content_disposition": "",
        "user_metadata": None,
    }
    assert live_manifest_json(sidecar, []) == (
        b'{"upload_id":"elastickv-restore","etag":"e","size_bytes":0,"last_modified_hlc":0,'
        b'"content_type":"a\\u003cb","content_encoding":"","cache_control":"",'
        b'"content_disposition":"","user_metadata":null,"parts":null}'
    )
    sidecar["user_metadata"] = {"b": "2", "a": "1"}
    assert b'"user_metadata":{"a":"1","b":"2"},"parts":[{"part_no":1,"etag":"e"' in (
        live_manifest_json(sidecar, [1 << 20, 5])
    )


# --- sidecars: the plain fast path against Go's rules ---------------------------------------

_SIDECAR_KEYS = [f.name for f in _PUBLIC_MANIFEST]
_NOT_STRINGS = ("format_version", "size_bytes", "user_metadata")
_KEYS = st.one_of(
    st.sampled_from(_SIDECAR_KEYS),
    st.sampled_from(["ETag", "SIZE_BYTES", "User_Metadata", "size_bytes ", "other"]),
    st.text(max_size=6),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
_VALUES = st.one_of(
    _SCALARS,
    st.dictionaries(st.text(max_size=4), _SCALARS, max_size=3),
    st.lists(_SCALARS, max_size=2),
)
#: Literal fragments JSON writers do not produce but Go reads its own way.
_ODD_VALUES = st.sampled_from(
    [b"-0", b"-0.0", b"1e2", b"1.0", b'"\\ud800"', b'"\\u00e9\\"q"', b'"\xff"', b"NaN", b"[]"]
)


#: Members of the right type for their field, mostly (so many documents take the fast path).
_TYPED = st.one_of(
    st.tuples(st.sampled_from([n for n in _SIDECAR_KEYS if n not in _NOT_STRINGS]), st.text()),
    st.tuples(
        st.sampled_from(["format_version", "size_bytes"]),
        st.integers(min_value=-(1 << 64), max_value=1 << 64),
    ),
    st.tuples(st.just("user_metadata"), st.dictionaries(st.text(max_size=5), st.text(max_size=5))),
)


def _member(key: str, value: Any, ascii_only: bool) -> bytes:
    return (json.dumps(key, ensure_ascii=ascii_only) + ":").encode() + (
        value if isinstance(value, bytes) else json.dumps(value, ensure_ascii=ascii_only).encode()
    )


@given(
    st.lists(st.one_of(_TYPED, st.tuples(_KEYS, st.one_of(_VALUES, _ODD_VALUES))), max_size=7),
    st.booleans(),
    st.sampled_from([b"", b" ", b"\n]", b"}", b"x", b"{}"]),
)
def test_the_plain_sidecar_path_agrees_with_go_rules(
    members: list[tuple[str, Any]], ascii_only: bool, tail: bytes
) -> None:
    """Whenever the fast path decodes a sidecar, Go's rules decode it to the same struct;
    when Go's rules refuse one, the fast path refuses it too."""
    raw = b"{" + b",".join(_member(k, v, ascii_only) for k, v in members) + b"}" + tail
    plain = _plain_struct(raw, _PUBLIC_MANIFEST)
    try:
        exact = decode_struct(parse_tree(raw, more=True), _PUBLIC_MANIFEST)
    except GoJSONError:
        assert plain is None
        return
    assert plain is None or plain == exact
    assert parse_public_manifest(raw) == exact


def test_the_plain_sidecar_path_takes_well_formed_sidecars() -> None:
    """The decoder's own sidecars (quoted ETags, metadata, escapes) take the fast path;
    documents only Go's rules read right do not."""
    expected = decode_struct(parse_tree(_UNICODE_SIDECAR, more=True), _PUBLIC_MANIFEST)
    assert _plain_struct(_UNICODE_SIDECAR, _PUBLIC_MANIFEST) == expected
    assert expected["etag"] == '"2d711b09bd0db0ad240cc83b30dd8014"'
    for odd in [
        b'{"ETag": "x"}',  # Go matches keys case-insensitively
        b'{"user_metadata": {"a": "1"}, "user_metadata": {"b": "2"}}',  # Go merges the maps
        b'{"format_version": -0}',  # Go refuses -0 for an unsigned field
        b'{"etag": null}',
        b'{"etag": "\\ud800"}',  # Go reads a lone surrogate as U+FFFD
        b'{"size_bytes": 1} ]',  # Go's decoder tolerates a trailing ] here
    ]:
        assert _plain_struct(odd, _PUBLIC_MANIFEST) is None, odd


# --- the msgspec path of live manifests, held to the Go-rules reader -------------------------

_M_TEXT = st.text(st.characters(codec="utf-8"), max_size=6)
_M_INT = st.one_of(
    st.integers(-(1 << 64), (1 << 64) + 1), st.sampled_from([0, 1, -1, (1 << 63) - 1, 1 << 63])
)
_M_ANY = st.one_of(_M_TEXT, _M_INT, st.booleans(), st.none(), st.floats(allow_nan=False))
_M_INTS = ("part_no", "size_bytes", "chunk_count", "part_version", "chunk_ref_version")
_M_PART_NAMES = (*_M_INTS, "etag", "chunk_sizes", "offloaded", "Part_No", "extra")
_M_NAMES = ("upload_id", "etag", "size_bytes", "last_modified_hlc", "content_type",
            "content_encoding", "cache_control", "content_disposition", "user_metadata",
            "parts", "Etag", "unknown")  # fmt: skip


def _m_value(name: str) -> st.SearchStrategy[str]:
    """JSON text for member ``name``: mostly of its type, sometimes anything."""
    if name == "user_metadata":
        typed: st.SearchStrategy[Any] = st.dictionaries(_M_TEXT, _M_TEXT | st.none(), max_size=3)
    elif name == "chunk_sizes":
        typed = st.lists(_M_INT, max_size=3)
    elif name == "offloaded":
        typed = st.booleans()
    elif name in (*_M_INTS, "last_modified_hlc"):
        typed = _M_INT
    elif name == "parts":
        return st.lists(_m_object(_M_PART_NAMES), max_size=3).map(lambda p: f"[{','.join(p)}]")
    else:
        typed = _M_TEXT
    return (typed | _M_ANY).map(json.dumps)


def _m_object(names: tuple[str, ...]) -> st.SearchStrategy[str]:
    """A JSON object of members drawn from ``names`` (repeats allowed)."""
    member = st.sampled_from(names).flatmap(
        lambda n: _m_value(n).map(lambda text: f"{json.dumps(n)}:{text}")
    )
    return st.lists(member, max_size=8).map(lambda m: "{" + ",".join(m) + "}")


@settings(max_examples=1500, deadline=None)
@given(_m_object(_M_NAMES), st.booleans())
def test_the_plain_manifest_path_reads_what_the_go_rules_reader_reads(
    text: str, ascii_only: bool
) -> None:
    """Whenever the msgspec path takes a value, it reads it as the Go-rules reader does;
    everything it declines (repeats it cannot merge, nulls, floats, -0, other names) is
    left to that reader."""
    value = text.encode("ascii", "backslashreplace") if ascii_only else text.encode()
    try:
        general: Any = decode_struct(parse_tree(value), values._LIVE_MANIFEST)
    except GoJSONError:
        general = GoJSONError
    fast = values._plain_manifest_doc(value)
    if fast is not None:
        assert fast == general


def test_a_plain_manifest_is_read_by_msgspec_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest fast path reads the JSON in C (msgspec), not with the stdlib reader and
    its Python hooks; repeated keys are still declined."""

    class NoStdlib:
        def decode(self, text: str) -> Any:
            raise AssertionError("the stdlib JSON reader read a manifest")

    monkeypatch.setattr(values, "_PLAIN_JSON", NoStdlib())
    plain = b'{"upload_id": "u", "etag": "e", "size_bytes": 5, "parts": [{"part_no": 1}]}'
    assert values._plain_manifest_doc(plain) == decode_struct(
        parse_tree(plain), values._LIVE_MANIFEST
    )
    assert values._plain_manifest_doc(b'{"etag": "a", "etag": "b"}') is None
    assert values._plain_manifest_doc(b'{"etag": "a:b"}') is None  # a colon in a string


def test_plain_manifests_take_the_msgspec_path_and_odd_ones_do_not() -> None:
    plain = (
        b'{"upload_id": "u", "etag": "e", "size_bytes": 5, "user_metadata": {"a": "b"}, '
        b'"parts": [{"part_no": 1, "chunk_count": 1, "chunk_sizes": [5]}]}'
    )
    assert values._plain_manifest_doc(plain) == decode_struct(
        parse_tree(plain), values._LIVE_MANIFEST
    )
    odd = [
        b'{"user_metadata": {"a": "1"}, "user_metadata": {"b": "2"}}',  # Go merges
        b'{"last_modified_hlc": -0}',  # Go refuses any sign for an unsigned field
        b'{"etag": null}',
        b'{"size_bytes": 1.0}',
        b'{"Etag": "x"}',
        b'{"\\u0065tag": "x"}',
        b'{"upload_id": "\\ud800"}',
        b"null",
        b'{"last_modified_hlc": 18446744073709551616}',  # past uint64: Go's error
        b'{"parts": [{"chunk_sizes": [18446744073709551616]}]}',
    ]
    assert [values._plain_manifest_doc(v) for v in odd] == [None] * len(odd)
    merged = parse_live_manifest(odd[0]).sidecar
    assert json.loads(merged)["user_metadata"] == {"a": "1", "b": "2"}
