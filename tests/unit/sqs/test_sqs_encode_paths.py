"""SQS encoder internals: the quick path of plain messages and the bounded dedup claims.

The quick path must give the general path's bytes (which the golden corpus pins) for every
plain message, and stay out of the way of every other one; the dedup claims must choose the
winners a straightforward in-memory scan chooses, also when they spill to disk.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson
import pytest
from support import produced
from test_sqs_encode import HT, encode, fifo, queue_dir

from elastickv_async._adapters.base import EncodeContext
from elastickv_async._adapters.sqs import encode as sqs_encode
from elastickv_async._adapters.sqs.dedup import DedupClaims
from elastickv_async._adapters.sqs.encode import SQSEncoder
from elastickv_async._adapters.sqs.keys import RESTORE_GENERATION
from elastickv_async._adapters.sqs.lines import (
    QueueSettings,
    encode_lines,
    message_records,
    started,
)
from elastickv_async._adapters.sqs.plain import PlainQueue
from elastickv_async._adapters.sqs.values import QueueConfig, parse_dump_message, shifted
from elastickv_async._core.errors import DumpTreeError
from elastickv_async._core.extsort import ExternalSorter
from elastickv_async._core.gojson_read import loads
from elastickv_async._core.report import Report, make_logger
from elastickv_async._core.workers import Workers

BASE: dict[str, Any] = {
    "message_id": "m-1",
    "body": "hello",
    "md5_of_body": "5d41402abc4b2a76b9719d911017c592",
    "send_timestamp_millis": 1_700_000_000_000,
    "available_at_millis": 1_700_000_000_500,
    "visible_at_millis": 1_700_000_030_000,
    "receive_count": 2,
    "queue_generation": 3,
}

PLAIN_VARIANTS: list[dict[str, Any]] = [
    {},
    {"body": ""},
    {"body": "a<b>&c"},
    {"body": "caf\u00e9 \u2028 line \u2029 end"},
    {"body": "\U0001f600"},
    {"message_id": "<id&>"},
    {"md5_of_message_attributes": "abc", "sender_id": "AIDA<x>"},
    {"first_receive_millis": 1_700_000_000_100},
    {"receive_count": 0, "visible_at_millis": 0},
    {"available_at_millis": 0, "send_timestamp_millis": -5},
    {"message_group_id": "g", "message_deduplication_id": "d", "sequence_number": 42},
    {"dead_letter_source_arn": "arn:aws:sqs:us-east-1:1:dlq"},
    {"current_receipt_token": None},
    {"send_timestamp_millis": (1 << 63) - 1, "sequence_number": (1 << 64) - 1},
    {"md5_of_body": "", "sender_id": "", "message_group_id": ""},
]


def general(cfg: QueueConfig, line: bytes, *, keep: bool, shift: int) -> list[tuple[bytes, bytes]]:
    msg = shifted(parse_dump_message(loads(line), line), shift)
    return message_records(QueueSettings(cfg, "q", keep, shift), msg)


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("shift", [0, 86_400_000])
@pytest.mark.parametrize("fifo_queue", [False, True])
@pytest.mark.parametrize("variant", range(len(PLAIN_VARIANTS)))
def test_quick_path_gives_the_general_paths_records(
    variant: int, fifo_queue: bool, shift: int, keep: bool
) -> None:
    """Byte for byte the records of parse + shift + ``_message_records``."""
    obj = BASE | PLAIN_VARIANTS[variant]
    if fifo_queue and keep:
        obj["receive_count"] = 0  # a received one may hold its group's lock: not plain
    line = orjson.dumps(obj) + b"\n"
    cfg = QueueConfig(name="q<1>", fifo=fifo_queue)
    quick = PlainQueue(
        cfg.name.encode(), RESTORE_GENERATION, fifo=fifo_queue, keep_visibility=keep, shift_ms=shift
    ).message(loads(line))
    assert quick is not None
    assert quick.records == general(cfg, line, keep=keep, shift=shift)
    assert (quick.message_id, quick.body, quick.sequence) == (
        obj["message_id"],
        obj["body"].encode(),
        obj.get("sequence_number", 0),
    )


@pytest.mark.parametrize(
    "change",
    [
        {"message_attributes": {}},
        {"partition": 0},
        {"body": None},
        {"body": {"base64": "aGk"}},
        {"current_receipt_token": "AQID"},
        {"receive_count": True},
        {"sequence_number": -1},
        {"queue_generation": 1 << 64},
        {"send_timestamp_millis": 1 << 63},
        {"send_timestamp_millis": 1.5},
        {"message_id": ""},
        {"message_id": 7},
        {"sender_id": None},
        {"some_future_field": 1},
    ],
)
def test_quick_path_leaves_other_messages_to_the_general_path(change: dict[str, Any]) -> None:
    queue = PlainQueue(b"q", 1, fifo=False, keep_visibility=False, shift_ms=0)
    obj = BASE | change
    assert queue.message(obj) is None
    assert queue.message(BASE) is not None


def test_quick_path_leaves_received_full_fidelity_fifo_messages_alone() -> None:
    """They may hold their group's lock, which only the general path restores."""
    received = BASE | {"message_group_id": "g"}
    assert (
        PlainQueue(b"q", 1, fifo=True, keep_visibility=True, shift_ms=0).message(received) is None
    )
    assert PlainQueue(b"q", 1, fifo=True, keep_visibility=False, shift_ms=0).message(received)
    assert PlainQueue(b"q", 1, fifo=False, keep_visibility=True, shift_ms=0).message(received)
    fresh = received | {"receive_count": 0}
    assert PlainQueue(b"q", 1, fifo=True, keep_visibility=True, shift_ms=0).message(fresh)


