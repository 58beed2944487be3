"""Finer partitions: a table, bucket or queue per partition gives the tree of one decode.

A real node's mixed snapshot (DynamoDB tables, S3 buckets, SQS queues, Redis keys, deleted
ones among them) is dealt over three groups version by version; the cluster decode, cut into
a partition per table, bucket and queue, must give exactly the tree and MANIFEST scopes of a
single-file decode of the original (the merged snapshot). Units are then checked against
the adapters' own grouping on crafted keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cluster_support import split_snapshot, tree_without_manifest
from support import shared_dir

from elastickv_async._adapters.dynamodb.keys import table_meta_key
from elastickv_async._adapters.registry import REGISTRY
from elastickv_async._adapters.s3 import keys as s3_keys
from elastickv_async._adapters.sqs import keys as sqs_keys
from elastickv_async._core.cluster.api import ClusterProgress, decode_cluster
from elastickv_async._core.cluster.partitions import merge_scopes, subtree
from elastickv_async._core.cluster.runs import RunFile
from elastickv_async._core.cluster.work import plan_partitions
from elastickv_async._core.encode.api import encode_snapshot
from elastickv_async._core.options import DecodeOptions, EncodeOptions
from elastickv_async._core.pipeline import decode_snapshot

MIXED = (shared_dir() or Path("/nonexistent")) / "realnode/p4_mixed_00000000000001f5.fsm"


@pytest.fixture
def anyio_backend() -> str:
    """The event-loop matrix is covered by the synthetic tests."""
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.skipif(not MIXED.is_file(), reason=f"no snapshot {MIXED}")
@pytest.mark.parametrize("layout", ["per-item", "jsonl"])
async def test_partitioned_cluster_tree_equals_the_merged_snapshot(
    tmp_path: Path, layout: str
) -> None:
    options = DecodeOptions(
        adapter_options={"dynamodb": {"layout": layout}, "sqs": {"include_side_records": True}}
    )
    groups = await split_snapshot(MIXED, tmp_path / "groups")
    await decode_snapshot(MIXED, tmp_path / "single", options)
    samples: list[ClusterProgress] = []
    report = await decode_cluster(groups, tmp_path / "cluster", options, progress=samples.append)
    single, cluster = tmp_path / "single", tmp_path / "cluster"
    assert tree_without_manifest(cluster) == tree_without_manifest(single)
    scopes = [
        json.loads((root / "MANIFEST.json").read_bytes())["adapters"] for root in (single, cluster)
    ]
    assert scopes[0] == scopes[1]
    assert len(scopes[1]["dynamodb"]["tables"]) > 1 and len(scopes[1]["sqs"]["queues"]) > 1
    # 4 DynamoDB tables, 5 S3 buckets, 4 SQS queues (deleted ones included), Redis whole.
    assert samples[-1].partitions_total == samples[-1].partitions_done == 14
    assert "cross_group_duplicate" in report.warnings


@pytest.mark.anyio
@pytest.mark.skipif(not MIXED.is_file(), reason=f"no snapshot {MIXED}")
async def test_full_fidelity_cluster_tree_equals_the_merged_snapshot(tmp_path: Path) -> None:
    """--full-fidelity reaches every partition and is recorded, so encode accepts the tree."""
    options = DecodeOptions(full_fidelity=True)
    groups = await split_snapshot(MIXED, tmp_path / "groups")
    await decode_snapshot(MIXED, tmp_path / "single", options)
    await decode_cluster(groups, tmp_path / "cluster", options)
    single, cluster = tmp_path / "single", tmp_path / "cluster"
    assert tree_without_manifest(cluster) == tree_without_manifest(single)
    assert json.loads((cluster / "MANIFEST.json").read_bytes())["full_fidelity"] is True
    # The incomplete upload only full fidelity keeps is in the tree, and the tree encodes.
    assert any("_incomplete_uploads" in path for path in tree_without_manifest(cluster))
    await encode_snapshot(cluster, tmp_path / "out.fsm", EncodeOptions(self_test=True))


def _unit(adapter: str, prefix: bytes, key: bytes) -> bytes | None:
    return REGISTRY[adapter].partition_unit(prefix, key)


def test_units_follow_the_adapters_grouping() -> None:
    """Keys of one table / bucket are one unit; rows no single unit owns are ``None``."""
    meta = table_meta_key("orders")
    segment = meta.removeprefix(b"!ddb|meta|table|")
    assert _unit("dynamodb", b"!ddb|meta|table|", meta) == b"orders"
    assert _unit("dynamodb", b"!ddb|item|", b"!ddb|item|" + segment + b"|1|pk") == b"orders"
    assert _unit("dynamodb", b"!ddb|gsi|", b"!ddb|gsi|" + segment + b"|1|ix") == b"orders"
    # Go's lenient base64 skips CR/LF: both segments name one table, hence one unit.
    assert _unit("dynamodb", b"!ddb|item|", b"!ddb|item|" + segment + b"\n|1|pk") == b"orders"
    assert _unit("dynamodb", b"!ddb|item|", b"!ddb|item|not base64!|1|pk") is None
    queue_meta = sqs_keys.queue_meta_key(b"jobs")
    assert _unit("sqs", sqs_keys.QUEUE_META_PREFIX, queue_meta) == b"jobs"
    message = sqs_keys.message_data_key(b"jobs", None, 1, b"bWVzc2FnZQ")
    assert _unit("sqs", sqs_keys.MSG_DATA_PREFIX, message) == b"jobs"
    assert _unit("sqs", sqs_keys.MSG_DATA_PREFIX, sqs_keys.MSG_DATA_PREFIX + b"!") is None
    bucket_meta = s3_keys.BUCKET_META_PREFIX + s3_keys.encode_ordered_segment(b"bk")
    assert _unit("s3", s3_keys.BUCKET_META_PREFIX, bucket_meta) == b"bk"
    chunkblob = s3_keys.CHUNKBLOB_PREFIX + b"ab" * 32
    assert _unit("s3", s3_keys.CHUNKBLOB_PREFIX, chunkblob) is None
    assert _unit("redis", b"!redis|str|", b"!redis|str|k") is None
    assert subtree("dynamodb", b"orders") == "dynamodb/orders"
    assert subtree("redis", None) == "redis"


def test_scopes_merge_in_each_adapters_order() -> None:
    """S3 keeps the raw bucket order of its units; DynamoDB and SQS sort names as strings."""
    assert merge_scopes("s3", [{"buckets": ["b"]}, {"buckets": ["a\ufffd"]}]) == {
        "buckets": ["b", "a\ufffd"]
    }
    assert merge_scopes("dynamodb", [{"tables": ["z"]}, {"tables": ["a"]}, {"tables": []}]) == {
        "tables": ["a", "z"]
    }
    assert merge_scopes("sqs", [{"queues": ["q2"]}, {"queues": ["q1"]}]) == {"queues": ["q1", "q2"]}


def test_plan_cuts_by_unit_unless_a_row_belongs_to_the_whole_adapter(tmp_path: Path) -> None:
    """Units in byte order, each with every group's sections of it; an adapter with a
    unitless row (an S3 chunkblob) or without a unit rule (Redis) is one partition, and an
    adapter without data still gets one."""
    one, two = tmp_path / "1.run", tmp_path / "2.run"
    runs = {
        2: {
            "dynamodb": RunFile(two, 3, {b"b": [(0, 10)], b"a": [(10, 20), (40, 50)]}),
            "s3": RunFile(two, 2, {b"bk": [(0, 5)], None: [(5, 9)]}),
        },
        1: {
            "dynamodb": RunFile(one, 1, {b"a": [(0, 7)]}),
            "redis": RunFile(one, 4, {None: [(0, 99)]}),
        },
    }
    plan = plan_partitions(["dynamodb", "redis", "s3", "sqs"], runs)
    assert [(p.adapter, p.unit, p.index, p.runs) for p in plan] == [
        ("dynamodb", b"a", 0, ((1, one, ((0, 7),)), (2, two, ((10, 20), (40, 50))))),
        ("dynamodb", b"b", 1, ((2, two, ((0, 10),)),)),
        ("redis", None, 2, ((1, one, None),)),
        ("s3", None, 3, ((2, two, None),)),
        ("sqs", None, 4, ()),
    ]
    assert [p.label for p in plan] == ["dynamodb/a", "dynamodb/b", "redis", "s3", "sqs"]
