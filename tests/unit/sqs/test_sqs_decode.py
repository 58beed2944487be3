"""SQS decoder behaviour, fed with hand-built records (expected output written by hand).

Field order, omitempty rules, warning names and hints follow REFERENCE_NOTES §3.4 and the
golden corpus (sqs_* cases).
"""

from __future__ import annotations

import base64
import json
import random
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import anyio
import msgspec
import pytest
from support import decode_context, raises_code

from elastickv_async._adapters.base import Routed
from elastickv_async._adapters.sqs import decode as sqs_decode
from elastickv_async._adapters.sqs import keys
from elastickv_async._adapters.sqs.decode import RENDER_CHUNK, SQSDecoder
from elastickv_async._adapters.sqs.render import Rendered, RenderSettings
from elastickv_async._adapters.sqs.spill import DEFAULT_BUDGET
from elastickv_async._core.errors import AdapterRecordError
from elastickv_async._core.snapshot.entry import Entry
from elastickv_async._core.workers import Workers

pytestmark = pytest.mark.anyio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

ORPHAN_HINT = (
    "no !sqs|queue|meta record matched this encoded prefix; messages dropped from the dump"
)
STALE_HINT = (
    "messages with mismatched queue_generation suppressed; "
    "reaper had not finished cleanup at snapshot time"
)


def b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def meta(queue: bytes, **fields: Any) -> tuple[bytes, bytes]:
    return b"!sqs|queue|meta|" + b64(queue), b"\x00SQ\x01" + json.dumps(fields).encode()


def gen(queue: bytes, value: bytes) -> tuple[bytes, bytes]:
    return b"!sqs|queue|gen|" + b64(queue), value


def message(
    queue: bytes, msg_id: str, *, body: bytes = b"x", g: int = 1, part: int | None = None, **f: Any
) -> tuple[bytes, bytes]:
    record = {"message_id": msg_id, "body": base64.b64encode(body).decode(), "queue_generation": g}
    record.update(f)
    if part is None:
        key = b"!sqs|msg|data|" + b64(queue) + u64(g) + b64(msg_id.encode())
    else:
        key = b"!sqs|msg|data|p|" + b64(queue) + b"|" + part.to_bytes(4, "big") + u64(g)
        key += b64(msg_id.encode())
    return key, b"\x00SM\x01" + json.dumps(record).encode()


def raw_message(queue: bytes, msg_id: bytes, json_text: bytes) -> tuple[bytes, bytes]:
    return b"!sqs|msg|data|" + b64(queue) + u64(1) + b64(msg_id), b"\x00SM\x01" + json_text


