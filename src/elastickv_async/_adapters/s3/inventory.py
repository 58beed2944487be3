"""``inspect``'s inventory of the S3 keyspace: buckets, their objects and object bytes."""

from __future__ import annotations

from ..._core.errors import AdapterRecordError
from ..._core.snapshot.entry import Entry
from ..base import InventoryRow
from .keys import BUCKET_META_PREFIX, MANIFEST_PREFIX, parse_bucket_meta_key, parse_manifest_key
from .values import parse_live_manifest

__all__ = ["S3Inventory"]


class S3Inventory:
    """Objects and their declared sizes per bucket (every generation's objects count)."""

    def __init__(self) -> None:
        self._buckets: dict[bytes, list[int]] = {}
        self._malformed = 0

    def add(self, prefix: bytes, entry: Entry) -> None:
        """Count one bucket or object manifest."""
        try:
            if prefix == BUCKET_META_PREFIX:
                self._buckets.setdefault(parse_bucket_meta_key(entry.key), [0, 0])
            elif prefix == MANIFEST_PREFIX:
                bucket, _, _ = parse_manifest_key(entry.key)
                counts = self._buckets.setdefault(bucket, [0, 0])
                counts[0] += 1
                counts[1] += max(parse_live_manifest(entry.value).size_bytes, 0)
        except (AdapterRecordError, ValueError):
            self._malformed += 1

    def rows(self) -> list[InventoryRow]:
        """One row per bucket, by name."""
        rows = [
            InventoryRow(
                "bucket",
                name.decode("utf-8", "backslashreplace"),
                {"objects": objects, "bytes": size},
            )
            for name, (objects, size) in sorted(self._buckets.items())
        ]
        if self._malformed:
            rows.append(InventoryRow("malformed", "records", {"records": self._malformed}))
        return rows
