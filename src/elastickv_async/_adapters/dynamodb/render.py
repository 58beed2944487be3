"""Rendering DynamoDB items: spilled item bodies -> item files or JSON lines.

Pure computation, run in worker processes by :class:`~.decode.DynamoDBDecoder`: this
module imports only what rendering needs, so that a worker process starts quickly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..._core import gojson
from .layout import ITEMS_DIR, item_key_segments, item_public
from .values import decode_item

__all__ = ["RenderPlan", "bundle_lines", "item_files"]


@dataclass(frozen=True, slots=True)
class RenderPlan:
    """What rendering a table's items needs (sent to worker processes)."""

    directory: str
    hash_key: str
    range_key: str


def item_files(plan: RenderPlan, bodies: list[bytes]) -> list[tuple[str, bytes]]:
    """The per-item files of a chunk of item bodies: path and indented JSON."""
    files = []
    for body in bodies:
        item = decode_item(body)
        hash_segment, range_segment = item_key_segments(item, plan.hash_key, plan.range_key)
        if range_segment is None:
            name = hash_segment
        elif hash_segment:
            name = f"{hash_segment}/{range_segment}"
        else:
            # The reference joins paths with filepath.Join, which drops an empty hash
            # segment: the item lands at items/<range>.json. Keep that placement.
            name = range_segment
        files.append(
            (
                f"{plan.directory}/{ITEMS_DIR}/{name}.json",
                gojson.marshal_indent(item_public(item)),
            )
        )
    return files


def bundle_lines(plan: RenderPlan, bodies: list[bytes]) -> list[tuple[bytes, bytes]]:
    """A chunk of item bodies as JSON lines, each with its sort key (hash, then range)."""
    lines = []
    for body in bodies:
        item = decode_item(body)
        hash_segment, range_segment = item_key_segments(item, plan.hash_key, plan.range_key)
        sort_key = f"{hash_segment}\x00{range_segment or ''}".encode()
        lines.append((sort_key, gojson.marshal(item_public(item)) + b"\n"))
    return lines