@pytest.fixture(autouse=True, params=["handle", "consume"])
def decode_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every case twice: batch by batch (``handle`` then ``finalize``, rendering inline) and
    as the pipeline runs it (``consume``, rendering in the background)."""
    monkeypatch.setattr(Run, "path", request.param)


class Run:
    """One decode of hand-built records into ``tmp_path/out``."""

    #: How the records are fed (see :func:`decode_path`).
    path = "handle"

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.out = tmp_path / "out"
        self.scratch = tmp_path / "scratch"
        self.ctx = decode_context(tmp_path, "sqs", **options)
        self.report = self.ctx.report
        self.scope: dict[str, Any] = {}

    async def decode(
        self,
        records: list[tuple[bytes, bytes]],
        *,
        budget: int | None = None,
        batch: int = 3,
        chunk: int = RENDER_CHUNK,
    ) -> SQSDecoder:
        decoder = SQSDecoder(self.ctx, spill_budget=budget or DEFAULT_BUDGET, render_chunk=chunk)
        for part in self._batches(records, batch):
            await decoder.handle(part)
        return decoder

    @staticmethod
    def _batches(records: list[tuple[bytes, bytes]], batch: int) -> list[list[Routed]]:
        routed: list[Routed] = []
        by_length = sorted(keys.ROUTED_PREFIXES, key=len, reverse=True)
        for key, value in sorted(records):  # snapshot key order
            prefix = next(p for p in by_length if key.startswith(p))
            routed.append((prefix, Entry(key, value, 1, 0, False)))
        return [routed[i : i + batch] for i in range(0, len(routed), batch)]

    async def __call__(
        self,
        records: list[tuple[bytes, bytes]],
        *,
        budget: int | None = None,
        batch: int = 3,
        chunk: int = RENDER_CHUNK,
    ) -> None:
        if self.path == "handle":
            decoder = await self.decode(records, budget=budget, batch=batch, chunk=chunk)
            self.scope = await decoder.finalize()
            return
        decoder = SQSDecoder(self.ctx, spill_budget=budget or DEFAULT_BUDGET, render_chunk=chunk)

        async def batches() -> AsyncIterator[list[Routed]]:
            for part in self._batches(records, batch):
                yield part

        self.scope = await decoder.consume(batches())

    def files(self) -> list[str]:
        return sorted(
            p.relative_to(self.out).as_posix() for p in self.out.rglob("*") if p.is_file()
        )

    def text(self, rel: str) -> str:
        return (self.out / rel).read_text()

    def warnings(self, event: str) -> list[dict[str, Any]]:
        """The fields of each ``event`` warning, without the bound ``adapter`` name."""
        summary = self.report.warnings.get(event)
        examples = [] if summary is None else summary.examples
        return [{k: v for k, v in e.items() if k != "adapter"} for e in examples]


async def test_standard_queue(tmp_path: Path) -> None:
    """_queue.json (MarshalIndent, no newline) and messages.jsonl for a standard queue."""
    run = Run(tmp_path)
    await run(
        [
            meta(
                b"jobs",
                name="jobs",
                generation=3,
                incarnation=1,
                visibility_timeout_seconds=30,
                message_retention_seconds=345600,
                delay_seconds=0,
                receive_message_wait_seconds=0,
                maximum_message_size=262144,
                tags={"a": "b"},
                throttle={"send_capacity": 1.5},
            ),
            gen(b"jobs", b"1"),
            message(b"jobs", "m2", body=b"two", send_timestamp_millis=20, md5_of_body="d2"),
            message(b"jobs", "m1", body=b"", send_timestamp_millis=10, sender_id="S"),
        ]
    )
    assert run.files() == ["sqs/jobs/_queue.json", "sqs/jobs/messages.jsonl"]
    assert run.text("sqs/jobs/_queue.json") == (
        '{\n  "format_version": 1,\n  "name": "jobs",\n  "visibility_timeout_seconds": 30,\n'
        '  "message_retention_seconds": 345600,\n  "delay_seconds": 0,\n'
        '  "maximum_message_size": 262144\n}'
    )
    assert run.text("sqs/jobs/messages.jsonl") == (
        '{"message_id":"m1","body":"","sender_id":"S","send_timestamp_millis":10,'
        '"available_at_millis":0,"visible_at_millis":0,"receive_count":0,"queue_generation":1}\n'
        '{"message_id":"m2","body":"two","md5_of_body":"d2","send_timestamp_millis":20,'
        '"available_at_millis":0,"visible_at_millis":0,"receive_count":0,"queue_generation":1}\n'
    )
    assert run.scope == {"queues": ["jobs"]}
    assert run.report.warnings == {}


async def test_htfifo_queue_and_partitioned_keys(tmp_path: Path) -> None:
    """Partitioned keys add ``partition``; the HT-FIFO attributes reach _queue.json."""
    run = Run(tmp_path)
    await run(
        [
            meta(
                b"ht.fifo",
                name="ht.fifo",
                is_fifo=True,
                content_based_dedup=True,
                visibility_timeout_seconds=30,
                message_retention_seconds=60,
                delay_seconds=2,
                redrive_policy='{"maxReceiveCount":3}',
                partition_count=4,
                fifo_throughput_limit="perMessageGroupId",
                deduplication_scope="messageGroup",
            ),
            message(b"ht.fifo", "h1", part=2, send_timestamp_millis=1, sequence_number=2),
            message(b"ht.fifo", "h0", part=1, send_timestamp_millis=1, sequence_number=1),
            message(b"ht.fifo", "c0", send_timestamp_millis=0, message_group_id="g"),
        ]
    )
    assert run.text("sqs/ht.fifo/_queue.json") == (
        '{\n  "format_version": 1,\n  "name": "ht.fifo",\n  "fifo": true,\n'
        '  "content_based_deduplication": true,\n  "visibility_timeout_seconds": 30,\n'
        '  "message_retention_seconds": 60,\n  "delay_seconds": 2,\n'
        '  "redrive_policy": "{\\"maxReceiveCount\\":3}",\n  "partition_count": 4,\n'
        '  "fifo_throughput_limit": "perMessageGroupId",\n'
        '  "deduplication_scope": "messageGroup"\n}'
    )
    lines = run.text("sqs/ht.fifo/messages.jsonl").splitlines()
    assert [json.loads(line).get("partition") for line in lines] == [None, 1, 2]
    assert lines[1] == (
        '{"message_id":"h0","body":"x","send_timestamp_millis":1,"available_at_millis":0,'
        '"visible_at_millis":0,"receive_count":0,"queue_generation":1,"sequence_number":1,'
        '"partition":1}'
    )


async def test_ordering_ties(tmp_path: Path) -> None:
    """Sort by (send ts, sequence number, message id); full ties keep key order."""
    q = b"q"
    run = Run(tmp_path)
    await run(
        [
            meta(q, name="q"),
            message(q, "b", send_timestamp_millis=5),
            message(q, "a", send_timestamp_millis=5),
            message(q, "z", send_timestamp_millis=4, sequence_number=9),
            message(q, "0", send_timestamp_millis=5, sequence_number=1),
            message(q, "dup", body=b"gen2", g=2, send_timestamp_millis=6),
            message(q, "dup", body=b"gen1", g=1, send_timestamp_millis=6),
        ]
    )
    got = [json.loads(line) for line in run.text("sqs/q/messages.jsonl").splitlines()]
    assert [(m["message_id"], m["body"]) for m in got] == [
        ("z", "x"),
        ("a", "x"),
        ("b", "x"),
        ("0", "x"),
        ("dup", "gen1"),  # the generation-1 key sorts first
        ("dup", "gen2"),
    ]


async def test_bodies(tmp_path: Path) -> None:
    """UTF-8 bodies are strings (HTML-escaped as json.Marshal does); others use base64url."""
    q = b"q"
    run = Run(tmp_path)
    bodies = [b"\xff\xfe\x00binary", "<a&b> \u2028 ✓".encode(), b'quote " back \\']
    await run(
        [meta(q, name="q")]
        + [message(q, f"m{i}", body=b, send_timestamp_millis=i) for i, b in enumerate(bodies)]
    )
    got = [
        line.split(',"send_timestamp_millis"')[0]
        for line in run.text("sqs/q/messages.jsonl").splitlines()
    ]
    assert got == [
        '{"message_id":"m0","body":{"base64":"__4AYmluYXJ5"}',
        '{"message_id":"m1","body":"\\u003ca\\u0026b\\u003e \\u2028 ✓"',
        '{"message_id":"m2","body":"quote \\" back \\\\"',
    ]


async def test_message_attributes_keep_their_source_text(tmp_path: Path) -> None:
    """Attributes are raw JSON: compacted, escapes kept as written, keys sorted, no HTML pass."""
    source = (
        b'{"message_id":"m","body":"","queue_generation":1,"md5_of_message_attributes":"x",'
        b'"message_attributes":{"z<": {"DataType" : "String",'
        b' "StringValue":"a\\u003cb <c> \\u00e9"},'
        b' "a":{"DataType":"Number","StringValue":"1.50"}},"send_timestamp_millis":3}'
    )
    run = Run(tmp_path)
    await run([meta(b"q", name="q"), raw_message(b"q", b"m", source)])
    assert run.text("sqs/q/messages.jsonl") == (
        '{"message_id":"m","body":"","md5_of_message_attributes":"x","message_attributes":'
        '{"a":{"DataType":"Number","StringValue":"1.50"},'
        '"z<":{"DataType":"String","StringValue":"a\\u003cb <c> \\u00e9"}},'
        '"send_timestamp_millis":3,"available_at_millis":0,"visible_at_millis":0,'
        '"receive_count":0,"queue_generation":1}\n'
    )


IN_FLIGHT: dict[str, Any] = {
    "send_timestamp_millis": 1,
    "available_at_millis": 1,
    "visible_at_millis": 99,
    "receive_count": 3,
    "first_receive_millis": 50,
    "current_receipt_token": base64.b64encode(b"\x01\x02\x03\x04").decode(),
}


@pytest.mark.parametrize("preserve", [False, True])
async def test_visibility_state(tmp_path: Path, preserve: bool) -> None:
    """Visibility fields are zeroed unless --preserve-sqs-visibility."""
    run = Run(tmp_path, preserve_visibility=preserve)
    await run([meta(b"w", name="w"), message(b"w", "m", **IN_FLIGHT)])
    tail = (
        '"visible_at_millis":99,"receive_count":3,"first_receive_millis":50,'
        '"current_receipt_token":"AQIDBA==",'
        if preserve
        else '"visible_at_millis":0,"receive_count":0,'
    )
    assert run.text("sqs/w/messages.jsonl") == (
        '{"message_id":"m","body":"x","send_timestamp_millis":1,"available_at_millis":1,'
        + tail
        + '"queue_generation":1}\n'
    )


async def test_stale_generations_dropped(tmp_path: Path) -> None:
    """Messages of another generation than the gen record are dropped with a warning."""
    run = Run(tmp_path)
    await run(
        [
            meta(b"q", name="q"),
            gen(b"q", b" 7\n"),
            message(b"q", "old1", g=6),
            message(b"q", "live", g=7),
            message(b"q", "old2", g=1),
        ]
    )
    lines = run.text("sqs/q/messages.jsonl").splitlines()
    assert [json.loads(line)["message_id"] for line in lines] == ["live"]
    assert run.warnings("sqs_stale_generation_messages_dropped") == [
        {"queue": "q", "active_gen": 7, "dropped": 2, "hint": STALE_HINT}
    ]


async def test_every_message_stale_writes_no_messages_file(tmp_path: Path) -> None:
    """A queue whose messages are all stale keeps its _queue.json only."""
    run = Run(tmp_path)
    await run([meta(b"q", name="q"), gen(b"q", b"2"), message(b"q", "old", g=1)])
    assert run.files() == ["sqs/q/_queue.json"]


async def test_no_gen_record_means_no_filter(tmp_path: Path) -> None:
    """Without a gen record every generation is kept."""
    run = Run(tmp_path)
    await run([meta(b"q", name="q"), message(b"q", "a", g=3), message(b"q", "b", g=4)])
    assert len(run.text("sqs/q/messages.jsonl").splitlines()) == 2
    assert run.report.warnings == {}


async def test_orphan_messages_dropped(tmp_path: Path) -> None:
    """Messages whose queue has no meta are dropped with the reference's warning."""
    run = Run(tmp_path)
    await run([meta(b"present", name="present"), message(b"gone", "a"), message(b"gone", "b")])
    assert run.files() == ["sqs/present/_queue.json"]
    assert run.warnings("sqs_orphan_messages") == [
        {
            "encoded_queue": "Z29uZQ",
            "buffered_messages": 2,
            "buffered_side_records": 0,
            "hint": ORPHAN_HINT,
        }
    ]
    assert run.scope == {"queues": ["present"]}


