"""SQS encoder: records from dump trees, dedup winners, and every validation gate.

Expected records come from the golden corpus (enc_sqs* expected.fsm) or are written by hand
from REFERENCE_NOTES §6.6.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from support import produced, raises_code, shared_dir

from elastickv_async._adapters.base import EncodeContext
from elastickv_async._adapters.sqs.encode import SQSEncoder
from elastickv_async._core.errors import DumpTreeError, UnsafeDumpEntry
from elastickv_async._core.report import Report, make_logger

pytestmark = pytest.mark.anyio

GEN1 = b"\x00" * 7 + b"\x01"
SHARED = shared_dir()


async def encode(root: Path, *, memory: int | None = None) -> dict[bytes, bytes]:
    """The encoder's records for the tree at ``root``; ``memory``: its share of the budget."""
    report = Report()
    ctx = EncodeContext(input_root=root, log=make_logger(report), report=report, scratch=root)
    if memory is not None:
        ctx.memory = memory
    records = await produced(SQSEncoder(ctx))
    keys = [k for k, _ in records]
    assert len(keys) == len(set(keys)), "duplicate keys"
    return dict(records)


def queue_dir(root: Path, name: str, queue: dict[str, Any], lines: list[Any] | None) -> Path:
    d = root / "sqs" / name
    d.mkdir(parents=True)
    (d / "_queue.json").write_text(json.dumps({"format_version": 1, "name": name} | queue))
    if lines is not None:
        text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
        (d / "messages.jsonl").write_text(text)
    return d


def fsm_records(path: Path) -> dict[bytes, bytes]:
    """User key -> user value of an encoder-written .fsm (no header flags, no footer)."""
    data = path.read_bytes()
    out = {}
    pos = 16
    while pos < len(data):
        (klen,) = struct.unpack_from("<Q", data, pos)
        key = data[pos + 8 : pos + 8 + klen]
        pos += 8 + klen
        (vlen,) = struct.unpack_from("<Q", data, pos)
        out[key[:-8]] = data[pos + 8 + 9 : pos + 8 + vlen]
        pos += 8 + vlen
    return out


GOLDEN_CASES = [
    "enc_sqs",
    "enc_sqs_binary_ties",
    "enc_sqs_htfifo",
    "enc_sqs_standard",
    "enc_sqs_visibility",
]


@pytest.mark.skipif(SHARED is None, reason="golden corpus absent")
@pytest.mark.parametrize("case", GOLDEN_CASES)
async def test_golden_trees(case: str) -> None:
    """The records equal the SQS records of the reference encoder's .fsm."""
    assert SHARED is not None
    base = SHARED / "golden" / "public" / case
    want = {k: v for k, v in fsm_records(base / "expected.fsm").items() if k.startswith(b"!sqs|")}
    assert await encode(base / "input") == want


async def test_standard_queue_records(tmp_path: Path) -> None:
    """Meta, gen, data, vis and byage rows of a standard queue; no dedup, no seq."""
    queue_dir(
        tmp_path,
        "jobs",
        {"visibility_timeout_seconds": 30, "message_retention_seconds": 60, "delay_seconds": 0},
        [
            {
                "message_id": "m1",
                "body": "a<b",
                "send_timestamp_millis": 5,
                "available_at_millis": 7,
                "visible_at_millis": 99,
                "receive_count": 4,
                "first_receive_millis": 3,
                "current_receipt_token": "AQID",
                "queue_generation": 9,
                "message_attributes": {"k<": {"DataType": "String", "StringValue": "<v>"}},
            }
        ],
    )
    got = await encode(tmp_path)
    q = b"am9icw"
    assert got == {
        b"!sqs|queue|meta|" + q: b'\x00SQ\x01{"name":"jobs","generation":1,'
        b'"visibility_timeout_seconds":30,"message_retention_seconds":60,"delay_seconds":0,'
        b'"receive_message_wait_seconds":0,"maximum_message_size":0}',
        b"!sqs|queue|gen|" + q: b"1",
        b"!sqs|msg|data|" + q + GEN1 + b"bTE": b'\x00SM\x01{"message_id":"m1",'
        b'"body":"YTxi","md5_of_body":"","message_attributes":{"k\\u003c":'
        b'{"DataType":"String","StringValue":"\\u003cv\\u003e"}},"send_timestamp_millis":5,'
        b'"available_at_millis":7,"visible_at_millis":0,"receive_count":0,'
        b'"current_receipt_token":null,"queue_generation":1}',
        b"!sqs|msg|vis|" + q + GEN1 + (7).to_bytes(8, "big") + b"bTE": b"m1",
        b"!sqs|msg|byage|" + q + GEN1 + (5).to_bytes(8, "big") + b"bTE": b"m1",
    }


