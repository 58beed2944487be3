"""Snapshots of a real node: the decoded tables hold exactly what the clients read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import shared_dir

from elastickv_async._adapters.dynamodb.encode import gsi_rows, item_key
from elastickv_async._adapters.dynamodb.keys import (
    item_key_prefix,
    parse_item_key,
    parse_table_meta_key,
)
from elastickv_async._adapters.dynamodb.values import decode_item, decode_schema, item_body
from elastickv_async._core.options import DecodeOptions
from elastickv_async._core.pipeline import decode_snapshot
from elastickv_async._core.snapshot.mvcc import VisibilityResolver
from elastickv_async._core.snapshot.reader import open_snapshot

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """These read tens of MiB; the event-loop matrix is covered by the other modules."""
    return "asyncio"


REALNODE = (shared_dir() or Path("/nonexistent")) / "realnode"
SNAPSHOTS = [
    "p1_redis_ddb_00000000000000c9",
    "p3_sqs_0000000000000191",
    "p4_mixed_00000000000001f5",
]


def _canonical(value: Any) -> Any:
    """An attribute value with its sets sorted (DynamoDB sets have no order)."""
    if isinstance(value, dict):
        return {
            k: sorted(v) if k in ("SS", "NS", "BS") else _canonical(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _key(item: dict[str, Any]) -> str:
    return json.dumps(_canonical(item), sort_keys=True)


@pytest.mark.parametrize("name", SNAPSHOTS)
async def test_real_node_tables(name: str, tmp_path: Path) -> None:
    fsm = REALNODE / f"{name}.fsm"
    if not fsm.is_file():
        pytest.skip("real node snapshots are absent")
    expected = json.loads((REALNODE / f"{name}.expected.json").read_text())["dynamodb"]["tables"]
    out = tmp_path / "out"
    report = await decode_snapshot(fsm, out, DecodeOptions(adapters=("dynamodb",)))
    assert not report.warnings
    assert sorted(p.name for p in (out / "dynamodb").iterdir()) == sorted(expected)
    for table, spec in expected.items():
        items = [json.loads(p.read_bytes()) for p in (out / "dynamodb" / table).rglob("*.json")]
        items = [i for i in items if "format_version" not in i]  # drop _schema.json
        assert sorted(map(_key, items)) == sorted(map(_key, spec["items"])), table
        schema = json.loads((out / "dynamodb" / table / "_schema.json").read_bytes())
        keys = {k["KeyType"]: k["AttributeName"] for k in spec["key_schema"]}
        assert schema["primary_key"]["hash_key"]["name"] == keys["HASH"]
        assert schema["primary_key"]["range_key"].get("name") == keys.get("RANGE")
        assert [g["name"] for g in schema.get("global_secondary_indexes", [])] == sorted(
            g["IndexName"] for g in spec["global_secondary_indexes"]
        )


@pytest.mark.parametrize("name", SNAPSHOTS)
async def test_encoder_keys_match_the_live_adapter(name: str) -> None:
    """Item keys and GSI rows the encoder derives equal the ones the live node wrote (up to
    the generation number, which a restore resets to 1)."""
    fsm = REALNODE / f"{name}.fsm"
    if not fsm.is_file():
        pytest.skip("real node snapshots are absent")
    entries = []
    async with open_snapshot(fsm) as snap:
        resolver = VisibilityResolver(snap.header.last_commit_ts)
        async for batch in snap.batches(max_entries=512):
            entries += [e for e in resolver.resolve(batch) if e.key.startswith(b"!ddb|")]
    schemas = {
        parse_table_meta_key(e.key).encoded: decode_schema(e.value)
        for e in entries
        if e.key.startswith(b"!ddb|meta|table|")
    }
    live_gsi = {e.key: e.value for e in entries if e.key.startswith(b"!ddb|gsi|")}
    derived_gsi: dict[bytes, bytes] = {}
    items = 0
    for entry in entries:
        if not entry.key.startswith(b"!ddb|item|"):
            continue
        parsed = parse_item_key(entry.key)
        schema = schemas[parsed.encoded_table]
        assert parsed.generation == schema.generation
        item = decode_item(item_body(entry.value))
        ours = item_key(schema, item, "live")
        live_prefix = item_key_prefix(schema.table_name, parsed.generation)
        assert ours[len(item_key_prefix(schema.table_name, 1)) :] == entry.key[len(live_prefix) :]
        for key, value in gsi_rows(schema, item, entry.key, "live"):
            table, _, index_and_keys = key[len(b"!ddb|gsi|") :].partition(b"|1|")
            live_key = b"!ddb|gsi|%s|%d|%s" % (table, parsed.generation, index_and_keys)
            derived_gsi[live_key] = value
        items += 1
    assert items > 10
    assert derived_gsi == live_gsi