async def test_generation_counter_alone_is_not_an_orphan(tmp_path: Path) -> None:
    """A deleted queue leaves its gen counter behind on purpose: nothing to report."""
    run = Run(tmp_path)
    await run([gen(b"deleted", b"4")])
    assert run.files() == []
    assert run.report.warnings == {}


def side_rows(queue: bytes) -> list[tuple[bytes, bytes]]:
    enc = b64(queue)
    trailer = u64(1) + u64(1700000000000) + b64(b"m")
    return [
        (b"!sqs|msg|vis|" + enc + trailer, b"m"),
        (b"!sqs|msg|byage|" + enc + trailer, b"m"),
        (b"!sqs|msg|dedup|" + enc + u64(1) + b64(b"d"), b'{"message_id":"m"}'),
        (b"!sqs|msg|group|" + enc + u64(1) + b64(b"g"), b"{}"),
        (b"!sqs|queue|seq|" + enc, b"5"),  # the live shape: no trailer
        (b"!sqs|queue|tombstone|" + enc + u64(1), b"\x01"),
    ]


def side_line(prefix: str, key: bytes, value: bytes) -> str:
    value_b64 = base64.urlsafe_b64encode(value).rstrip(b"=").decode()
    return f'{{"prefix":"{prefix}","key_hex":"{key.hex()}","value_b64":"{value_b64}"}}\n'