def fifo(**extra: Any) -> dict[str, Any]:
    return {"fifo": True, "visibility_timeout_seconds": 30} | extra


async def test_content_based_dedup_and_sequence_counter(tmp_path: Path) -> None:
    """CBD dedup id = sha256(body) hex; the seq counter holds the highest sequence number."""
    queue_dir(
        tmp_path,
        "c.fifo",
        fifo(content_based_deduplication=True),
        [
            {"message_id": "a", "body": "alpha", "send_timestamp_millis": 10, "sequence_number": 7},
            {"message_id": "b", "body": "beta", "send_timestamp_millis": 11, "sequence_number": 3},
        ],
    )
    got = await encode(tmp_path)
    q = b"Yy5maWZv"
    dedup = hashlib.sha256(b"alpha").hexdigest().encode()
    key = b"!sqs|msg|dedup|" + q + GEN1 + base64.urlsafe_b64encode(dedup).rstrip(b"=")
    assert got[key] == (
        b'{"message_id":"a","send_timestamp_ms":10,"expires_at_millis":300010,'
        b'"original_sequence":7}'
    )
    assert got[b"!sqs|queue|seq|" + q] == b"7"
    assert sum(k.startswith(b"!sqs|msg|dedup|") for k in got) == 2


async def test_classic_dedup_winner_is_the_latest_send_then_the_first_line(tmp_path: Path) -> None:
    """One dedup row per id: the latest send wins; equal sends go to the earlier line."""
    queue_dir(
        tmp_path,
        "d.fifo",
        fifo(),
        [
            {"message_id": "x1", "message_deduplication_id": "D", "send_timestamp_millis": 5},
            {"message_id": "x2", "message_deduplication_id": "D", "send_timestamp_millis": 5},
            {"message_id": "y1", "message_deduplication_id": "E", "send_timestamp_millis": 1},
            {"message_id": "y2", "message_deduplication_id": "E", "send_timestamp_millis": 2},
        ],
    )
    got = await encode(tmp_path)
    owners = sorted(
        json.loads(v)["message_id"] for k, v in got.items() if k.startswith(b"!sqs|msg|dedup|")
    )
    assert owners == ["x1", "y2"]
    assert b"!sqs|queue|seq|ZC5maWZv" not in got  # no sequence numbers -> no counter


HT = {"partition_count": 4, "fifo_throughput_limit": "perMessageGroupId"}


async def test_partitioned_dedup_ties_go_to_the_lowest_sequence(tmp_path: Path) -> None:
    """Partitioned queues are sorted first: among equal sends the lowest (seq, id) wins."""
    common = {"message_group_id": "group-0", "partition": 1, "message_deduplication_id": "D"}
    queue_dir(
        tmp_path,
        "p.fifo",
        fifo(**HT),
        [
            {"message_id": "late-line", "send_timestamp_millis": 5, "sequence_number": 1} | common,
            {"message_id": "early-line", "send_timestamp_millis": 5, "sequence_number": 2} | common,
        ],
    )
    got = await encode(tmp_path)
    dedup = [v for k, v in got.items() if k.startswith(b"!sqs|msg|dedup|p|")]
    assert [json.loads(v)["message_id"] for v in dedup] == ["late-line"]
    data_keys = [k for k in got if k.startswith(b"!sqs|msg|data|p|cC5maWZv|\x00\x00\x00\x01")]
    assert len(data_keys) == 2


