"""The Redis decoder, type by type and TTL path by TTL path (REFERENCE_NOTES §3.3)."""

from __future__ import annotations

import base64
import hashlib
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from redis_support import DB, U32, U64, decode_rows, list_seq, snapshot_order, wide
from support import REPO_ROOT, raises_code

from elastickv_async._adapters.redis import decode as decode_module
from elastickv_async._adapters.redis import rows as rows_module
from elastickv_async._adapters.redis.assemble import SUB_BLOB, SUB_TTL, arrival_tag, assemble_key
from elastickv_async._core.dump.writer import DumpWriter
from elastickv_async._core.errors import AdapterRecordError

pytestmark = pytest.mark.anyio

SAMPLE = REPO_ROOT / "examples" / "sample.fsm"

TTL = 1_900_000_000_000
TTL_BYTES = U64(TTL)


def new_str(body: bytes, ttl: int | None = None) -> bytes:
    """A new-format string value: FF 01 flags [ttl] body."""
    if ttl is None:
        return b"\xff\x01\x00" + body
    return b"\xff\x01\x01" + U64(ttl) + body


def proto_str(field: int, text: bytes) -> bytes:
    """One length-delimited protobuf field (short payloads only)."""
    return bytes((field << 3 | 2, len(text))) + text


def collection(kind: str, elements: str, expire: str = "null") -> str:
    """The reference's MarshalIndent text of a collection file (``elements`` pre-indented)."""
    body = f"[\n{elements}\n  ]" if elements else "[]"
    return f'{{\n  "format_version": 1,\n  "{kind}": {body},\n  "expire_at_ms": {expire}\n}}'


def sha_name(key: bytes) -> str:
    """The SHA-fallback name of a long key, computed independently (REFERENCE_NOTES §4.2)."""
    return hashlib.sha256(key).hexdigest()[:32] + "__" + key[:64].decode()


# --- strings and HLLs -------------------------------------------------------------------------


async def test_string_formats_and_ttl_paths(tmp_path: Path) -> None:
    """New-format values own their TTL; legacy values take it from !redis|ttl|."""
    out = await decode_rows(
        tmp_path,
        [
            (b"!redis|str|plain", new_str(b"v1")),
            (b"!redis|str|inline", new_str(b"v2", TTL)),
            (b"!redis|str|legacy", b"raw legacy"),
            (b"!redis|str|legacy-ttl", b"raw with ttl"),
            (b"!redis|ttl|legacy-ttl", U64(1_800_000_000_000)),
            # A stale scan-index row for a new-format key is ignored.
            (b"!redis|ttl|plain", U64(123)),
        ],
    )
    assert out.files[DB + "strings/plain.bin"] == b"v1"
    assert out.files[DB + "strings/inline.bin"] == b"v2"
    assert out.files[DB + "strings/legacy.bin"] == b"raw legacy"
    assert out.files[DB + "strings/legacy-ttl.bin"] == b"raw with ttl"
    assert out.text("strings_ttl.jsonl") == (
        '{"key":"inline","expire_at_ms":1900000000000}\n'
        '{"key":"legacy-ttl","expire_at_ms":1800000000000}\n'
    )
    assert out.warnings("redis_orphan_ttl") == []
    assert out.scope == {"databases": [0]}


async def test_hll_formats(tmp_path: Path) -> None:
    """Legacy sketches keep their raw bytes; new-format ones lose the envelope."""
    out = await decode_rows(
        tmp_path,
        [
            (b"!redis|hll|legacy", b"\x00RS\x01sketch"),
            (b"!redis|ttl|legacy", U64(1_800_000_000_001)),
            (b"!redis|hll|new", b"\xff\x02\x01" + U64(1_800_000_000_000) + b"new sketch"),
            (b"!redis|hll|plain", b"\xff\x02\x00plain"),
            (b"!redis|ttl|plain", U64(5)),
        ],
    )
    assert out.files[DB + "hll/legacy.bin"] == b"\x00RS\x01sketch"
    assert out.files[DB + "hll/new.bin"] == b"new sketch"
    assert out.files[DB + "hll/plain.bin"] == b"plain"
    # Inline lines are written as the rows stream by, index lines in the TTL range after them.
    assert out.text("hll_ttl.jsonl") == (
        '{"key":"new","expire_at_ms":1800000000000}\n'
        '{"key":"legacy","expire_at_ms":1800000000001}\n'
    )


@pytest.mark.parametrize(
    ("prefix", "value", "code"),
    [
        (b"!redis|str|k", b"\xff\x01", "ErrRedisInvalidStringValue"),
        (b"!redis|str|k", b"\xff\x01\x01\x00\x00", "ErrRedisInvalidStringValue"),
        (b"!redis|hll|k", b"\xff\x02", "ErrRedisInvalidHLLValue"),
        (b"!redis|ttl|k", b"\x00" * 7, "ErrRedisInvalidTTLValue"),
    ],
)
async def test_simple_value_errors(tmp_path: Path, prefix: bytes, value: bytes, code: str) -> None:
    """Truncated headers and TTL values are typed record errors."""
    with raises_code(AdapterRecordError, code) as caught:
        await decode_rows(tmp_path, [(prefix, value)])
    assert isinstance(caught.value, AdapterRecordError)


async def test_ttl_clamped_to_max_int64(tmp_path: Path) -> None:
    """TTLs above MaxInt64 are clamped like the reference (and the live server) does."""
    out = await decode_rows(tmp_path, [(b"!redis|str|k", b"\xff\x01\x01" + b"\xff" * 8 + b"v")])
    assert out.text("strings_ttl.jsonl") == '{"key":"k","expire_at_ms":9223372036854775807}\n'


