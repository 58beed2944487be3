"""The adapter boundary: the registry, adapter options, generated flags, manifest fields, and
a core that never names an adapter."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest
from support import REPO_ROOT

from elastickv_async import DecodeOptions, decode_snapshot
from elastickv_async._adapters.base import option_fields
from elastickv_async._adapters.registry import REGISTRY, AdapterRegistry
from elastickv_async._core.cli import _build_parser, main
from elastickv_async._core.dump.manifest import DecodeManifest
from elastickv_async._core.errors import UsageError

PACKAGE: Final = REPO_ROOT / "src" / "elastickv_async"
SAMPLE: Final = REPO_ROOT / "examples" / "sample.fsm"

#: Format facts of one adapter that the core must not spell, besides what the specs declare
#: (names, key prefixes, flags, MANIFEST keys), which the test collects itself.
ADAPTER_FACTS: Final = (
    ".elastickv-meta.json",
    "elastickv-leaf-data",
    "leaf-data-suffix",
    "_schema.json",
    "_bucket.json",
    "_queue.json",
    "messages.jsonl",
    "queue_generation",
    "strings_ttl",
    "hll_ttl",
    "db_0",
    "per-item",
)

#: Files outside ``_adapters/`` allowed to name adapter facts, with the reason.
ALLOWED: Final[dict[str, str]] = {}


def _forbidden() -> list[str]:
    words: set[str] = set(ADAPTER_FACTS)
    for spec in REGISTRY:
        words.add(spec.name)
        for prefix in (*spec.routed_prefixes, *spec.internal_prefixes):
            text = prefix.decode("latin-1")
            words.update((text, text[: text.index("|") + 1]))
        for f in (*option_fields(spec.decode_options), *option_fields(spec.encode_options)):
            words.add(f.flag)
        words.update(f.key for f in spec.manifest_fields(spec.resolve_options(None)))
    return sorted(words)


def _pattern(word: str) -> re.Pattern[str]:
    """``word`` anywhere, case-insensitive, but not as part of a longer alphanumeric run."""
    before = r"(?<![A-Za-z0-9])" if word[0].isalnum() else ""
    after = r"(?![A-Za-z0-9])" if word[-1].isalnum() else ""
    return re.compile(before + re.escape(word) + after, re.IGNORECASE)


def test_core_never_names_an_adapter() -> None:
    """No module outside ``_adapters/`` spells an adapter name or one of its format facts."""
    patterns = [(word, _pattern(word)) for word in _forbidden()]
    assert {"s3", "sqs", "redis", "dynamodb", "!ddb|"} <= {w for w, _ in patterns}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("_adapters/") or rel in ALLOWED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found += [f"{rel}:{number}: {word}" for word, p in patterns if p.search(line)]
    assert found == []


def test_every_adapter_package_has_the_same_modules() -> None:
    """keys, values, layout, decode and encode exist in every adapter package."""
    for spec in REGISTRY:
        folder = PACKAGE / "_adapters" / spec.name
        names = {p.stem for p in folder.glob("*.py")}
        assert {"keys", "values", "layout", "decode", "encode"} <= names, spec.name


def test_select_parses_names_csv_and_all() -> None:
    """A string is one name or a CSV (never its letters); results come in canonical order."""
    assert REGISTRY.select("dynamodb") == ("dynamodb",)
    assert REGISTRY.select(" sqs , redis,") == ("redis", "sqs")
    assert REGISTRY.select(("sqs", "dynamodb")) == ("dynamodb", "sqs")
    assert REGISTRY.select("") == REGISTRY.select("all") == REGISTRY.names()
    assert REGISTRY.select("ReDiS", lower=True) == ("redis",)
    for bad in ("ReDiS", "mongodb", ",", ()):
        with pytest.raises(UsageError):
            REGISTRY.select(bad)


def test_encode_order_follows_the_ranks() -> None:
    """The encoders run in the reference's order, whatever the selection's order."""
    assert REGISTRY.encode_order(REGISTRY.names()) == ("redis", "dynamodb", "s3", "sqs")
    assert REGISTRY.encode_order(("sqs", "dynamodb")) == ("dynamodb", "sqs")


@pytest.mark.anyio
async def test_decode_options_accept_a_single_adapter_name(tmp_path: Path) -> None:
    """``DecodeOptions(adapters="redis")`` decodes that adapter only."""
    await decode_snapshot(SAMPLE, tmp_path / "out", DecodeOptions(adapters="redis"))
    manifest = json.loads((tmp_path / "out" / "MANIFEST.json").read_text())
    assert list(manifest["adapters"]) == ["redis"]


@pytest.mark.anyio
async def test_adapter_options_for_an_unknown_adapter_are_refused(tmp_path: Path) -> None:
    """Options addressed to no registered adapter are a usage error, before anything is made."""
    with pytest.raises(UsageError, match="mongodb"):
        await decode_snapshot(
            SAMPLE, tmp_path / "out", DecodeOptions(adapter_options={"mongodb": {}})
        )
    assert not (tmp_path / "out").exists()


def test_resolve_options() -> None:
    """Mappings and instances resolve; unknown names, wrong types and bad choices do not."""
    spec = REGISTRY["dynamodb"]
    assert spec.resolve_options(None) == spec.decode_options()
    assert spec.resolve_options({"layout": "jsonl"}).layout == "jsonl"
    instance = spec.decode_options(layout="jsonl")
    assert spec.resolve_options(instance) == instance
    bad: list[Any] = [{"layuot": "jsonl"}, {"layout": 1}, {"layout": "csv"}, ["layout"]]
    for given in bad:
        with pytest.raises(UsageError):
            spec.resolve_options(given)
    with pytest.raises(UsageError):
        REGISTRY["s3"].resolve_options({"include_orphans": 1})


def test_register_refuses_ambiguity() -> None:
    """A taken name, flag or key prefix, or an unusable name, cannot be registered."""
    s3 = REGISTRY["s3"]
    registry = AdapterRegistry([s3])
    clashes = [
        s3,
        dataclasses.replace(REGISTRY["dynamodb"], routed_prefixes=s3.routed_prefixes[:1]),
        dataclasses.replace(REGISTRY["dynamodb"], decode_options=s3.decode_options),
        dataclasses.replace(REGISTRY["dynamodb"], name="all"),
        dataclasses.replace(REGISTRY["dynamodb"], name="a,b"),
    ]
    for spec in clashes:
        with pytest.raises(ValueError):
            registry.register(spec)
    assert registry.names() == ("s3",)


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = _build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise AssertionError(name)


def test_decode_flags_are_generated_from_the_options() -> None:
    """Every option field of every adapter is a decode flag with its help and default."""
    decode = _subparser("decode")
    by_flag = {o: a for a in decode._actions for o in a.option_strings}
    for spec in REGISTRY:
        for f in option_fields(spec.decode_options):
            action = by_flag[f"--{f.flag}"]
            assert action.help == f.help and action.default == f.default
            assert (action.nargs == 0) is f.is_switch


def test_choice_flags_are_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A value outside a field's choices is a one-line usage error naming the flag."""
    args = ["decode", "--input", str(SAMPLE), "--output", str(tmp_path / "o")]
    assert main([*args, "--dynamodb-bundle-mode", "csv"]) == 1
    err = capsys.readouterr().err
    assert "--dynamodb-bundle-mode must be per-item or jsonl, not 'csv'" in err
    assert not (tmp_path / "o").exists()