async def test_bodies_null_absent_and_envelope(tmp_path: Path) -> None:
    """``null`` is an empty body, an absent body stays nil (``null``), envelopes decode."""
    queue_dir(
        tmp_path,
        "b",
        {},
        [
            {"message_id": "n", "body": None},
            {"message_id": "a"},
            {"message_id": "e", "body": {"base64": "__4"}},
        ],
    )
    got = await encode(tmp_path)

    def body(msg_id: bytes) -> Any:
        key = b"!sqs|msg|data|Yg" + GEN1 + base64.urlsafe_b64encode(msg_id).rstrip(b"=")
        return json.loads(got[key][4:])["body"]

    assert (body(b"n"), body(b"a"), body(b"e")) == ("", None, "//4=")


async def test_stream_of_json_values(tmp_path: Path) -> None:
    """Like Go's json.Decoder: values may span lines or share one."""
    d = queue_dir(tmp_path, "s", {}, None)
    (d / "messages.jsonl").write_text(
        '{\n  "message_id": "a",\n  "body": "1"\n}\n{"message_id":"b"} {"message_id":"c"}\n\n'
    )
    got = await encode(tmp_path)
    assert sum(k.startswith(b"!sqs|msg|data|") for k in got) == 3


@pytest.mark.parametrize(
    ("queue", "match"),
    [
        ({"format_version": 2}, "format_version"),
        ({"fifo_throughput_limit": "fast"}, "fifo_throughput_limit"),
        ({"deduplication_scope": "world"}, "deduplication_scope"),
        ({"fifo": True, "partition_count": 3}, "power of two"),
        ({"fifo": True, "partition_count": 64}, "exceeds"),
        ({"partition_count": 2}, "FIFO"),
        ({"deduplication_scope": "queue"}, "FIFO"),
        ({"fifo": True, "partition_count": 2, "deduplication_scope": "queue"}, "incompatible"),
        ({"fifo": True, "fifo_throughput_limit": "perMessageGroupId"}, "requires"),
        ({"name": ""}, "empty queue name"),
        ({"delay_seconds": "5"}, "integer"),
    ],
)
async def test_queue_gates(tmp_path: Path, queue: dict[str, Any], match: str) -> None:
    """Every _queue.json gate is a typed "ErrSQSEncodeInvalidQueue"."""
    queue_dir(tmp_path, "q", queue, [])
    with raises_code(DumpTreeError, "ErrSQSEncodeInvalidQueue", match=match):
        await encode(tmp_path)


async def test_missing_queue_json(tmp_path: Path) -> None:
    """A queue directory without _queue.json (e.g. a side-record orphan dir) is refused."""
    (tmp_path / "sqs" / "ZGVsZXRlZA.orphan").mkdir(parents=True)
    with raises_code(DumpTreeError, "ErrSQSEncodeInvalidQueue", match="missing"):
        await encode(tmp_path)


def ht_msg(**fields: Any) -> dict[str, Any]:
    return {"message_id": "m", "message_group_id": "group-0"} | fields


@pytest.mark.parametrize(
    ("queue", "message", "code"),
    [
        (fifo(**HT), ht_msg(), "ErrSQSEncodeMissingPartition"),
        (fifo(**HT), ht_msg(partition=4), "ErrSQSEncodeOutOfRangePartition"),
        (fifo(**HT), ht_msg(partition=2), "ErrSQSEncodePartitionHashMismatch"),
        (
            fifo(partition_count=4, fifo_throughput_limit="perQueue"),
            ht_msg(partition=1),
            "ErrSQSEncodePartitionRoutingMismatch",
        ),
        (fifo(), ht_msg(partition=1), "ErrSQSEncodeInvalidMessage"),
        ({}, {"message_id": ""}, "ErrSQSEncodeInvalidMessage"),
        ({}, {"message_id": "m", "body": {"base64": "", "x": 1}}, "ErrSQSEncodeInvalidMessage"),
        ({}, {"message_id": "m", "body": 5}, "ErrSQSEncodeInvalidMessage"),
        ({}, ["not", "an", "object"], "ErrSQSEncodeInvalidMessage"),
        ({}, '{"message_id": ', "ErrSQSEncodeInvalidMessage"),
    ],
)
async def test_message_gates(
    tmp_path: Path, queue: dict[str, Any], message: Any, code: str
) -> None:
    """Partition gates and malformed lines raise the reference's typed errors."""
    queue_dir(tmp_path, "q", queue, [message])
    with raises_code(DumpTreeError, code):
        await encode(tmp_path)