async def test_orphan_ttl_warned(tmp_path: Path) -> None:
    """TTL rows whose key has no typed row are counted in one redis_orphan_ttl warning."""
    out = await decode_rows(
        tmp_path,
        [
            (b"!redis|str|alive", new_str(b"x")),
            (b"!redis|ttl|ghost1", U64(1)),
            (b"!redis|ttl|ghost2", U64(2)),
        ],
    )
    assert sorted(out.files) == [DB + "strings/alive.bin"]
    [warning] = out.warnings("redis_orphan_ttl")
    assert warning["count"] == 2


# --- keys that need a SHA fallback, binary keys -----------------------------------------------


async def test_long_and_binary_keys_keymap(tmp_path: Path) -> None:
    """>240-byte keys get SHA-fallback names and KEYMAP lines in the reference's order."""
    long_a = b"A" * 300
    long_h = b"H" * 250
    out = await decode_rows(
        tmp_path,
        [
            (b"!redis|str|" + long_a, new_str(b"long", TTL)),
            (b"!redis|str|b64.literal", new_str(b"looks binary")),
            (b"!redis|str|bin\x00\xff", new_str(b"\x00\x01")),
            (wide(b"!hs|fld|", long_h, b"f"), b"v"),
            (wide(b"!hs|meta|", long_h), U64(1)),
        ],
    )
    name_a, name_h = sha_name(long_a), sha_name(long_h)
    name_b64 = hashlib.sha256(b"b64.literal").hexdigest()[:32] + "__b64.literal"
    assert out.files[DB + f"strings/{name_a}.bin"] == b"long"
    assert out.files[DB + f"strings/{name_b64}.bin"] == b"looks binary"
    assert out.files[DB + "strings/bin%00%FF.bin"] == b"\x00\x01"
    assert DB + f"hashes/{name_h}.json" in out.files
    orig_a = base64.urlsafe_b64encode(long_a).rstrip(b"=").decode()
    orig_h = base64.urlsafe_b64encode(long_h).rstrip(b"=").decode()
    assert out.text("KEYMAP.jsonl") == (
        f'{{"encoded":"{name_a}","original":"{orig_a}","kind":"sha-fallback"}}\n'
        f'{{"encoded":"{name_a}","original":"{orig_a}","kind":"sha-fallback"}}\n'
        f'{{"encoded":"{name_b64}","original":"YjY0LmxpdGVyYWw","kind":"sha-fallback"}}\n'
        f'{{"encoded":"{name_h}","original":"{orig_h}","kind":"sha-fallback"}}\n'
    )
    assert out.text("strings_ttl.jsonl") == f'{{"key":"{name_a}","expire_at_ms":{TTL}}}\n'


async def test_no_keymap_when_all_names_reversible(tmp_path: Path) -> None:
    """KEYMAP.jsonl only exists when a name needed the SHA fallback."""
    out = await decode_rows(tmp_path, [(b"!redis|str|k", new_str(b"v"))])
    assert DB + "KEYMAP.jsonl" not in out.files


async def test_strings_with_reversible_names_build_no_keymap_sort_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A string's KEYMAP sort tags are built only when its name is a SHA fallback (the
    one string here, whose blob and inline TTL each get a KEYMAP line)."""
    tags: list[int] = []

    def counted(arrival: int, sub: int = SUB_BLOB) -> bytes:
        tags.append(sub)
        return arrival_tag(arrival, sub)

    monkeypatch.setattr(rows_module, "arrival_tag", counted)
    rows = [(b"!redis|str|s%03d" % i, new_str(b"v", TTL)) for i in range(40)]
    rows += [(b"!redis|str|" + b"L" * 250, new_str(b"long", TTL))]
    out = await decode_rows(tmp_path, rows)
    assert tags == [SUB_BLOB, SUB_TTL]
    assert len(out.text("KEYMAP.jsonl").splitlines()) == 2


# --- hashes -----------------------------------------------------------------------------------


async def test_hash_fields_sorted_binary_and_inline_ttl(tmp_path: Path) -> None:
    """Fields come out sorted by name bytes, binary ones in base64url envelopes.

    ``b`` sorts after ``b\\xff\\x00`` in the snapshot (its timestamp suffix starts with FF FF),
    so the decoder must sort rather than trust row order.
    """
    key = b"h"
    rows = snapshot_order(
        [
            (wide(b"!hs|fld|", key, b"b"), b"2"),
            (wide(b"!hs|fld|", key, b"b\xff\x00"), b"\xfe"),
            (wide(b"!hs|fld|", key, b"a<&>"), b""),
            (wide(b"!hs|meta|", key), U64(3) + TTL_BYTES),
            (b"!redis|ttl|h", U64(1)),  # the inline TTL wins over the scan index
        ]
    )
    assert [v for _k, v in rows[:3]] == [b"", b"\xfe", b"2"]
    out = await decode_rows(tmp_path, rows, ordered=False)
    elements = (
        '    {\n      "name": "a\\u003c\\u0026\\u003e",\n      "value": ""\n    },\n'
        '    {\n      "name": "b",\n      "value": "2"\n    },\n'
        '    {\n      "name": {\n        "base64": "Yv8A"\n      },\n'
        '      "value": {\n        "base64": "_g"\n      }\n    }'
    )
    assert out.text("hashes/h.json") == collection("fields", elements, str(TTL))
    assert out.warnings("redis_hash_length_mismatch") == []


async def test_hash_ttl_from_scan_index_and_empty_hash(tmp_path: Path) -> None:
    """An 8-byte meta takes the !redis|ttl| row; a meta without fields still emits a file."""
    out = await decode_rows(
        tmp_path,
        [
            (wide(b"!hs|meta|", b"empty"), U64(0)),
            (wide(b"!hs|fld|", b"t"), b"v"),
            (wide(b"!hs|meta|", b"t"), U64(1)),
            (b"!redis|ttl|t", U64(42)),
            (wide(b"!hs|meta|", b"zero-inline"), U64(0) + U64(0)),
        ],
    )
    assert out.text("hashes/empty.json") == collection("fields", "")
    elements = '    {\n      "name": "",\n      "value": "v"\n    }'
    assert out.text("hashes/t.json") == collection("fields", elements, "42")
    # A 16-byte meta with expireAt 0 owns the TTL and means "no TTL".
    assert out.text("hashes/zero-inline.json") == collection("fields", "")


async def test_hash_length_mismatch_and_deltas(tmp_path: Path) -> None:
    """The declared length is the meta's Len plus every delta; a difference is warned."""
    delta = U64(7) + U32(0)
    out = await decode_rows(
        tmp_path,
        [
            (wide(b"!hs|fld|", b"bad", b"x"), b"1"),
            (wide(b"!hs|meta|", b"bad"), U64(5)),
            (wide(b"!hs|fld|", b"good", b"x"), b"1"),
            (wide(b"!hs|fld|", b"good", b"y"), b"1"),
            (wide(b"!hs|meta|", b"good"), U64(1)),
            (wide(b"!hs|meta|d|", b"good", delta), U64(2)),
            (wide(b"!hs|meta|d|", b"good", U64(8) + U32(0)), struct.pack(">q", -1)),
        ],
    )
    assert out.warnings("redis_hash_length_mismatch") == [
        {
            "user_key_len": 3,
            "declared_len": 5,
            "observed_fields": 1,
            "hint": (
                "meta record's Len does not match the count of !hs|fld| keys for this user key"
            ),
        }
    ]
    assert DB + "hashes/good.json" in out.files


