"""Helpers for the encoder tests: manifests and fake adapter encoders."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio.lowlevel
import pytest
from support import hand_built_fsm

from elastickv_async._adapters.base import AdapterSpec, EncodeAdapter, EncodeContext
from elastickv_async._adapters.registry import REGISTRY, AdapterRegistry
from elastickv_async._core.encode import api

__all__ = ["ALL", "fake_specs", "hand_built_fsm", "make_tree", "manifest_doc", "use_specs"]

ALL = ("dynamodb", "s3", "redis", "sqs")


def manifest_doc(**changes: Any) -> dict[str, Any]:
    """A valid phase-0 MANIFEST.json document (the golden corpus' shape), with ``changes``."""
    doc: dict[str, Any] = {
        "format_version": 1,
        "phase": "phase0-snapshot-decode",
        "elastickv_version": "dev",
        "last_commit_ts": 1234,
        "wall_time_iso": "2026-11-22T01:38:11.689719662Z",
        "source": {"fsm_path": "canonical.fsm"},
        "adapters": {"dynamodb": {}, "s3": {}, "redis": {}, "sqs": {}},
        "exclusions": {
            "include_incomplete_uploads": False,
            "include_orphans": False,
            "preserve_sqs_visibility": False,
            "include_sqs_side_records": False,
        },
        "checksum_algorithm": "sha256",
        "checksum_format": "sha256sum",
        "encoded_filename_charset": "rfc3986-unreserved-plus-percent",
        "key_segment_max_bytes": 240,
        "s3_meta_suffix": ".elastickv-meta.json",
        "s3_collision_strategy": "leaf-data-suffix",
        "dynamodb_layout": "per-item",
    }
    doc.update(changes)
    return doc


def make_tree(root: Path, **changes: Any) -> Path:
    """Create a dump tree root holding only MANIFEST.json."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "MANIFEST.json").write_text(json.dumps(manifest_doc(**changes)))
    return root


class FakeEncoder:
    """Yields fixed records, yielding control between them so adapters interleave."""

    def __init__(self, records: Iterable[tuple[bytes, bytes]], error: Exception | None) -> None:
        self._records = list(records)
        self._error = error
        self.context: EncodeContext | None = None

    async def records(self) -> AsyncIterator[tuple[bytes, bytes]]:
        for key, value in self._records:
            await anyio.lowlevel.checkpoint()
            yield key, value
        if self._error is not None:
            raise self._error


def fake_specs(
    records: Mapping[str, Iterable[tuple[bytes, bytes]]],
    errors: Mapping[str, Exception] | None = None,
    seen: dict[str, EncodeContext] | None = None,
) -> dict[str, AdapterSpec]:
    """Each real adapter's spec with an encoder that yields ``records[name]`` (default none)."""
    specs = {}
    for name in ALL:

        def factory(ctx: EncodeContext, name: str = name) -> EncodeAdapter:
            if seen is not None:
                seen[name] = ctx
            return FakeEncoder(records.get(name, ()), (errors or {}).get(name))

        specs[name] = dataclasses.replace(
            REGISTRY[name],
            decoder=lambda ctx: pytest.fail("decoder not expected"),
            encoder=factory,
            subtree_only=False,  # yields its records from a manifest-only tree
        )
    return specs


def use_specs(monkeypatch: pytest.MonkeyPatch, specs: dict[str, AdapterSpec]) -> None:
    """Make ``encode_snapshot`` see ``specs`` instead of the real adapters."""
    monkeypatch.setattr(api, "REGISTRY", AdapterRegistry(list(specs.values())))