async def test_gates_run_before_any_message_is_checked_for_an_id(tmp_path: Path) -> None:
    """The partition gates see every line before the per-message id check."""
    queue_dir(tmp_path, "q", fifo(**HT), [{"message_id": ""}, ht_msg(partition=4)])
    with raises_code(DumpTreeError, "ErrSQSEncodeMissingPartition"):
        await encode(tmp_path)


async def test_every_line_is_read_before_a_missing_id_is_reported(tmp_path: Path) -> None:
    """One pass, but the reference's order of faults: a bad line after a message without id
    is the error."""
    queue_dir(tmp_path / "a", "q", {}, [{"message_id": ""}, "{not json"])
    with raises_code(DumpTreeError, "ErrSQSEncodeInvalidMessage", match="invalid JSON"):
        await encode(tmp_path / "a")
    queue_dir(tmp_path / "b", "q", {}, [{"message_id": "m"}, {"message_id": ""}])
    with raises_code(DumpTreeError, "ErrSQSEncodeInvalidMessage", match="without message_id"):
        await encode(tmp_path / "b")


async def test_links_are_refused(tmp_path: Path) -> None:
    """Symlinked queue dirs or files and hard-linked files are refused."""
    d = queue_dir(tmp_path / "a", "q", {}, [])
    os.link(d / "messages.jsonl", tmp_path / "other")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="hard link"):
        await encode(tmp_path / "a")

    d = queue_dir(tmp_path / "b", "q", {}, None)
    (d / "messages.jsonl").symlink_to(tmp_path / "other")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="symlink"):
        await encode(tmp_path / "b")

    queue_dir(tmp_path / "c", "q", {}, None)
    (tmp_path / "c" / "sqs" / "link").symlink_to(tmp_path / "c" / "sqs" / "q")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="symlink"):
        await encode(tmp_path / "c")


async def test_tree_shapes(tmp_path: Path) -> None:
    """No sqs/ -> nothing; stray files in sqs/ are ignored; a file named sqs is refused."""
    assert await encode(tmp_path) == {}
    queue_dir(tmp_path, "q", {}, None)
    (tmp_path / "sqs" / "README").write_text("hi")
    assert len(await encode(tmp_path)) == 2
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "sqs").write_text("")
    with pytest.raises(DumpTreeError, match="expected a directory"):
        await encode(tmp_path / "x")


async def test_no_blocking_calls_on_the_event_loop(tmp_path: Path) -> None:
    """Directory listing and file reads happen in worker threads."""
    queue_dir(tmp_path, "q.fifo", fifo(), [{"message_id": "a", "sequence_number": 1}])
    got = await encode(tmp_path)
    assert got[b"!sqs|queue|seq|cS5maWZv"] == b"1"


async def test_records_cost_their_size_in_memory(tmp_path: Path) -> None:
    """Every record value is a right-sized allocation: the sorter holds hundreds of thousands,
    and a JSON value kept in the serializer's output buffer would cost 4 KiB."""
    count = 2000
    lines = [
        {"message_id": f"m{i}", "body": "b", "send_timestamp_millis": i, "sequence_number": i + 1}
        | {"message_group_id": "g", "message_deduplication_id": f"d{i}"}
        for i in range(count)
    ]
    queue_dir(tmp_path, "f.fifo", fifo(), lines)
    report = Report()
    ctx = EncodeContext(
        input_root=tmp_path, log=make_logger(report), report=report, scratch=tmp_path
    )
    tracemalloc.start()
    try:
        records = await produced(SQSEncoder(ctx))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(k.startswith(b"!sqs|msg|dedup|") for k, _ in records) == count
    payload = sum(len(k) + len(v) for k, v in records)
    assert held < 3 * payload  # oversized buffers: some 4 KiB more per dedup row
