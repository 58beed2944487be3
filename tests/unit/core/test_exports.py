"""The public API is exactly the names the package exports (a guard in the style of trio's
``test_exports``): everything else lives in private modules."""

from __future__ import annotations

import inspect
import pkgutil

import elastickv_async

PUBLIC = [
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


def test_all_is_exactly_the_public_api() -> None:
    """``__all__`` lists the public names, sorted, no more and no fewer."""
    assert elastickv_async.__all__ == PUBLIC


def test_every_public_name_resolves() -> None:
    """Each exported name is an attribute of the package (lazy ones included)."""
    for name in PUBLIC:
        assert getattr(elastickv_async, name) is not None, name
    assert sorted(dir(elastickv_async)) == sorted(PUBLIC)


def test_public_callables_are_documented() -> None:
    """Every exported function and class, and every public method of those classes, has a
    docstring."""
    missing = []
    for name in PUBLIC:
        obj = getattr(elastickv_async, name)
        if not callable(obj):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not callable(member):
                    continue
                if not inspect.getdoc(member):
                    missing.append(f"{name}.{attr}")
    assert missing == []


def test_errors_share_the_base_class() -> None:
    """Every exported error class is an ``ElasticKVError``."""
    found = [getattr(elastickv_async, n) for n in PUBLIC]
    errors = [e for e in found if inspect.isclass(e) and issubclass(e, BaseException)]
    assert len(errors) == 12
    assert all(issubclass(e, elastickv_async.ElasticKVError) for e in errors)


def test_no_public_module_outside_the_shell() -> None:
    """Every module below the package is private (a ``_`` component), except ``__main__``."""
    public = []
    for info in pkgutil.walk_packages(elastickv_async.__path__, "elastickv_async."):
        parts = info.name.split(".")[1:]
        if parts == ["__main__"]:
            continue
        if not any(part.startswith("_") for part in parts):
            public.append(info.name)
    assert public == []
