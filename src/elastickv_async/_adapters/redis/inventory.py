"""``inspect``'s inventory of the Redis keyspace: keys per type.

A string or HyperLogLog is one record. A collection exists while it has a member (field,
item, member), so collections are counted by the distinct user keys of their member rows;
the snapshot is in key order, so those rows of one key are adjacent and no set of keys is
kept. A stream exists while its metadata row does, even when empty. Keys whose TTL had passed
are counted (``decode`` omits them and counts them as ``redis.expired_keys_omitted``).
"""

from __future__ import annotations

from typing import Final

from ..._core.errors import AdapterRecordError
from ..._core.snapshot.entry import Entry
from ..base import InventoryRow
from . import keys

__all__ = ["RedisInventory"]

#: Prefixes with exactly one row per user key.
_ONE_ROW_PER_KEY: Final = {
    keys.STRING: "string",
    keys.HLL: "hyperloglog",
    keys.HASH_LEGACY: "hash",
    keys.SET_LEGACY: "set",
    keys.ZSET_LEGACY: "zset",
    keys.STREAM_LEGACY: "stream",
    keys.STREAM_META: "stream",
}

#: Member-row prefixes of the wide-column collections.
_MEMBER_ROWS: Final = {
    keys.HASH_FIELD: "hash",
    keys.SET_MEMBER: "set",
    keys.ZSET_MEMBER: "zset",
    keys.LIST_ITEM: "list",
}


def _user_key(prefix: bytes, key: bytes) -> bytes:
    if prefix == keys.LIST_ITEM:
        return keys.parse_list_item_key(key)[0]
    # The code only names the error, which the inventory counts instead of raising.
    return keys.parse_wide_key(key, prefix, "ErrRedisInvalidSetKey")[0]


class RedisInventory:
    """Keys per type, and how many carry a TTL."""

    def __init__(self) -> None:
        self._types: dict[str, int] = {}
        self._last: dict[bytes, bytes] = {}
        self._ttls = 0
        self._malformed = 0

    def add(self, prefix: bytes, entry: Entry) -> None:
        """Count a key at its one row, or at the first member row of a collection."""
        kind = _ONE_ROW_PER_KEY.get(prefix)
        if kind is None and prefix in _MEMBER_ROWS:
            try:
                user_key = _user_key(prefix, entry.key)
            except AdapterRecordError:
                self._malformed += 1
                return
            if self._last.get(prefix) == user_key:
                return
            self._last[prefix] = user_key
            kind = _MEMBER_ROWS[prefix]
        if kind is not None:
            self._types[kind] = self._types.get(kind, 0) + 1
        elif prefix == keys.TTL:
            self._ttls += 1

    def rows(self) -> list[InventoryRow]:
        """One row per type present, by name, then the keys carrying a TTL."""
        rows = [InventoryRow("type", kind, {"keys": n}) for kind, n in sorted(self._types.items())]
        if self._ttls:
            rows.append(InventoryRow("ttl", "keys with a TTL", {"keys": self._ttls}))
        if self._malformed:
            rows.append(InventoryRow("malformed", "keys", {"keys": self._malformed}))
        return rows
