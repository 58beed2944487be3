"""DynamoDB decode options (``--dynamodb-bundle-mode``, ``--dynamodb-bundle-size``) and how
MANIFEST.json records them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..._core.dump.manifest import ManifestField
from ..._core.errors import ManifestError, UsageError
from ..._core.gojson_read import get_int, get_str
from ..base import option
from .bundle import PART_BYTES
from .tree import LAYOUT_JSONL, LAYOUT_PER_ITEM, LAYOUTS

__all__ = ["DynamoDBOptions", "manifest_fields", "parse_size", "read_manifest"]

_LAYOUT_FIELD: Final = "dynamodb_layout"
#: Written only for the jsonl layout with a size other than the default, so every MANIFEST
#: the reference could write stays byte for byte the reference's.
_PART_BYTES_FIELD: Final = "dynamodb_bundle_size_bytes"
_SIZE: Final = re.compile(r"([0-9]+)\s*(B|KiB|MiB|GiB)?")
_UNITS: Final = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_MAX_PART_BYTES: Final = 1 << 40


def parse_size(text: str) -> int:
    """``--dynamodb-bundle-size``: bytes, or a number with ``B``, ``KiB``, ``MiB`` or ``GiB``.

    Raises :class:`~elastickv_async._core.errors.UsageError` for anything else, for 0 and for
    sizes above 1 TiB.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise UsageError(
            f"--dynamodb-bundle-size {text!r} is not a size (e.g. 64MiB, 512KiB, 1GiB, 1048576)"
        )
    size = int(match[1]) * _UNITS[match[2]]
    if not 0 < size <= _MAX_PART_BYTES:
        raise UsageError(f"--dynamodb-bundle-size {text!r} must be between 1 byte and 1 TiB")
    return size


@dataclass(frozen=True, slots=True)
class DynamoDBOptions:
    """How the DynamoDB decoder lays out items."""

    layout: str = option(
        LAYOUT_PER_ITEM,
        flag="dynamodb-bundle-mode",
        help=f"DynamoDB item layout: {LAYOUT_PER_ITEM} or {LAYOUT_JSONL}",
        choices=LAYOUTS,
    )
    bundle_size: str = option(
        f"{PART_BYTES >> 20}MiB",
        flag="dynamodb-bundle-size",
        help="with --dynamodb-bundle-mode jsonl: start a new items/data-*.jsonl part before "
        "one would grow past this size (bytes, or with KiB, MiB, GiB)",
    )

    def __post_init__(self) -> None:
        parse_size(self.bundle_size)  # a bad size is refused before any work

    @property
    def part_bytes(self) -> int:
        """:attr:`bundle_size` in bytes."""
        return parse_size(self.bundle_size)


def manifest_fields(options: DynamoDBOptions) -> Sequence[ManifestField]:
    """The MANIFEST.json fields that name the item layout and, for jsonl parts of a size
    other than the default, that size."""
    fields = [ManifestField("top", _LAYOUT_FIELD, options.layout, 50)]
    if options.layout == LAYOUT_JSONL and options.part_bytes != PART_BYTES:
        fields.append(ManifestField("top", _PART_BYTES_FIELD, options.part_bytes, 51))
    return fields


def read_manifest(doc: Mapping[str, Any]) -> DynamoDBOptions:
    """The DynamoDB options a tree was decoded with; the layout must be one this build knows."""
    layout = get_str(doc, _LAYOUT_FIELD)
    if layout not in LAYOUTS:
        raise ManifestError(
            f"MANIFEST.json {_LAYOUT_FIELD} {layout!r} unsupported", code="ErrInvalidManifest"
        )
    if layout != LAYOUT_JSONL or doc.get(_PART_BYTES_FIELD) is None:
        return DynamoDBOptions(layout=layout)
    part_bytes = get_int(doc, _PART_BYTES_FIELD, "u64")
    if not 0 < part_bytes <= _MAX_PART_BYTES:
        raise ManifestError(
            f"MANIFEST.json {_PART_BYTES_FIELD} {part_bytes} is out of range",
            code="ErrInvalidManifest",
        )
    return DynamoDBOptions(layout=layout, bundle_size=str(part_bytes))
