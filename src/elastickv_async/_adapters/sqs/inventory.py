"""``inspect``'s inventory of the SQS keyspace: queues and their messages."""

from __future__ import annotations

from ..._core.dump.names import b64url_decode
from ..._core.errors import AdapterRecordError
from ..._core.snapshot.entry import Entry
from ..base import InventoryRow
from .keys import MSG_DATA_PREFIX, QUEUE_META_PREFIX, message_data_queue, queue_key_segment

__all__ = ["SQSInventory"]


class SQSInventory:
    """Messages per queue (every generation's messages count)."""

    def __init__(self) -> None:
        self._queues: dict[str, int] = {}
        self._malformed = 0

    def add(self, prefix: bytes, entry: Entry) -> None:
        """Count one queue or message."""
        try:
            if prefix == QUEUE_META_PREFIX:
                encoded, _ = queue_key_segment(entry.key, QUEUE_META_PREFIX)
                self._queues.setdefault(encoded, 0)
            elif prefix == MSG_DATA_PREFIX:
                encoded, _ = message_data_queue(entry.key)
                self._queues[encoded] = self._queues.get(encoded, 0) + 1
        except AdapterRecordError:
            self._malformed += 1

    def rows(self) -> list[InventoryRow]:
        """One row per queue, by name."""
        rows = [
            InventoryRow("queue", _name(encoded), {"messages": messages})
            for encoded, messages in self._queues.items()
        ]
        rows.sort(key=lambda r: r.name)
        if self._malformed:
            rows.append(InventoryRow("malformed", "keys", {"keys": self._malformed}))
        return rows


def _name(encoded: str) -> str:
    try:
        return b64url_decode(encoded.encode()).decode("utf-8", "backslashreplace")
    except ValueError:
        return encoded
