"""MVCC visibility: the state a client reading at ``read_ts`` sees (REFERENCE_NOTES §1.5).

For each user key the resolver keeps exactly the newest version whose ``commit_ts`` is at most
``read_ts``; newer versions are ignored. When that version is a tombstone, or has expired by the
store's rule (``expire_at != 0 and expire_at <= read_ts``, ``store/lsm_store.go``), the key does
not exist and its older versions stay hidden.

The stream is sorted by encoded key ``userKey ‖ BE(^commitTS)``, so a key's versions arrive
newest first, but not always contiguously: a longer key ``K ‖ X`` sorts between two versions of
``K`` when ``X`` falls inside the range of ``^commitTS`` bytes. Every version of ``K`` sorts in
``[K ‖ 00×8, K ‖ FF×8]``, and the stream can only be inside that range while its current
encoded key starts with ``K``; so only keys that prefix the current position are remembered,
each until the stream passes ``K ‖ FF×8``. Memory is bounded by the nesting depth of keys,
not by the snapshot size. The input must be in stream order (as the reader yields it).
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable
from typing import Final

import msgspec

from .entry import Entry

__all__ = ["ResolverStats", "VisibilityResolver"]

_TS_MASK: Final = (1 << 64) - 1
_TS_SUFFIX = struct.Struct(">Q").pack
_RANGE_END: Final = b"\xff" * 8


class ResolverStats(msgspec.Struct):
    """Counts of what the resolver did with each raw version.

    ``visible``: versions emitted (one per visible key). ``versions_superseded``: versions older
    than a key's deciding version. ``tombstones``: keys hidden because the deciding version is a
    tombstone. ``expired``: keys hidden because the deciding version expired at ``read_ts``.
    ``future_versions``: versions with ``commit_ts > read_ts``, ignored. ``straddling_keys``:
    keys with versions on both sides of ``read_ts`` (evidence that ``read_ts`` is a real
    horizon of the data rather than a stamp below all of it).
    """

    visible: int = 0
    versions_superseded: int = 0
    tombstones: int = 0
    future_versions: int = 0
    expired: int = 0
    straddling_keys: int = 0


class VisibilityResolver:
    """Filter raw entries, batch after batch in stream order, down to the visible versions.

    With ``ignore_future_versions=False`` a version newer than ``read_ts`` is not skipped: the
    newest version decides (tombstones and expiry at ``read_ts`` still apply). That reads
    snapshots whose header ``last_commit_ts`` is below their entries' timestamps as the
    reference does (some hand-made golden inputs are like that).

    With ``keep_deletions=True`` a key whose deciding version is a tombstone or expired is not
    dropped but emitted as a deletion marker (``tombstone=True``, empty value, no expiry) at
    that version's ``commit_ts``: a cluster decode needs a group's deletions to arbitrate
    against another group's stale live copy of the same key.
    """

    def __init__(
        self, read_ts: int, *, ignore_future_versions: bool = True, keep_deletions: bool = False
    ) -> None:
        self.read_ts = read_ts
        self._keep_deletions = keep_deletions
        self._future_after = read_ts if ignore_future_versions else _TS_MASK
        self.stats = ResolverStats()
        # The key of the previous entry and whether its deciding version was already seen.
        self._current: bytes | None = None
        self._decided = False
        self._saw_future = False
        # Keys left while the stream is still inside their version range -> decided flag;
        # a heap of their range ends K ‖ FF×8 says when to forget them.
        self._open: dict[bytes, bool] = {}
        self._range_ends: list[bytes] = []

    @property
    def remembered(self) -> int:
        """How many keys are remembered because later versions of them may still appear."""
        return len(self._open)

    def resolve(self, batch: Iterable[Entry]) -> list[Entry]:
        """Return the entries of ``batch`` that are their key's visible version."""
        out: list[Entry] = []
        append = out.append
        read_ts, future_after = self.read_ts, self._future_after
        current, decided, open_keys = self._current, self._decided, self._open
        superseded = future = tombstones = expired = straddling = 0
        saw_future, keep_deletions = self._saw_future, self._keep_deletions
        for entry in batch:
            key = entry.key
            if key != current:
                saw_future = False
                # Fast path: no remembered key and the new key does not share a prefix with
                # the previous one, so neither can be revisited.
                if open_keys or (
                    current is not None and (key.startswith(current) or current.startswith(key))
                ):
                    decided = self._switch(current, decided, entry)
                else:
                    decided = False
                current = key
            if decided:
                superseded += 1
                continue
            if entry.commit_ts > future_after:
                future += 1
                saw_future = True
                continue
            if saw_future:
                straddling += 1
            decided = True
            if entry.tombstone:
                tombstones += 1
            elif entry.expire_at and entry.expire_at <= read_ts:
                expired += 1
            else:
                append(entry)
                continue
            if keep_deletions:
                append(Entry(key, b"", entry.commit_ts, 0, True))
        self._current, self._decided, self._saw_future = current, decided, saw_future
        stats = self.stats
        stats.straddling_keys += straddling
        stats.visible += len(out) - (tombstones + expired if keep_deletions else 0)
        stats.versions_superseded += superseded
        stats.future_versions += future
        stats.tombstones += tombstones
        stats.expired += expired
        return out

    def _switch(self, left: bytes | None, left_decided: bool, entry: Entry) -> bool:
        """Move from key ``left`` to ``entry``'s key; return whether the new key is decided."""
        position = entry.key + _TS_SUFFIX(entry.commit_ts ^ _TS_MASK)
        open_keys, range_ends = self._open, self._range_ends
        if left is not None:
            if left in open_keys:
                open_keys[left] = left_decided
            elif position <= left + _RANGE_END:
                open_keys[left] = left_decided
                heapq.heappush(range_ends, left + _RANGE_END)
        while range_ends and range_ends[0] < position:
            del open_keys[heapq.heappop(range_ends)[: -len(_RANGE_END)]]
        return open_keys.get(entry.key, False)
