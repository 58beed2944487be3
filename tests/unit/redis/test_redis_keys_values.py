"""Redis key and value layouts, and the TTL routing rule, as pure functions."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import raises_code

from elastickv_async._adapters.redis import SPEC, keys, values
from elastickv_async._adapters.redis.assemble import ttl_owner
from elastickv_async._adapters.redis.facts import (
    Kind,
    Row,
    fact_key,
    pack,
    split_fact_key,
    unpack,
    user_key_of,
)
from elastickv_async._core.errors import AdapterRecordError


@given(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), min_size=2, max_size=20))
def test_list_sequence_bytes_sort_like_the_numbers(seqs: list[int]) -> None:
    """The 8-byte list sequence form round-trips and sorts in numeric order."""
    encoded = [keys.encode_list_seq(s) for s in seqs]
    assert [keys.decode_list_seq(e) for e in encoded] == seqs
    assert sorted(encoded) == [keys.encode_list_seq(s) for s in sorted(seqs)]


def test_list_sequence_known_values() -> None:
    """Seq 0 is 80 00…00 and -1 is 7F FF…FF (the store's sign-flipped form)."""
    assert keys.encode_list_seq(0) == b"\x80" + bytes(7)
    assert keys.encode_list_seq(-1) == b"\x7f" + b"\xff" * 7


@given(st.lists(st.floats(allow_nan=False), min_size=2, max_size=20))
def test_sortable_score_orders_like_the_scores(scores: list[float]) -> None:
    """``!zs|scr|`` score bytes sort like the scores; -0 and +0 share one form."""

    def sortable(value: float) -> bytes:
        return keys.sortable_score(struct.unpack(">Q", struct.pack(">d", value))[0])

    for a in scores:
        for b in scores:
            if a < b:
                assert sortable(a) < sortable(b)
            elif a == b:
                assert sortable(a) == sortable(b)


def test_wide_key_parsing() -> None:
    """``<prefix><len u32><key><tail>`` splits at the declared length; short keys are errors."""
    key = keys.wide_key(b"!hs|fld|", b"user", b"field")
    assert key == b"!hs|fld|\x00\x00\x00\x04userfield"
    assert keys.parse_wide_key(key, b"!hs|fld|", "ErrRedisInvalidHashKey") == (
        b"user",
        b"field",
    )
    with raises_code(AdapterRecordError, "ErrRedisInvalidSetKey"):
        keys.parse_wide_key(b"!st|mem|\x00\x00\x00\x05abc", b"!st|mem|", "ErrRedisInvalidSetKey")
    with raises_code(AdapterRecordError, "ErrRedisInvalidSetKey"):
        keys.parse_meta_key(b"!st|meta|\x00\x00\x00\x01ab", b"!st|meta|", "ErrRedisInvalidSetKey")


def test_stream_and_delta_keys() -> None:
    """Stream entry keys end in a 16-byte ID; delta keys in a 12-byte commit/sequence suffix."""
    entry = keys.stream_entry_key(b"s", 1700000000000, 3)
    assert entry == b"!stream|entry|\x00\x00\x00\x01s" + struct.pack(">QQ", 1700000000000, 3)
    assert keys.parse_stream_entry_key(entry) == (b"s", 1700000000000, 3)
    delta = b"!zs|meta|d|\x00\x00\x00\x02zz" + bytes(12)
    assert keys.parse_delta_key(delta, b"!zs|meta|d|", "ErrRedisInvalidZSetKey") == b"zz"
    with raises_code(AdapterRecordError, "ErrRedisInvalidZSetKey"):
        keys.parse_delta_key(delta + b"x", b"!zs|meta|d|", "ErrRedisInvalidZSetKey")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("0-0", (0, 0)),
        ("007-1", (7, 1)),
        ("18446744073709551615-1", ((1 << 64) - 1, 1)),
        ("18446744073709551616-1", None),
        ("1-2-3", None),
        ("-1", None),
        ("1-", None),
        ("+1-2", None),
        ("1-٣", None),  # a non-ASCII digit
        ("12", None),
    ],
)
def test_stream_id_parsing(text: str, parsed: tuple[int, int] | None) -> None:
    """IDs are two unsigned 64-bit decimals around one dash, like Go's ParseUint."""
    assert values.parse_stream_id(text) == parsed


