"""``read_manifest``: the version gate and the validation of REFERENCE_NOTES §5.1."""

from __future__ import annotations

import json
from typing import Any

import pytest
from encode_support import manifest_doc
from support import raises_code, shared_dir

from elastickv_async._adapters.registry import REGISTRY
from elastickv_async._core.dump.manifest import Manifest
from elastickv_async._core.dump.manifest import read_manifest as read_with
from elastickv_async._core.errors import ManifestError

SHARED = shared_dir()


def read_manifest(payload: bytes) -> Manifest:
    """Read with every registered adapter's own fields."""
    return read_with(payload, {spec.name: spec.read_manifest for spec in REGISTRY})


def _read(**changes: Any) -> Any:
    return read_manifest(json.dumps(manifest_doc(**changes)).encode())


def test_valid_manifest_fields() -> None:
    """Fields come through typed; adapters with a scope are listed; flags default to False."""
    m = _read(cluster_id="c-1", snapshot_index=7, adapters={"redis": {}, "sqs": None})
    assert (m.format_version, m.last_commit_ts, m.cluster_id, m.snapshot_index) == (
        1,
        1234,
        "c-1",
        7,
    )
    assert dict(m.adapters) == {"redis": {}}
    assert not m.adapter_options["s3"].rename_collisions
    assert m.adapter_options["dynamodb"].layout == "per-item"
    assert m.adapter_options["redis"] is None  # writes no fields of its own


@pytest.mark.parametrize("version", [0, 2, 4294967295])
def test_unsupported_versions(version: int) -> None:
    """0 and anything newer than 1 are an unsupported version (exit 2)."""
    with raises_code(ManifestError, "ErrUnsupportedFormatVersion") as info:
        _read(format_version=version)
    assert info.value.exit_code == 2


def test_version_checked_before_other_fields() -> None:
    """A newer producer that changed other field types still reports the version."""
    with raises_code(ManifestError, "ErrUnsupportedFormatVersion"):
        _read(format_version=2, adapters=[], phase=5)


@pytest.mark.parametrize("version", [None, "1", 1.0, -1, True, 4294967296])
def test_bad_version_values_are_invalid(version: Any) -> None:
    """Missing/null/non-uint32 versions are an invalid manifest, not an unsupported one."""
    with pytest.raises(ManifestError) as info:
        _read(format_version=version)
    assert info.value.code == "ErrInvalidManifest"


def test_missing_version_key() -> None:
    """No format_version at all is invalid."""
    doc = manifest_doc()
    del doc["format_version"]
    with pytest.raises(ManifestError, match="format_version"):
        read_manifest(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "payload",
    [b"", b"[]", b"{", b'{"format_version": 1} x', b"\xef\xbb\xbf{}", b'{"format_version": NaN}'],
)
def test_not_one_json_object(payload: bytes) -> None:
    """Non-objects, truncated JSON, trailing junk, a BOM and NaN are refused."""
    with pytest.raises(ManifestError):
        read_manifest(payload)


def test_trailing_whitespace_is_accepted() -> None:
    """Go's decoder accepts trailing whitespace after the object."""
    assert read_manifest(json.dumps(manifest_doc()).encode() + b" \n\t\r\n").phase


@pytest.mark.parametrize(
    "name",
    [
        "include_incomplete_uploads",
        "include_orphans",
        "preserve_sqs_visibility",
        "include_sqs_side_records",
    ],
)
def test_required_exclusions(name: str) -> None:
    """Each of the four exclusions must be present and non-null."""
    excl = dict(manifest_doc()["exclusions"])
    del excl[name]
    with pytest.raises(ManifestError, match=name):
        _read(exclusions=excl)
    with pytest.raises(ManifestError, match=name):
        _read(exclusions=excl | {name: None})


def test_rename_collisions_optional_and_typed() -> None:
    """rename_s3_collisions may be absent or null; when present it must be a boolean."""
    excl = manifest_doc()["exclusions"]
    renamed = _read(exclusions=excl | {"rename_s3_collisions": True})
    assert renamed.adapter_options["s3"].rename_collisions
    unset = _read(exclusions=excl | {"rename_s3_collisions": None})
    assert not unset.adapter_options["s3"].rename_collisions
    with pytest.raises(ManifestError):
        _read(exclusions=excl | {"rename_s3_collisions": "yes"})


@pytest.mark.parametrize(
    "changes",
    [
        {"phase": "phase9"},
        {"phase": None},
        {"wall_time_iso": ""},
        {"wall_time_iso": "2026-11-22 01:38:11Z"},
        {"wall_time_iso": "2026-02-30T01:38:11Z"},
        {"wall_time_iso": "2026-11-22T24:00:00Z"},
        {"adapters": None},
        {"exclusions": None},
        {"checksum_algorithm": ""},
        {"checksum_format": None},
        {"encoded_filename_charset": ""},
        {"s3_meta_suffix": ""},
        {"s3_collision_strategy": ""},
        {"key_segment_max_bytes": 0},
        {"dynamodb_layout": "bundle"},
        {"last_commit_ts": -1},
        {"last_commit_ts": 1 << 64},
        {"last_commit_ts": "5"},
        {"cluster_id": 5},
        {"adapters": {"redis": {"databases": ["0"]}}},
        {"adapters": {"dynamodb": {"tables": [1]}}},
        {"live": {"read_ts": 5}},
    ],
)
def test_invalid_fields(changes: dict[str, Any]) -> None:
    """Each malformed field is an invalid manifest (exit 2)."""
    with pytest.raises(ManifestError) as info:
        _read(**changes)
    assert info.value.exit_code == 2


def test_wall_time_forms() -> None:
    """RFC 3339 with any fraction length and numeric zone offsets is accepted."""
    assert _read(wall_time_iso="2026-11-22T01:38:11+09:00").wall_time_iso
    assert _read(wall_time_iso="2024-02-29T23:59:59.1Z").wall_time_iso


def test_phase1_rules() -> None:
    """A live-pinned manifest needs live.read_ts != 0 and no source."""
    live = {"phase": "phase1-live-pinned", "source": None}
    assert _read(**live, live={"read_ts": 9}).live == {"read_ts": 9}
    with pytest.raises(ManifestError):
        _read(**live, live={"read_ts": 0})
    with pytest.raises(ManifestError):
        _read(**live)
    with pytest.raises(ManifestError):
        _read(phase="phase1-live-pinned", live={"read_ts": 9})


def test_unknown_fields_tolerated() -> None:
    """Fields this build does not know are ignored (kept in ``raw``)."""
    m = _read(future_field={"x": [1, 2]})
    assert m.raw["future_field"] == {"x": [1, 2]}


@pytest.mark.skipif(SHARED is None, reason="../shared is absent")
def test_golden_manifests() -> None:
    """Every public encode case's manifest reads; enc_err_format_version's is unsupported."""
    assert SHARED is not None
    cases = sorted((SHARED / "golden" / "public").glob("enc_*/input/MANIFEST.json"))
    assert cases
    for path in cases:
        if path.parent.parent.name == "enc_err_format_version":
            with raises_code(ManifestError, "ErrUnsupportedFormatVersion"):
                read_manifest(path.read_bytes())
        else:
            assert read_manifest(path.read_bytes()).format_version == 1
