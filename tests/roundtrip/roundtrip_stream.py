"""A small ``.fsm`` builder: read an encoder-written stream, add a live node's history and
framing, write it back.

Byte layouts (REFERENCE_NOTES §1, realnode/README.md, golden/README.md): an optional kv-FSM
header (``EKVTHLC1`` + u64 BE ceiling ms, or ``EKVTHLC2`` + u16 BE payload length + ceiling
+ cutover + extension bytes), then ``EKVPBBL1`` + u64 LE last_commit_ts and entries
``u64 LE len, userKey ‖ BE(^commitTS), u64 LE len, flags ‖ u64 LE expireAt ‖ body`` in raw key
order, raw ``_meta_*`` keys (8-byte LE values) sorting after the ``!`` keys, and an optional
u32 BE CRC32C (Castagnoli) footer of everything before it.

:func:`add_history` adds only what a client reading at last_commit_ts must not see: older
versions, tombstoned and MVCC-expired keys (some sorting between another key's versions),
versions newer than the header, internal and operational rows, and Redis keys whose TTL had
passed at the snapshot's clock.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import crc32c

__all__ = [
    "Noise",
    "Record",
    "Version",
    "add_history",
    "frame",
    "hlc_v1_header",
    "hlc_v2_header",
    "mvcc",
    "read_stream",
]

STREAM_MAGIC: Final = b"EKVPBBL1"
TS_MASK: Final = (1 << 64) - 1
META_KEYS: Final = (
    b"_meta_applied_index",
    b"_meta_last_commit_ts",
    b"_meta_min_retained_ts",
    b"_meta_pending_min_retained_ts",
)
WRITER_REGISTRY: Final = b"!encryption|writers|"
_U64LE = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class Version:
    """One MVCC version as the stream holds it."""

    user_key: bytes
    body: bytes
    commit_ts: int
    expire_at: int = 0
    tombstone: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    """One raw stream entry: the stored key and value bytes."""

    key: bytes
    value: bytes


def mvcc(version: Version) -> Record:
    """The stored form of an MVCC version."""
    key = version.user_key + struct.pack(">Q", version.commit_ts ^ TS_MASK)
    value = bytes((int(version.tombstone),)) + _U64LE.pack(version.expire_at) + version.body
    return Record(key, value)


def read_stream(data: bytes) -> tuple[int, list[Version]]:
    """Parse a bare ``EKVPBBL1`` stream (what the encoder writes: no header, no footer)."""
    if data[:8] != STREAM_MAGIC:
        raise ValueError(f"not an EKVPBBL1 stream: {data[:8]!r}")
    (last_commit_ts,) = _U64LE.unpack_from(data, 8)
    versions = []
    pos = 16
    while pos < len(data):
        (klen,) = _U64LE.unpack_from(data, pos)
        key = data[pos + 8 : pos + 8 + klen]
        pos += 8 + klen
        (vlen,) = _U64LE.unpack_from(data, pos)
        value = data[pos + 8 : pos + 8 + vlen]
        pos += 8 + vlen
        (inverted,) = struct.unpack(">Q", key[-8:])
        (expire_at,) = _U64LE.unpack_from(value, 1)
        versions.append(
            Version(key[:-8], value[9:], inverted ^ TS_MASK, expire_at, bool(value[0] & 1))
        )
    if pos != len(data):
        raise ValueError("stream ends inside an entry")
    return last_commit_ts, versions


def hlc_v1_header(ceiling_ms: int) -> bytes:
    """``EKVTHLC1`` + u64 BE HLC ceiling (Unix ms)."""
    return b"EKVTHLC1" + struct.pack(">Q", ceiling_ms)


def hlc_v2_header(ceiling_ms: int, cutover: int, extension: bytes) -> bytes:
    """``EKVTHLC2`` + u16 BE payload length + ceiling + Raft cutover index + extension."""
    return b"EKVTHLC2" + struct.pack(">HQQ", 16 + len(extension), ceiling_ms, cutover) + extension


def frame(
    last_commit_ts: int, records: Iterable[Record], *, header: bytes = b"", footer: bool = False
) -> bytes:
    """The ``.fsm`` bytes: header, stream in raw key order, optional CRC32C footer."""
    ordered = sorted(records, key=lambda r: r.key)
    duplicates = [k for k, n in Counter(r.key for r in ordered).items() if n > 1]
    if duplicates:
        raise ValueError(f"duplicate stored keys: {duplicates[:3]!r}")
    parts = [header, STREAM_MAGIC, _U64LE.pack(last_commit_ts)]
    for record in ordered:
        parts += [_U64LE.pack(len(record.key)), record.key]
        parts += [_U64LE.pack(len(record.value)), record.value]
    payload = b"".join(parts)
    if footer:
        payload += struct.pack(">I", crc32c.crc32c(payload))
    return payload


@dataclass(slots=True)
class Noise:
    """What :func:`add_history` added (for failure messages)."""

    older: int = 0
    deleted_then_recreated: int = 0
    future: int = 0
    still_valid_expiry: int = 0
    deleted: int = 0
    interleaved_deleted: int = 0
    mvcc_expired: int = 0
    internal: int = 0
    registry_rows: int = 0
    redis_expired: int = 0
    meta_keys: list[str] = field(default_factory=list)


def _redis_expired(rng: random.Random, n: int, now_ms: int) -> list[tuple[bytes, bytes]]:
    """Redis rows of a key whose TTL is not after the snapshot's clock: a string, an HLL or a
    hash (inline-TTL formats and a 16-byte count meta)."""
    key = b"noise-expired-%d" % n
    ttl = max(1, now_ms - rng.randrange(0, 10**9))
    kind = rng.choice(("string", "hll", "hash"))
    if kind == "string":
        return [(b"!redis|str|" + key, b"\xff\x01\x01" + struct.pack(">Q", ttl) + b"gone")]
    if kind == "hll":
        return [(b"!redis|hll|" + key, b"\xff\x02\x01" + struct.pack(">Q", ttl) + b"HYLL")]
    wide = struct.pack(">I", len(key)) + key
    return [
        (b"!hs|meta|" + wide, struct.pack(">QQ", 1, ttl)),
        (b"!hs|fld|" + wide + b"f", b"v"),
        (b"!redis|ttl|" + key, struct.pack(">Q", ttl)),
    ]


def add_history(
    rng: random.Random,
    versions: list[Version],
    last_commit_ts: int,
    now_ms: int,
) -> tuple[list[Record], Noise]:
    """``versions`` (all visible at ``last_commit_ts``) plus history no reader may see.

    ``now_ms`` is the snapshot's clock (the kv header's HLC ceiling, else the physical part
    of ``last_commit_ts``): Redis keys whose TTL is not after it are expired.
    """
    noise = Noise()
    live = {v.user_key for v in versions}
    bodies = [v.body for v in versions] or [b"x"]
    out: list[Version] = []
    used: set[tuple[bytes, int]] = set()

    def put(version: Version) -> None:
        if (version.user_key, version.commit_ts) not in used:
            used.add((version.user_key, version.commit_ts))
            out.append(version)

    for v in versions:
        expire_at = 0
        if rng.random() < 0.1:
            expire_at = last_commit_ts + rng.randrange(1, 1 << 20)
            noise.still_valid_expiry += 1
        put(Version(v.user_key, v.body, v.commit_ts, expire_at))
        roll = rng.random()
        if roll < 0.25:
            for age in rng.sample(range(1, 50), rng.randint(1, 2)):
                put(Version(v.user_key, rng.choice(bodies), last_commit_ts - age))
                noise.older += 1
        elif roll < 0.35:
            put(Version(v.user_key, b"", last_commit_ts - 2, tombstone=True))
            put(Version(v.user_key, rng.choice(bodies), last_commit_ts - 7))
            noise.deleted_then_recreated += 1
        elif roll < 0.42:
            tombstone = rng.random() < 0.5
            put(
                Version(
                    v.user_key,
                    b"" if tombstone else rng.choice(bodies),
                    last_commit_ts + 3,
                    tombstone=tombstone,
                )
            )
            noise.future += 1
        if rng.random() < 0.12:
            # A deleted key sorting between this key's versions: its name continues with the
            # first bytes of an inverted timestamp of the same era.
            cut = rng.randint(1, 7)
            ghost = v.user_key + struct.pack(">Q", (last_commit_ts - 3) ^ TS_MASK)[:cut]
            if ghost not in live:
                put(Version(v.user_key, rng.choice(bodies), last_commit_ts - 6))
                put(Version(ghost, b"", last_commit_ts - 1, tombstone=True))
                put(Version(ghost, v.body, last_commit_ts - 8))
                noise.interleaved_deleted += 1
        if rng.random() < 0.08:
            ghost = v.user_key + b"~deleted"
            if ghost not in live:
                if rng.random() < 0.5:
                    put(Version(ghost, b"", last_commit_ts - 4, tombstone=True))
                    noise.deleted += 1
                else:
                    # Newest version expired by the store's rule (expireAt <= read ts).
                    put(Version(ghost, v.body, last_commit_ts - 4, expire_at=last_commit_ts - 1))
                    noise.mvcc_expired += 1
                put(Version(ghost, v.body, last_commit_ts - 9))

    for n in range(rng.randint(0, 3)):
        prefix = rng.choice((b"!txn|", b"!dist|"))
        put(Version(prefix + b"noise-%d" % n, rng.choice(bodies), last_commit_ts - n))
        noise.internal += 1
    for n in range(rng.randint(0, 3)):
        rows = _redis_expired(rng, n, now_ms)
        if all(k not in live for k, _ in rows):
            for key, body in rows:
                put(Version(key, body, last_commit_ts - 1))
            noise.redis_expired += 1

    records = [mvcc(v) for v in out]
    for n in range(rng.randint(0, 2)):
        key = WRITER_REGISTRY + struct.pack(">I", n + 1) + b"|" + struct.pack(">H", n + 7)
        records.append(Record(key, struct.pack(">QI", n + 1, 0)))
        noise.registry_rows += 1
    for name in META_KEYS:
        if rng.random() < 0.6:
            value = last_commit_ts if name == b"_meta_last_commit_ts" else rng.randrange(1 << 40)
            records.append(Record(name, _U64LE.pack(value)))
            noise.meta_keys.append(name.decode())
    return records, noise
