"""Read a restored node's whole state through its APIs and compare it with ``expected.json``.

The node's answers are written into the schema of ``<snapshot>.expected.json`` (the clients'
own record of what they wrote) and both sides go through ``statecompare``'s normalisation,
so one comparison lists every difference, one line each. On top of what ``statecompare``
compares for a decoded tree, a restore also checks what only a live node shows: each S3
bucket's creation date, each queue's Created/LastModified timestamps, each SQS message's
receive count, and incomplete multipart uploads (by ListParts on their upload id).

Every difference must then be explained: either it is one of :data:`KNOWN`, the things the
default dump layout does not carry (each kind must occur exactly where the expectation says
it will; a full-fidelity restore, :class:`Restore`, has none of them), or it is
time-dependent: the node drops SQS messages whose retention has passed and hides Redis keys
whose TTL has passed, by its own clock (:class:`Clock`), unless the encode moved those
deadlines (``--rebase-time``, :attr:`Restore.shift_ms`).

Keys are read by name (this server's SCAN and KEYS crash it): every Redis key the
expectation names, present or deleted. Multipart uploads are found by their upload id
(ListMultipartUploads answers 501).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import boto3
import redis
from botocore.config import Config
from botocore.exceptions import ClientError
from statecompare import TTL_TOLERANCE_MS, Expectation, Near, State, compare, expectation_from_json

__all__ = [
    "KNOWN",
    "Clock",
    "Explained",
    "KnownDifference",
    "Restore",
    "explain",
    "read_doc",
    "read_node",
    "restore_expectation",
    "state_of",
]

_CREDENTIALS: Final = {
    "region_name": "us-east-1",
    "aws_access_key_id": "restore-test",
    "aws_secret_access_key": "restore-test",
}
#: Visibility timeout for the test's own ReceiveMessage calls: long enough that nothing it
#: received comes back before it is deleted.
_RECEIVE_VISIBILITY_S: Final = 600
_MAX_RECEIVES: Final = 100


# --- the node's state, in expected.json's schema ----------------------------------------------


def _b64(raw: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(raw).decode()}


def _redis_key(client: Any, key: str, now_ms: int) -> dict[str, Any] | None:
    # ``client`` is a redis.Redis; its annotations cover str replies and awaitables too.
    kind = client.type(key).decode()
    if kind == "none":
        return None
    value: Any
    if kind == "string":
        value = _b64(client.get(key))
    elif kind == "hash":
        value = {f.decode(): _b64(v) for f, v in client.hgetall(key).items()}
    elif kind == "list":
        value = [_b64(v) for v in client.lrange(key, 0, -1)]
    elif kind == "set":
        value = [_b64(v) for v in client.smembers(key)]
    elif kind == "zset":
        value = [[_b64(m), s] for m, s in client.zrange(key, 0, -1, withscores=True)]
    elif kind == "stream":
        value = [
            {"id": i.decode(), "fields": {f.decode(): _b64(v) for f, v in fields.items()}}
            for i, fields in client.xrange(key)
        ]
    else:
        raise AssertionError(f"redis key {key!r}: unexpected type {kind!r}")
    pttl = client.pttl(key)
    return {
        "type": kind,
        "value": value,
        "client_expire_at_ms": now_ms + pttl if pttl >= 0 else None,
        "pttl_ms_at_readback": pttl,
    }


def _read_redis(client: Any, names: Iterable[str], now_ms: int) -> dict[str, Any]:
    keys = {}
    for name in names:
        found = _redis_key(client, name, now_ms)
        if found is not None:
            keys[name] = found
    return {"keys": keys}


def _av_json(value: Any) -> Any:
    """boto3's attribute values (binary as bytes) back into DynamoDB JSON (binary as base64)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list):
        return [_av_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _av_json(v) for k, v in value.items()}
    return value


