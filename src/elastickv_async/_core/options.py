"""Options of the two public operations, shared by the library API and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .errors import UsageError

__all__ = ["ADAPTER_NAMES", "DecodeOptions", "EncodeOptions", "parse_adapter_list"]

#: Canonical adapter order of the decoder (and of MANIFEST ``adapters``).
ADAPTER_NAMES: Final = ("dynamodb", "s3", "redis", "sqs")


def parse_adapter_list(text: str, *, lower: bool = False) -> tuple[str, ...]:
    """Parse an ``--adapter`` CSV the way the reference does (``""``/``all`` = every adapter).

    Returns the selected names in canonical order; unknown names raise :class:`UsageError`.
    """
    text = text.strip()
    if text in ("", "all"):
        return ADAPTER_NAMES
    chosen: set[str] = set()
    for raw in text.split(","):
        name = raw.strip().lower() if lower else raw.strip()
        if not name:
            continue
        if name == "all":
            chosen.update(ADAPTER_NAMES)
            continue
        if name not in ADAPTER_NAMES:
            raise UsageError(f"unknown adapter {name!r} (known: {', '.join(ADAPTER_NAMES)})")
        chosen.add(name)
    if not chosen:
        raise UsageError("--adapter selected zero adapters")
    return tuple(n for n in ADAPTER_NAMES if n in chosen)


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """How to decode a snapshot; defaults match the reference decoder's defaults."""

    adapters: tuple[str, ...] = ADAPTER_NAMES
    cluster_id: str = ""
    include_incomplete_uploads: bool = False
    include_orphans: bool = False
    preserve_sqs_visibility: bool = False
    include_sqs_side_records: bool = False
    rename_collisions: bool = False
    dynamodb_layout: str = "per-item"
    #: Where adapters spill data that must wait (default: a hidden directory in the output root).
    scratch_root: Path | None = None
    #: Keep Redis keys whose TTL had passed when the snapshot was taken.
    keep_expired: bool = False
    #: Concurrent file writes.
    jobs: int = 8
    #: fsync every written file (slower; the rename is atomic either way).
    fsync: bool = False
    #: A batch on an adapter channel is sent at this many entries or value bytes, whichever
    #: comes first; each channel buffers ``channel_buffer`` batches. Together they bound the
    #: memory in flight (S3 chunks are up to 1 MiB each).
    batch_size: int = 512
    batch_bytes: int = 8 << 20
    channel_buffer: int = 4


@dataclass(frozen=True, slots=True)
class EncodeOptions:
    """How to encode a dump tree into a snapshot."""

    adapters: tuple[str, ...] = ADAPTER_NAMES
    #: Effective ``last_commit_ts``; ``None`` takes the manifest's. Must not be below it.
    last_commit_ts: int | None = None
    #: Decode the produced .fsm into scratch and compare with the input before publishing.
    self_test: bool = False
    #: Base directory for the self-test's temp files (default: the system temp directory).
    scratch_root: Path | None = None
    #: Concurrent file reads/writes.
    jobs: int = 8