def test_simple_value_headers() -> None:
    """New-format headers are stripped; a TTL flag with 0 is still a TTL flag."""
    legacy = values.decode_string_value(b"\xff\x02raw")
    assert (legacy.body, legacy.new_format) == (b"\xff\x02raw", False)
    zero = values.decode_string_value(b"\xff\x01\x01" + bytes(8) + b"v")
    assert (zero.body, zero.new_format, zero.ttl_flag, zero.ttl_ms) == (b"v", True, True, 0)
    hll = values.decode_hll_value(b"\xff\x02\x00sk")
    assert (hll.body, hll.new_format, hll.ttl_flag) == (b"sk", True, False)
    assert values.encode_string_value(b"v", 0) == b"\xff\x01\x00v"
    assert values.encode_hll_value(b"sk", 0) == b"sk"


def test_metas() -> None:
    """Count, list and stream metas in every stored size."""
    assert values.decode_count_meta(struct.pack(">Q", 3), "ErrRedisInvalidSetMeta") == (
        values.CountMeta(3, False, 0)
    )
    assert values.decode_count_meta(
        struct.pack(">QQ", 3, 9), "ErrRedisInvalidSetMeta"
    ) == values.CountMeta(3, True, 9)
    assert values.decode_list_meta(struct.pack(">qqQ", -2, 1, 3)) == values.ListMeta(3, False, 0)
    assert values.decode_list_meta(struct.pack(">qqQQ", 0, 3, 3, 8)) == values.ListMeta(3, True, 8)
    trimmed = struct.pack(">QQQQQQ", 4, 10, 2, 77, 5, 1)
    assert values.decode_stream_meta(trimmed) == values.StreamMeta(4, 10, 2, True, 77)
    assert values.encode_stream_meta(4, 10, 2, None) == struct.pack(">QQQ", 4, 10, 2)
    assert values.encode_list_meta(2, 0) == struct.pack(">qqQ", 0, 2, 2)
    assert values.decode_list_delta(struct.pack(">qq", 1, -3)) == -3
    assert values.decode_count_delta(struct.pack(">q", -4), "ErrRedisInvalidSetMeta") == -4


def test_decoded_values_and_metas_are_not_tracked_by_the_garbage_collector() -> None:
    """A worker call decodes one value per string and one meta per collection: holding only
    bytes and numbers, they stay out of the collector's generations, which every collection
    of a big batch would otherwise walk."""
    import gc

    decoded = [
        values.decode_string_value(b"\xff\x01\x01" + struct.pack(">Q", 7) + b"v"),
        values.decode_hll_value(b"sketch"),
        values.decode_count_meta(struct.pack(">QQ", 3, 9), "ErrRedisInvalidSetMeta"),
        values.decode_list_meta(struct.pack(">qqQ", -2, 1, 3)),
        values.decode_stream_meta(struct.pack(">QQQ", 4, 10, 2)),
    ]
    assert [gc.is_tracked(value) for value in decoded] == [False] * len(decoded)


def test_scores() -> None:
    """Scores are 8-byte big-endian doubles; NaN and other sizes are refused."""
    assert values.decode_score(values.encode_score(-0.5)) == -0.5
    assert math.isinf(values.decode_score(struct.pack(">d", math.inf)))
    with raises_code(AdapterRecordError, "ErrRedisInvalidZSetMember"):
        values.decode_score(struct.pack(">d", math.nan))


