"""The async .fsm reader: headers, framing errors, footer, raw meta keys, batching."""

from __future__ import annotations

import struct
from pathlib import Path

import anyio
import crc32c
import pytest
from snapshot_streams import (
    TS_MASK,
    frame,
    hlc_v1,
    hlc_v2,
    mvcc_key,
    mvcc_value,
    stream,
    u64le,
    version,
    with_footer,
)
from support import raises_code

from elastickv_async._core.errors import SnapshotFormatError, UsageError
from elastickv_async._core.snapshot.entry import Entry, SnapshotHeader
from elastickv_async._core.snapshot.reader import SnapshotStats, open_snapshot

pytestmark = pytest.mark.anyio

MAX_KEY = (1 << 20) + 8
MAX_VALUE = (256 << 20) + 9 + 34
KEY = mvcc_key(b"!redis|str|k", 10)


async def read_all(
    path: Path, *, chunk_size: int = 1 << 16, max_entries: int = 512
) -> tuple[SnapshotHeader, list[Entry], SnapshotStats]:
    """Read every entry of ``path``."""
    entries: list[Entry] = []
    async with open_snapshot(path, chunk_size=chunk_size) as snap:
        header = snap.header
        async for batch in snap.batches(max_entries):
            assert 0 < len(batch) <= max_entries
            entries.extend(batch)
    return header, entries, snap.stats


async def write(tmp_path: Path, data: bytes, name: str = "snap.fsm") -> Path:
    """Write ``data`` to a file under ``tmp_path`` without blocking the event loop."""
    path = tmp_path / name
    await anyio.Path(path).write_bytes(data)
    return path


# --- framing errors, in the reference's check order (REFERENCE_NOTES §1.4) ---------------

ERROR_CASES: dict[str, tuple[bytes, str]] = {
    "empty file": (b"", "ErrSnapshotTruncated"),
    "short magic": (b"EKVPBB", "ErrSnapshotTruncated"),
    "bad magic": (b"EKVPBBL0" + u64le(1), "ErrSnapshotBadMagic"),
    "short last_commit_ts": (b"EKVPBBL1\x01\x02\x03", "ErrSnapshotTruncated"),
    "partial key length": (stream(1) + b"\x05\x00\x00", "ErrSnapshotTruncated"),
    "partial key length of 7 bytes": (stream(1) + b"\x05" * 7, "ErrSnapshotTruncated"),
    "key length over the limit, no key bytes": (
        stream(1) + u64le(MAX_KEY + 1),
        "ErrSnapshotKeyTooLarge",
    ),
    "key length at the limit, no key bytes": (stream(1) + u64le(MAX_KEY), "ErrSnapshotTruncated"),
    "key bytes short": (stream(1) + u64le(20) + b"abc", "ErrSnapshotTruncated"),
    "eof at value length": (stream(1) + u64le(len(KEY)) + KEY, "ErrSnapshotTruncated"),
    "partial value length": (
        stream(1) + u64le(len(KEY)) + KEY + b"\x09\x00",
        "ErrSnapshotTruncated",
    ),
    "value length over the limit": (
        stream(1) + u64le(len(KEY)) + KEY + u64le(MAX_VALUE + 1),
        "ErrSnapshotValueTooLarge",
    ),
    "value bytes short": (
        stream(1) + u64le(len(KEY)) + KEY + u64le(30) + b"\x00" * 9,
        "ErrSnapshotTruncated",
    ),
    "short key": (stream(1, [frame(b"short", mvcc_value(b"v"))]), "ErrSnapshotShortKey"),
    "short key before short value": (stream(1, [frame(b"short", b"\x00")]), "ErrSnapshotShortKey"),
    "short value": (stream(1, [frame(KEY, b"\x00" * 5)]), "ErrSnapshotShortValue"),
    "reserved flag bit 3": (
        stream(1, [frame(KEY, b"\x08" + bytes(8))]),
        "ErrSnapshotEncryptedReserved",
    ),
    "reserved flag bit 7": (
        stream(1, [frame(KEY, b"\x80" + bytes(8))]),
        "ErrSnapshotEncryptedReserved",
    ),
    "encrypted entry": (
        stream(1, [frame(KEY, b"\x02" + bytes(8) + b"x")]),
        "ErrSnapshotEncryptedEntry",
    ),
    "encrypted tombstone": (
        stream(1, [frame(KEY, b"\x03" + bytes(8))]),
        "ErrSnapshotEncryptedEntry",
    ),
    "reserved encryption state 10": (
        stream(1, [frame(KEY, b"\x04" + bytes(8))]),
        "ErrSnapshotEncryptedReserved",
    ),
    "reserved encryption state 11": (
        stream(1, [frame(KEY, b"\x07" + bytes(8))]),
        "ErrSnapshotEncryptedReserved",
    ),
    "reserved bits win over encrypted state": (
        stream(1, [frame(KEY, b"\x0a" + bytes(8))]),
        "ErrSnapshotEncryptedReserved",
    ),
    "error after a good entry": (
        stream(1, [version(b"a", 1, b"v"), frame(b"bad", mvcc_value())]),
        "ErrSnapshotShortKey",
    ),
    "five trailing bytes": (stream(1, [version(b"a", 1)]) + b"\x00" * 5, "ErrSnapshotTruncated"),
    "three trailing bytes": (stream(1, [version(b"a", 1)]) + b"\x00" * 3, "ErrSnapshotTruncated"),
    "four trailing bytes that are not the CRC32C": (
        stream(1, [version(b"a", 1)]) + b"\x00" * 4,
        "ErrSnapshotChecksumMismatch",
    ),
    "unknown kv header version": (b"EKVTHLC3" + bytes(8) + stream(1), "ErrSnapshotUnknownHeader"),
    "unknown kv header version byte 0": (
        b"EKVTHLC\x00" + bytes(8) + stream(1),
        "ErrSnapshotUnknownHeader",
    ),
    "v2 header payload too short": (
        b"EKVTHLC2" + struct.pack(">H", 15) + bytes(15) + stream(1),
        "ErrSnapshotUnknownHeader",
    ),
    "v2 header payload too long": (
        b"EKVTHLC2" + struct.pack(">H", 1025) + bytes(1025) + stream(1),
        "ErrSnapshotUnknownHeader",
    ),
    "v1 header truncated": (b"EKVTHLC1" + bytes(5), "ErrSnapshotTruncated"),
    "v2 header length truncated": (b"EKVTHLC2\x00", "ErrSnapshotTruncated"),
    "v2 header payload truncated": (
        b"EKVTHLC2" + struct.pack(">H", 16) + bytes(10),
        "ErrSnapshotTruncated",
    ),
    "kv header without store stream": (hlc_v1(5), "ErrSnapshotTruncated"),
    "kv header then bad magic": (hlc_v1(5) + b"NOTMAGIC" + u64le(1), "ErrSnapshotBadMagic"),
    "SST-ingest after kv header": (
        hlc_v1(5) + b"EKVSSTI1" + bytes(64),
        "ErrSnapshotUnsupportedFormat",
    ),
    "SST-ingest without kv header": (b"EKVSSTI1" + bytes(64), "ErrSnapshotUnsupportedFormat"),
}