def winners_by_scan(
    claims: list[tuple[bytes, int, int, bytes]], *, partitioned: bool
) -> dict[bytes, tuple[int, int, bytes]]:
    """The reference's choice, one claim at a time: the latest send, ties to the lowest
    (sequence, id) when partitioned, else to the first claim."""
    best: dict[bytes, tuple[int, int, bytes]] = {}
    for key, send, seq, mid in claims:
        held = best.get(key)
        if (
            held is None
            or send > held[0]
            or (send == held[0] and partitioned and (seq, mid) < (held[1], held[2]))
        ):
            best[key] = (send, seq, mid)
    return best


@pytest.mark.parametrize("partitioned", [False, True])
@pytest.mark.parametrize("budget", [1, 4096, 64 << 20])
def test_dedup_claims_choose_the_scans_winners(
    tmp_path: Path, partitioned: bool, budget: int
) -> None:
    """Also when every claim spills on its own (budget 1) or a few runs are merged."""
    rng = random.Random(7)
    claims = [
        (
            b"!sqs|msg|dedup|k" + bytes([rng.randrange(3)]) * rng.randrange(1, 3),
            rng.choice([-(1 << 63), -1, 0, 5, 6, (1 << 63) - 1 - 300_000]),
            rng.randrange(4),
            rng.choice([b"a", b"a\x00", b"a\x00b", b"b", b""]),
        )
        for _ in range(400)
    ]
    held = DedupClaims(tmp_path / "spill", partitioned=partitioned, budget=budget)
    try:
        for claim in claims:
            held.claim(*claim)
        rows = list(held.rows())
    finally:
        held.close()
    if budget < 64 << 20:
        assert (tmp_path / "spill").is_dir()
    assert list((tmp_path / "spill").glob("*")) == []  # close() removed the runs
    want = winners_by_scan(claims, partitioned=partitioned)
    assert [key for key, _ in rows] == sorted(want, key=lambda k: k.replace(b"\x00", b"\x00\xff"))
    for key, value in rows:
        send, seq, mid = want[key]
        doc = json.loads(value)
        assert doc["message_id"] == mid.decode()
        assert doc["send_timestamp_ms"] == send
        assert doc.get("original_sequence", 0) == seq
        # Go's int64 addition wraps.
        assert doc["expires_at_millis"] == (send + 300_000 + (1 << 63)) % (1 << 64) - (1 << 63)


