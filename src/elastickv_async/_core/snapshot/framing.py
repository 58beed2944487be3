"""Incremental decoder of the ``.fsm`` byte stream (REFERENCE_NOTES §1).

A file is, in order:

1. an optional kv-FSM header written by nodes: ``EKVTHLC1`` + u64 BE HLC ceiling (Unix ms), or
   ``EKVTHLC2`` + u16 BE payload length (16..1024) + ceiling u64 BE + Raft envelope cutover
   u64 BE + extension bytes (skipped);
2. the store stream: ``EKVPBBL1``, u64 LE ``last_commit_ts``, then entries
   ``u64 LE keyLen, key, u64 LE valLen, value`` up to a clean end at a key-length boundary,
   where ``key = userKey ‖ BE(^commitTS)`` and ``value = flags(1) ‖ expireAt(8 LE) ‖ body``;
3. an optional 4-byte BE CRC32C footer (on-disk ``fsm-snap`` files), verified by the reader.

:class:`FrameDecoder` is push-driven: the reader feeds it chunks and asks it for entries; it
never needs the whole file. Raw store keys that are not MVCC-encoded (the ``_meta_*`` keys
and the encryption writer-registry rows) are recognised before MVCC decoding and recorded
instead of becoming entries.
"""

from __future__ import annotations

import struct
from typing import Final

from ..errors import SnapshotFormatError
from .entry import Entry, SnapshotHeader

__all__ = [
    "FOOTER_SIZE",
    "MAX_ENCODED_KEY_SIZE",
    "MAX_ENCODED_VALUE_SIZE",
    "META_KEYS",
    "STREAM_MAGIC",
    "FrameDecoder",
]

STREAM_MAGIC: Final = b"EKVPBBL1"
#: The store's SST-ingest snapshot format; recognised so the error can name it.
SST_INGEST_MAGIC: Final = b"EKVSSTI1"
HLC_V1_MAGIC: Final = b"EKVTHLC1"
HLC_V2_MAGIC: Final = b"EKVTHLC2"
#: Any other ``EKVTHLC?`` is a header version this decoder does not know: fail closed.
HLC_MAGIC_PREFIX: Final = b"EKVTHLC"
HLC_V1_SIZE: Final = 16
HLC_V2_MIN_PAYLOAD: Final = 16
HLC_V2_MAX_PAYLOAD: Final = 1024

MAX_ENCODED_KEY_SIZE: Final = (1 << 20) + 8
#: 256 MiB body + 9-byte value header + 34-byte encryption envelope slack.
MAX_ENCODED_VALUE_SIZE: Final = (256 << 20) + 9 + 34
TS_SIZE: Final = 8
VALUE_HEADER_SIZE: Final = 9
FOOTER_SIZE: Final = 4

TOMBSTONE_FLAG: Final = 0b0000_0001
ENC_STATE_MASK: Final = 0b0000_0110
ENC_RESERVED_BITS: Final = 0b1111_1000
ENC_STATE_ENCRYPTED: Final = 1

#: Raw store meta keys (no timestamp suffix, u64 LE values): raw key -> recorded name.
META_KEYS: Final = {
    name.encode(): name
    for name in (
        "_meta_last_commit_ts",
        "_meta_min_retained_ts",
        "_meta_pending_min_retained_ts",
        "_meta_applied_index",
    )
}
#: Encryption writer-registry rows: prefix + dek_id(4 BE) + ``|`` + node_id(2), raw value.
WRITER_REGISTRY_PREFIX: Final = b"!encryption|writers|"
WRITER_REGISTRY_KEY_SIZE: Final = len(WRITER_REGISTRY_PREFIX) + 4 + 1 + 2
WRITER_REGISTRY_SEP_AT: Final = len(WRITER_REGISTRY_PREFIX) + 4
WRITER_REGISTRY_SEP: Final = ord("|")

# Raw keys whose length can be an operational key's; only these pay for the exact check.
_OPERATIONAL_LENGTHS: Final = frozenset({*map(len, META_KEYS), WRITER_REGISTRY_KEY_SIZE})
_OPERATIONAL_PREFIXES: Final = (b"_meta_", WRITER_REGISTRY_PREFIX)

