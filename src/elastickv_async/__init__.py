"""elastickv-async: elastickv Raft snapshots (.fsm) <-> a vendor-independent backup tree.

The library API is asynchronous and runs under asyncio (uvloop when installed) or trio::

    report = await decode_snapshot("0000000000000064.fsm", "dump/")
    report = await decode_cluster(["1=g1.fsm", "2=g2.fsm"], "cluster-dump/")
    await verify_tree("dump/")
    result = await encode_snapshot("dump/", "restored.fsm", EncodeOptions())
    result = await encode_cluster("cluster-dump/", "groups/", EncodeOptions(self_test=True))
    summary = await inspect_snapshot("0000000000000064.fsm")
    async with open_snapshot("0000000000000064.fsm") as snap:
        async for batch in snap.batches():
            ...

Everything else (the ``_core`` engine, the ``_adapters``) is private and may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from ._core.cluster.api import ClusterProgress, decode_cluster
    from ._core.cluster.encode import ClusterEncodeResult, encode_cluster
    from ._core.dump.verify import verify_tree
    from ._core.encode.api import EncodeResult, encode_snapshot
    from ._core.errors import (
        AdapterRecordError,
        ChecksumMismatch,
        DataError,
        DumpTreeError,
        ElasticKVError,
        ExecutionError,
        ManifestError,
        OutputError,
        SelfTestMismatch,
        SnapshotFormatError,
        UnsafeDumpEntry,
        UsageError,
    )
    from ._core.inspection import SnapshotInspection, inspect_snapshot
    from ._core.options import DecodeOptions, EncodeOptions
    from ._core.pipeline import decode_snapshot
    from ._core.progress import Progress
    from ._core.report import Report
    from ._core.snapshot.entry import Entry, SnapshotHeader
    from ._core.snapshot.reader import Snapshot, open_snapshot

__all__ = [
    "AdapterRecordError",
    "ChecksumMismatch",
    "ClusterEncodeResult",
    "ClusterProgress",
    "DataError",
    "DecodeOptions",
    "DumpTreeError",
    "ElasticKVError",
    "EncodeOptions",
    "EncodeResult",
    "Entry",
    "ExecutionError",
    "ManifestError",
    "OutputError",
    "Progress",
    "Report",
    "SelfTestMismatch",
    "Snapshot",
    "SnapshotFormatError",
    "SnapshotHeader",
    "SnapshotInspection",
    "UnsafeDumpEntry",
    "UsageError",
    "__version__",
    "decode_cluster",
    "decode_snapshot",
    "encode_cluster",
    "encode_snapshot",
    "inspect_snapshot",
    "open_snapshot",
    "verify_tree",
]


_LAZY = {
    **dict.fromkeys(
        (
            "AdapterRecordError",
            "ChecksumMismatch",
            "DataError",
            "DumpTreeError",
            "ElasticKVError",
            "ExecutionError",
            "ManifestError",
            "OutputError",
            "SelfTestMismatch",
            "SnapshotFormatError",
            "UnsafeDumpEntry",
            "UsageError",
        ),
        "_core.errors",
    ),
    "DecodeOptions": "_core.options",
    "EncodeOptions": "_core.options",
    "decode_cluster": "_core.cluster.api",
    "ClusterProgress": "_core.cluster.api",
    "encode_cluster": "_core.cluster.encode",
    "ClusterEncodeResult": "_core.cluster.encode",
    "decode_snapshot": "_core.pipeline",
    "Progress": "_core.progress",
    "Report": "_core.report",
    "encode_snapshot": "_core.encode.api",
    "EncodeResult": "_core.encode.api",
    "inspect_snapshot": "_core.inspection",
    "SnapshotInspection": "_core.inspection",
    "verify_tree": "_core.dump.verify",
    "open_snapshot": "_core.snapshot.reader",
    "Snapshot": "_core.snapshot.reader",
    "Entry": "_core.snapshot.entry",
    "SnapshotHeader": "_core.snapshot.entry",
}


def __getattr__(name: str) -> Any:
    # The engines import every adapter, and the report structlog; load even the errors and
    # options on first use, so that the command's entry point (inside this package) starts
    # with nothing but the version: ``elastickv-async --version`` prints it at once.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
