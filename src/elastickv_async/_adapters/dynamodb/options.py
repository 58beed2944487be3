"""DynamoDB decode options (``--dynamodb-bundle-mode``) and how MANIFEST.json records them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..._core.dump.manifest import ManifestField
from ..._core.errors import ManifestError
from ..._core.gojson_read import get_str
from ..base import option
from .layout import LAYOUT_JSONL, LAYOUT_PER_ITEM, LAYOUTS

__all__ = ["DynamoDBOptions", "manifest_fields", "read_manifest"]

_LAYOUT_FIELD: Final = "dynamodb_layout"


@dataclass(frozen=True, slots=True)
class DynamoDBOptions:
    """How the DynamoDB decoder lays out items."""

    layout: str = option(
        LAYOUT_PER_ITEM,
        flag="dynamodb-bundle-mode",
        help=f"DynamoDB item layout: {LAYOUT_PER_ITEM} or {LAYOUT_JSONL}",
        choices=LAYOUTS,
    )


def manifest_fields(options: DynamoDBOptions) -> Sequence[ManifestField]:
    """The MANIFEST.json field that names the item layout."""
    return (ManifestField("top", _LAYOUT_FIELD, options.layout, 50),)


def read_manifest(doc: Mapping[str, Any]) -> DynamoDBOptions:
    """The DynamoDB options a tree was decoded with; the layout must be one this build knows."""
    layout = get_str(doc, _LAYOUT_FIELD)
    if layout not in LAYOUTS:
        raise ManifestError(
            f"MANIFEST.json {_LAYOUT_FIELD} {layout!r} unsupported", code="ErrInvalidManifest"
        )
    return DynamoDBOptions(layout=layout)
