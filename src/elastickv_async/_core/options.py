"""Options of the two public operations, shared by the library API and the CLI.

Only what the core itself uses lives here. Each adapter's own options (its CLI flags) are a
dataclass of that adapter, passed in ``adapter_options`` under the adapter's name, either as
an instance or as a mapping of its field names (``{"<adapter>": {"<field>": value}}``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .memory import DEFAULT_MEMORY_BUDGET

__all__ = ["DecodeOptions", "EncodeOptions"]


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """How to decode a snapshot; defaults match the reference decoder's defaults."""

    #: The adapters to run: a name, a comma-separated list or ``"all"``, or a sequence of names.
    adapters: str | Sequence[str] = "all"
    #: Per-adapter options by adapter name (see the module docstring); absent: the defaults.
    adapter_options: Mapping[str, Any] = field(default_factory=dict)
    cluster_id: str = ""
    #: Decode only these units, by adapter name: exact table, bucket and queue names, or
    #: key globs for an adapter whose ``scope_glob`` is set (a comma-separated string or a
    #: sequence of names). With a
    #: scope and ``adapters="all"``, only the scoped adapters run; an adapter named in
    #: ``adapters`` but not here is decoded whole. MANIFEST.json records the scope.
    scope: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    #: Keep the live state the reference layout drops (each adapter's ``full_fidelity`` part),
    #: so that a restore brings it back; recorded in MANIFEST.json.
    full_fidelity: bool = False
    #: Milliseconds to subtract from the times ``encode --rebase-time`` shifted forward (the
    #: self-test's inverse of a rebase); 0 for a node's own snapshot.
    time_shift_ms: int = 0
    #: Where adapters spill data that must wait (default: a hidden directory in the output root).
    scratch_root: Path | None = None
    #: Concurrent file writes.
    jobs: int = 8
    #: Worker processes for the adapters' CPU-bound work: 0 keeps it in this process; ``None``
    #: (auto, the CLI's default) uses one per CPU but one for a snapshot of 16 MiB or more. Like
    #: ``multiprocessing``'s spawn, each worker imports the calling program's ``__main__``
    #: module again: a script that asks for workers must guard its entry point with
    #: ``if __name__ == "__main__":``.
    workers: int | None = 0
    #: fsync every written file (slower; the rename is atomic either way).
    fsync: bool = False
    #: ``"sha256"`` writes CHECKSUMS; ``"none"`` writes none (MANIFEST.json says so, and
    #: ``verify`` can then check only that the tree is complete).
    checksums: str = "sha256"
    #: Bytes the run's buffers may hold together (channels, the adapters' sort and spill
    #: buffers, the checksum ledger): one budget shared by every part, each adapter's share
    #: smaller when more adapters run (see :mod:`elastickv_async._core.memory`). At least
    #: 512 KiB; a smaller budget spills more, the output is the same.
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    #: A batch on an adapter channel is sent at this many entries or value bytes, whichever
    #: comes first; each channel buffers ``channel_buffer`` batches. ``batch_bytes`` is an
    #: upper bound: the channels' share of ``memory_budget`` over all the batches they may
    #: hold (per adapter ``channel_buffer + 2``: the buffered ones, the one being routed
    #: and the one the adapter holds) lowers it when that is smaller. A batch may exceed it
    #: by one value (large values are up to 1 MiB each).
    batch_size: int = 512
    batch_bytes: int = 2 << 20
    channel_buffer: int = 4


@dataclass(frozen=True, slots=True)
class EncodeOptions:
    """How to encode a dump tree into a snapshot."""

    #: The adapters to run, as for :class:`DecodeOptions` (names fold to lower case here).
    adapters: str | Sequence[str] = "all"
    #: Per-adapter encode options by adapter name; absent: the defaults.
    adapter_options: Mapping[str, Any] = field(default_factory=dict)
    #: Effective ``last_commit_ts``; ``None`` takes the manifest's. Must not be below it.
    last_commit_ts: int | None = None
    #: Decode the produced .fsm into scratch and compare with the input before publishing.
    self_test: bool = False
    #: Base directory for the self-test's temp files (default: the system temp directory).
    scratch_root: Path | None = None
    #: Concurrent file reads/writes.
    jobs: int = 8
    #: Worker processes for the adapters' CPU-bound work, as for :class:`DecodeOptions`
    #: (auto: one per CPU but one for a tree whose CHECKSUMS lists some 2,500 files or more).
    workers: int | None = 0
    #: Shift the times a node keeps deadlines by (message send and visibility times, key
    #: expiry) forward by the time elapsed since the snapshot, so they keep their distance
    #: to "now" when an old backup is restored.
    rebase_time: bool = False
    #: "Now" in Unix ms for ``rebase_time``; ``None``: the wall clock when the run starts.
    now_ms: int | None = None
    #: Bytes the run's buffers may hold together: the external sort, the records in flight
    #: from the encoders, the digests of the files read (see :class:`DecodeOptions`).
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    #: Check the input tree against its CHECKSUMS before encoding; a file that no longer
    #: matches stops the run (a tree decoded with ``checksums="none"`` is checked for
    #: completeness only).
    verify_checksums: bool = True
