"""The unit the snapshot reader yields and the adapters consume."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

__all__ = ["Entry", "SnapshotHeader"]


class Entry(msgspec.Struct, gc=False):
    """One MVCC version of one user key; treat it as read-only.

    ``key`` is the user key (the 8-byte inverted timestamp suffix removed), ``value`` the body
    after the 9-byte value header. Raw store meta keys are never turned into entries.

    A struct built in C rather than a dataclass, whose ``__init__`` was a large part of
    the reader's time per entry; not tracked by the garbage collector, as it holds only
    bytes, ints and a bool (no cycle can go through it), so the millions the reader makes
    trigger no collections.
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
