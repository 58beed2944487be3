"""MANIFEST.json: the dump tree's self-description (REFERENCE_NOTES §5.1).

Field names, order and policy constants live here and nowhere else. The manifest is the last
file a decode writes, so a tree without it is recognisably incomplete.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from .. import gojson
from ..options import DecodeOptions

__all__ = [
    "CHECKSUM_ALGORITHM",
    "CHECKSUM_FORMAT",
    "CURRENT_FORMAT_VERSION",
    "ENCODED_FILENAME_CHARSET",
    "MANIFEST_NAME",
    "PHASE_LIVE",
    "PHASE_SNAPSHOT",
    "S3_COLLISION_STRATEGY",
    "S3_META_SUFFIX",
    "DecodeManifest",
    "rfc3339nano",
]

MANIFEST_NAME: Final = "MANIFEST.json"
CURRENT_FORMAT_VERSION: Final = 1
PHASE_SNAPSHOT: Final = "phase0-snapshot-decode"
PHASE_LIVE: Final = "phase1-live-pinned"
CHECKSUM_ALGORITHM: Final = "sha256"
CHECKSUM_FORMAT: Final = "sha256sum"
ENCODED_FILENAME_CHARSET: Final = "rfc3986-unreserved-plus-percent"
KEY_SEGMENT_MAX_BYTES: Final = 240
S3_META_SUFFIX: Final = ".elastickv-meta.json"
S3_COLLISION_STRATEGY: Final = "leaf-data-suffix"
DYNAMODB_LAYOUTS: Final = ("per-item", "jsonl")


def rfc3339nano(moment: datetime) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: fractional seconds with trailing zeros trimmed."""
    moment = moment.astimezone(UTC)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        base += "." + f"{moment.microsecond:06d}".rstrip("0")
    return base + "Z"


@dataclass(slots=True)
class DecodeManifest:
    """The facts a decode run records in MANIFEST.json."""

    options: DecodeOptions
    fsm_path: str
    last_commit_ts: int
    elastickv_version: str
    wall_time: datetime
    snapshot_index: int | None = None
    fsm_crc32c: int | None = None
    hlc_ceiling_ms: int | None = None
    scopes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """Serialise exactly like the reference (2-space indent, no HTML escaping, newline)."""
        doc: dict[str, Any] = {
            "format_version": CURRENT_FORMAT_VERSION,
            "phase": PHASE_SNAPSHOT,
        }
        if self.elastickv_version:
            doc["elastickv_version"] = self.elastickv_version
        if self.options.cluster_id:
            doc["cluster_id"] = self.options.cluster_id
        if self.snapshot_index:
            doc["snapshot_index"] = self.snapshot_index
        if self.last_commit_ts:
            doc["last_commit_ts"] = self.last_commit_ts
        doc["wall_time_iso"] = rfc3339nano(self.wall_time)
        source: dict[str, Any] = {"fsm_path": gojson.go_str(self.fsm_path.encode(errors="surrogateescape"))}
        if self.fsm_crc32c is not None:
            source["fsm_crc32c"] = f"{self.fsm_crc32c:08x}"
        if self.hlc_ceiling_ms is not None:
            source["hlc_ceiling_ms"] = self.hlc_ceiling_ms
        doc["source"] = source
        doc["adapters"] = {
            name: dict(self.scopes.get(name, {})) for name in self.options.adapters
        }
        exclusions: dict[str, Any] = {
            "include_incomplete_uploads": self.options.include_incomplete_uploads,
            "include_orphans": self.options.include_orphans,
            "preserve_sqs_visibility": self.options.preserve_sqs_visibility,
            "include_sqs_side_records": self.options.include_sqs_side_records,
        }
        if self.options.rename_collisions:
            exclusions["rename_s3_collisions"] = True
        doc["exclusions"] = exclusions
        doc["checksum_algorithm"] = CHECKSUM_ALGORITHM
        doc["checksum_format"] = CHECKSUM_FORMAT
        doc["encoded_filename_charset"] = ENCODED_FILENAME_CHARSET
        doc["key_segment_max_bytes"] = KEY_SEGMENT_MAX_BYTES
        doc["s3_meta_suffix"] = S3_META_SUFFIX
        doc["s3_collision_strategy"] = S3_COLLISION_STRATEGY
        doc["dynamodb_layout"] = self.options.dynamodb_layout
        return gojson.encoder_indent(doc, escape_html=False)
