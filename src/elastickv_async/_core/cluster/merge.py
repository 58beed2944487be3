"""The k-way merge of several groups' runs into one stream, in snapshot key order.

Each run is sorted by encoded key ``key ‖ BE(^commit_ts)`` (a subsequence of its group's
stream), so a heap over the runs' heads yields one stream in that order, and rows of one
logical key found in different groups meet in it as they would in a single-group snapshot.

The same raw key visible in two groups (stale rows left behind by a range move) must not reach
an adapter twice. Its two copies can be apart in the merged order, since they carry different
timestamps, but only keys that start with it can sort between them: every version of ``K``
sorts in ``[K ‖ 00×8, K ‖ FF×8]``. So an entry is held back until the merge has moved past
``K ‖ FF×8``; a second copy arriving meanwhile is arbitrated: the group owning the key's route
keeps it, the other copy is reported as ``cross_group_duplicate``. Held entries are few: only
keys sorting inside a held key's version range wait with it.

Runs carry deletion markers (a group's tombstoned or expired deciding version), so a group's
deletion takes part in that arbitration exactly like a live copy: when the route owner
deleted a key that another group still holds (a moved range not yet cleaned up), the owner's
marker wins and the stale copy is dropped and reported. Markers never leave the merge, and a
dropped marker is not reported, as nothing visible was lost.
"""

from __future__ import annotations

import heapq
import struct
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

from ..snapshot.entry import Entry
from .routes import RouteCatalog
from .runs import RunReader

__all__ = ["merge_runs"]

_TS: Final = struct.Struct(">Q").pack
_TS_MASK: Final = (1 << 64) - 1
_RANGE_END: Final = b"\xff" * 8


class _Cursor:
    """One run's current batch and position in it."""

    __slots__ = ("batch", "group", "index", "reader")

    def __init__(self, group: int, reader: RunReader) -> None:
        self.group, self.reader = group, reader
        self.batch: list[Entry] = []
        self.index = 0

    async def head(self) -> Entry | None:
        if self.index >= len(self.batch):
            self.batch, self.index = await self.reader.next_batch(), 0
            if not self.batch:
                return None
        return self.batch[self.index]


class _Held:
    __slots__ = ("entry", "group", "limit")

    def __init__(self, entry: Entry, group: int) -> None:
        self.entry, self.group, self.limit = entry, group, entry.key + _RANGE_END


def _position(entry: Entry) -> bytes:
    return entry.key + _TS(entry.commit_ts ^ _TS_MASK)


def _winner(held: _Held, group: int, entry: Entry, catalog: RouteCatalog | None) -> int | None:
    """The group whose copy is kept: the route's owner, else the newer commit."""
    owner = catalog.owner(entry.key) if catalog is not None else None
    if owner in (held.group, group):
        return owner
    return group if entry.commit_ts > held.entry.commit_ts else held.group


async def merge_runs(
    runs: Sequence[tuple[int, RunReader]],
    catalog: RouteCatalog | None,
    log: Any,
    *,
    batch_size: int = 512,
) -> AsyncIterator[list[Entry]]:
    """Yield the merged visible entries of ``runs`` (``(group, reader)`` pairs) in batches.

    Duplicates are arbitrated as the module describes; a live copy that loses is logged on
    ``log`` as ``cross_group_duplicate`` (key, the groups holding it, the group kept, the
    route owner).
    """
    cursors = [_Cursor(group, reader) for group, reader in runs]
    heap: list[tuple[bytes, int]] = []
    for rank, cursor in enumerate(cursors):
        first = await cursor.head()
        if first is not None:
            heap.append((_position(first), rank))
    heapq.heapify(heap)
    held: deque[_Held] = deque()
    by_key: dict[bytes, _Held] = {}
    out: list[Entry] = []
    while heap:
        _, rank = heap[0]
        cursor = cursors[rank]
        entry = cursor.batch[cursor.index]
        cursor.index += 1
        following = await cursor.head()
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (_position(following), rank))
        earlier = by_key.get(entry.key)
        if earlier is None:
            record = _Held(entry, cursor.group)
            held.append(record)
            by_key[entry.key] = record
        else:
            kept = _winner(earlier, cursor.group, entry, catalog)
            dropped = earlier.entry if kept == cursor.group else entry
            if not dropped.tombstone:
                log.warning(
                    "cross_group_duplicate",
                    key=entry.key,
                    groups=sorted((earlier.group, cursor.group)),
                    kept_group=kept,
                    route_owner=catalog.owner(entry.key) if catalog is not None else None,
                )
            if kept == cursor.group:
                earlier.entry, earlier.group = entry, cursor.group
        frontier = heap[0][0] if heap else None
        while held and (frontier is None or frontier > held[0].limit):
            record = held.popleft()
            del by_key[record.entry.key]
            if not record.entry.tombstone:
                out.append(record.entry)
        if len(out) >= batch_size:
            yield out
            out = []
    if out:
        yield out
