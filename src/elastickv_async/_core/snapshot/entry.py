"""The unit the snapshot reader yields and the adapters consume."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Entry", "SnapshotHeader"]


@dataclass(slots=True)
class Entry:
    """One MVCC version of one user key; treat it as read-only.

    ``key`` is the user key (the 8-byte inverted timestamp suffix removed), ``value`` the body
    after the 9-byte value header. Raw store meta keys are never turned into entries. Not
    frozen only because a frozen dataclass costs a third of the reader's time to construct.
    """

    key: bytes
    value: bytes
    commit_ts: int
    expire_at: int
    tombstone: bool


@dataclass(slots=True)
class SnapshotHeader:
    """What the stream says about itself before the first entry.

    ``kind`` is ``"none"`` for a bare ``EKVPBBL1`` stream (what encoders write) or the kv-FSM
    header magic (``"EKVTHLC1"``/``"EKVTHLC2"``) of a file written by a node.
    """

    last_commit_ts: int
    kind: str = "none"
    hlc_ceiling_ms: int | None = None
    raft_cutover_index: int | None = None
