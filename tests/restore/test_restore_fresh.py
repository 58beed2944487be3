"""Back up a live node and restore it, end to end, on state written a moment ago.

The shared real-node snapshots are old: by now the node drops all of their SQS messages
(retention) and hides their TTL keys, so ``test_restore_node`` can only allow those losses.
Here a fresh node is written to with redis-py and boto3 (every Redis type, TTLs, a DynamoDB
table with a GSI and every attribute type, S3 objects with metadata, a completed and an
incomplete multipart upload, a standard queue with an in-flight message, a FIFO queue whose
group head is in flight), made to snapshot, and its ``fsm-snap`` file goes through decode
(default and ``--full-fidelity``) -> encode --self-test --rebase-time -> ``elastickv-async
prepare-restore`` -> a second node. Nothing may have expired, so every SQS message and every
TTL must come back; in default mode the only differences allowed are the four known kinds,
and each must occur; in full-fidelity mode there is none (the in-flight messages stay hidden
and the FIFO group stays locked behind its head).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import boto3
import pytest
from botocore.config import Config
from restore_node import Node, free_ports, unpack
from restore_state import (
    Clock,
    Endpoints,
    Restore,
    explain,
    known_occurrences,
    read_doc,
    read_node,
    restore_expectation,
)
from support import shared_dir

SHARED: Final = shared_dir()
BIN_DIR: Final = SHARED / "elastickv-bin" if SHARED else None
CLUSTER_ID: Final = "fresh-restore"
#: Snapshot every few entries, so a handful of marker writes makes the node take one.
SNAPSHOT_EVERY: Final = "32"
MAX_MARKERS: Final = 400
_CREDENTIALS: Final = {
    "region_name": "us-east-1",
    "aws_access_key_id": "restore-test",
    "aws_secret_access_key": "restore-test",
}

pytestmark = pytest.mark.skipif(
    BIN_DIR is None or not (BIN_DIR / "elastickv.xz").is_file(),
    reason="needs ../shared/elastickv-bin/",
)


def _b64(raw: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(raw).decode()}


def _write_redis(node: Node, doc: dict[str, Any]) -> None:
    ttl_ms = 3_600_000
    # The server adds the TTL to its own clock a moment later: within statecompare's tolerance.
    deadline = time.time_ns() // 1_000_000 + ttl_ms
    keys: dict[str, Any] = {}
    with node.redis() as r:
        r.set("str:plain", "hello")
        r.set("str:binary", b"\x00\x01\xfe\xff")
        r.set("str:ttl", "expires in an hour", px=ttl_ms)
        r.hset("hash:h", mapping={"a": "1", "b": "2"})
        r.pexpire("hash:h", ttl_ms)
        r.rpush("list:l", "x", "y", "z")
        r.sadd("set:s", "m1", "m2")
        r.zadd("zset:z", {"low": -1.5, "high": 10})
        ids = [r.xadd("stream:s", {"n": str(i)}).decode() for i in range(3)]
        r.set("str:deleted", "gone")
        r.delete("str:deleted")
    plain = {"client_expire_at_ms": None}
    keys["str:plain"] = {"type": "string", "value": {"utf8": "hello"}} | plain
    keys["str:binary"] = {"type": "string", "value": _b64(b"\x00\x01\xfe\xff")} | plain
    keys["str:ttl"] = {
        "type": "string",
        "value": {"utf8": "expires in an hour"},
        "client_expire_at_ms": deadline,
    }
    keys["hash:h"] = {
        "type": "hash",
        "value": {"a": {"utf8": "1"}, "b": {"utf8": "2"}},
        "client_expire_at_ms": deadline,
    }
    keys["list:l"] = {"type": "list", "value": [{"utf8": v} for v in "xyz"]} | plain
    keys["set:s"] = {"type": "set", "value": ["m1", "m2"]} | plain
    keys["zset:z"] = {"type": "zset", "value": [["low", -1.5], ["high", 10.0]]} | plain
    keys["stream:s"] = {
        "type": "stream",
        "value": [{"id": i, "fields": {"n": {"utf8": str(n)}}} for n, i in enumerate(ids)],
    } | plain
    doc["redis"] = {"keys": keys, "optional_key_prefixes": ["snapmarker:"]}
    doc["deleted_so_far"]["redis_keys"] = ["str:deleted"]


def _write_dynamodb(node: Node, doc: dict[str, Any]) -> None:
    ddb = boto3.client("dynamodb", endpoint_url=node.endpoint("dynamo"), **_CREDENTIALS)
    key_schema = [
        {"AttributeName": "tenant", "KeyType": "HASH"},
        {"AttributeName": "ts", "KeyType": "RANGE"},
    ]
    definitions = [
        {"AttributeName": "tenant", "AttributeType": "N"},
        {"AttributeName": "ts", "AttributeType": "B"},
        {"AttributeName": "kind", "AttributeType": "S"},
    ]
    gsi = {
        "IndexName": "by_kind",
        "KeySchema": [{"AttributeName": "kind", "KeyType": "HASH"}],
        "Projection": {"ProjectionType": "ALL"},
    }
    ddb.create_table(
        TableName="events",
        KeySchema=key_schema,
        AttributeDefinitions=definitions,
        GlobalSecondaryIndexes=[gsi],
        BillingMode="PAY_PER_REQUEST",
    )
    items = [
        {
            "tenant": {"N": str(t)},
            "ts": {"B": bytes([t, n, 0xFF])},
            "kind": {"S": "click" if n % 2 else "view"},
            "n": {"N": f"{n}.5"},
            "flag": {"BOOL": n % 2 == 0},
            "none": {"NULL": True},
            "tags": {"SS": ["a", f"t{n}"]},
            "nums": {"NS": ["1", str(n + 2)]},
            "blobs": {"BS": [b"\x01", bytes([n + 2])]},
            "doc": {"M": {"l": {"L": [{"S": "x"}, {"N": "-1e3"}]}}},
        }
        for t in (1, 2)
        for n in range(3)
    ]
    for item in items:
        ddb.put_item(TableName="events", Item=item)
    doc["dynamodb"] = {
        "tables": {
            "events": {
                "key_schema": key_schema,
                "attribute_definitions": definitions,
                "global_secondary_indexes": [gsi],
                "items": [_json_item(item) for item in items],
            }
        }
    }


def _json_item(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list):
        return [_json_item(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_item(v) for k, v in value.items()}
    return value


def _write_s3(node: Node, doc: dict[str, Any]) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=node.endpoint("s3"),
        config=Config(s3={"addressing_style": "path"}),
        **_CREDENTIALS,
    )
    s3.create_bucket(Bucket="bkt")
    objects: dict[str, Any] = {}

    def put(key: str, body: bytes, content_type: str, metadata: dict[str, str]) -> None:
        etag = s3.put_object(
            Bucket="bkt", Key=key, Body=body, ContentType=content_type, Metadata=metadata
        )["ETag"]
        objects[key] = _object(body, etag, content_type, metadata)

    put("hello.txt", b"hello world\n", "text/plain", {"owner": "bob"})
    put("dir/empty", b"", "application/octet-stream", {})
    put("big/1.5mb.bin", bytes(range(256)) * 6144, "application/octet-stream", {})
    s3.put_object(Bucket="bkt", Key="gone.txt", Body=b"deleted")
    s3.delete_object(Bucket="bkt", Key="gone.txt")

    parts = [b"p" * (5 << 20), b"tail"]
    upload = s3.create_multipart_upload(Bucket="bkt", Key="mpu/done.bin", ContentType="x/test")
    done = [
        {"PartNumber": n, "ETag": s3.upload_part(
            Bucket="bkt", Key="mpu/done.bin", UploadId=upload["UploadId"], PartNumber=n, Body=part
        )["ETag"]}
        for n, part in enumerate(parts, 1)
    ]  # fmt: skip
    etag = s3.complete_multipart_upload(
        Bucket="bkt",
        Key="mpu/done.bin",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": done},
    )["ETag"]
    objects["mpu/done.bin"] = _object(b"".join(parts), etag, "x/test", {})

    pending = s3.create_multipart_upload(Bucket="bkt", Key="mpu/pending.bin")["UploadId"]
    s3.upload_part(
        Bucket="bkt", Key="mpu/pending.bin", UploadId=pending, PartNumber=1, Body=b"partial"
    )
    incomplete = {"key": "mpu/pending.bin", "upload_id": pending, "parts": {"1": {"size": 7}}}
    doc["s3"] = {
        "buckets": {"bkt": {"objects": objects, "incomplete_multipart_uploads": [incomplete]}}
    }
    doc["deleted_so_far"]["s3_objects"] = ["bkt/gone.txt"]


def _object(body: bytes, etag: str, content_type: str, metadata: dict[str, str]) -> dict[str, Any]:
    return {
        "sha256": hashlib.sha256(body).hexdigest(),
        "size": len(body),
        "etag": etag,
        "content_type": content_type,
        "metadata": metadata,
    }


def _write_sqs(node: Node, doc: dict[str, Any]) -> None:
    sqs = boto3.client("sqs", endpoint_url=node.endpoint("sqs"), **_CREDENTIALS)
    queues: dict[str, Any] = {}

    std = sqs.create_queue(QueueName="q-std", Attributes={"VisibilityTimeout": "45"})["QueueUrl"]
    messages = []
    for n in range(3):
        attrs = {
            "kind": {"DataType": "String", "StringValue": "std"},
            "blob": {"DataType": "Binary", "BinaryValue": bytes([n, 0xFF])},
        }
        sent = sqs.send_message(QueueUrl=std, MessageBody=f"standard {n}", MessageAttributes=attrs)
        shown = {
            "kind": attrs["kind"],
            "blob": {"DataType": "Binary", "BinaryValue": _b64(bytes([n, 0xFF]))},
        }
        messages.append(_sent(sent, f"standard {n}", shown))
    _receive_one(sqs, std, messages)
    queues["q-std"] = messages

    fifo = sqs.create_queue(
        QueueName="q.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]
    messages = []
    for n, group in enumerate(["g1", "g2", "g1"]):
        body = f"fifo {group} #{n}"
        sent = sqs.send_message(QueueUrl=fifo, MessageBody=body, MessageGroupId=group)
        messages.append(_sent(sent, body, {}, group=group))
    sent = sqs.send_message(
        QueueUrl=fifo, MessageBody="explicit", MessageGroupId="g2", MessageDeduplicationId="d-1"
    )
    messages.append(_sent(sent, "explicit", {}, group="g2", dedup="d-1"))
    _receive_one(sqs, fifo, messages)  # the head of g1: its group is locked behind it
    queues["q.fifo"] = messages
    doc["sqs"] = {"queues": {name: {"messages": m} for name, m in queues.items()}}


def _receive_one(sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
    """Put one message in flight (received, not deleted) when the snapshot is taken."""
    received_s = int(time.time())
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=600)
    [in_flight] = got["Messages"]
    for m in messages:
        if m["message_id"] == in_flight["MessageId"]:
            m["receive_count"], m["state"] = 1, f"in_flight(visibility 600s from {received_s})"


def _sent(
    response: dict[str, Any],
    body: str,
    attributes: dict[str, Any],
    *,
    group: str | None = None,
    dedup: str | None = None,
) -> dict[str, Any]:
    return {
        "message_id": response["MessageId"],
        "body": body,
        "md5_of_body": response["MD5OfMessageBody"],
        "message_attributes": attributes,
        "group_id": group,
        "sequence_number": response.get("SequenceNumber"),
        "dedup_id": dedup,
        "receive_count": 0,
        "state": "available",
    }


def _force_snapshot(node: Node) -> Path:
    """Write marker keys until the node writes a new fsm-snap file; return that file."""
    snap_dir = node.data_dir / "fsm-snap"
    before = set(snap_dir.glob("*.fsm"))
    with node.redis() as r:
        for n in range(MAX_MARKERS):
            r.set(f"snapmarker:fresh:{n:04d}", n)
            if new := sorted(set(snap_dir.glob("*.fsm")) - before):
                return new[-1]
    raise AssertionError(f"no snapshot after {MAX_MARKERS} writes: {node.tail()}")


def _cli(*args: str | Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "elastickv_async", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _endpoints(node: Node, client: Any) -> Endpoints:
    return Endpoints(client, node.endpoint("dynamo"), node.endpoint("s3"), node.endpoint("sqs"))


@pytest.mark.parametrize("full", [False, True], ids=["default", "full-fidelity"])
def test_a_fresh_backup_restores_everything_but_the_known_differences(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, full: bool
) -> None:
    """Every SQS message and TTL survives; in default mode only the four known kinds differ,
    each occurring; in full-fidelity mode nothing differs (the in-flight messages stay hidden,
    the FIFO one keeps its group locked)."""
    assert BIN_DIR is not None
    binaries = unpack(BIN_DIR, tmp_path_factory.getbasetemp())
    doc: dict[str, Any] = {"deleted_so_far": {}}
    source = Node(
        binary=binaries["elastickv"],
        raft_data_dir=tmp_path / "source",
        raft_id="n1",
        raft_port=free_ports(1)[0],
        log_path=tmp_path / "source.log",
        bootstrap=True,
        env={"ELASTICKV_RAFT_SNAPSHOT_COUNT": SNAPSHOT_EVERY},
    )
    with source:
        _write_redis(source, doc)
        _write_dynamodb(source, doc)
        _write_s3(source, doc)
        _write_sqs(source, doc)
        snapshot = shutil.copy(_force_snapshot(source), tmp_path / "backup.fsm")
        backup_ms = time.time_ns() // 1_000_000
        with source.redis() as client:
            live = read_doc(_endpoints(source, client), doc, time.time_ns() // 1_000_000)
    # The queues' attributes as the node reports them (CreatedTimestamp and the like).
    for name, spec in doc["sqs"]["queues"].items():
        spec["attributes_at_readback"] = live["sqs"]["queues"][name]["attributes_at_readback"]

    mode = ["--full-fidelity"] if full else []
    tree, fsm = tmp_path / "tree", tmp_path / "r.fsm"
    _cli("decode", "--input", snapshot, "--output", tree, "--cluster-id", CLUSTER_ID, *mode)
    _cli("encode", "--input", tree, "--output", fsm, "--self-test", "--rebase-time")
    shift_ms = json.loads(Path(f"{fsm}.encode_info.json").read_bytes())["time_rebase"]["shift_ms"]
    restored = Node(
        binary=binaries["elastickv"],
        raft_data_dir=tmp_path / "restored",
        raft_id="n1",
        raft_port=free_ports(1)[0],
        log_path=tmp_path / "restored.log",
    )
    restored.raft_data_dir.mkdir()
    _cli(
        "prepare-restore",
        "--input", tmp_path / "r.fsm",
        "--data-dir", restored.data_dir,
        "--index", "1",
        "--peers", f"n1={restored.raft_address}",
        "--target-cluster-id", CLUSTER_ID,
    )  # fmt: skip
    restored_ms = time.time_ns() // 1_000_000
    with restored, restored.redis() as client:
        now_ms = time.time_ns() // 1_000_000
        state = read_node(_endpoints(restored, client), doc, now_ms, not_visible=full)
    read_ms = time.time_ns() // 1_000_000

    with Path(snapshot).open("rb") as f:
        ceiling_ms = int.from_bytes(f.read(16)[8:], "big")
    # A fresh node may not have set its HLC ceiling yet (0): the copy's time bounds the data.
    clock = Clock(ceiling_ms or backup_ms, restored_ms, read_ms)
    expectation, may_expire = restore_expectation(doc, clock, Restore(shift_ms, full))
    assert may_expire == {}
    found = explain(state, expectation, may_expire)
    assert found.unexplained == [], "\n".join(found.unexplained)
    if full:
        assert all(not names for names in found.known.values()), found.known
        assert {q: state["sqs"][q]["not_visible"] for q in ("q-std", "q.fifo")} == {
            "q-std": 1,
            "q.fifo": 1,
        }
    else:
        occurrences = known_occurrences(doc, may_expire)
        assert all(occurrences.values()), occurrences
        assert found.known == occurrences
    # The nodes' WAL segments are preallocated (64 MB each): kept only when the test fails.
    shutil.rmtree(source.raft_data_dir)
    shutil.rmtree(restored.raft_data_dir)