@pytest.mark.parametrize("chunk_size", [1, 7, 1 << 16])
@pytest.mark.parametrize("case", sorted(ERROR_CASES))
async def test_framing_errors(tmp_path: Path, case: str, chunk_size: int) -> None:
    """Each malformed stream raises its typed error, whatever the chunk size."""
    data, code = ERROR_CASES[case]
    path = await write(tmp_path, data)
    with raises_code(SnapshotFormatError, code) as info:
        await read_all(path, chunk_size=chunk_size)
    assert "\n" not in str(info.value)


async def test_sst_ingest_error_names_the_format(tmp_path: Path) -> None:
    """The SST-ingest error says what the file is instead of "bad magic"."""
    path = await write(tmp_path, hlc_v1(5) + b"EKVSSTI1" + bytes(8))
    with raises_code(SnapshotFormatError, "ErrSnapshotUnsupportedFormat", match="SST-ingest"):
        await read_all(path)


async def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    """A path that cannot be opened is the caller's problem, not a data error."""
    with pytest.raises(UsageError):
        await read_all(tmp_path / "absent.fsm")


# --- headers --------------------------------------------------------------------------------


async def test_header_only_stream(tmp_path: Path) -> None:
    """A bare stream with no entries yields no batch and keeps its last_commit_ts."""
    data = stream(1234)
    header, entries, stats = await read_all(await write(tmp_path, data))
    assert header == SnapshotHeader(1234, "none", None, None)
    assert entries == []
    assert stats.entries == 0
    assert stats.footer == "absent"
    assert stats.total_bytes == stats.bytes_read == 16
    assert stats.payload_crc32c == crc32c.crc32c(data)


