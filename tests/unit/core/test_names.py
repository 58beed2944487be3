"""Filename segment encoding (REFERENCE_NOTES §4) and its inverse."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import raises_code, shared_dir

from elastickv_async._core.dump.names import (
    SEGMENT_MAX_BYTES,
    b64url_decode,
    b64url_encode,
    b64url_segment,
    decode_segment,
    encode_binary_segment,
    encode_segment,
    is_b64url,
    is_sha_fallback,
)
from elastickv_async._core.errors import DumpTreeError

SHARED = shared_dir()


def test_unreserved_bytes_pass_through_and_others_are_uppercase_escaped() -> None:
    """[A-Za-z0-9._-] stay; everything else, '~' included, becomes %HH uppercase."""
    assert encode_segment(b"AZaz09._-") == "AZaz09._-"
    assert encode_segment(b"a b/~\xff") == "a%20b%2F%7E%FF"


def test_sha_fallback_shape() -> None:
    """Over-long input falls back to hex(sha256)[:32] + '__' + first 64 bytes encoded."""
    raw = b"k" * 300
    expected = hashlib.sha256(raw).hexdigest()[:32] + "__" + "k" * 64
    assert encode_segment(raw) == expected
    assert is_sha_fallback(expected)


def test_expansion_past_the_limit_takes_fallback() -> None:
    """100 escaped bytes expand to 300 chars (> 240), so the fallback is used."""
    assert is_sha_fallback(encode_segment(b"\x00" * 100))
    assert encode_segment(b"\x00" * 80) == "%00" * 80


def test_lookalike_names_are_promoted_to_fallback() -> None:
    """Raw names shaped like a SHA fallback or a b64. segment cannot pass through."""
    lookalike = b"0123456789abcdef0123456789ABCDEF__x"
    assert encode_segment(lookalike) != lookalike.decode()
    assert is_sha_fallback(encode_segment(b"b64.abc"))


def test_binary_segment() -> None:
    """B keys become b64.<base64url>; beyond 177 raw bytes they take the SHA fallback."""
    assert encode_binary_segment(b"\x00\x01\xfe\xff") == "b64.AAH-_w"
    assert len(encode_binary_segment(b"x" * 177)) <= SEGMENT_MAX_BYTES
    assert is_sha_fallback(encode_binary_segment(b"x" * 178))


@given(
    st.text(alphabet="aZ09._-", max_size=250),
    st.binary(max_size=90),
)
def test_escaped_bytes_count_against_the_limit(plain: str, other: bytes) -> None:
    """Passed-through and escaped bytes (three characters each) share the 240 limit."""
    raw = plain.encode() + other
    expected = plain + "".join(
        chr(b) if chr(b) in "._-" or (chr(b).isascii() and chr(b).isalnum()) else f"%{b:02X}"
        for b in other
    )
    name = encode_segment(raw)
    if len(expected) > SEGMENT_MAX_BYTES or is_sha_fallback(expected) or expected[:4] == "b64.":
        assert is_sha_fallback(name)
    else:
        assert name == expected


@given(st.binary(max_size=120))
def test_round_trip_when_not_fallback(raw: bytes) -> None:
    """decode_segment inverts encode_segment for every non-fallback name."""
    name = encode_segment(raw)
    if is_sha_fallback(name):
        with raises_code(DumpTreeError, "ErrShaFallbackNeedsKeymap"):
            decode_segment(name)
    else:
        assert decode_segment(name) == raw
        assert len(name) <= SEGMENT_MAX_BYTES


@given(st.binary(max_size=177))
def test_binary_round_trip(raw: bytes) -> None:
    """b64. segments decode back to the same bytes."""
    assert decode_segment(encode_binary_segment(raw)) == raw
    assert b64url_decode(b64url_encode(raw)) == raw


@pytest.mark.parametrize("bad", ["%2", "%zz", "a b", "a/b", "b64.***"])
def test_decode_rejects_malformed(bad: str) -> None:
    """Truncated or non-hex escapes and raw reserved characters are errors."""
    with raises_code(DumpTreeError, "ErrInvalidEncodedSegment"):
        decode_segment(bad)


@pytest.mark.parametrize("bad", ["a+b/", "ab==", "a", "ab c"])
def test_b64url_decode_rejects_other_alphabets(bad: str) -> None:
    """Only the URL alphabet without padding is accepted, as with Go's RawURLEncoding."""
    with pytest.raises(ValueError):
        b64url_decode(bad)


def test_decode_accepts_lowercase_hex() -> None:
    """Lowercase escapes are accepted on input, as the reference does."""
    assert decode_segment("%2f%7e") == b"/~"


@pytest.mark.skipif(SHARED is None, reason="../shared is absent")
def test_golden_item_names_decode_to_their_keys() -> None:
    """Every percent-encoded golden DynamoDB item name re-encodes to itself."""
    assert SHARED is not None
    names = [
        p.stem
        for p in (SHARED / "golden" / "public" / "ddb_hash_only" / "expected").rglob("items/*.json")
    ]
    assert names
    for name in names:
        assert encode_segment(decode_segment(name)) == name


@given(st.binary(max_size=64))
def test_b64url_segment_is_raw_url_encoding(raw: bytes) -> None:
    """Unpadded base64url (checked against the stdlib), the same text as b64url_encode."""
    expected = base64.urlsafe_b64encode(raw).rstrip(b"=")
    assert b64url_segment(raw) == expected
    assert b64url_encode(raw) == expected.decode("ascii")
    assert b64url_decode(expected) == raw


def test_is_b64url_accepts_exactly_the_url_alphabet() -> None:
    """Every byte value alone and among alphabet bytes: only A-Z, a-z, 0-9, '-' and '_'
    pass (no padding, no '+' or '/'); the empty string does."""
    alphabet = re.compile(rb"[A-Za-z0-9_-]*")
    assert is_b64url(b"")
    for value in range(256):
        for data in (bytes([value]), b"ab" + bytes([value]) + b"Z9"):
            assert is_b64url(data) == (alphabet.fullmatch(data) is not None), data