_TS_MASK: Final = (1 << 64) - 1
_U64LE = struct.Struct("<Q").unpack_from
_U64BE = struct.Struct(">Q").unpack_from
_U16BE = struct.Struct(">H").unpack_from
# Value length, flags byte and expireAt read in one call (no padding with "<").
_VAL_HEAD = struct.Struct("<QBQ").unpack_from
_VAL_HEAD_SIZE: Final = 8 + VALUE_HEADER_SIZE


def _key_repr(raw: bytes) -> str:
    """A short printable form of a key for one-line error messages."""
    return repr(raw[:48]) + ("..." if len(raw) > 48 else "")


class FrameDecoder:
    """Push-style decoder of one ``.fsm`` byte stream.

    Feed bytes in order with :meth:`feed`; call :meth:`read_header` until it returns the
    header, then :meth:`decode` until :attr:`done`. Whenever either returns "nothing yet",
    :attr:`need` says how many more bytes allow progress (the reader reads at least that much,
    so a large value arrives in one piece instead of many small concatenations). Pass
    ``at_eof=True`` once the input is exhausted: incomplete data then raises the typed error.

    Raw meta keys land in :attr:`meta` (name -> u64 value, read like the store does: the first
    8 bytes LE, 0 when shorter), writer-registry rows are counted in
    :attr:`writer_registry_rows`, and 4 trailing bytes at a key-length boundary end the stream
    as :attr:`footer` (the reader verifies it).
    """

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        #: File offset of ``_buf[0]``.
        self._base = 0
        #: Bytes fed while ``_buf`` still held an unfinished entry: framing goes on in them
        #: from ``_next_pos`` once that entry is complete (see :meth:`_advance`).
        self._next: bytes | None = None
        self._next_pos = 0
        #: File offset of ``_next[0]``.
        self._next_base = 0
        self.need = 1
        self.header: SnapshotHeader | None = None
        self.done = False
        self.footer: bytes | None = None
        self.entries = 0
        self.meta: dict[str, int] = {}
        self.writer_registry_rows = 0

    def feed(self, data: bytes) -> None:
        """Append the next bytes of the stream.

        The bytes fed are not joined to what is left of the buffer: only the entry that
        straddles the two is copied, once framing reaches it, so a chunk of small entries is
        framed where it was read instead of being copied whole behind a few leftover bytes.
        """
        if self._next is not None or self.header is None:
            # Not expected of the reader (it feeds once framing stalls), nor worth the care
            # for the few bytes of a header: join.
            self._join(data)
        elif self._pos >= len(self._buf):
            self._base += len(self._buf)
            self._buf = data
            self._pos = 0
        else:
            self._next = data
            self._next_pos = 0
            self._next_base = self._base + len(self._buf)

    def _join(self, data: bytes) -> None:
        """Make the buffer what is left of it, of :attr:`_next` and ``data``, in one copy."""
        parts = [memoryview(self._buf)[self._pos :]]
        if self._next is not None:
            parts.append(memoryview(self._next)[self._next_pos :])
            self._next = None
        parts.append(memoryview(data))
        self._base += self._pos
        self._buf = b"".join(parts)
        self._pos = 0

    def _advance(self) -> Entry | None:
        """Go on into :attr:`_next` once the buffer stalled: directly when nothing of the
        buffer is left, else past the straddling entry.

        An ordinary entry cut inside its value is returned, its value joined from its two
        parts (the one copy a value costs anyway); any other cut entry gets the :attr:`need`
        bytes that let it progress joined to its start (one entry copied, not the chunk).
        """
        data = self._next
        assert data is not None
        start = self._next_pos
        buf, pos = self._buf, self._pos
        n = len(buf)
        if pos >= n:
            self._buf, self._pos, self._base = data, start, self._next_base
            self._next = None
            return None
        if n - pos >= 8:
            (klen,) = _U64LE(buf, pos)
            kend = pos + 8 + klen
            if (
                8 <= klen <= MAX_ENCODED_KEY_SIZE
                and kend + _VAL_HEAD_SIZE <= n
                and not (
                    klen in _OPERATIONAL_LENGTHS and buf.startswith(_OPERATIONAL_PREFIXES, pos + 8)
                )
            ):
                vlen, flags, expire_at = _VAL_HEAD(buf, kend)
                missing = kend + 8 + vlen - n
                if (
                    VALUE_HEADER_SIZE <= vlen <= MAX_ENCODED_VALUE_SIZE
                    and flags <= TOMBSTONE_FLAG
                    and 0 < missing <= len(data) - start
                ):
                    value = b"".join(
                        (
                            memoryview(buf)[kend + _VAL_HEAD_SIZE :],
                            memoryview(data)[start : start + missing],
                        )
                    )
                    entry = Entry(
                        buf[pos + 8 : kend - 8],
                        value,
                        _U64BE(buf, kend - 8)[0] ^ _TS_MASK,
                        expire_at,
                        flags == TOMBSTONE_FLAG,
                    )
                    self._buf, self._pos, self._base = data, start + missing, self._next_base
                    self._next = None
                    return entry
        stop = min(len(data), start + max(1, self.need))
        self._base += pos
        self._buf = b"".join((memoryview(buf)[pos:], memoryview(data)[start:stop]))
        self._pos = 0
        if stop == len(data):
            self._next = None
        else:
            self._next_pos = stop
        return None

    # --- header --------------------------------------------------------------------------

    def read_header(self, *, at_eof: bool) -> SnapshotHeader | None:
        """Parse the kv-FSM header (if any) and the stream preamble; ``None`` = feed more."""
        if self.header is not None:
            return self.header
        buf = self._buf
        n = len(buf)
        kind = "none"
        ceiling: int | None = None
        cutover: int | None = None
        off = 0
        if n < 8:
            self._short_header(8 - n, at_eof, "magic")
            return None
        magic = buf[:8]
        if magic == HLC_V1_MAGIC:
            if n < HLC_V1_SIZE:
                self._short_header(HLC_V1_SIZE - n, at_eof, "EKVTHLC1 header")
                return None
            kind, off = "EKVTHLC1", HLC_V1_SIZE
            (ceiling,) = _U64BE(buf, 8)
        elif magic == HLC_V2_MAGIC:
            if n < 10:
                self._short_header(10 - n, at_eof, "EKVTHLC2 length")
                return None
            (plen,) = _U16BE(buf, 8)
            if not HLC_V2_MIN_PAYLOAD <= plen <= HLC_V2_MAX_PAYLOAD:
                raise SnapshotFormatError(
                    f"EKVTHLC2 header payload length {plen} outside "
                    f"[{HLC_V2_MIN_PAYLOAD}, {HLC_V2_MAX_PAYLOAD}]",
                    code="ErrSnapshotUnknownHeader",
                )
            if n < 10 + plen:
                self._short_header(10 + plen - n, at_eof, "EKVTHLC2 header")
                return None
            kind, off = "EKVTHLC2", 10 + plen
            ceiling, cutover = struct.unpack_from(">QQ", buf, 10)
        elif magic.startswith(HLC_MAGIC_PREFIX):
            raise SnapshotFormatError(
                f"unknown kv-FSM header version {magic!r}", code="ErrSnapshotUnknownHeader"
            )
        if n < off + 8:
            self._short_header(off + 8 - n, at_eof, "store magic")
            return None
        magic = buf[off : off + 8]
        if magic == SST_INGEST_MAGIC:
            raise SnapshotFormatError(
                f"store stream is an SST-ingest snapshot ({magic!r}), not {STREAM_MAGIC!r}",
                code="ErrSnapshotUnsupportedFormat",
            )
        if magic != STREAM_MAGIC:
            raise SnapshotFormatError(
                f"bad snapshot magic {magic!r} at offset {self._base + off}",
                code="ErrSnapshotBadMagic",
            )
        if n < off + 16:
            self._short_header(off + 16 - n, at_eof, "last_commit_ts")
            return None
        (last_commit_ts,) = _U64LE(buf, off + 8)
        self.header = SnapshotHeader(last_commit_ts, kind, ceiling, cutover)
        self._pos += off + 16
        self.need = 1
        return self.header

    def _short_header(self, missing: int, at_eof: bool, what: str) -> None:
        """Ask for ``missing`` more bytes, or fail when there are no more."""
        if at_eof:
            raise SnapshotFormatError(
                f"snapshot ends inside the {what} ({len(self._buf)} bytes)",
                code="ErrSnapshotTruncated",
            )
        self.need = missing

    # --- entries -------------------------------------------------------------------------

    def decode(self, max_entries: int, *, at_eof: bool) -> list[Entry]:
        """Decode up to ``max_entries`` entries from the buffered bytes.

        Returns fewer (possibly none) when the buffer runs out; then :attr:`need` is set,
        or :attr:`done` when the stream ended cleanly (``at_eof``).
        """
        if self.header is None:
            raise RuntimeError("read_header() must succeed before decode()")
        out: list[Entry] = []
        if self.done:
            return out
        append = out.append
        buf = self._buf
        n = len(buf)
        pos = self._pos
        u64le, u64be, val_head = _U64LE, _U64BE, _VAL_HEAD
        op_lengths, max_key, max_value = (
            _OPERATIONAL_LENGTHS,
            MAX_ENCODED_KEY_SIZE,
            MAX_ENCODED_VALUE_SIZE,
        )
        op_prefixes, mask = _OPERATIONAL_PREFIXES, _TS_MASK
        count = 0
        while count < max_entries:
            # Fast path: a complete, well-formed, ordinary entry. Anything else (short or
            # oversized lengths, data not buffered yet, flags other than live/tombstone,
            # possible operational keys) goes through _slow_entry, which checks in the
            # reference's order.
            if n - pos >= 8:
                (klen,) = u64le(buf, pos)
                kend = pos + 8 + klen
                if 8 <= klen <= max_key and kend + _VAL_HEAD_SIZE <= n:
                    vlen, flags, expire_at = val_head(buf, kend)
                    vend = kend + 8 + vlen
                    if (
                        vend <= n
                        and VALUE_HEADER_SIZE <= vlen <= max_value
                        and flags <= TOMBSTONE_FLAG
                        and not (klen in op_lengths and buf.startswith(op_prefixes, pos + 8))
                    ):
                        append(
                            Entry(
                                buf[pos + 8 : kend - 8],
                                buf[kend + _VAL_HEAD_SIZE : vend],
                                u64be(buf, kend - 8)[0] ^ mask,
                                expire_at,
                                flags == TOMBSTONE_FLAG,
                            )
                        )
                        count += 1
                        pos = vend
                        continue
            self._pos = pos
            entry = self._slow_entry(at_eof and self._next is None)
            if entry is None:
                if self.done:
                    break
                if self._pos == pos:  # more data is needed
                    if self._next is None:
                        break
                    entry = self._advance()
                    buf = self._buf
                    n = len(buf)
            if entry is not None:
                append(entry)
                count += 1
            pos = self._pos
        self._pos = pos
        self.entries += count
        return out

    def _slow_entry(self, at_eof: bool) -> Entry | None:
        """Decode the entry at the cursor with every check, in the reference's order.

        Returns the entry, or ``None`` having either consumed an operational key (cursor
        moved), or found too few bytes (cursor unchanged; :attr:`need` set or, at the end of
        the input, :attr:`done`/:attr:`footer` set or the typed error raised).
        """
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        at = self._base + pos
        if avail < 8:
            if at_eof:
                if avail == 0:
                    self.done = True
                    return None
                if avail == FOOTER_SIZE:
                    self.footer = buf[pos:]
                    self._pos += FOOTER_SIZE
                    self.done = True
                    return None
                raise SnapshotFormatError(
                    f"snapshot ends inside a key length at offset {at}", code="ErrSnapshotTruncated"
                )
            self.need = 8 - avail
            return None
        (klen,) = _U64LE(buf, pos)
        if klen > MAX_ENCODED_KEY_SIZE:
            raise SnapshotFormatError(
                f"key length {klen} at offset {at} exceeds {MAX_ENCODED_KEY_SIZE}",
                code="ErrSnapshotKeyTooLarge",
            )
        kend = pos + 8 + klen
        if kend + 8 > len(buf):
            if at_eof:
                what = "key" if kend > len(buf) else "value length"
                raise SnapshotFormatError(
                    f"snapshot ends inside the {what} of the entry at {at}",
                    code="ErrSnapshotTruncated",
                )
            self.need = kend + 8 - len(buf)
            return None
        (vlen,) = _U64LE(buf, kend)
        if vlen > MAX_ENCODED_VALUE_SIZE:
            raise SnapshotFormatError(
                f"value length {vlen} of key {_key_repr(buf[pos + 8 : kend])} exceeds "
                f"{MAX_ENCODED_VALUE_SIZE}",
                code="ErrSnapshotValueTooLarge",
            )
        vend = kend + 8 + vlen
        if vend > len(buf):
            if at_eof:
                raise SnapshotFormatError(
                    f"snapshot ends inside the value of key {_key_repr(buf[pos + 8 : kend])}",
                    code="ErrSnapshotTruncated",
                )
            self.need = vend - len(buf)
            return None
        raw_key = buf[pos + 8 : kend]
        if klen in _OPERATIONAL_LENGTHS and self._take_operational(raw_key, buf[kend + 8 : vend]):
            self._pos = vend
            return None
        if klen < TS_SIZE:
            raise SnapshotFormatError(
                f"encoded key {_key_repr(raw_key)} at offset {at} < 8 bytes",
                code="ErrSnapshotShortKey",
            )
        if vlen < VALUE_HEADER_SIZE:
            raise SnapshotFormatError(
                f"value of key {_key_repr(raw_key)} has {vlen} bytes, < {VALUE_HEADER_SIZE}",
                code="ErrSnapshotShortValue",
            )
        flags = buf[kend + 8]
        if flags & ENC_RESERVED_BITS:
            raise SnapshotFormatError(
                f"value flags {flags:#04x} of key {_key_repr(raw_key)} set reserved bits",
                code="ErrSnapshotEncryptedReserved",
            )
        enc_state = (flags & ENC_STATE_MASK) >> 1
        if enc_state == ENC_STATE_ENCRYPTED:
            raise SnapshotFormatError(
                f"key {_key_repr(raw_key)} is encrypted", code="ErrSnapshotEncryptedEntry"
            )
        if enc_state:
            raise SnapshotFormatError(
                f"key {_key_repr(raw_key)} uses reserved encryption state {enc_state}",
                code="ErrSnapshotEncryptedReserved",
            )
        (expire_at,) = _U64LE(buf, kend + 9)
        self._pos = vend
        return Entry(
            raw_key[:-TS_SIZE],
            buf[kend + _VAL_HEAD_SIZE : vend],
            _U64BE(raw_key, klen - TS_SIZE)[0] ^ _TS_MASK,
            expire_at,
            bool(flags & TOMBSTONE_FLAG),
        )

    def _take_operational(self, raw_key: bytes, value: bytes) -> bool:
        """Record ``raw_key`` if it is a raw store meta key or writer-registry row."""
        name = META_KEYS.get(raw_key)
        if name is not None:
            # Like the store's reader: first 8 bytes LE, 0 when the value is shorter.
            self.meta[name] = _U64LE(value)[0] if len(value) >= 8 else 0
            return True
        if (
            len(raw_key) == WRITER_REGISTRY_KEY_SIZE
            and raw_key.startswith(WRITER_REGISTRY_PREFIX)
            and raw_key[WRITER_REGISTRY_SEP_AT] == WRITER_REGISTRY_SEP
        ):
            self.writer_registry_rows += 1
            return True
        return False