def _read_dynamodb(client: Any) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    for page in client.get_paginator("list_tables").paginate():
        for name in page["TableNames"]:
            desc = client.describe_table(TableName=name)["Table"]
            items = [
                _av_json(item)
                for scan in client.get_paginator("scan").paginate(TableName=name)
                for item in scan["Items"]
            ]
            tables[name] = {
                "key_schema": desc["KeySchema"],
                "attribute_definitions": desc["AttributeDefinitions"],
                "global_secondary_indexes": [
                    {k: g[k] for k in ("IndexName", "KeySchema", "Projection")}
                    for g in desc.get("GlobalSecondaryIndexes", ())
                ],
                "items": items,
            }
    return {"tables": tables}


def _read_s3(client: Any, expected: Mapping[str, Any]) -> dict[str, Any]:
    """The buckets (expected.json schema, plus each bucket's creation time in Unix seconds)."""
    buckets: dict[str, Any] = {}
    for bucket in client.list_buckets()["Buckets"]:
        name = bucket["Name"]
        objects = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", ()):
                got = client.get_object(Bucket=name, Key=obj["Key"])
                body = got["Body"].read()
                objects[obj["Key"]] = {
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "size": len(body),
                    "etag": got["ETag"],
                    "content_type": got.get("ContentType", ""),
                    "metadata": got.get("Metadata", {}),
                }
        uploads = []
        for upload in expected.get(name, {}).get("incomplete_multipart_uploads", ()):
            try:
                parts = client.list_parts(
                    Bucket=name, Key=upload["key"], UploadId=upload["upload_id"]
                )
            except ClientError:
                continue
            uploads.append(
                {
                    "key": upload["key"],
                    "upload_id": upload["upload_id"],
                    "parts": {
                        str(p["PartNumber"]): {"size": p["Size"]} for p in parts.get("Parts", ())
                    },
                }
            )
        buckets[name] = {
            "objects": objects,
            "incomplete_multipart_uploads": uploads,
            "creation_date_s": int(bucket["CreationDate"].timestamp()),
        }
    return {"buckets": buckets}


