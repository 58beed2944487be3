"""SQS decode options (``--preserve-sqs-visibility``, ``--include-sqs-side-records``) and how
MANIFEST.json records them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..._core.dump.manifest import ManifestField, required_exclusion
from ..._core.errors import DumpTreeError
from ..base import option

__all__ = ["SQSOptions", "encode_refusal", "full_fidelity", "manifest_fields", "read_manifest"]

_VISIBILITY: Final = "preserve_sqs_visibility"
_SIDE_RECORDS: Final = "include_sqs_side_records"


@dataclass(frozen=True, slots=True)
class SQSOptions:
    """Which live-only message state the SQS decoder keeps."""

    preserve_visibility: bool = option(
        False,
        flag="preserve-sqs-visibility",
        help="keep each message's visibility state (receipt, visible-at, receive count)",
    )
    include_side_records: bool = option(
        False,
        flag="include-sqs-side-records",
        help="write index and dedup rows to <queue>/_internals/side_records.jsonl",
    )


def manifest_fields(options: SQSOptions) -> Sequence[ManifestField]:
    """The MANIFEST.json exclusions that describe the SQS subtree."""
    return (
        ManifestField("exclusions", _VISIBILITY, options.preserve_visibility, 20),
        ManifestField("exclusions", _SIDE_RECORDS, options.include_side_records, 21),
    )


def read_manifest(doc: Mapping[str, Any]) -> SQSOptions:
    """The SQS options a tree was decoded with."""
    return SQSOptions(
        preserve_visibility=required_exclusion(doc, _VISIBILITY),
        include_side_records=required_exclusion(doc, _SIDE_RECORDS),
    )


def full_fidelity(options: SQSOptions) -> SQSOptions:
    """Full fidelity keeps every message's visibility state (in-flight messages stay so)."""
    return dataclasses.replace(options, preserve_visibility=True)


def encode_refusal(options: SQSOptions, full_fidelity: bool) -> DumpTreeError | None:
    """Why the SQS encoder cannot restore a tree decoded with ``options``: it rebuilds the
    side records itself, and restores visibility state only from a full-fidelity tree."""
    if options.preserve_visibility and not full_fidelity:
        return _unsupported(_VISIBILITY, "SQSPreserveVisibility")
    if options.include_side_records:
        return _unsupported(_SIDE_RECORDS, "SQSSideRecords")
    return None


def _unsupported(flag: str, feature: str) -> DumpTreeError:
    return DumpTreeError(
        f"the dump tree was decoded with SQS {flag}, which the encoder cannot restore",
        code=f"ErrEncodeUnsupported{feature}",
    )