@pytest.mark.anyio
async def test_dedup_winners_hold_when_the_claims_spill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue's claims spill past the encoder's memory share (half of ``ctx.memory``); one
    row per dedup id, from its latest send."""
    spilled: list[int] = []
    spill = ExternalSorter.spill

    def counted(self: ExternalSorter) -> None:
        spilled.append(self._budget)
        spill(self)

    monkeypatch.setattr(ExternalSorter, "spill", counted)
    lines = [
        {"message_id": f"m{i}", "message_deduplication_id": f"d{i % 7}", "sequence_number": i + 1}
        | {"send_timestamp_millis": i % 5, "message_group_id": "g"}
        for i in range(60)
    ]
    queue_dir(tmp_path / "in", "f.fifo", fifo(), lines)
    whole = await encode(tmp_path / "in")
    assert spilled == []
    got = await encode(tmp_path / "in", memory=1024)
    assert got == whole
    assert len(spilled) > 3 and set(spilled) == {512}
    owners = {
        json.loads(v)["message_id"] for k, v in got.items() if k.startswith(b"!sqs|msg|dedup|")
    }
    want = set()
    for d in range(7):
        mine = [i for i in range(60) if i % 7 == d]
        latest = max(i % 5 for i in mine)
        want.add(f"m{min(i for i in mine if i % 5 == latest)}")
    assert owners == want
    assert got[b"!sqs|queue|seq|Zi5maWZv"] == b"60"


@pytest.mark.anyio
async def test_duplicate_message_ids_still_reach_the_core(tmp_path: Path) -> None:
    """Two lines of one id claim one dedup row (the later send keeps it) and both yield their
    data row: the snapshot writer refuses the pair (``ErrEncodeDuplicateKey``) as before."""
    lines = [
        {"message_id": "same", "message_deduplication_id": "D", "send_timestamp_millis": 1},
        {"message_id": "same", "message_deduplication_id": "D", "send_timestamp_millis": 2},
    ]
    queue_dir(tmp_path, "f.fifo", fifo(), lines)
    report = Report()
    ctx = EncodeContext(
        input_root=tmp_path, log=make_logger(report), report=report, scratch=tmp_path
    )
    records = await produced(SQSEncoder(ctx))
    data = [k for k, _ in records if k.startswith(b"!sqs|msg|data|")]
    assert len(data) == 2 and data[0] == data[1]
    dedup = [json.loads(v) for k, v in records if k.startswith(b"!sqs|msg|dedup|")]
    assert [(d["message_id"], d["send_timestamp_ms"]) for d in dedup] == [("same", 2)]


@pytest.mark.anyio
async def test_gates_still_apply_to_quick_path_neighbours(tmp_path: Path) -> None:
    """A classic queue's message with a partition is refused even among plain lines."""
    lines: list[Any] = [BASE | {"message_id": f"p{i}"} for i in range(3)]
    lines.append(BASE | {"message_id": "bad", "partition": 2})
    queue_dir(tmp_path, "c", {}, lines)
    with pytest.raises(DumpTreeError, match="partition 2 on a classic queue"):
        await encode(tmp_path)


async def encode_with(
    root: Path, processes: int, *, full_fidelity: bool = False, warm: bool = False
) -> list[Any]:
    """The records of ``root``'s SQS tree with ``processes`` worker processes (``warm``: the
    processes started before the encoder is)."""
    report = Report()
    async with Workers(processes) as workers:
        if warm:
            await workers.run(started)
        ctx = EncodeContext(
            input_root=root,
            log=make_logger(report),
            report=report,
            scratch=root,
            full_fidelity=full_fidelity,
            workers=workers,
        )
        return await produced(SQSEncoder(ctx))


def mixed_tree(root: Path) -> None:
    """Queues of every kind, each longer than a few runs of lines."""
    received = {"receive_count": 1, "first_receive_millis": 9, "visible_at_millis": 50}
    queue_dir(root, "plain", {}, [BASE | {"message_id": f"p{i}"} for i in range(20)])
    queue_dir(
        root,
        "f.fifo",
        fifo(content_based_deduplication=True),
        [
            BASE
            | {"message_id": f"f{i}", "body": f"b{i % 4}", "sequence_number": i + 1}
            | {"message_group_id": f"g{i % 3}"}
            | (received if i % 2 else {"receive_count": 0})
            for i in range(20)
        ],
    )
    queue_dir(
        root,
        "p.fifo",
        fifo(**HT),
        [
            {"message_id": f"h{i}", "message_group_id": "group-0", "partition": 1}
            | {"message_deduplication_id": f"d{i % 5}", "send_timestamp_millis": i % 4}
            | {"sequence_number": 20 - i}
            for i in range(20)
        ],
    )
    # Not one object per line from the 7th line on: the rest is read as a stream.
    text = "".join(json.dumps(BASE | {"message_id": f"s{i}"}) + "\n" for i in range(6))
    text += json.dumps(BASE | {"message_id": "s6"}, indent=1) + " "
    text += "".join(json.dumps(BASE | {"message_id": f"s{i}"}) for i in range(7, 15))
    stream = queue_dir(root, "stream", {}, None)
    (stream / "messages.jsonl").write_text(text)