def _message_attributes(raw: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, attr in raw.items():
        value: dict[str, Any] = {"DataType": attr["DataType"]}
        if "BinaryValue" in attr:
            value["BinaryValue"] = _b64(attr["BinaryValue"])
        else:
            value["StringValue"] = attr["StringValue"]
        out[name] = value
    return out


def _read_messages(client: Any, url: str, content_dedup: bool) -> list[dict[str, Any]]:
    """Receive every visible message once, deleting each (the node is thrown away).

    Deleting is what lets a FIFO queue hand out the next message of a group; the receive
    count is the one the receive reported.
    """
    messages: list[dict[str, Any]] = []
    for _ in range(_MAX_RECEIVES):
        batch = client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=_RECEIVE_VISIBILITY_S,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return messages
        for m in batch:
            system = m.get("Attributes", {})
            dedup = system.get("MessageDeduplicationId")
            if content_dedup and dedup == hashlib.sha256(m["Body"].encode()).hexdigest():
                dedup = None  # the server's content-based id: the client did not set one
            messages.append(
                {
                    "message_id": m["MessageId"],
                    "body": m["Body"],
                    "md5_of_body": m["MD5OfBody"],
                    "message_attributes": _message_attributes(m.get("MessageAttributes", {})),
                    "group_id": system.get("MessageGroupId"),
                    "sequence_number": system.get("SequenceNumber"),
                    "dedup_id": dedup,
                    "receive_count": int(system["ApproximateReceiveCount"]),
                    "state": "available",
                }
            )
            client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    raise AssertionError(f"{url}: still receiving messages after {_MAX_RECEIVES} calls")


def _read_sqs(client: Any) -> dict[str, Any]:
    queues: dict[str, Any] = {}
    for url in client.list_queues().get("QueueUrls", []):
        attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        content_dedup = attrs.get("ContentBasedDeduplication") == "true"
        queues[url.rsplit("/", 1)[1]] = {
            "attributes_at_readback": attrs,
            "messages": _read_messages(client, url, content_dedup),
        }
    return {"queues": queues}


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the node listens."""

    redis: redis.Redis
    dynamo: str
    s3: str
    sqs: str


def read_doc(endpoints: Endpoints, names: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """What the node serves, in expected.json's schema, for the names another doc holds.

    ``names`` is such a doc: its Redis keys (live and deleted) are read by name and its
    incomplete uploads looked up by upload id. Every queue's visible messages are received
    and deleted, one by one.
    """
    redis_names = set(names.get("redis", {}).get("keys", {}))
    redis_names.update(names.get("deleted_so_far", {}).get("redis_keys", ()))
    redis_names = {n.partition(" (")[0] for n in redis_names}
    s3_client = boto3.client(
        "s3",
        endpoint_url=endpoints.s3,
        config=Config(s3={"addressing_style": "path"}),
        **_CREDENTIALS,
    )
    return {
        "redis": _read_redis(endpoints.redis, sorted(redis_names), now_ms),
        "dynamodb": _read_dynamodb(
            boto3.client("dynamodb", endpoint_url=endpoints.dynamo, **_CREDENTIALS)
        ),
        "s3": _read_s3(s3_client, names.get("s3", {}).get("buckets", {})),
        "sqs": _read_sqs(boto3.client("sqs", endpoint_url=endpoints.sqs, **_CREDENTIALS)),
    }


def state_of(doc: Mapping[str, Any], *, not_visible: bool = False) -> State:
    """A node's :func:`read_doc` normalised for comparison, with what only a node shows
    (and, with ``not_visible``, each queue's count of messages in flight)."""
    state = expectation_from_json(doc, incomplete_uploads=True).state
    for record in state["redis"].values():
        expire = record["expire_at_ms"]
        record["expire_at_ms"] = expire.value if isinstance(expire, Near) else None
    for bucket, spec in doc["s3"]["buckets"].items():
        state["s3"][bucket]["creation_date"] = spec["creation_date_s"]
    for queue, spec in doc["sqs"]["queues"].items():
        attrs = spec["attributes_at_readback"]
        state["sqs"][queue] |= _queue_timestamps(attrs)
        if not_visible:
            state["sqs"][queue]["not_visible"] = int(attrs["ApproximateNumberOfMessagesNotVisible"])
        for m in spec["messages"]:
            state["sqs"][f"{queue}/{m['message_id']}"]["receive_count"] = m["receive_count"]
    return state


def read_node(
    endpoints: Endpoints, expected_doc: Mapping[str, Any], now_ms: int, *, not_visible: bool = False
) -> State:
    """Everything the node serves that the expectation can name, normalised for comparison."""
    return state_of(read_doc(endpoints, expected_doc, now_ms), not_visible=not_visible)


def _queue_timestamps(attrs: Mapping[str, str]) -> dict[str, int]:
    names = {
        "created_timestamp": "CreatedTimestamp",
        "last_modified_timestamp": "LastModifiedTimestamp",
    }
    return {field: int(attrs[aws]) for field, aws in names.items() if aws in attrs}


# --- the expectation for a restore ----------------------------------------------------------


class Before(Near):
    """An expected Unix time (s) after the epoch and no later than ``value``."""

    def matches(self, got: object) -> bool:
        """Whether ``got`` is a time in ``(0, value]``."""
        return isinstance(got, int) and 0 < got <= self.value

    def __repr__(self) -> str:
        return f"a time after 1970-01-01 and before {_iso(self.value * 1000)}"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Clock:
    """The times that decide what a node may already have dropped.

    ``snapshot_ms``: the snapshot's HLC ceiling (nothing in it was written later);
    ``restored_ms``: before the node started; ``read_ms``: after the last read.
    """

    snapshot_ms: int
    restored_ms: int
    read_ms: int


@dataclass(frozen=True, slots=True)
class Restore:
    """How the restored ``.fsm`` was made.

    ``shift_ms``: what ``encode --rebase-time`` added to every send, visibility and expiry
    time (its ``encode_info.json`` ``time_rebase.shift_ms``); ``full_fidelity``: the tree was
    decoded with ``--full-fidelity``, so bucket creation dates, queue timestamps, in-flight
    messages and incomplete uploads come back as they were.
    """

    shift_ms: int = 0
    full_fidelity: bool = False


def _in_flight_until_ms(state: str) -> int | None:
    """When an ``in_flight(visibility Ns from T)`` message becomes visible again (Unix ms)."""
    match = re.fullmatch(r"in_flight\(visibility (\d+)s from (\d+)\)", state)
    return None if match is None else (int(match[1]) + int(match[2])) * 1000


def restore_expectation(
    doc: Mapping[str, Any], clock: Clock, restore: Restore | None = None
) -> tuple[Expectation, dict[str, str]]:
    """The expectation for a restored node, and the names that may be missing by now.

    The second value maps "<adapter> <name>" of Redis keys whose TTL, and of SQS messages
    whose retention, may have passed by the node's clock (for sure or maybe, given when they
    were written and how far ``restore`` moved them) to the reason. A name whose deadline
    certainly lies after the reads is never in it.

    In full-fidelity mode an in-flight message stays hidden until its visibility deadline
    (moved like every other time): it is expected in the queue's ``not_visible`` count, not
    among the received messages, unless that deadline passed before the node started; the
    later messages of its FIFO group are not received either (the group stays locked).
    """
    restore = restore or Restore()
    shift = restore.shift_ms
    exp = expectation_from_json(doc, incomplete_uploads=True)
    may_expire: dict[str, str] = {}
    for key, spec in doc.get("redis", {}).get("keys", {}).items():
        deadline = spec.get("client_expire_at_ms")
        if deadline is None:
            continue
        deadline += shift
        if key in exp.state["redis"]:
            exp.state["redis"][key]["expire_at_ms"] = Near(deadline, TTL_TOLERANCE_MS)
        if deadline <= clock.read_ms + TTL_TOLERANCE_MS:
            may_expire[f"redis {key}"] = (
                f"TTL deadline {_iso(deadline)} is not after the reads ({_iso(clock.read_ms)})"
            )
    for bucket in doc.get("s3", {}).get("buckets", {}):
        exp.state["s3"][bucket]["creation_date"] = Before(clock.snapshot_ms // 1000 + 1, 0)
    for queue, spec in doc.get("sqs", {}).get("queues", {}).items():
        attrs = spec["attributes_at_readback"]
        exp.state["sqs"][queue] |= _queue_timestamps(attrs)
        created_ms = int(attrs["CreatedTimestamp"]) * 1000 + shift
        retention_ms = int(attrs["MessageRetentionPeriod"]) * 1000
        hidden = 0
        locked: set[str] = set()
        for m in spec["messages"]:  # in send order
            name = f"{queue}/{m['message_id']}"
            if name not in exp.state["sqs"]:
                continue
            if m["group_id"] in locked:
                # Behind an in-flight head: the group's lock keeps it from being received.
                del exp.state["sqs"][name]
                continue
            visible_ms = _in_flight_until_ms(m["state"])
            kept = restore.full_fidelity and visible_ms is not None
            if kept and visible_ms is not None and visible_ms + shift > clock.read_ms:
                assert visible_ms + shift > clock.restored_ms + TTL_TOLERANCE_MS, (
                    f"{name} becomes visible while the node is read: the test cannot tell"
                )
                del exp.state["sqs"][name]
                hidden += 1
                if m["group_id"] is not None:
                    locked.add(m["group_id"])
                continue
            # Our own ReceiveMessage is one more receive; a default restore counts from 0.
            exp.state["sqs"][name]["receive_count"] = m["receive_count"] + 1
            # Sent between the queue's creation and the snapshot: its retention ends in
            # [created + retention, snapshot + retention] (both moved by the shift).
            if created_ms + retention_ms <= clock.read_ms:
                may_expire[f"sqs {name}"] = (
                    f"retention of {retention_ms // 1000}s from a send between "
                    f"{_iso(created_ms)} and {_iso(clock.snapshot_ms + shift)} may end before "
                    f"the reads ({_iso(clock.read_ms)})"
                )
        if restore.full_fidelity:
            exp.state["sqs"][queue]["not_visible"] = hidden
    return exp, may_expire


# --- explaining the differences ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KnownDifference:
    """A difference the default dump layout causes, and where it must show up."""

    reason: str
    pattern: str

    def matches(self, line: str) -> bool:
        """Whether ``line`` is a difference of this kind."""
        return re.fullmatch(self.pattern, line) is not None


#: The differences a default-mode restore is known to have, by name.
KNOWN: Final[dict[str, KnownDifference]] = {
    "s3_bucket_creation_date": KnownDifference(
        "the dump's _bucket.json has no creation date: buckets come back created at the epoch",
        r"s3 [^/]+\.creation_date: expected a time after .*, got 0",
    ),
    "sqs_queue_timestamps": KnownDifference(
        "_queue.json has no CreatedTimestamp/LastModifiedTimestamp: the node reports none",
        r"sqs [^/]+\.(created|last_modified)_timestamp: missing, expected \d+",
    ),
    "sqs_in_flight_message": KnownDifference(
        "decode resets visibility and receive counts: an in-flight message comes back "
        "visible with receive count 0",
        r"sqs [^/]+/[^/ ]+\.receive_count: expected \d+, got 1",
    ),
    "s3_incomplete_upload": KnownDifference(
        "the encoder refuses _incomplete_uploads/: an incomplete multipart upload is gone",
        r"s3 .+ \(incomplete upload\): missing",
    ),
}


def known_occurrences(doc: Mapping[str, Any], may_expire: Mapping[str, str]) -> dict[str, set[str]]:
    """Where each :data:`KNOWN` kind must occur: its difference lines' names, per kind."""
    buckets = doc.get("s3", {}).get("buckets", {})
    queues = doc.get("sqs", {}).get("queues", {})
    in_flight = {
        f"sqs {q}/{m['message_id']}"
        for q, spec in queues.items()
        for m in spec["messages"]
        if m["state"].startswith("in_flight")
    }
    return {
        "s3_bucket_creation_date": {f"s3 {b}.creation_date" for b in buckets},
        "sqs_queue_timestamps": {
            f"sqs {q}.{field}"
            for q in queues
            for field in ("created_timestamp", "last_modified_timestamp")
        },
        "sqs_in_flight_message": {f"{n}.receive_count" for n in in_flight if n not in may_expire},
        "s3_incomplete_upload": {
            f"s3 {b}/{u['key']} (incomplete upload)"
            for b, spec in buckets.items()
            for u in spec.get("incomplete_multipart_uploads", ())
        },
    }


@dataclass(slots=True)
class Explained:
    """The comparison's lines sorted by explanation."""

    known: dict[str, set[str]]
    #: time-dependent lines, each with its reason
    expired: dict[str, str]
    unexplained: list[str]


def _subject(line: str) -> str:
    """``"<adapter> <name>[.<field>]"`` of a difference line (what precedes ``": "``)."""
    return line.split(": ", 1)[0]


def explain(actual: State, expected: Expectation, may_expire: Mapping[str, str]) -> Explained:
    """Compare and sort every difference: a known kind, time-dependent, or unexplained."""
    out = Explained(known={name: set() for name in KNOWN}, expired={}, unexplained=[])
    for line in compare(actual, expected):
        kinds = [name for name, kind in KNOWN.items() if kind.matches(line)]
        subject = _subject(line)
        if kinds:
            out.known[kinds[0]].add(subject)
        elif line.endswith(": missing") and subject in may_expire:
            out.expired[line] = may_expire[subject]
        else:
            out.unexplained.append(line)
    return out


def load_doc(path: Path) -> dict[str, Any]:
    """A parsed ``expected.json``."""
    doc: dict[str, Any] = json.loads(path.read_bytes())
    return doc
