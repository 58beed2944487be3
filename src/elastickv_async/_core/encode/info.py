"""``<output>.encode_info.json``: what an encode run wrote, from what (REFERENCE_NOTES §5.3)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from ..._version import __version__
from .. import gojson
from ..dump.manifest import CURRENT_FORMAT_VERSION, rfc3339nano

__all__ = ["ENCODE_INFO_FORMAT_VERSION", "EncodeInfo", "TimeRebase", "encoder_version"]

ENCODE_INFO_FORMAT_VERSION: Final = 1


def encoder_version() -> str:
    """The version string recorded in the sidecar (same form as the decoder's MANIFEST)."""
    return f"elastickv-async {__version__}"


def _path_text(path: str) -> str:
    return gojson.go_str(os.fsencode(path))


class TimeRebase(msgspec.Struct, frozen=True):
    """An ``--rebase-time`` run: deadlines moved forward by ``now_ms - snapshot_ms``."""

    #: The snapshot's time (its HLC ceiling, else the physical part of ``last_commit_ts``).
    snapshot_ms: int
    now_ms: int

    @property
    def shift_ms(self) -> int:
        """What was added to every rebased time."""
        return self.now_ms - self.snapshot_ms


class EncodeInfo(msgspec.Struct, frozen=True):
    """The facts recorded in the sidecar, on success and on a self-test mismatch."""

    input_root: str
    output_fsm_path: str
    output_fsm_sha256: str
    last_commit_ts: int
    last_commit_ts_overridden: bool
    manifest_last_commit_ts: int
    manifest_cluster_id: str
    adapters_enabled: Sequence[str]
    self_test_ran: bool
    self_test_matched: bool
    #: Written only when set: the reference's sidecar has no such field.
    rebase: TimeRebase | None = None
    #: The input tree's ``--scope``; written only when set (the snapshot holds just that).
    scope: Mapping[str, Sequence[str]] = msgspec.field(default_factory=dict)

    def to_json(self, *, now: datetime | None = None) -> bytes:
        """Serialise in the reference's field order (2-space indent, HTML escaping on)."""
        doc: dict[str, Any] = {
            "format_version": ENCODE_INFO_FORMAT_VERSION,
            "encoder_version": encoder_version(),
            "encoder_key_format_version": CURRENT_FORMAT_VERSION,
            "wall_time_iso": rfc3339nano(now or datetime.now(UTC)),
            "input_root": _path_text(self.input_root),
            "output_fsm_path": _path_text(self.output_fsm_path),
            "output_fsm_sha256": self.output_fsm_sha256,
            "last_commit_ts": self.last_commit_ts,
            "last_commit_ts_overridden": self.last_commit_ts_overridden,
            "manifest_last_commit_ts": self.manifest_last_commit_ts,
        }
        if self.manifest_cluster_id:
            doc["manifest_cluster_id"] = self.manifest_cluster_id
        doc["adapters_enabled"] = list(self.adapters_enabled)
        doc["self_test"] = {"ran": self.self_test_ran, "matched": self.self_test_matched}
        if self.rebase is not None:
            doc["time_rebase"] = {
                "snapshot_ms": self.rebase.snapshot_ms,
                "now_ms": self.rebase.now_ms,
                "shift_ms": self.rebase.shift_ms,
            }
        if self.scope:
            doc["scope"] = {name: list(names) for name, names in self.scope.items()}
        return gojson.encoder_indent(doc, escape_html=True)
