"""Names of the DynamoDB subtree and its item layouts.

Kept apart from ``layout`` so that the adapter's spec and options, which every run loads,
do not load the protobuf runtime with it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ITEMS_DIR", "LAYOUTS", "LAYOUT_JSONL", "LAYOUT_PER_ITEM", "ROOT", "SCHEMA_FILE"]

#: The adapter's subtree of the dump.
ROOT: Final = "dynamodb"
#: A table directory holds its schema and its items.
SCHEMA_FILE: Final = "_schema.json"
ITEMS_DIR: Final = "items"
#: Item layouts: one file per item, or bundles of JSON lines (MANIFEST ``dynamodb_layout``).
LAYOUT_PER_ITEM: Final = "per-item"
LAYOUT_JSONL: Final = "jsonl"
LAYOUTS: Final = (LAYOUT_PER_ITEM, LAYOUT_JSONL)