async def test_legacy_hash_blob(tmp_path: Path) -> None:
    """``!redis|hash|`` blobs decode into the same file; wide fields win over a blob."""
    entry_a = proto_str(1, b"f") + proto_str(2, b"v")
    blob = b"\x00RH\x01" + proto_str(1, entry_a)
    out = await decode_rows(
        tmp_path,
        [
            (b"!redis|hash|legacy", blob),
            (b"!redis|ttl|legacy", U64(77)),
            (b"!redis|hash|both", blob),
            (wide(b"!hs|fld|", b"both", b"wide"), b"w"),
            (b"!redis|hash|empty", b""),
        ],
    )
    legacy = '    {\n      "name": "f",\n      "value": "v"\n    }'
    assert out.text("hashes/legacy.json") == collection("fields", legacy, "77")
    both = '    {\n      "name": "wide",\n      "value": "w"\n    }'
    assert out.text("hashes/both.json") == collection("fields", both)
    assert out.text("hashes/empty.json") == collection("fields", "")


@pytest.mark.parametrize(
    ("rows", "code"),
    [
        ([(b"!hs|fld|\x00\x00", b"v")], "ErrRedisInvalidHashKey"),
        ([(b"!hs|fld|\x00\x00\x00\x09short", b"v")], "ErrRedisInvalidHashKey"),
        ([(wide(b"!hs|meta|", b"k", b"tail"), U64(1))], "ErrRedisInvalidHashKey"),
        ([(wide(b"!hs|meta|", b"k"), b"\x00" * 9)], "ErrRedisInvalidHashMeta"),
        ([(wide(b"!hs|meta|", b"k"), b"\x80" + b"\x00" * 7)], "ErrRedisInvalidHashMeta"),
        ([(wide(b"!hs|meta|d|", b"k", b"\x00" * 11), U64(1))], "ErrRedisInvalidHashKey"),
        ([(wide(b"!hs|meta|d|", b"k", b"\x00" * 12), b"\x00")], "ErrRedisInvalidHashMeta"),
        ([(b"!redis|hash|k", b"\x00RZ\x01")], "ErrRedisInvalidHashLegacyBlob"),
        (
            [(b"!redis|hash|k", b"\x00RH\x01\x0a\x05\x0a\x03\xff\xfe\xfd")],
            "ErrRedisInvalidHashLegacyBlob",
        ),
    ],
)
async def test_hash_errors(tmp_path: Path, rows: list[tuple[bytes, bytes]], code: str) -> None:
    """Malformed hash keys, metas, deltas and legacy blobs are typed errors."""
    with raises_code(AdapterRecordError, code):
        await decode_rows(tmp_path, rows)


# --- lists ------------------------------------------------------------------------------------


async def test_list_order_ttl_and_deltas(tmp_path: Path) -> None:
    """Items follow their sequence numbers (LPUSH makes them negative); deltas fix the length."""
    key = b"q"
    out = await decode_rows(
        tmp_path,
        [
            (b"!lst|itm|q" + list_seq(-2), b"first"),
            (b"!lst|itm|q" + list_seq(-1), b"\x00\x01"),
            (b"!lst|itm|q" + list_seq(0), b""),
            (b"!lst|itm|q" + list_seq(7), b"last"),
            (b"!lst|meta|q", U64(0) + U64(0) + U64(2) + U64(0)),  # 32 bytes, TTL 0 = none
            (wide(b"!lst|meta|d|", key, U64(9) + U32(1)), U64(0) + U64(2)),
            (b"!redis|ttl|q", U64(99)),  # ignored: the 32-byte meta owns the TTL
        ],
    )
    items = '    "first",\n    "\\u0000\\u0001",\n    "",\n    "last"'
    assert out.text("lists/q.json") == collection("items", items)
    assert out.warnings("redis_list_length_mismatch") == []