async def test_side_records_with_flag(tmp_path: Path) -> None:
    """Every side family (seq key included) goes to _internals, in key order, even with no
    messages."""
    run = Run(tmp_path, include_side_records=True)
    rows = side_rows(b"q.fifo")
    await run([meta(b"q.fifo", name="q.fifo", is_fifo=True), *rows])
    assert run.files() == ["sqs/q.fifo/_internals/side_records.jsonl", "sqs/q.fifo/_queue.json"]
    prefixes = {
        b"!sqs|msg|vis|": "!sqs|msg|vis|",
        b"!sqs|msg|byage|": "!sqs|msg|byage|",
        b"!sqs|msg|dedup|": "!sqs|msg|dedup|",
        b"!sqs|msg|group|": "!sqs|msg|group|",
        b"!sqs|queue|seq|": "!sqs|queue|seq|",
        b"!sqs|queue|tombstone|": "!sqs|queue|tombstone|",
    }
    expected = ""
    for key, value in sorted(rows):
        prefix = next(v for k, v in prefixes.items() if key.startswith(k))
        expected += side_line(prefix, key, value)
    assert run.text("sqs/q.fifo/_internals/side_records.jsonl") == expected


async def test_side_records_ignored_without_flag(tmp_path: Path) -> None:
    """Without the flag side records are not exported, and not even parsed."""
    run = Run(tmp_path)
    await run([meta(b"q", name="q"), *side_rows(b"q"), (b"!sqs|msg|vis|" + b"\x00", b"")])
    assert run.files() == ["sqs/q/_queue.json"]


