"""FrameDecoder and RunningCrc32c fed in arbitrary pieces: chunk boundaries never matter."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Iterator

import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from snapshot_streams import frame, hlc_v1, hlc_v2, stream, u64le, version, with_footer
from support import raises_code

from elastickv_async._core.errors import SnapshotFormatError
from elastickv_async._core.snapshot.entry import Entry, SnapshotHeader
from elastickv_async._core.snapshot.footer import RunningCrc32c
from elastickv_async._core.snapshot.framing import FrameDecoder


def pieces(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    """Cut ``data`` into pieces of the given sizes (cycled), the last one takes the rest."""
    at, index = 0, 0
    while at < len(data):
        size = sizes[index % len(sizes)] if sizes else len(data)
        yield data[at : at + size]
        at += size
        index += 1


def decode_pieces(
    data: bytes, sizes: list[int], max_entries: int = 3
) -> tuple[SnapshotHeader, list[Entry], FrameDecoder, RunningCrc32c]:
    """Drive a FrameDecoder the way the reader does, but with arbitrary piece sizes."""
    decoder, crc = FrameDecoder(), RunningCrc32c()
    source = pieces(data, sizes)
    at_eof = False

    def more() -> None:
        nonlocal at_eof
        piece = next(source, None)
        if piece is None:
            at_eof = True
        else:
            crc.update(piece)
            decoder.feed(piece)

    while (header := decoder.read_header(at_eof=at_eof)) is None:
        more()
    entries: list[Entry] = []
    while not decoder.done:
        batch = decoder.decode(max_entries, at_eof=at_eof)
        assert len(batch) <= max_entries
        entries += batch
        if len(batch) < max_entries and not decoder.done:
            more()
    if decoder.footer is not None:
        crc.verify_footer(decoder.footer)
    return header, entries, decoder, crc


def test_crc32c_check_value() -> None:
    """The library is CRC-32C (Castagnoli): its standard check value."""
    crc = RunningCrc32c()
    for byte in b"123456789":
        crc.update(bytes([byte]))
    assert crc.payload_crc32c() == 0xE3069283


@given(st.binary(max_size=64), st.lists(st.integers(min_value=0, max_value=9), max_size=12))
def test_running_crc_any_split(data: bytes, sizes: list[int]) -> None:
    """The running CRC over any split equals the CRC of the whole, footer or not."""
    crc = RunningCrc32c()
    at = 0
    for size in sizes:
        crc.update(data[at : at + size])
        at += size
    crc.update(data[at:])
    assert crc.payload_crc32c() == crc32c.crc32c(data)
    footed = RunningCrc32c()
    footed.update(data)
    footed.update(struct.pack(">I", crc32c.crc32c(data)))
    footed.verify_footer(struct.pack(">I", crc32c.crc32c(data)))
    assert footed.payload_crc32c() == crc32c.crc32c(data)


def test_footer_mismatch_message() -> None:
    """The mismatch error names both checksums on one line."""
    crc = RunningCrc32c()
    crc.update(b"payload" + b"\x00\x00\x00\x01")
    with raises_code(SnapshotFormatError, "ErrSnapshotChecksumMismatch", match="0x00000001"):
        crc.verify_footer(b"\x00\x00\x00\x01")


ENTRY = st.builds(
    Entry,
    key=st.binary(max_size=24),
    value=st.binary(max_size=40),
    commit_ts=st.integers(min_value=0, max_value=2**64 - 1),
    expire_at=st.integers(min_value=0, max_value=2**64 - 1),
    tombstone=st.booleans(),
)
KV_HEADER = st.sampled_from(["none", "v1", "v2", "v2-extended"])
META = st.dictionaries(
    st.sampled_from(["_meta_applied_index", "_meta_last_commit_ts", "_meta_min_retained_ts"]),
    st.integers(min_value=0, max_value=2**64 - 1),
)


def build(
    kind: str, last_commit_ts: int, entries: list[Entry], meta: dict[str, int], footer: bool
) -> tuple[bytes, SnapshotHeader]:
    """Serialise a snapshot by hand and return it with the header it must decode to."""
    prefix, header = {
        "none": (b"", SnapshotHeader(last_commit_ts)),
        "v1": (hlc_v1(123), SnapshotHeader(last_commit_ts, "EKVTHLC1", 123)),
        "v2": (hlc_v2(123, 45), SnapshotHeader(last_commit_ts, "EKVTHLC2", 123, 45)),
        "v2-extended": (
            hlc_v2(123, 45, b"\xaa" * 40),
            SnapshotHeader(last_commit_ts, "EKVTHLC2", 123, 45),
        ),
    }[kind]
    framed = [
        version(e.key, e.commit_ts, e.value, tombstone=e.tombstone, expire_at=e.expire_at)
        for e in entries
    ]
    framed += [frame(name.encode(), u64le(value)) for name, value in sorted(meta.items())]
    payload = prefix + stream(last_commit_ts, framed)
    return (with_footer(payload) if footer else payload), header


@settings(max_examples=300, deadline=None)
@given(
    KV_HEADER,
    st.integers(min_value=0, max_value=2**64 - 1),
    st.lists(ENTRY, max_size=12),
    META,
    st.booleans(),
    st.lists(st.integers(min_value=1, max_value=40), max_size=8),
    st.integers(min_value=1, max_value=5),
)
def test_any_chunking_decodes_the_same(
    kind: str,
    last_commit_ts: int,
    entries: list[Entry],
    meta: dict[str, int],
    footer: bool,
    sizes: list[int],
    max_entries: int,
) -> None:
    """Header, entries, meta keys, footer and CRC come out right for any piece sizes."""
    data, header = build(kind, last_commit_ts, entries, meta, footer)
    got_header, got, decoder, crc = decode_pieces(data, sizes, max_entries)
    assert got_header == header
    assert got == entries
    assert decoder.entries == len(entries)
    assert decoder.meta == meta
    assert (decoder.footer is not None) == footer
    assert crc.payload_crc32c() == crc32c.crc32c(data[:-4] if footer else data)


@given(st.lists(st.integers(min_value=1, max_value=12), max_size=6))
def test_errors_do_not_depend_on_chunking(sizes: list[int]) -> None:
    """A short value is reported as such however the bytes arrive."""
    data = stream(1, [version(b"ok", 1, b"v"), frame(b"key-with-ts", b"\x00" * 8)])
    with raises_code(SnapshotFormatError, "ErrSnapshotShortValue"):
        decode_pieces(data, sizes)


@given(
    st.lists(st.integers(min_value=1, max_value=30), max_size=6),
    st.sampled_from(["ErrSnapshotKeyTooLarge", "ErrSnapshotValueTooLarge", "ErrSnapshotTruncated"]),
)
def test_error_offsets_do_not_depend_on_chunking(sizes: list[int], code: str) -> None:
    """A bad entry after a few good ones is reported with the same message (its file offset
    or key) however the bytes arrive."""
    good = [version(b"k%d" % i, 1, b"v" * i) for i in range(6)]
    bad = {
        "ErrSnapshotKeyTooLarge": u64le(1 << 40) + b"x" * 8,
        "ErrSnapshotValueTooLarge": u64le(9) + b"badkey-ts" + u64le(1 << 40),
        "ErrSnapshotTruncated": version(b"cut", 1, b"v" * 20)[:-5],
    }[code]
    data = stream(1, [*good, bad])
    with raises_code(SnapshotFormatError, code) as whole:
        decode_pieces(data, [])
    with raises_code(SnapshotFormatError, code) as cut:
        decode_pieces(data, sizes)
    assert str(cut.value) == str(whole.value)


def test_a_chunk_fed_after_a_cut_entry_is_framed_in_place() -> None:
    """Only the entry that straddles two chunks is copied: the rest of the new chunk is
    framed where it was read, not joined to the leftover first."""
    entries = [version(b"k%07d" % i, 1, b"v" * 200) for i in range(100)]
    data = stream(5, entries)
    cut = 16 + 10 * len(entries[0]) + 50  # inside the 11th entry
    decoder = FrameDecoder()
    decoder.feed(data[:cut])
    assert decoder.read_header(at_eof=False) is not None
    assert len(decoder.decode(1000, at_eof=False)) == 10
    following = data[cut:]
    decoder.feed(following)
    got = decoder.decode(1000, at_eof=True)
    assert [e.key for e in got] == [b"k%07d" % i for i in range(10, 100)]
    assert decoder._buf is following
    assert decoder.done


def test_a_value_cut_between_chunks_is_copied_once() -> None:
    """A large value cut by a chunk boundary is joined from its two parts straight into the
    entry's value: no copy of the whole entry is made first."""
    body = bytes(range(256)) * 4096  # 1 MiB
    data = stream(1, [version(b"big", 1, body), version(b"after", 1, b"v")])
    cut = 16 + 8 + 11 + 8 + 9 + len(body) // 2
    decoder = FrameDecoder()
    decoder.feed(data[:cut])
    assert decoder.read_header(at_eof=False) is not None
    assert decoder.decode(10, at_eof=False) == []
    following = data[cut:]
    tracemalloc.start()
    try:
        decoder.feed(following)
        got = decoder.decode(10, at_eof=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [Entry(b"big", body, 1, 0, False), Entry(b"after", b"v", 1, 0, False)]
    assert peak < len(body) * 3 // 2


def test_need_covers_a_large_value() -> None:
    """Once the lengths are known, ``need`` asks for the whole rest of the entry at once."""
    body = b"x" * 10_000
    data = stream(1, [version(b"k", 1, body)])
    decoder = FrameDecoder()
    decoder.feed(data[:45])  # header, key and value length: the value is still missing
    assert decoder.read_header(at_eof=False) == SnapshotHeader(1)
    assert decoder.decode(10, at_eof=False) == []
    assert decoder.need == len(data) - 45
    decoder.feed(data[45:])
    assert decoder.decode(10, at_eof=True) == [Entry(b"k", body, 1, 0, False)]
    assert decoder.done


def test_feeding_a_chunk_lets_the_consumed_one_go_before_the_join() -> None:
    """A chunk fed after one whose last entry was cut holds two chunks at once at most (the
    new one and the join of the leftover with it), not the consumed chunk too."""
    chunk = 1 << 20
    data = stream(5, (version(b"k%07d" % i, 1, b"v" * 200) for i in range(2 * chunk // 230)))
    decoder = FrameDecoder()
    # Traced from before the first chunk exists, so letting it go counts.
    tracemalloc.start()
    try:
        decoder.feed(data[:chunk])
        assert decoder.read_header(at_eof=False) is not None
        assert decoder.decode(1 << 20, at_eof=False)
        assert 0 < decoder.need < 300  # the last entry of the chunk was cut
        following = data[chunk : 2 * chunk]
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        decoder.feed(following)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - before < chunk // 2
    assert len(decoder.decode(1 << 20, at_eof=False)) > 1000
