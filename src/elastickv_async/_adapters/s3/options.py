"""S3 decode options (``--include-incomplete-uploads``, ``--include-orphans``,
``--rename-collisions``) and how MANIFEST.json records them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..._core.dump.manifest import (
    ManifestField,
    optional_exclusion,
    required_exclusion,
    required_string,
)
from ..._core.errors import DumpTreeError
from ..base import option
from .layout import META_SUFFIX

__all__ = ["S3Options", "encode_refusal", "full_fidelity", "manifest_fields", "read_manifest"]

#: The reference's only strategy for a key that is also a directory of longer keys.
COLLISION_STRATEGY: Final = "leaf-data-suffix"

_INCOMPLETE: Final = "include_incomplete_uploads"
_ORPHANS: Final = "include_orphans"
_RENAME: Final = "rename_s3_collisions"
_META_SUFFIX_FIELD: Final = "s3_meta_suffix"
_STRATEGY_FIELD: Final = "s3_collision_strategy"


@dataclass(frozen=True, slots=True)
class S3Options:
    """What the S3 decoder writes beyond live objects, and how it treats reserved names."""

    include_incomplete_uploads: bool = option(
        False,
        flag="include-incomplete-uploads",
        help="write in-flight multipart uploads under <bucket>/_incomplete_uploads/",
    )
    include_orphans: bool = option(
        False, flag="include-orphans", help="write chunks no live object refers to under _orphans/"
    )
    rename_collisions: bool = option(
        False,
        flag="rename-collisions",
        help="rename object keys ending in the metadata suffix instead of refusing them",
    )


def manifest_fields(options: S3Options) -> Sequence[ManifestField]:
    """The exclusions and policy fields of MANIFEST.json that describe the S3 subtree."""
    fields = [
        ManifestField("exclusions", _INCOMPLETE, options.include_incomplete_uploads, 10),
        ManifestField("exclusions", _ORPHANS, options.include_orphans, 11),
        ManifestField("top", _META_SUFFIX_FIELD, META_SUFFIX.decode(), 40),
        ManifestField("top", _STRATEGY_FIELD, COLLISION_STRATEGY, 41),
    ]
    if options.rename_collisions:
        # Written only when set: older producers do not know the field.
        fields.append(ManifestField("exclusions", _RENAME, True, 30))
    return fields


def read_manifest(doc: Mapping[str, Any]) -> S3Options:
    """The S3 options a tree was decoded with; the policy strings must be present."""
    options = S3Options(
        include_incomplete_uploads=required_exclusion(doc, _INCOMPLETE),
        include_orphans=required_exclusion(doc, _ORPHANS),
        rename_collisions=optional_exclusion(doc, _RENAME),
    )
    required_string(doc, _META_SUFFIX_FIELD)
    required_string(doc, _STRATEGY_FIELD)
    return options


def full_fidelity(options: S3Options) -> S3Options:
    """Full fidelity keeps incomplete multipart uploads (with their parts' chunks)."""
    return dataclasses.replace(options, include_incomplete_uploads=True)


def encode_refusal(options: S3Options, full_fidelity: bool) -> DumpTreeError | None:
    """Why the S3 encoder cannot restore a tree decoded with ``options``: it writes live
    objects, and incomplete uploads only from a full-fidelity tree (which holds their
    chunks)."""
    if options.include_incomplete_uploads and not full_fidelity:
        return _unsupported(_INCOMPLETE, "S3IncompleteUploads")
    if options.include_orphans:
        return _unsupported(_ORPHANS, "S3Orphans")
    return None


def _unsupported(flag: str, feature: str) -> DumpTreeError:
    return DumpTreeError(
        f"the dump tree was decoded with S3 {flag}, which the encoder cannot restore",
        code=f"ErrEncodeUnsupported{feature}",
    )