async def test_orphan_side_records_with_flag(tmp_path: Path) -> None:
    """Side records of a queue without meta go to sqs/<b64>.orphan/_internals/."""
    run = Run(tmp_path, include_side_records=True)
    rows = side_rows(b"deleted")[4:]
    await run([*rows, message(b"deleted", "m")])
    assert run.files() == ["sqs/ZGVsZXRlZA.orphan/_internals/side_records.jsonl"]
    assert run.text("sqs/ZGVsZXRlZA.orphan/_internals/side_records.jsonl") == (
        side_line("!sqs|queue|seq|", *rows[0]) + side_line("!sqs|queue|tombstone|", *rows[1])
    )
    assert run.warnings("sqs_orphan_messages")[0]["buffered_side_records"] == 2
    assert run.warnings("sqs_orphan_messages")[0]["buffered_messages"] == 1


async def test_external_sort_path(tmp_path: Path) -> None:
    """With a tiny budget every batch is spilled to run files and merged back in order."""
    rng = random.Random(7)
    msgs = []
    for i in range(60):
        send, seq = rng.randrange(5), rng.randrange(3)
        msgs.append((send, seq, f"id{rng.randrange(20):02d}-{i}"))
    records = [meta(b"q", name="q"), *side_rows(b"q")]
    records += [message(b"q", m, send_timestamp_millis=s, sequence_number=n) for s, n, m in msgs]

    small = Run(tmp_path / "small", include_side_records=True)
    await small(records, budget=1, batch=4, chunk=4)
    runs = sorted(p.name for p in small.scratch.glob("sqs-run-*"))
    assert len(runs) > 10

    order = [m for _, _, m in sorted(msgs)]  # ids are unique, so no stability question
    got = [json.loads(x)["message_id"] for x in small.text("sqs/q/messages.jsonl").splitlines()]
    assert got == order

    big = Run(tmp_path / "big", include_side_records=True)
    await big(records)
    assert not list(big.scratch.glob("sqs-run-*"))
    for rel in big.files():
        assert small.text(rel) == big.text(rel)


