"""The contract between the pipeline and the adapters.

The pipeline knows each adapter only through an :class:`AdapterSpec`: its name, the key
prefixes it owns, the prefixes that belong to it but are dropped (internal), and the
factories of its decoder and encoder. Everything else about a format lives in the adapter's
own package (``keys.py`` for layouts, ``decode.py``/``encode.py`` for the two directions).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from .._core.dump.tree import DumpTree
from .._core.dump.writer import DumpWriter
from .._core.options import DecodeOptions
from .._core.report import Report
from .._core.snapshot.entry import Entry, SnapshotHeader

__all__ = [
    "AdapterSpec",
    "DecodeAdapter",
    "DecodeContext",
    "EncodeAdapter",
    "EncodeContext",
    "Routed",
]

#: One routed entry: the routing prefix that matched (longest wins) and the entry itself.
Routed = tuple[bytes, Entry]


@dataclass(slots=True)
class DecodeContext:
    """Everything an adapter's decoder may use; built by the pipeline, one per adapter."""

    options: DecodeOptions
    writer: DumpWriter
    #: Logger bound with ``adapter=<name>``; ``log.warning(event, **fields)`` feeds the report.
    log: structlog.typing.FilteringBoundLogger
    report: Report
    header: SnapshotHeader
    #: A private, empty directory for data that must wait; removed by the pipeline at the end.
    scratch: Path
    #: "Now" in Unix ms as the snapshot saw it (HLC ceiling, else physical part of last_commit_ts).
    now_ms: int


class DecodeAdapter(Protocol):
    """One adapter's decoder. The pipeline runs :meth:`handle` in one task per adapter."""

    async def handle(self, batch: Sequence[Routed]) -> None:
        """Consume a batch of visible entries, in snapshot key order."""

    async def finalize(self) -> dict[str, Any]:
        """Write what is still buffered; return the MANIFEST scope, e.g. ``{"tables": [...]}``."""


@dataclass(slots=True)
class EncodeContext:
    """Everything an adapter's encoder may use."""

    input_root: Path
    log: structlog.typing.FilteringBoundLogger
    report: Report
    scratch: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    #: Safe read access to ``input_root``: the only way an encoder reads the tree.
    tree: DumpTree = field(init=False)

    def __post_init__(self) -> None:
        self.tree = DumpTree(self.input_root)


class EncodeAdapter(Protocol):
    """One adapter's encoder: walks its subtree and yields ``(user_key, user_value)`` records."""

    def records(self) -> AsyncIterator[tuple[bytes, bytes]]:
        """Yield every internal record of this adapter's subtree, in any order."""
        ...


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """How the pipeline sees one adapter."""

    name: str
    #: Prefixes routed to this adapter's decoder when the adapter is enabled.
    routed_prefixes: tuple[bytes, ...]
    #: Prefixes of this adapter's keyspace that are dropped and counted as internal.
    internal_prefixes: tuple[bytes, ...]
    decoder: Callable[[DecodeContext], DecodeAdapter]
    encoder: Callable[[EncodeContext], EncodeAdapter] | None = None