async def test_list_without_meta_and_index_ttl(tmp_path: Path) -> None:
    """A legacy 24-byte meta takes the scan index; items alone still make a list."""
    out = await decode_rows(
        tmp_path,
        [
            (b"!lst|itm|a" + list_seq(0), b"x"),
            (b"!lst|meta|a", U64(0) + U64(1) + U64(3)),
            (b"!redis|ttl|a", U64(1_700_000_000_000)),
            (b"!lst|itm|orphan" + list_seq(0), b"y"),
        ],
    )
    assert out.text("lists/a.json") == collection("items", '    "x"', "1700000000000")
    assert out.text("lists/orphan.json") == collection("items", '    "y"')
    [warning] = out.warnings("redis_list_length_mismatch")
    assert (warning["declared_len"], warning["observed_items"]) == (3, 1)


async def test_list_items_interleaved_with_a_longer_key(tmp_path: Path) -> None:
    """The items of a list whose name extends ``a`` past a sequence number sort between the
    items of ``a`` (after item 0 and its timestamp suffix); each list still comes out whole."""
    longer = b"a" + list_seq(0) + b"\xff" * 9
    rows = [(b"!lst|itm|a" + list_seq(i), b"a%d" % i) for i in range(3)]
    rows += [(b"!lst|itm|" + longer + list_seq(i), b"L%d" % i) for i in range(2)]
    ordered = snapshot_order(rows)
    assert [v for _k, v in ordered] == [b"a0", b"L0", b"L1", b"a1", b"a2"]
    out = await decode_rows(tmp_path, ordered, batch=1, ordered=False)
    assert out.text("lists/a.json") == collection("items", '    "a0",\n    "a1",\n    "a2"')
    name = "a%80" + "%00" * 7 + "%FF" * 9
    assert out.text(f"lists/{name}.json") == collection("items", '    "L0",\n    "L1"')


async def test_list_meta_of_a_key_starting_with_d_pipe(tmp_path: Path) -> None:
    """``!lst|meta|d|x`` with a list-meta-sized value is the meta of the list ``d|x``."""
    out = await decode_rows(
        tmp_path,
        [
            (b"!lst|itm|d|x" + list_seq(0), b"v"),
            (b"!lst|meta|d|x", U64(0) + U64(1) + U64(1) + U64(55)),
        ],
    )
    assert out.text("lists/d%7Cx.json") == collection("items", '    "v"', "55")


@pytest.mark.parametrize(
    ("rows", "code"),
    [
        ([(b"!lst|itm|short", b"v")], "ErrRedisInvalidListKey"),
        ([(b"!lst|meta|k", b"\x00" * 16)], "ErrRedisInvalidListMeta"),
        ([(b"!lst|meta|k", b"\x00" * 16 + b"\xff" * 8)], "ErrRedisInvalidListMeta"),
        ([(wide(b"!lst|meta|d|", b"k", b"\x00" * 12), b"\x00" * 8)], "ErrRedisInvalidListMeta"),
        ([(b"!lst|meta|d|\x00", U64(0) * 2)], "ErrRedisInvalidListKey"),
    ],
)
async def test_list_errors(tmp_path: Path, rows: list[tuple[bytes, bytes]], code: str) -> None:
    """Malformed list keys, metas and deltas are typed errors."""
    with raises_code(AdapterRecordError, code):
        await decode_rows(tmp_path, rows)


# --- sets -------------------------------------------------------------------------------------


async def test_set_members_sorted_with_ttl_parked_before_rows(tmp_path: Path) -> None:
    """``!redis|ttl|`` sorts before ``!st|``: the TTL waits for the set to claim it."""
    out = await decode_rows(
        tmp_path,
        [
            (b"!redis|ttl|s", U64(1_999_999_999_999)),
            (wide(b"!st|mem|", b"s"), b""),
            (wide(b"!st|mem|", b"s", b"\xff\x00"), b""),
            (wide(b"!st|mem|", b"s", b"red"), b""),
            (wide(b"!st|meta|", b"s"), U64(3)),
        ],
    )
    members = '    "",\n    "red",\n    {\n      "base64": "_wA"\n    }'
    assert out.text("sets/s.json") == collection("members", members, "1999999999999")
    assert out.warnings("redis_orphan_ttl") == []


async def test_set_inline_meta_and_legacy_blob(tmp_path: Path) -> None:
    """An inline meta TTL beats the claimed one; ``!redis|set|`` blobs decode and dedupe."""
    blob = b"\x00RS\x01" + proto_str(1, b"b") + proto_str(1, b"a") + proto_str(1, b"b")
    out = await decode_rows(
        tmp_path,
        [
            (b"!redis|set|legacy", blob),
            (b"!redis|ttl|legacy", U64(10)),
            (b"!redis|ttl|wide", U64(11)),
            (wide(b"!st|mem|", b"wide", b"m"), b""),
            (wide(b"!st|meta|", b"wide"), U64(2) + U64(12)),
        ],
    )
    assert out.text("sets/legacy.json") == collection("members", '    "a",\n    "b"', "10")
    assert out.text("sets/wide.json") == collection("members", '    "m"', "12")
    [warning] = out.warnings("redis_set_length_mismatch")
    assert (warning["declared_len"], warning["observed_members"]) == (2, 1)


# --- sorted sets ------------------------------------------------------------------------------


def score(value: float) -> bytes:
    """An 8-byte big-endian IEEE-754 score."""
    return struct.pack(">d", value)