async def test_v1_header(tmp_path: Path) -> None:
    """EKVTHLC1 gives the HLC ceiling and no cutover."""
    data = hlc_v1(1795312261883) + stream(77, [version(b"k", 70, b"v")])
    header, entries, _ = await read_all(await write(tmp_path, data))
    assert header == SnapshotHeader(77, "EKVTHLC1", 1795312261883, None)
    assert entries == [Entry(b"k", b"v", 70, 0, False)]


@pytest.mark.parametrize("extension", [b"", b"\x01\x02\x03\x04", bytes(1024 - 16)])
async def test_v2_header(tmp_path: Path, extension: bytes) -> None:
    """EKVTHLC2 gives ceiling and cutover; extension bytes up to 1024 in total are skipped."""
    data = hlc_v2(1795312261883, 4242, extension) + stream(77, [version(b"k", 70, b"v")])
    header, entries, _ = await read_all(await write(tmp_path, data), chunk_size=5)
    assert header == SnapshotHeader(77, "EKVTHLC2", 1795312261883, 4242)
    assert entries == [Entry(b"k", b"v", 70, 0, False)]


async def test_header_is_available_before_iteration(tmp_path: Path) -> None:
    """The header is read when the context is entered."""
    path = await write(tmp_path, hlc_v1(9) + stream(5, [version(b"k", 5)]))
    async with open_snapshot(path, chunk_size=3) as snap:
        assert snap.header.last_commit_ts == 5
        assert snap.stats.entries == 0


# --- footer ---------------------------------------------------------------------------------


async def test_footer_over_header_and_stream(tmp_path: Path) -> None:
    """The footer covers the kv header and the stream; it is verified and stripped."""
    payload = hlc_v1(100) + stream(50, [version(b"a", 40, b"x"), version(b"b", 41, b"y")])
    data = with_footer(payload)
    header, entries, stats = await read_all(await write(tmp_path, data), chunk_size=3)
    assert header.kind == "EKVTHLC1"
    assert [e.key for e in entries] == [b"a", b"b"]
    assert stats.footer == "valid"
    assert stats.payload_crc32c == crc32c.crc32c(payload)
    assert stats.payload_crc32c == int.from_bytes(data[-4:], "big")
    assert stats.bytes_read == stats.total_bytes == len(data)


async def test_footer_on_bare_stream(tmp_path: Path) -> None:
    """A footer after a stream without kv header is accepted too."""
    data = with_footer(stream(50, [version(b"a", 40, b"x")]))
    _, entries, stats = await read_all(await write(tmp_path, data))
    assert len(entries) == 1
    assert stats.footer == "valid"


@pytest.mark.parametrize("chunk_size", [1, 2, 4, 5, 1 << 16])
async def test_header_only_stream_with_footer(tmp_path: Path, chunk_size: int) -> None:
    """kv header + empty stream + footer: no entries, footer valid (what an empty node writes)."""
    payload = hlc_v1(0) + stream(0)
    data = with_footer(payload)
    header, entries, stats = await read_all(await write(tmp_path, data), chunk_size=chunk_size)
    assert header == SnapshotHeader(0, "EKVTHLC1", 0, None)
    assert entries == []
    assert stats.footer == "valid"
    assert stats.payload_crc32c == crc32c.crc32c(payload)


async def test_footer_absent(tmp_path: Path) -> None:
    """Without footer the payload CRC is the CRC32C of the whole file."""
    data = hlc_v1(100) + stream(50, [version(b"a", 40, b"x")])
    _, entries, stats = await read_all(await write(tmp_path, data))
    assert len(entries) == 1
    assert stats.footer == "absent"
    assert stats.payload_crc32c == crc32c.crc32c(data)


@pytest.mark.parametrize("flip_at", [0, 10, -5, -1])
async def test_footer_mismatch(tmp_path: Path, flip_at: int) -> None:
    """Any flipped byte, in the payload or in the footer, fails the CRC check."""
    payload = hlc_v1(100) + stream(50, [version(b"a", 40, b"xyz")])
    data = bytearray(with_footer(payload))
    # Flipping a bit of a length or magic byte would be a framing error instead.
    index = {0: 25 + 8 + 8 + 8 + 9 + 9, 10: 12}.get(flip_at, flip_at)
    data[index] ^= 0x01
    path = await write(tmp_path, bytes(data))
    with raises_code(SnapshotFormatError, "ErrSnapshotChecksumMismatch"):
        await read_all(path)


# --- raw store meta keys and writer-registry rows ------------------------------------------


def registry_key(dek_id: int, node_id: int) -> bytes:
    """A raw writer-registry row key (internal/encryption/registry.go)."""
    return b"!encryption|writers|" + struct.pack(">I", dek_id) + b"|" + struct.pack(">H", node_id)


