"""End to end: the real 2-group cluster -> decode-cluster -> encode-cluster --self-test ->
prepare-restore per group -> one real multi-group node.

The node gets both groups' directories (``<raftDataDir>/n1/group-<g>``), ``--raftGroups``
and the cluster's ``--shardRanges``, as the README's "Restoring to a node" section shows; it
then serves what ``cluster.expected.json`` lists: Redis keys without a TTL (keys with one
have expired since the snapshot, and encode-cluster does not rebase times), the S3 buckets
and objects, the SQS queues. Skipped when the shared corpus or its binaries are absent.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Final

import boto3
import pytest
from support import shared_dir

sys.path.append(str(Path(__file__).resolve().parents[1] / "restore"))

from restore_node import Node, free_ports, unpack

SHARED: Final = shared_dir()
BIN_DIR: Final = SHARED / "elastickv-bin" if SHARED else None
MULTIGROUP: Final = SHARED / "realnode-multigroup" if SHARED else None
CLUSTER_ID: Final = "restore-test"
_CREDENTIALS: Final = {
    "region_name": "us-east-1",
    "aws_access_key_id": "restore-test",
    "aws_secret_access_key": "restore-test",
}

pytestmark = pytest.mark.skipif(
    BIN_DIR is None
    or MULTIGROUP is None
    or not (BIN_DIR / "elastickv.xz").is_file()
    or not (MULTIGROUP / "routes.json").is_file(),
    reason="needs ../shared/elastickv-bin/ and ../shared/realnode-multigroup/",
)


class _GroupsNode(Node):
    """A node serving several Raft groups, routed by ``shard_ranges``."""

    raft_groups: str = ""
    shard_ranges: str = ""

    def command(self) -> list[str]:
        """The single-node command plus the groups and their key ranges."""
        return [
            *super().command(),
            "--raftGroups",
            self.raft_groups,
            "--shardRanges",
            self.shard_ranges,
        ]


def _bytes(value: dict[str, str]) -> bytes:
    """A value of the expectation: ``{"utf8": text}`` or ``{"b64": base64}``."""
    return value["utf8"].encode() if "utf8" in value else base64.b64decode(value["b64"])


def _cli(*args: str | Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "elastickv_async", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_restored_multi_group_node_serves_the_cluster(tmp_path: Path) -> None:
    """Every group restored into its own directory; the node serves the cluster's state."""
    assert BIN_DIR is not None and MULTIGROUP is not None
    binary = unpack(BIN_DIR, tmp_path)["elastickv"]
    g1 = MULTIGROUP / "g1_n2_00000000000000c9.fsm"
    g2 = MULTIGROUP / "g2_n2_00000000000000c9.fsm"
    routes = json.loads((MULTIGROUP / "routes.json").read_bytes())
    expected = json.loads((MULTIGROUP / "cluster.expected.json").read_bytes())
    tree, groups = tmp_path / "tree", tmp_path / "groups"
    _cli("decode-cluster", "--input", f"1={g1}", "--input", f"2={g2}", "--output", tree,
         "--cluster-id", CLUSTER_ID, "--quiet")  # fmt: skip
    _cli("encode-cluster", "--input", tree, "--output-dir", groups, "--self-test", "--quiet")
    port1, port2 = free_ports(2)
    raft = tmp_path / "raft"
    (raft / "n1").mkdir(parents=True)
    for group, port in ((1, port1), (2, port2)):
        _cli("prepare-restore", "--input", groups / f"group-{group}.fsm",
             "--data-dir", raft / "n1" / f"group-{group}", "--index", "1", "--term", "1",
             "--peers", f"n1=127.0.0.1:{port}", "--target-cluster-id", CLUSTER_ID)  # fmt: skip
    node = _GroupsNode(binary, raft, "n1", port1, tmp_path / "node.log")
    node.raft_groups = f"1=127.0.0.1:{port1},2=127.0.0.1:{port2}"
    node.shard_ranges = routes["shardRanges_flag"]
    with node:
        with node.redis() as client:
            for key, record in expected["redis"]["keys"].items():
                if record.get("client_expire_at_ms") is not None:
                    continue
                assert client.type(key).decode() == record["type"], key
                if record["type"] == "string":
                    assert client.get(key) == _bytes(record["value"]), key
            # Both groups take writes (keys routed to group 1 and to group 2).
            assert client.set("a:after-restore", b"1") and client.set("z:after-restore", b"2")
            assert client.get("z:after-restore") == b"2"
        s3 = boto3.client("s3", endpoint_url=node.endpoint("s3"), **_CREDENTIALS)
        buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        assert buckets == set(expected["s3"]["buckets"])
        for bucket, doc in expected["s3"]["buckets"].items():
            listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
            assert {o["Key"] for o in listed} == set(doc["objects"]), bucket
        sqs = boto3.client("sqs", endpoint_url=node.endpoint("sqs"), **_CREDENTIALS)
        urls = sqs.list_queues().get("QueueUrls", [])
        assert {url.rsplit("/", 1)[1] for url in urls} == set(expected["sqs"]["queues"])
