"""elastickv-async: elastickv Raft snapshots (.fsm) <-> a vendor-independent backup tree.

The library API is asynchronous and runs under asyncio (uvloop when installed) or trio::

    report = await decode_snapshot("0000000000000064.fsm", "dump/")
    report = await decode_cluster(["1=g1.fsm", "2=g2.fsm"], "cluster-dump/")
    await verify_tree(Path("dump/"))
    result = await encode_snapshot(Path("dump/"), Path("restored.fsm"), EncodeOptions())
    summary = await inspect_snapshot("0000000000000064.fsm")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from ._core.options import ADAPTER_NAMES, DecodeOptions, EncodeOptions
from ._core.report import Report
from ._version import __version__

if TYPE_CHECKING:
    from ._core.cluster.api import ClusterProgress, decode_cluster
    from ._core.dump.verify import verify_tree
    from ._core.encode.api import EncodeResult, encode_snapshot
    from ._core.inspection import SnapshotInspection, inspect_snapshot
    from ._core.pipeline import Progress, decode_snapshot

__all__ = [
    "ADAPTER_NAMES",
    "AdapterRecordError",
    "ChecksumMismatch",
    "ClusterProgress",
    "DataError",
    "DecodeOptions",
    "DumpTreeError",
    "ElasticKVError",
    "EncodeOptions",
    "EncodeResult",
    "ExecutionError",
    "ManifestError",
    "OutputError",
    "Progress",
    "Report",
    "SelfTestMismatch",
    "SnapshotFormatError",
    "SnapshotInspection",
    "UnsafeDumpEntry",
    "UsageError",
    "__version__",
    "decode_cluster",
    "decode_snapshot",
    "encode_snapshot",
    "inspect_snapshot",
    "verify_tree",
]


_LAZY = {
    "decode_cluster": "_core.cluster.api",
    "ClusterProgress": "_core.cluster.api",
    "decode_snapshot": "_core.pipeline",
    "Progress": "_core.pipeline",
    "encode_snapshot": "_core.encode.api",
    "EncodeResult": "_core.encode.api",
    "inspect_snapshot": "_core.inspection",
    "SnapshotInspection": "_core.inspection",
    "verify_tree": "_core.dump.verify",
}


def __getattr__(name: str) -> Any:
    # The engines import every adapter; load them on first use so that importing the
    # package (errors, options) stays cheap.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