async def test_invalid_utf8_in_a_value_becomes_replacement_characters(tmp_path: Path) -> None:
    """Go's decoder turns each invalid byte inside a JSON string into U+FFFD."""
    source = b'{"message_id":"m","body":"","message_group_id":"g\xff\xfeh","queue_generation":1}'
    run = Run(tmp_path)
    await run([meta(b"q", name="q"), raw_message(b"q", b"m", source)])
    assert '"message_group_id":"g\ufffd\ufffdh"' in run.text("sqs/q/messages.jsonl")


async def test_meta_without_name_uses_the_key(tmp_path: Path) -> None:
    """An empty live name falls back to the name in the key."""
    run = Run(tmp_path)
    await run([meta(b"k-name", visibility_timeout_seconds=1)])
    assert json.loads(run.text("sqs/k-name/_queue.json"))["name"] == "k-name"


@pytest.mark.parametrize(
    ("record", "code", "match"),
    [
        ((b"!sqs|msg|data|cQ" + u64(1) + b"bQ", b"{}"), "ErrSQSInvalidMessage", "magic"),
        (message(b"q", "m", send_timestamp_millis="5"), "ErrSQSInvalidMessage", "integer"),
        (message(b"q", "m", send_timestamp_millis=1.5), "ErrSQSInvalidMessage", "integer"),
        (message(b"q", "m", queue_generation=-1), "ErrSQSInvalidMessage", "out of range"),
        (message(b"q", "m", current_receipt_token="@@"), "ErrSQSInvalidMessage", "base64"),
        (message(b"q", "m", message_attributes=[1]), "ErrSQSInvalidMessage", "object"),
        (raw_message(b"q", b"m", b'{"message_id":'), "ErrSQSInvalidMessage", "key"),
        ((b"!sqs|queue|meta|cQ", b"\x00SQ\x01{"), "ErrSQSInvalidQueueMeta", "queue meta"),
        (meta(b"q", is_fifo="yes"), "ErrSQSInvalidQueueMeta", "boolean"),
        (meta(b"q", partition_count=-1), "ErrSQSInvalidQueueMeta", "out of range"),
        (gen(b"q", b"seven"), "ErrSQSInvalidQueueGen", "uint64"),
        (gen(b"q", b"18446744073709551616"), "ErrSQSInvalidQueueGen", "uint64"),
        (meta(b".", name="."), "ErrSQSMalformedKey", "directory"),
        ((b"!sqs|msg|data|" + u64(1) + b"bQ", b""), "ErrSQSMalformedKey", "empty queue"),
    ],
)
async def test_malformed_records_are_typed_errors(
    tmp_path: Path, record: tuple[bytes, bytes], code: str, match: str
) -> None:
    """Bad keys and values raise the adapter's typed errors, naming the key."""
    run = Run(tmp_path)
    with raises_code(AdapterRecordError, code, match=match) as info:
        await run([record])  # messages are rendered in batches: some fail only at finalize
    assert "key" in str(info.value)


async def test_no_blocking_calls_on_the_event_loop(tmp_path: Path) -> None:
    """Spilling, merging and writing all happen in worker threads."""
    records = [meta(b"q", name="q"), *side_rows(b"q")]
    records += [message(b"q", f"m{i}", send_timestamp_millis=-i) for i in range(20)]
    run = Run(tmp_path, include_side_records=True)
    await run(records, budget=1)
    got = [json.loads(x)["message_id"] for x in run.text("sqs/q/messages.jsonl").splitlines()]
    assert got == [f"m{i}" for i in range(19, -1, -1)]


