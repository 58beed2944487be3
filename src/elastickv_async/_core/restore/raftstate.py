"""The Raft side of a restored data directory: etcd's WAL and snap files, elastickv's peers file.

A node opening ``<raftDataDir>/<raftId>`` (``internal/raftengine/etcd/wal_store.go``
``openDiskState``) finds ``wal/`` and loads the newest ``snap/<term>-<index>.snap`` that the
WAL vouches for, then ``fsm-snap/<index>.fsm`` named by the snapshot's token. What
``PrepareExternalSnapshotRestore`` (``external_snapshot_restore.go``) seeds, and what this
module rebuilds byte for byte:

- ``wal/0000000000000000-0000000000000000.wal``, preallocated to 64,000,000 bytes (etcd's
  ``SegmentSizeBytes``; the zero tail reads as the end of the log), holding five records:
  a CRC record, an empty metadata record, an empty WAL snapshot marker, the restore
  snapshot's marker (index, term, ConfState) and the HardState (term, commit = index).
  Each record is a ``walpb.Record`` framed by a u64 LE length whose top byte flags the
  padding to 8-byte alignment; its ``crc`` is the CRC32C of its data chained from the
  previous record's (etcd ``storage/wal/encoder.go``).
- ``snap/<term:016x>-<index:016x>.snap``: a ``snappb.Snapshot`` (CRC32C + the marshalled
  ``raftpb.Snapshot`` whose data is the 17-byte ``EKVT`` token).
- ``etcd-raft-peers.bin`` (``peer_metadata.go``, version 3): the peers with their node ids.

The protobuf messages involved are tiny and fixed, so they are encoded here by hand rather
than through generated classes. Field presence follows what etcd writes: the ``walpb``
records always carry their ``type`` and ``crc`` (non-nullable fields), the WAL snapshot
marker always its index and term; ``raftpb`` messages carry only what is set.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import crc32c

__all__ = [
    "FSM_HEADER_MAGIC",
    "WAL_FILE_NAME",
    "WAL_SEGMENT_BYTES",
    "Peer",
    "PeerSpecError",
    "derive_node_id",
    "fsm_header",
    "fsm_snap_name",
    "parse_peers",
    "peers_file",
    "snap_file",
    "snap_name",
    "snapshot_token",
    "wal_records",
]

FSM_HEADER_MAGIC: Final = b"EKVTHLC1"
WAL_FILE_NAME: Final = "0000000000000000-0000000000000000.wal"
WAL_SEGMENT_BYTES: Final = 64 * 1000 * 1000

_TOKEN_MAGIC: Final = b"EKVT"
_TOKEN_VERSION: Final = 1
_PEERS_MAGIC: Final = b"EKVP"
_PEERS_VERSION: Final = 3
_SUFFRAGE_VOTER: Final = 0

# walpb.Record types (etcd storage/wal/wal.go).
_METADATA_TYPE: Final = 1
_STATE_TYPE: Final = 3
_CRC_TYPE: Final = 4
_SNAPSHOT_TYPE: Final = 5

_FNV64_OFFSET: Final = 0xCBF29CE484222325
_FNV64_PRIME: Final = 0x100000001B3
_U64: Final = (1 << 64) - 1


class PeerSpecError(ValueError):
    """A ``--peers`` list that names no peer, a malformed one, or two with one node id."""


@dataclass(frozen=True, slots=True)
class Peer:
    """One Raft voter: its id (``--raftId``), its Raft address and the derived node id."""

    id: str
    address: str
    node_id: int


def derive_node_id(peer_id: str) -> int:
    """The node id elastickv derives from a Raft id: FNV-1a 64 of its bytes (never 0)."""
    h = _FNV64_OFFSET
    for byte in peer_id.encode():
        h = ((h ^ byte) * _FNV64_PRIME) & _U64
    return h or 1


def parse_peers(raw: str) -> list[Peer]:
    """Parse ``id=addr,id=addr`` (blank entries skipped) into peers sorted by node id."""
    peers: list[Peer] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        peer_id, sep, address = (s.strip() for s in part.partition("="))
        if not sep or not peer_id or not address:
            raise PeerSpecError(f"peer {part!r} is not id=host:port")
        peers.append(Peer(peer_id, address, derive_node_id(peer_id)))
    if not peers:
        raise PeerSpecError("--peers names no peer")
    seen: dict[int, str] = {}
    for peer in peers:
        if peer.node_id in seen:
            raise PeerSpecError(
                f"peers {seen[peer.node_id]!r} and {peer.id!r} share node id {peer.node_id}"
            )
        seen[peer.node_id] = peer.id
    return sorted(peers, key=lambda p: p.node_id)


# --- fsm-snap file and token -----------------------------------------------------------------


def fsm_snap_name(index: int) -> str:
    """``fsm-snap/`` file name of the snapshot at ``index``."""
    return f"{index:016x}.fsm"


def fsm_header(ceiling_ms: int) -> bytes:
    """The 16-byte kv-FSM header a node expects before the store stream."""
    return FSM_HEADER_MAGIC + struct.pack(">Q", ceiling_ms)


def snapshot_token(index: int, crc: int) -> bytes:
    """The 17-byte ``raftpb.Snapshot.Data`` naming ``fsm-snap/<index>.fsm`` and its CRC32C."""
    return _TOKEN_MAGIC + bytes([_TOKEN_VERSION]) + struct.pack(">QI", index, crc)


# --- protobuf, by hand -------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _uint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _conf_state(voters: Iterable[int]) -> bytes:
    return b"".join(_uint_field(1, v) for v in voters)


def _snapshot_metadata(voters: Sequence[int], index: int, term: int) -> bytes:
    return _bytes_field(1, _conf_state(voters)) + _uint_field(2, index) + _uint_field(3, term)


def _raft_snapshot(token: bytes, voters: Sequence[int], index: int, term: int) -> bytes:
    return _bytes_field(1, token) + _bytes_field(2, _snapshot_metadata(voters, index, term))


def _wal_snapshot(index: int, term: int, voters: Sequence[int] | None) -> bytes:
    body = _uint_field(1, index) + _uint_field(2, term)
    return body if voters is None else body + _bytes_field(3, _conf_state(voters))


def _hard_state(term: int, commit: int) -> bytes:
    return _uint_field(1, term) + _uint_field(3, commit)


# --- files ---------------------------------------------------------------------------------


def snap_name(term: int, index: int) -> str:
    """``snap/`` file name of the Raft snapshot at ``term``/``index``."""
    return f"{term:016x}-{index:016x}.snap"


def snap_file(token: bytes, voters: Sequence[int], index: int, term: int) -> bytes:
    """A ``snap/*.snap`` file: ``snappb.Snapshot{crc, data}`` around the Raft snapshot."""
    data = _raft_snapshot(token, voters, index, term)
    return _uint_field(1, crc32c.crc32c(data)) + _bytes_field(2, data)


def _frame(record_type: int, data: bytes | None, crc: int) -> bytes:
    record = _uint_field(1, record_type) + _uint_field(2, crc)
    if data is not None:
        record += _bytes_field(3, data)
    pad = -len(record) % 8
    length = len(record) | ((0x80 | pad) << 56 if pad else 0)
    return struct.pack("<Q", length) + record + bytes(pad)


def wal_records(voters: Sequence[int], index: int, term: int) -> bytes:
    """The records of a fresh WAL seeded with the restore snapshot (without the zero tail)."""
    records: list[tuple[int, bytes | None]] = [
        (_METADATA_TYPE, None),
        (_SNAPSHOT_TYPE, _wal_snapshot(0, 0, None)),
        (_SNAPSHOT_TYPE, _wal_snapshot(index, term, voters)),
        (_STATE_TYPE, _hard_state(term, index)),
    ]
    out = [_frame(_CRC_TYPE, None, 0)]
    crc = 0
    for record_type, data in records:
        crc = crc32c.crc32c(data or b"", value=crc)
        out.append(_frame(record_type, data, crc))
    return b"".join(out)


def _peer_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">I", len(raw)) + raw


def peers_file(peers: Sequence[Peer], index: int) -> bytes:
    """``etcd-raft-peers.bin``: every peer as a voter, no bootstrap seed."""
    out = [_PEERS_MAGIC, struct.pack(">IQI", _PEERS_VERSION, index, len(peers))]
    for peer in sorted(peers, key=lambda p: (p.node_id, p.id)):
        out += [struct.pack(">QB", peer.node_id, _SUFFRAGE_VOTER)]
        out += [_peer_string(peer.id), _peer_string(peer.address)]
    out.append(struct.pack(">BI", 0, 0))
    return b"".join(out)