async def test_zset_scores(tmp_path: Path) -> None:
    """Scores use Go's float formatting; infinities are the strings "+inf"/"-inf"."""
    rows = [
        (wide(b"!zs|mem|", b"z", b"big"), score(1e300)),
        (wide(b"!zs|mem|", b"z", b"inf"), score(float("inf"))),
        (wide(b"!zs|mem|", b"z", b"ninf"), score(float("-inf"))),
        (wide(b"!zs|mem|", b"z", b"tiny"), score(1.25e-7)),
        (wide(b"!zs|mem|", b"z", b"neg"), score(-3.0)),
        (wide(b"!zs|mem|", b"z", b"zero"), score(0.0)),
        (wide(b"!zs|meta|", b"z"), U64(6) + U64(1_888_888_888_888)),
    ]
    out = await decode_rows(tmp_path, rows)
    expected = [
        ("big", "1e+300"),
        ("inf", '"+inf"'),
        ("neg", "-3"),
        ("ninf", '"-inf"'),
        ("tiny", "1.25e-7"),
        ("zero", "0"),
    ]
    elements = ",\n".join(
        f'    {{\n      "member": "{m}",\n      "score": {s}\n    }}' for m, s in expected
    )
    assert out.text("zsets/z.json") == collection("members", elements, "1888888888888")


async def test_zset_legacy_blob_rules(tmp_path: Path) -> None:
    """Wide members replace a legacy blob; a meta alone keeps it; the blob claims the TTL."""
    entry = proto_str(1, b"old") + b"\x11" + score(2.5)[::-1]  # double is little-endian
    blob = b"\x00RZ\x01" + proto_str(1, entry)
    out = await decode_rows(
        tmp_path,
        [
            (b"!redis|ttl|kept", U64(21)),
            (b"!redis|zset|kept", blob),
            (wide(b"!zs|meta|", b"kept"), U64(1)),
            (b"!redis|zset|replaced", blob),
            (wide(b"!zs|mem|", b"replaced", b"new"), score(1.0)),
        ],
    )
    old = '    {\n      "member": "old",\n      "score": 2.5\n    }'
    assert out.text("zsets/kept.json") == collection("members", old, "21")
    new = '    {\n      "member": "new",\n      "score": 1\n    }'
    assert out.text("zsets/replaced.json") == collection("members", new)


@pytest.mark.parametrize(
    ("rows", "code"),
    [
        ([(wide(b"!zs|mem|", b"z", b"m"), b"\x00" * 7)], "ErrRedisInvalidZSetMember"),
        ([(wide(b"!zs|mem|", b"z", b"m"), score(float("nan")))], "ErrRedisInvalidZSetMember"),
        ([(wide(b"!zs|meta|", b"z"), b"\x00" * 4)], "ErrRedisInvalidZSetMeta"),
        ([(b"!zs|mem|\x00", b"")], "ErrRedisInvalidZSetKey"),
        ([(b"!redis|zset|z", b"")], "ErrRedisInvalidZSetLegacyBlob"),
        (
            [(b"!redis|zset|z", b"\x00RZ\x01" + proto_str(1, b"\x11" + score(float("nan"))[::-1]))],
            "ErrRedisInvalidZSetLegacyBlob",
        ),
    ],
)
async def test_zset_errors(tmp_path: Path, rows: list[tuple[bytes, bytes]], code: str) -> None:
    """Bad scores, metas, keys and legacy blobs are typed errors."""
    with raises_code(AdapterRecordError, code):
        await decode_rows(tmp_path, rows)


# --- streams ----------------------------------------------------------------------------------


def stream_entry(entry_id: bytes, *fields: bytes) -> bytes:
    """A ``!stream|entry|`` value: magic + RedisStreamEntry{id, fields}."""
    return b"\x00RXE\x01" + proto_str(1, entry_id) + b"".join(proto_str(2, f) for f in fields)


def stream_key(user_key: bytes, ms: int, seq: int) -> bytes:
    """``!stream|entry|<len><key><ms><seq>``."""
    return wide(b"!stream|entry|", user_key, U64(ms) + U64(seq))


async def test_stream_entries_and_meta_line(tmp_path: Path) -> None:
    """Entries by ID, duplicate field names kept, the ID from the key, then ``_meta``."""
    out = await decode_rows(
        tmp_path,
        [
            (b"!redis|ttl|s", U64(1)),  # ignored: the 48-byte meta owns the TTL
            (stream_key(b"s", 5, 0), stream_entry(b"ignored", b"dup", b"1", b"dup", b"2")),
            (stream_key(b"s", 5, 1), stream_entry(b"5-1", b"\xc3\xbc<", b"v")),
            (wide(b"!stream|meta|", b"s"), U64(2) + U64(9) + U64(9) + TTL_BYTES + U64(4) * 2),
        ],
    )
    assert out.text("streams/s.jsonl") == (
        '{"id":"5-0","fields":[{"name":"dup","value":"1"},{"name":"dup","value":"2"}]}\n'
        '{"id":"5-1","fields":[{"name":"ü\\u003c","value":"v"}]}\n'
        f'{{"_meta":true,"length":2,"last_ms":9,"last_seq":9,"expire_at_ms":{TTL}}}\n'
    )


async def test_stream_orphan_entries_and_mismatch(tmp_path: Path) -> None:
    """Entries without a meta make no file (warned); a wrong Length is warned."""
    out = await decode_rows(
        tmp_path,
        [
            (stream_key(b"orphan", 1, 0), stream_entry(b"1-0", b"k", b"v")),
            (stream_key(b"short", 1, 0), stream_entry(b"1-0", b"k", b"v")),
            (wide(b"!stream|meta|", b"short"), U64(3) + U64(1) + U64(0)),
            (b"!redis|ttl|short", U64(8)),
        ],
    )
    assert sorted(out.files) == [DB + "streams/short.jsonl"]
    assert out.text("streams/short.jsonl").endswith(
        '{"_meta":true,"length":3,"last_ms":1,"last_seq":0,"expire_at_ms":8}\n'
    )
    [orphan] = out.warnings("redis_stream_orphan_entries_without_meta")
    assert (orphan["user_key_len"], orphan["observed_entries"]) == (6, 1)
    [mismatch] = out.warnings("redis_stream_length_mismatch")
    assert (mismatch["declared_len"], mismatch["observed_entries"]) == (3, 1)


