"""``inspect``'s inventory of the DynamoDB keyspace: tables, their items and item bytes."""

from __future__ import annotations

from ..._core.errors import AdapterRecordError
from ..._core.snapshot.entry import Entry
from ..base import InventoryRow
from .keys import ITEM_PREFIX, TABLE_META_PREFIX, parse_item_key, parse_table_meta_key

__all__ = ["DynamoDBInventory"]


class DynamoDBInventory:
    """Items and item-value bytes per table (every generation's items count)."""

    def __init__(self) -> None:
        self._tables: dict[str, list[int]] = {}
        self._names: dict[str, bytes] = {}
        self._malformed = 0

    def add(self, prefix: bytes, entry: Entry) -> None:
        """Count one table schema or item."""
        try:
            if prefix == TABLE_META_PREFIX:
                table = parse_table_meta_key(entry.key)
                self._names[table.encoded] = table.name
                self._tables.setdefault(table.encoded, [0, 0])
            elif prefix == ITEM_PREFIX:
                item = parse_item_key(entry.key)
                counts = self._tables.setdefault(item.encoded_table, [0, 0])
                counts[0] += 1
                counts[1] += len(entry.value)
        except AdapterRecordError:
            self._malformed += 1

    def rows(self) -> list[InventoryRow]:
        """One row per table, by name; items without a schema show their encoded name."""
        rows = [
            InventoryRow(
                "table",
                self._names.get(enc, enc.encode()).decode("utf-8", "backslashreplace"),
                {"items": items, "bytes": size},
            )
            for enc, (items, size) in self._tables.items()
        ]
        rows.sort(key=lambda r: r.name)
        if self._malformed:
            rows.append(InventoryRow("malformed", "keys", {"keys": self._malformed}))
        return rows