async def test_many_queues_flushed_by_a_bounded_pool(tmp_path: Path) -> None:
    """Every queue is written once, whatever the number of flush workers."""
    names = [f"q{i:02d}".encode() for i in range(25)]
    records = [meta(n, name=n.decode()) for n in names] + [message(n, "m") for n in names]
    run = Run(tmp_path, jobs=3)
    await run(records)
    assert run.scope == {"queues": [n.decode() for n in names]}
    assert len(run.files()) == 50


async def test_a_bad_message_wins_over_a_bad_record_after_it(tmp_path: Path) -> None:
    """Errors surface in snapshot order: a message (``!sqs|msg|``) sorts before queue meta,
    so its error is raised even though the meta record fails while it is being rendered."""
    run = Run(tmp_path)
    records = [message(b"q", f"m{i}") for i in range(5)]
    records += [message(b"q", "zz", send_timestamp_millis="5"), (b"!sqs|queue|meta|cQ", b"{")]
    with raises_code(AdapterRecordError, "ErrSQSInvalidMessage", match="integer"):
        await run(records, chunk=2)


class _LaterChunkFirst(Workers):
    """Renders in this thread, but the chunk of arrival 0 only after every later chunk."""

    def __init__(self) -> None:
        super().__init__(0)
        self.later_done = anyio.Event()

    async def run(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
        first: object = [*args][-1]
        if first == 0:
            await self.later_done.wait()
        try:
            return func(*args)
        finally:
            if first != 0:
                self.later_done.set()


async def test_the_first_bad_message_in_snapshot_order_wins(tmp_path: Path) -> None:
    """Chunks render at once and finish in any order; the error raised is the first one in
    snapshot order, not the first one to happen."""
    run = Run(tmp_path)
    run.ctx.workers = _LaterChunkFirst()
    records = [
        message(b"q", "m0", send_timestamp_millis="early"),
        message(b"q", "m1"),
        message(b"q", "m2", send_timestamp_millis="late"),
        message(b"q", "m3"),
    ]
    with raises_code(AdapterRecordError, "ErrSQSInvalidMessage", match=b64(b"m0").decode()):
        await run.decode(records, batch=10, chunk=2)
    assert run.ctx.workers.later_done.is_set()


class _StalledProcess(Workers):
    """One "worker process" (rendering in this thread) that takes no chunk until ``go`` is
    set: the decoder must not wait for it. Records the arrival number and size of each call."""

    def __init__(self) -> None:
        super().__init__(1)
        self.go = anyio.Event()
        self.calls: list[tuple[int, int]] = []

    async def run(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
        packed, _, first = [*args]
        # A chunk crosses to a worker process packed.
        assert isinstance(packed, bytes) and isinstance(first, int)
        records = msgspec.msgpack.decode(packed)
        self.calls.append((first, len(records)))
        if records:
            await self.go.wait()
        return func(*args)


async def test_chunks_the_worker_processes_cannot_take_are_rendered_here(tmp_path: Path) -> None:
    """The worker processes are started (an empty call) before the first chunk is due; while
    they are busy and the queue is full, chunks are rendered in the run's own process: the
    reading goes on, and every message is written once, in order."""
    records = [meta(b"q")] + [message(b"q", f"m{i:02d}") for i in range(40)]
    expected = Run(tmp_path / "expected")
    expected.path = "consume"
    await expected(records, chunk=2)

    run = Run(tmp_path / "stalled")
    workers = run.ctx.workers = _StalledProcess()
    decoder = SQSDecoder(run.ctx, render_chunk=2)

    async def batches() -> AsyncIterator[list[Routed]]:
        for part in Run._batches(records, 3):
            yield part
        workers.go.set()  # every chunk is cut: the stalled process may go on

    run.scope = await decoder.consume(batches())
    assert run.scope == expected.scope
    assert run.files() == expected.files()
    assert all(run.text(rel) == expected.text(rel) for rel in run.files())
    assert workers.calls[0] == (0, 0)
    in_process = 20 - len(workers.calls[1:])
    assert in_process > 0
    assert all(size == 2 for _, size in workers.calls[1:])


async def test_chunks_rendered_here_run_on_the_event_loop_in_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What this process renders (the chunks a stalled worker process cannot take, and its
    share of the queue once the input is read) runs on the event loop's thread, never in a
    worker thread, a slice of at most 256 messages at a time."""
    records = [meta(b"q")] + [message(b"q", f"m{i:04d}") for i in range(6000)]
    expected = Run(tmp_path / "expected")
    expected.path = "consume"
    await expected(records, chunk=300)

    here: list[tuple[int, int]] = []
    loop_thread = threading.get_ident()

    run_here = sqs_decode._run_here

    async def recorded(
        func: Callable[[list[tuple[bytes, bytes]], RenderSettings, int], list[Rendered]],
        records: list[tuple[bytes, bytes]],
        settings: RenderSettings,
        first: int,
    ) -> list[Rendered]:
        here.append((threading.get_ident(), len(records)))
        return await run_here(func, records, settings, first)

    run = Run(tmp_path / "stalled")
    workers = run.ctx.workers = _StalledProcess()
    monkeypatch.setattr(sqs_decode, "_run_here", recorded)
    decoder = SQSDecoder(run.ctx, render_chunk=300)

    async def batches() -> AsyncIterator[list[Routed]]:
        for part in Run._batches(records, 50):
            yield part
        workers.go.set()

    run.scope = await decoder.consume(batches())
    assert all(run.text(rel) == expected.text(rel) for rel in run.files())
    assert run.files() == expected.files()
    by_worker = sum(size for _, size in workers.calls)
    # Every message is rendered once: by the stalled process or here.
    assert by_worker + sum(size for _, size in here) == 6000
    # Twenty chunks: two taken by the stalled process (two calls in flight), eight queued,
    # ten rendered here at least.
    assert sum(size for _, size in here) >= 3000
    assert all(thread == loop_thread and 0 < size <= 256 for thread, size in here)


async def test_a_chunk_rendered_here_goes_back_to_the_lanes_once_they_have_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk this process started on because the queue was full goes back to the lanes,
    but for the slices already done, as soon as the worker process catches up."""
    records = [meta(b"q")] + [message(b"q", f"m{i:04d}") for i in range(6000)]
    expected = Run(tmp_path / "expected")
    expected.path = "consume"
    await expected(records, chunk=300)

    here: list[tuple[int, int]] = []
    run = Run(tmp_path / "stalled")
    workers = run.ctx.workers = _StalledProcess()
    run_here = sqs_decode._run_here

    async def recorded(
        func: Callable[[list[tuple[bytes, bytes]], RenderSettings, int], list[Rendered]],
        records: list[tuple[bytes, bytes]],
        settings: RenderSettings,
        first: int,
    ) -> list[Rendered]:
        here.append((first, len(records)))
        if len(here) == 1:
            workers.go.set()  # the worker process catches up...
            await anyio.wait_all_tasks_blocked()  # ...and its lanes empty the queue
        return await run_here(func, records, settings, first)

    monkeypatch.setattr(sqs_decode, "_run_here", recorded)
    decoder = SQSDecoder(run.ctx, render_chunk=300)

    async def batches() -> AsyncIterator[list[Routed]]:
        for part in Run._batches(records, 50):
            yield part

    run.scope = await decoder.consume(batches())
    assert run.files() == expected.files()
    assert all(run.text(rel) == expected.text(rel) for rel in run.files())
    # The first chunk started here (the queue full, the lanes stalled): its first slice is
    # rendered here, the rest handed back once the lanes have emptied the queue.
    first, size = here[0]
    assert size == 256 and first % 300 == 0
    assert (first + 256, 44) in workers.calls
    assert (first + 256, 44) not in here
    assert sum(size for _, size in workers.calls) + sum(size for _, size in here) == 6000