async def test_legacy_stream_blob(tmp_path: Path) -> None:
    """``!redis|stream|`` blobs decode when no meta exists; the meta is derived from them."""
    entries = proto_str(1, proto_str(1, b"7-2") + proto_str(2, b"b") + proto_str(2, b"2"))
    entries += proto_str(1, proto_str(1, b"7-1") + proto_str(2, b"a") + proto_str(2, b"1"))
    blob = b"\x00RX\x01" + entries
    out = await decode_rows(
        tmp_path,
        [
            (b"!redis|stream|old", blob),
            (b"!redis|ttl|old", U64(66)),
            (b"!redis|stream|migrated", blob),
            (wide(b"!stream|meta|", b"migrated"), U64(0) + U64(8) + U64(0)),
        ],
    )
    assert out.text("streams/old.jsonl") == (
        '{"id":"7-1","fields":[{"name":"a","value":"1"}]}\n'
        '{"id":"7-2","fields":[{"name":"b","value":"2"}]}\n'
        '{"_meta":true,"length":2,"last_ms":7,"last_seq":2,"expire_at_ms":66}\n'
    )
    assert out.text("streams/migrated.jsonl") == (
        '{"_meta":true,"length":0,"last_ms":8,"last_seq":0,"expire_at_ms":null}\n'
    )


@pytest.mark.parametrize(
    ("rows", "code"),
    [
        ([(stream_key(b"s", 1, 0), b"\x00RX\x01")], "ErrRedisInvalidStreamEntry"),
        ([(stream_key(b"s", 1, 0), stream_entry(b"1-0", b"odd"))], "ErrRedisInvalidStreamEntry"),
        ([(wide(b"!stream|entry|", b"s", b"\x00" * 15), b"")], "ErrRedisInvalidStreamKey"),
        ([(wide(b"!stream|meta|", b"s"), b"\x00" * 40)], "ErrRedisInvalidStreamMeta"),
        (
            [(b"!redis|stream|s", b"\x00RX\x01" + proto_str(1, proto_str(1, b"1-2-3")))],
            "ErrRedisInvalidStreamLegacyBlob",
        ),
    ],
)
async def test_stream_errors(tmp_path: Path, rows: list[tuple[bytes, bytes]], code: str) -> None:
    """Malformed entries, keys, metas and legacy blobs are typed errors."""
    with raises_code(AdapterRecordError, code):
        await decode_rows(tmp_path, rows)


# --- TTL routing across types -----------------------------------------------------------------


async def test_ttl_goes_to_the_type_registered_last(tmp_path: Path) -> None:
    """With a hash and a string under one key, the string (later prefix) owns the TTL."""
    out = await decode_rows(
        tmp_path,
        [
            (wide(b"!hs|fld|", b"k", b"f"), b"v"),
            (b"!redis|str|k", b"legacy"),
            (b"!redis|ttl|k", U64(5)),
        ],
    )
    assert out.text("strings_ttl.jsonl") == '{"key":"k","expire_at_ms":5}\n'
    assert out.text("hashes/k.json").endswith('"expire_at_ms": null\n}')


# --- expired keys (issue #6) ------------------------------------------------------------------

NOW = 1_800_000_000_000
EXPIRY_ROWS = [
    (b"!redis|str|gone", new_str(b"x", NOW)),  # TTL == now: expired
    (b"!redis|str|live", new_str(b"y", NOW + 1)),
    (b"!redis|str|old-legacy", b"z"),
    (b"!redis|ttl|old-legacy", U64(NOW - 5)),
    (b"!redis|str|new-legacy", b"w"),
    (b"!redis|ttl|new-legacy", U64(NOW + 5)),
    (wide(b"!hs|fld|", b"h", b"f"), b"v"),
    (wide(b"!hs|meta|", b"h"), U64(1)),
    (b"!redis|ttl|h", U64(1)),
    (wide(b"!st|mem|", b"s", b"m"), b""),
    (wide(b"!st|meta|", b"s"), U64(1) + U64(NOW + 10)),
]


@pytest.mark.parametrize("header_kind", ["EKVTHLC1", "none"])
async def test_expired_keys_omitted(tmp_path: Path, header_kind: str) -> None:
    """Keys whose TTL is not after "now" are omitted and counted, with or without a kv header
    (the pipeline takes "now" from the HLC ceiling, else from last_commit_ts)."""
    out = await decode_rows(tmp_path, EXPIRY_ROWS, header_kind=header_kind, now_ms=NOW)
    assert sorted(out.files) == [
        DB + "sets/s.json",
        DB + "strings/live.bin",
        DB + "strings/new-legacy.bin",
        DB + "strings_ttl.jsonl",
    ]
    assert out.text("strings_ttl.jsonl") == (
        f'{{"key":"live","expire_at_ms":{NOW + 1}}}\n'
        f'{{"key":"new-legacy","expire_at_ms":{NOW + 5}}}\n'
    )
    assert out.report.counters["redis.expired_keys_omitted"] == 3


async def test_expired_keys_kept_on_request(tmp_path: Path) -> None:
    """``keep_expired`` keeps every key, like the reference."""
    out = await decode_rows(
        tmp_path, EXPIRY_ROWS, now_ms=NOW, header_kind="EKVTHLC1", keep_expired=True
    )
    assert DB + "strings/gone.bin" in out.files
    assert DB + "strings/old-legacy.bin" in out.files
    assert DB + "hashes/h.json" in out.files
    assert "redis.expired_keys_omitted" not in out.report.counters