def test_stream_entry_value_round_trip() -> None:
    """The entry proto carries the ID as written and the interleaved fields."""
    value = values.encode_stream_entry("1-2", ["a", "b"])
    assert value == b"\x00RXE\x01\x0a\x031-2\x12\x01a\x12\x01b"
    assert values.decode_stream_entry(value) == ("a", "b")


@given(st.lists(st.binary(max_size=300), max_size=40))
def test_packed_items_are_a_messagepack_array_of_the_bytes(items: list[bytes]) -> None:
    """A run of rows is packed as a MessagePack array of binaries (framed and parsed in C),
    and unpacks to the same byte strings, empty ones and long ones alike."""
    import msgspec

    packed = pack(items)
    assert msgspec.msgpack.decode(packed) == items
    assert unpack(packed) == items


def test_fact_keys_order_by_user_key_then_row() -> None:
    """Fact sort keys group a user key's facts and order keys bytewise, NUL bytes included."""
    keys_in_order = [b"", b"a", b"a\x00", b"a\x00\x01", b"a\x01", b"b"]
    facts = [fact_key(k, Row.TTL, 1) for k in keys_in_order]
    assert sorted(facts) == facts
    assert fact_key(b"a", Row.HASH_FIELD, 9) < fact_key(b"a", Row.TTL, 1)
    ordered, row, arrival = split_fact_key(fact_key(b"x\x00y", Row.STRING, 42))
    assert (user_key_of(ordered), row, arrival) == (b"x\x00y", Row.STRING, 42)


@pytest.mark.parametrize(
    ("rows", "owner"),
    [
        ({Row.TTL}, None),
        ({Row.TTL, Row.HASH_FIELD, Row.HASH_META}, Kind.HASH),
        ({Row.TTL, Row.HASH_DELTA}, None),  # deltas alone do not make a key
        ({Row.TTL, Row.HASH_META, Row.LIST_ITEM}, Kind.LIST),
        ({Row.TTL, Row.STRING, Row.HLL}, Kind.STRING),
        ({Row.TTL, Row.SET_MEMBER, Row.ZSET_MEMBER}, Kind.SET),
        ({Row.TTL, Row.ZSET_LEGACY, Row.STREAM_META}, Kind.ZSET),
        ({Row.TTL, Row.SET_LEGACY, Row.STREAM_META}, Kind.SET),
        ({Row.TTL, Row.STREAM_ENTRY}, Kind.STREAM),
    ],
)
def test_ttl_owner(rows: set[Row], owner: Kind | None) -> None:
    """Last type registered before the TTL range, else the first created after it."""
    assert ttl_owner(rows) == owner


def test_every_live_redis_prefix_is_routed_or_internal() -> None:
    """Each live Redis-side prefix has a home; anything else under ``!redis|`` stays unknown
    (the pipeline warns about it) instead of being swallowed by a broad prefix."""
    routed, internal = set(SPEC.routed_prefixes), set(SPEC.internal_prefixes)
    assert not routed & internal
    live = {
        b"!redis|str|", b"!redis|hll|", b"!redis|ttl|", b"!redis|hash|", b"!redis|set|",
        b"!redis|zset|", b"!redis|stream|", b"!redis|route|", b"!redis|txn-wide-hash|",
        b"!redis|txn-wide-set|", b"!redis|txn-wide-list|", b"!redis|txn-wide-zset|",
        b"!redis|read-fence-route-changed", b"!hs|meta|", b"!hs|fld|", b"!hs|meta|d|",
        b"!lst|meta|", b"!lst|itm|", b"!lst|meta|d|", b"!lst|claim|", b"!st|meta|",
        b"!st|mem|", b"!st|meta|d|", b"!zs|meta|", b"!zs|mem|", b"!zs|scr|", b"!zs|meta|d|",
        b"!stream|meta|", b"!stream|entry|",
    }  # fmt: skip
    assert routed | internal == live
    assert not any(b"!redis|later|x".startswith(p) for p in routed | internal)