async def test_meta_keys_and_writer_rows_are_recorded_not_yielded(tmp_path: Path) -> None:
    """Raw operational keys never become entries; meta values and the row count are kept."""
    mvcc_registry_lookalike = registry_key(1, 2)  # the same text as an MVCC user key
    # An MVCC key whose raw form has a registry row's length and prefix, but no "|" at 24.
    registry_prefix_ts = (0x7C << 56) ^ TS_MASK  # ^ts starts with "|"
    data = with_footer(
        hlc_v1(100)
        + stream(
            500,
            [
                version(b"!ddb|item|t|1", 400, b"item"),
                frame(registry_key(1, 2), bytes(12)),
                frame(registry_key(7, 3), b"\xff" * 12),
                version(mvcc_registry_lookalike, 300, b"user data"),
                version(b"!redis|str|z", 450, b"z"),
                version(b"_meta_abcdef", 10, b"m"),  # 20-byte raw key, not a meta key
                version(b"!encryption|writers", registry_prefix_ts, b"w"),
                frame(b"_meta_applied_index", u64le(201)),
                frame(b"_meta_last_commit_ts", u64le(500)),
                frame(b"_meta_min_retained_ts", u64le(1)),
                frame(b"_meta_pending_min_retained_ts", b"\x01\x02"),
            ],
        )
    )
    _, entries, stats = await read_all(await write(tmp_path, data), chunk_size=11)
    assert [e.key for e in entries] == [
        b"!ddb|item|t|1",
        mvcc_registry_lookalike,
        b"!redis|str|z",
        b"_meta_abcdef",
        b"!encryption|writers",
    ]
    assert entries[-1].commit_ts == registry_prefix_ts
    assert stats.meta == {
        "_meta_applied_index": 201,
        "_meta_last_commit_ts": 500,
        "_meta_min_retained_ts": 1,
        # The store reads a value shorter than 8 bytes as 0.
        "_meta_pending_min_retained_ts": 0,
    }
    assert stats.encryption_writer_rows == 2
    assert stats.entries == 5
    assert stats.footer == "valid"


async def test_only_meta_keys(tmp_path: Path) -> None:
    """A live node with an empty database: meta keys only, no entries."""
    data = stream(
        77, [frame(b"_meta_applied_index", u64le(9)), frame(b"_meta_last_commit_ts", u64le(77))]
    )
    _, entries, stats = await read_all(await write(tmp_path, data))
    assert entries == []
    assert stats.meta == {"_meta_applied_index": 9, "_meta_last_commit_ts": 77}


# --- entries and batching -------------------------------------------------------------------


async def test_entry_fields(tmp_path: Path) -> None:
    """Every field of an entry comes from the stream; tombstones and all versions are kept."""
    data = stream(
        1000,
        [
            version(b"k", 900, b"new", expire_at=12345),
            version(b"k", 800, tombstone=True),
            version(b"k", 700, b"old"),
            version(b"", 5, b"empty user key"),
        ],
    )
    _, entries, stats = await read_all(await write(tmp_path, data))
    assert entries == [
        Entry(b"k", b"new", 900, 12345, False),
        Entry(b"k", b"", 800, 0, True),
        Entry(b"k", b"old", 700, 0, False),
        Entry(b"", b"empty user key", 5, 0, False),
    ]
    assert stats.entries == 4


async def test_batches_respect_max_entries(tmp_path: Path) -> None:
    """Batches are full except the last one."""
    data = stream(100, [version(b"k%02d" % i, 50, b"v") for i in range(10)])
    async with open_snapshot(await write(tmp_path, data), chunk_size=7) as snap:
        sizes = [len(batch) async for batch in snap.batches(3)]
    assert sizes == [3, 3, 3, 1]


async def test_value_larger_than_chunk(tmp_path: Path) -> None:
    """A value bigger than the chunk size is read whole."""
    body = bytes(range(256)) * 1000
    data = with_footer(stream(9, [version(b"a", 1, body), version(b"b", 1, b"small")]))
    _, entries, stats = await read_all(await write(tmp_path, data), chunk_size=4096)
    assert [e.value for e in entries] == [body, b"small"]
    assert stats.footer == "valid"
    assert stats.bytes_read == len(data)


async def test_batches_can_be_iterated_once(tmp_path: Path) -> None:
    """A second iteration is refused rather than silently empty."""
    async with open_snapshot(await write(tmp_path, stream(1))) as snap:
        async for _ in snap.batches():
            pass
        with pytest.raises(RuntimeError):
            async for _ in snap.batches():
                pass
