"""Longest-prefix routing of user keys to adapters (REFERENCE_NOTES §2.3)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from operator import attrgetter
from typing import Final

from .._adapters.base import AdapterSpec
from .snapshot.entry import Entry

__all__ = ["GLOBAL_INTERNAL_PREFIXES", "INTERNAL", "Router", "prefix_family"]

#: Route target of keys that are dropped on purpose (counted as internal).
INTERNAL: Final = "internal"

_KEY: Final = attrgetter("key")

#: Store-wide internal keyspaces that belong to no adapter: transactions, distribution
#: metadata, encryption bookkeeping and the filesystem adapter, which has no dump format yet.
GLOBAL_INTERNAL_PREFIXES: Final = (b"!txn|", b"!dist|", b"!encryption|", b"!fs|")


def prefix_family(key: bytes) -> bytes:
    """A short, stable label for an unknown key: up to its second ``|``, at most 24 bytes."""
    first = key.find(b"|")
    second = key.find(b"|", first + 1) if first >= 0 else -1
    end = second + 1 if 0 <= second < 24 else min(len(key), 24)
    return key[:end]


class Router:
    """Maps a user key to ``(target, prefix)``: an adapter name, :data:`INTERNAL`, or ``None``.

    Prefixes of enabled adapters route to them; every adapter's internal prefixes, the routed
    prefixes of disabled adapters and :data:`GLOBAL_INTERNAL_PREFIXES` route to
    :data:`INTERNAL`. The longest matching prefix wins.
    """

    def __init__(self, specs: Mapping[str, AdapterSpec], enabled: Iterable[str]) -> None:
        enabled_set = set(enabled)
        table: dict[bytes, str] = {p: INTERNAL for p in GLOBAL_INTERNAL_PREFIXES}
        for spec in specs.values():
            for prefix in spec.routed_prefixes:
                table[prefix] = spec.name if spec.name in enabled_set else INTERNAL
            for prefix in spec.internal_prefixes:
                table[prefix] = INTERNAL
        self._by_length: list[tuple[int, dict[bytes, str]]] = []
        for length in sorted({len(p) for p in table}, reverse=True):
            self._by_length.append((length, {p: t for p, t in table.items() if len(p) == length}))
        # A prefix that no other prefix extends is the longest match of every key it starts, so
        # its answer can be reused for the next key; snapshots are key-sorted, so runs are long.
        self._maximal = frozenset(
            p for p in table if not any(q != p and q.startswith(p) for q in table)
        )
        self._last: tuple[str | None, bytes] | None = None

    def route(self, key: bytes) -> tuple[str | None, bytes]:
        """Return the target and the matched prefix (``(None, b"")`` when nothing matches)."""
        last = self._last
        if last is not None and key.startswith(last[1]):
            return last
        for length, bucket in self._by_length:
            prefix = key[:length]
            target = bucket.get(prefix)
            if target is not None:
                found = (target, prefix)
                if prefix in self._maximal:
                    self._last = found
                return found
        return None, b""

    def runs(self, entries: Sequence[Entry]) -> Iterator[tuple[str | None, bytes, Sequence[Entry]]]:
        """Split visible entries (in stream order) into runs of one route: ``(target,
        prefix, entries)`` as :meth:`route` answers for each entry of the run.

        A key at least as long as a prefix starts with it exactly when its encoded form
        (``key ‖ BE(^commit_ts)``) does, and the stream is sorted by encoded key (a key
        held back by a cluster merge only moves past keys that start with it), so such keys
        that start with one prefix are contiguous: a run under a prefix that no other
        prefix extends ends where a binary search finds its last key.
        """
        keys = list(map(_KEY, entries))
        count = len(keys)
        shortest = min(map(len, keys), default=0)
        start = 0
        while start < count:
            target, prefix = self.route(keys[start])
            end = start + 1
            if prefix in self._maximal and len(prefix) <= shortest:
                if keys[-1].startswith(prefix):
                    end = count
                else:
                    high = count - 1  # keys[high] does not start with the prefix
                    while end < high:
                        middle = (end + high) // 2
                        if keys[middle].startswith(prefix):
                            end = middle + 1
                        else:
                            high = middle
            yield target, prefix, entries[start:end]
            start = end