@pytest.mark.parametrize("now_ms", [0, NOW])
async def test_a_new_format_string_ignores_the_ttl_row_for_every_type_of_its_key(
    tmp_path: Path, now_ms: int
) -> None:
    """A new-format string owns its key's !redis|ttl| row and ignores it: the hash and set
    of that key get no TTL from it, and it is no orphan (an expired string too)."""
    out = await decode_rows(
        tmp_path,
        [
            (wide(b"!hs|fld|", b"k", b"f"), b"v"),
            (b"!redis|str|k", new_str(b"body")),
            (b"!redis|ttl|k", U64(NOW + 5)),
            (wide(b"!st|mem|", b"k", b"m"), b""),
            (wide(b"!hs|fld|", b"x", b"f"), b"v"),
            (b"!redis|str|x", new_str(b"old", NOW - 5)),
            (b"!redis|ttl|x", U64(NOW + 5)),
        ],
        now_ms=now_ms,
    )
    assert out.text("hashes/k.json").endswith('"expire_at_ms": null\n}')
    assert out.text("sets/k.json").endswith('"expire_at_ms": null\n}')
    assert out.text("hashes/x.json").endswith('"expire_at_ms": null\n}')
    assert (DB + "strings/x.bin" in out.files) == (now_ms == 0)
    assert out.warnings("redis_orphan_ttl") == []


async def test_new_format_strings_and_their_ttl_rows_are_not_assembled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new-format string is written as it arrives and its TTL row is ignored, so the
    assembly at the end sees neither: only the keys that still need it are assembled."""
    assembled: list[bytes] = []

    def counted(user_key: bytes, *args: Any) -> Any:
        assembled.append(user_key)
        return assemble_key(user_key, *args)

    monkeypatch.setattr(decode_module, "assemble_key", counted)
    rows = [(b"!redis|str|s%03d" % i, new_str(b"v", TTL)) for i in range(50)]
    rows += [(b"!redis|ttl|s%03d" % i, TTL_BYTES) for i in range(50)]
    rows += [(b"!redis|str|legacy", b"raw"), (b"!redis|ttl|legacy", TTL_BYTES)]
    rows += [(wide(b"!hs|fld|", b"h", b"f"), b"v"), (b"!redis|ttl|orphan", TTL_BYTES)]
    out = await decode_rows(tmp_path, rows, now_ms=NOW)
    assert sorted(assembled) == [b"h", b"legacy", b"orphan"]
    assert len(out.text("strings_ttl.jsonl").splitlines()) == 51
    [warning] = out.warnings("redis_orphan_ttl")
    assert warning["count"] == 1


# --- bounded memory ---------------------------------------------------------------------------


async def test_spills_and_split_runs_give_the_same_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny memory share (the sorts spill to scratch) and run limit (one key cut into
    several facts) produce exactly the tree an unconstrained decode produces."""
    rows = [(wide(b"!hs|fld|", b"big", b"f%04d" % i), b"v" * 50) for i in range(300)]
    rows += [(wide(b"!hs|meta|", b"big"), U64(300))]
    rows += [(b"!redis|str|s%04d" % i, new_str(b"x", TTL)) for i in range(200)]
    rows += [(b"!redis|ttl|s%04d" % i, TTL_BYTES) for i in range(200)]
    rows += [(wide(b"!st|mem|", b"set%03d" % i, b"m"), b"") for i in range(100)]
    reference = await decode_rows(tmp_path / "a", rows, batch=64)
    monkeypatch.setattr(rows_module, "RUN_LIMIT", 1000)
    monkeypatch.setattr(decode_module, "MERGE_CHUNK", 7)
    monkeypatch.setattr(decode_module, "DECODE_ROWS", 50)
    constrained = await decode_rows(tmp_path / "b", rows, batch=64, memory=8192)
    assert constrained.files == reference.files
    assert len(reference.files) == 1 + 200 + 1 + 100
    assert constrained.report.counters["redis.sort_spills"] > 0
    assert "redis.sort_spills" not in reference.report.counters


