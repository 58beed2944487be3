"""``inspect``'s inventory of each real node's snapshot agrees with the tree ``decode`` writes.

The two are computed by different code (the adapters' inventory hooks count keys; the decoders
write files), so the decoded tree is an independent count of tables, buckets, queues and keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import shared_dir

from elastickv_async import inspect_snapshot
from elastickv_async._core.pipeline import decode_snapshot

REALNODE = (shared_dir() or Path("/nonexistent")) / "realnode"
SNAPSHOTS = sorted(REALNODE.glob("*.fsm"))

pytestmark = pytest.mark.anyio

_REDIS_DIRS = {
    "hash": "hashes",
    "list": "lists",
    "set": "sets",
    "zset": "zsets",
    "stream": "streams",
    "string": "strings",
    "hyperloglog": "hll",
}


def _tree_inventory(root: Path, report: dict[str, int]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {"dynamodb": {}, "s3": {}, "sqs": {}, "redis": {}}
    for table in sorted((root / "dynamodb").glob("*/")):
        found["dynamodb"][table.name] = len(list((table / "items").rglob("*.json")))
    for bucket in sorted((root / "s3").glob("*/")):
        bodies = [
            p
            for p in bucket.rglob("*")
            if p.is_file() and p.name != "_bucket.json" and not p.name.endswith("-meta.json")
        ]
        found["s3"][bucket.name] = (len(bodies), sum(p.stat().st_size for p in bodies))
    for queue in sorted((root / "sqs").glob("*/")):
        log = queue / "messages.jsonl"
        found["sqs"][queue.name] = len(log.read_bytes().splitlines()) if log.exists() else 0
    for kind, name in _REDIS_DIRS.items():
        files = list((root / "redis" / "db_0" / name).glob("*"))
        count = len(files) + (
            report.get("redis.expired_keys_omitted", 0) if kind == "string" else 0
        )
        if count:
            found["redis"][kind] = count
    return found


@pytest.mark.parametrize("fsm", SNAPSHOTS, ids=lambda p: p.stem)
async def test_inventory_matches_the_decoded_tree(fsm: Path, tmp_path: Path) -> None:
    """Items per table, objects and body bytes per bucket, messages per queue, keys per
    Redis type."""
    inspected = await inspect_snapshot(fsm)
    report = await decode_snapshot(fsm, tmp_path / "tree")
    counted: dict[str, dict[str, Any]] = {
        adapter: {r.name: next(iter(r.counts.values())) for r in rows if r.kind != "ttl"}
        for adapter, rows in inspected.inventory.items()
    }
    counted["s3"] = {
        r.name: (r.counts["objects"], r.counts["bytes"]) for r in inspected.inventory["s3"]
    }
    assert counted == _tree_inventory(tmp_path / "tree", report.counters)
    assert json.loads(json.dumps(inspected.to_dict()))["inventory"].keys() == counted.keys()