def test_manifest_fields_keep_the_reference_order() -> None:
    """Adapter fields interleave as in the reference's structs, whatever the registry order."""
    everything = {
        "s3": {"include_incomplete_uploads": True, "include_orphans": True,
               "rename_collisions": True},
        "sqs": {"preserve_visibility": True, "include_side_records": True},
        "dynamodb": {"layout": "jsonl"},
    }  # fmt: skip
    resolved = {name: REGISTRY[name].resolve_options(opts) for name, opts in everything.items()}
    fields = list(reversed(REGISTRY.manifest_fields(resolved)))
    doc = json.loads(
        DecodeManifest(
            adapters=("s3",),
            fsm_path="x.fsm",
            last_commit_ts=5,
            elastickv_version="t",
            wall_time=datetime(2026, 1, 1, tzinfo=UTC),
            fields=fields,
        ).to_json()
    )
    assert list(doc["exclusions"]) == [
        "include_incomplete_uploads",
        "include_orphans",
        "preserve_sqs_visibility",
        "include_sqs_side_records",
        "rename_s3_collisions",
    ]
    assert all(doc["exclusions"].values())
    assert list(doc)[-4:] == [
        "key_segment_max_bytes",
        "s3_meta_suffix",
        "s3_collision_strategy",
        "dynamodb_layout",
    ]
    assert doc["dynamodb_layout"] == "jsonl"