async def test_batches_take_their_bytes_from_the_memory_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows gathered for a decode call, the merged facts taken per hop and the files
    gathered per write batch each stay within an eighth of the adapter's share (past it by
    one incoming batch or one key's files at most); the tree is the one of the default
    share."""
    rows = [(b"!redis|str|s%04d" % i, new_str(b"x" * 100, TTL)) for i in range(200)]
    rows += [(wide(b"!hs|fld|", b"h%03d" % i, b"f"), b"v" * 100) for i in range(100)]
    rows += [(wide(b"!hs|meta|", b"h%03d" % i), U64(1)) for i in range(100)]
    reference = await decode_rows(tmp_path / "a", rows, batch=64)
    gathered: list[int] = []
    limits: set[int] = set()
    written: list[int] = []
    decode_call = decode_module.RedisDecoder._decode_rows
    take = decode_module._take

    async def decode(self: decode_module.RedisDecoder) -> None:
        gathered.append(self._rows_bytes)
        await decode_call(self)

    def taken(source: Any, limit: int) -> list[tuple[bytes, bytes]]:
        limits.add(limit)
        return take(source, limit)

    async def write_many(self: Any, files: list[tuple[str, bytes]]) -> None:
        written.append(sum(len(data) for _, data in files))
        await write(self, files)

    write = DumpWriter.write_many
    monkeypatch.setattr(decode_module.RedisDecoder, "_decode_rows", decode)
    monkeypatch.setattr(decode_module, "_take", taken)
    monkeypatch.setattr(DumpWriter, "write_many", write_many)
    constrained = await decode_rows(tmp_path / "b", rows, batch=4, memory=8 << 10)
    assert constrained.files == reference.files
    assert limits == {1 << 10}
    assert len(gathered) > 20 and max(gathered) < 2 << 10
    assert len(written) > 20 and max(written) < 2 << 10


@pytest.mark.skipif(not SAMPLE.is_file(), reason="examples/sample.fsm is absent")
def test_python_dash_m_runs_redis_rows_in_a_worker_process(tmp_path: Path) -> None:
    """``python -m elastickv_async`` with a worker process: the worker re-runs the parent's
    ``__main__`` file by path, which must neither fail nor start a second CLI run."""
    out = tmp_path / "out"
    argv = ["decode", "--quiet", "--no-progress", "--workers", "1"]
    argv += ["--input", str(SAMPLE), "--output", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "elastickv_async", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "redis/db_0/hashes/user%3A1.json").is_file()


def _every_kind_of_row() -> list[tuple[bytes, bytes]]:
    """Rows of every type, with inline and !redis|ttl| TTLs, expired keys, a SHA-fallback
    name, runs of one key long enough to be cut, deltas and a legacy string."""
    long_key = b"L" * 250
    rows = [(b"!redis|str|s%04d" % i, new_str(b"body %d" % i, TTL + i)) for i in range(60)]
    rows += [(b"!redis|str|plain%02d" % i, new_str(b"p")) for i in range(20)]
    rows += [(b"!redis|str|gone", new_str(b"old", 5))]
    rows += [(b"!redis|str|legacy", b"raw"), (b"!redis|ttl|legacy", U64(TTL))]
    rows += [(b"!redis|str|" + long_key, new_str(b"long", TTL))]
    rows += [(b"!redis|hll|h", b"HYLL sketch"), (b"!redis|ttl|h", TTL_BYTES)]
    rows += [(wide(b"!hs|fld|", b"big", b"f%04d" % i), b"v%d" % i) for i in range(120)]
    rows += [(wide(b"!hs|meta|", b"big"), U64(119))]
    rows += [(wide(b"!hs|meta|d|", b"big", U64(1) + U32(0)), U64(1))]
    rows += [(b"!lst|itm|" + U32(1) + b"l" + list_seq(i), b"item%d" % i) for i in range(30)]
    rows += [(wide(b"!st|mem|", b"set", b"m%03d" % i), b"") for i in range(40)]
    rows += [(wide(b"!zs|mem|", b"z", b"m%d" % i), struct.pack(">d", i / 3)) for i in range(25)]
    rows += [(b"!redis|ttl|set", TTL_BYTES), (b"!redis|ttl|orphan", TTL_BYTES)]
    return rows


@pytest.mark.parametrize("workers", [0, 2])
async def test_the_tree_does_not_depend_on_workers_or_call_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Rows decoded in worker processes, a few per call (runs cut at every call's end), give
    the tree of one in-process call, byte for byte."""
    rows = _every_kind_of_row()
    reference = await decode_rows(tmp_path / "a", rows, batch=len(rows), now_ms=1000)
    assert DB + "strings/s0000.bin" in reference.files
    assert DB + "strings/gone.bin" not in reference.files
    assert reference.report.counters["redis.expired_keys_omitted"] == 1
    monkeypatch.setattr(decode_module, "DECODE_ROWS", 7)
    out = await decode_rows(tmp_path / "b", rows, batch=5, now_ms=1000, workers=workers)
    assert out.files == reference.files
    assert out.report.counters == reference.report.counters
    assert out.report.warnings.keys() == reference.report.warnings.keys()


async def test_a_bad_row_in_a_worker_process_arrives_typed_with_its_key(tmp_path: Path) -> None:
    """A malformed row met in a worker process is raised here as itself, naming the key."""
    rows = [(b"!redis|str|ok", new_str(b"v")), (wide(b"!hs|meta|", b"h"), b"short")]
    with raises_code(AdapterRecordError, "ErrRedisInvalidHashMeta") as caught:
        await decode_rows(tmp_path, rows, workers=1)
    assert caught.value.key == wide(b"!hs|meta|", b"h")
    assert caught.value.adapter == "redis"


def test_a_worker_call_leaves_no_garbage_cycle_behind() -> None:
    """``decode_rows`` runs many times in one long-lived worker process: its output must be
    freed when the call returns, not kept by a reference cycle until a full collection
    (the worker grew with every key of the snapshot before)."""
    import gc

    from elastickv_async._adapters.redis import keys

    rows = [(keys.STRING, b"!redis|str|k%d" % i, new_str(b"v")) for i in range(50)]
    gc.collect()
    gc.disable()
    try:
        out = rows_module.decode_rows(rows, 0, None, 0)
        assert len(out.ttl_facts) == 50
        del out
        assert gc.collect() == 0
    finally:
        gc.enable()


async def test_files_written_behind_make_the_same_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """consume() hands gathered files to the writer's background lane (strings as they are
    decoded, collections as they are assembled); the tree, scope and report are the ones
    of handle() and finalize() writing each batch themselves."""
    rows = [(b"!redis|str|s%04d" % i, new_str(b"x" * 100, TTL)) for i in range(300)]
    rows += [(wide(b"!hs|fld|", b"h%03d" % i, b"f"), b"v" * 100) for i in range(200)]
    rows += [(wide(b"!hs|meta|", b"h%03d" % i), U64(1)) for i in range(200)]
    direct = await decode_rows(tmp_path / "direct", rows, batch=16, memory=8 << 10)
    lanes: list[int] = []
    behind = DumpWriter.behind

    def counted(self: DumpWriter) -> Any:
        lanes.append(1)
        return behind(self)

    monkeypatch.setattr(DumpWriter, "behind", counted)
    streamed = await decode_rows(
        tmp_path / "streamed", rows, batch=16, memory=8 << 10, streamed=True
    )
    assert lanes == [1]
    assert len(streamed.files) > 500
    assert streamed.files == direct.files
    assert streamed.scope == direct.scope
    assert streamed.report.counters == direct.report.counters