@pytest.mark.anyio
@pytest.mark.parametrize("full_fidelity", [False, True])
async def test_worker_processes_give_the_same_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full_fidelity: bool
) -> None:
    """Runs of a few lines, in a worker process and a worker thread side by side, give the
    records of one in-process pass (compared as sets: the core sorts them)."""
    await anyio.to_thread.run_sync(mixed_tree, tmp_path)
    single = await encode_with(tmp_path, 0, full_fidelity=full_fidelity)
    monkeypatch.setattr(sqs_encode, "_BATCH", 3)
    split = await encode_with(tmp_path, 1, full_fidelity=full_fidelity)
    assert sorted(split) == sorted(single)
    assert len(split) == len(set(split))
    names = {k for k, _ in single}
    assert sum(k.startswith(b"!sqs|msg|data|") for k in names) == 20 + 20 + 20 + 15
    assert sum(k.startswith(b"!sqs|msg|group|") for k in names) == (3 if full_fidelity else 0)


@pytest.mark.anyio
@pytest.mark.parametrize("processes", [0, 1])
async def test_the_first_failure_in_line_order_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    """A gate failure in a later run is raised after a missing id in an earlier one: the
    missing id is only reported once every line passed the gates."""
    lines: list[Any] = [BASE | {"message_id": f"m{i}"} for i in range(10)]
    lines[2] = BASE | {"message_id": ""}
    lines[8] = BASE | {"message_id": "bad", "partition": 3}
    queue_dir(tmp_path, "c", {}, lines)
    monkeypatch.setattr(sqs_encode, "_BATCH", 2)
    with pytest.raises(DumpTreeError, match="partition 3 on a classic queue") as caught:
        await encode_with(tmp_path, processes)
    assert caught.value.code == "ErrSQSEncodeInvalidMessage"
    del lines[8]
    queue_dir(tmp_path / "b", "c", {}, lines)
    with pytest.raises(DumpTreeError, match="message without message_id"):
        await encode_with(tmp_path / "b", processes)


@pytest.mark.anyio
async def test_a_worker_process_is_handed_its_next_run_while_it_encodes_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs go to a started worker process ahead of the outcomes before them: the first
    call it gets is held back until a second one comes (it would never come if each run
    waited for the one before), and the outcomes are still sent in line order."""
    lines = [BASE | {"message_id": f"m{i:03}", "send_timestamp_millis": i} for i in range(40)]
    queue_dir(tmp_path, "q", {}, lines)
    monkeypatch.setattr(sqs_encode, "_BATCH", 2)
    second = anyio.Event()
    calls = 0
    run = Workers.run

    async def held_back(self: Workers, func: Any, *args: Any) -> Any:
        nonlocal calls
        if func is encode_lines:
            calls += 1
            if calls == 1:
                with anyio.fail_after(10):
                    await second.wait()
            elif calls == 2:
                second.set()
        return await run(self, func, *args)

    monkeypatch.setattr(Workers, "run", held_back)
    records = await encode_with(tmp_path, 1, warm=True)
    assert calls >= 2
    byage = [k for k, _ in records if k.startswith(b"!sqs|msg|byage|")]
    assert byage == sorted(byage) and len(byage) == 40  # sent in line order


@pytest.mark.anyio
async def test_runs_of_lines_fit_the_encoders_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runs out at once hold half the encoder's share with their records: long lines
    come in shorter runs (each still at least one line), and every line once, in order."""
    body = "x" * 3000
    lines = [BASE | {"message_id": f"m{i:03}", "body": body} for i in range(300)]
    queue_dir(tmp_path, "q", {}, lines)
    taken: list[list[bytes]] = []
    encode_run = encode_lines

    def spying(settings: QueueSettings, run: list[bytes]) -> Any:
        taken.append(run)
        return encode_run(settings, run)

    monkeypatch.setattr(sqs_encode, "encode_lines", spying)
    memory = 200 << 10
    records = await encode(tmp_path, memory=memory)
    limit = memory // 2 // sqs_encode._RUN_GROWTH  # one run out at once without processes
    line = len(orjson.dumps(lines[0])) + 1
    assert all(sum(map(len, run)) < limit + line for run in taken)
    assert len(taken) > 1 and all(taken)
    assert [orjson.loads(x)["message_id"] for run in taken for x in run] == [
        f"m{i:03}" for i in range(300)
    ]
    assert sum(k.startswith(b"!sqs|msg|data|") for k in records) == 300
