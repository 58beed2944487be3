"""Measure the SQS decoder on one large queue: messages/s and peak RSS.

The synthetic ``.fsm`` holds one standard queue with ``--messages`` messages. Message ids are
pseudo-random and send times random within a day, so key order differs from send order and
the decoder's ordering (a bounded-memory external merge) does real work. Keys come from the
product's key builders (``adapters/sqs/keys.py``).

``--mode pipeline`` (default) runs the whole decode (reader, MVCC resolution, routing, SQS
adapter) with ``--adapter sqs``; ``--mode adapter`` feeds the same records straight to the
SQS decoder (``benchlib.feed_adapter``), generated inside the measured child: its peak RSS then
includes the generator's sorted id order (about 100 MB at 1M messages).

Usage: ``python scripts/bench_sqs.py [--messages N] [--mode pipeline|adapter]
[--side-records] [--budget BYTES] [--json FILE] [--workdir DIR] [--backend asyncio|trio]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import benchlib
import orjson

from elastickv_async._adapters.base import DecodeContext
from elastickv_async._adapters.sqs.decode import SQSDecoder
from elastickv_async._adapters.sqs.keys import (
    MESSAGE_MAGIC,
    QUEUE_META_MAGIC,
    message_byage_key,
    message_data_key,
    message_vis_key,
    queue_gen_key,
    queue_meta_key,
)
from elastickv_async._core.options import DecodeOptions
from elastickv_async._core.pipeline import decode_snapshot

QUEUE: Final = b"bench-queue"
GENERATION: Final = 1
_SEND_BASE_MS: Final = 1_700_000_000_000
_DAY_MS: Final = 86_400_000


def _digest(seed: int, i: int) -> bytes:
    return hashlib.blake2b(b"%d:%d" % (seed, i), digest_size=16).digest()


def _message_id(seed: int, i: int) -> bytes:
    return _digest(seed, i).hex().encode()


def _send_ms(seed: int, i: int) -> int:
    return _SEND_BASE_MS + int.from_bytes(_digest(seed, i)[:4]) % _DAY_MS


def _message_value(seed: int, i: int) -> bytes:
    digest = _digest(seed, i)
    send = _send_ms(seed, i)
    record = {
        "message_id": digest.hex(),
        "body": base64.b64encode(b"payload %d " % send + digest.hex().encode() * 3).decode(),
        "md5_of_body": hashlib.md5(digest, usedforsecurity=False).hexdigest(),
        "send_timestamp_millis": send,
        "available_at_millis": send,
        "visible_at_millis": send,
        "receive_count": 0,
        "current_receipt_token": base64.b64encode(digest).decode(),
        "queue_generation": GENERATION,
    }
    return MESSAGE_MAGIC + orjson.dumps(record)


def records(messages: int, side_records: bool, seed: int) -> Iterator[benchlib.Record]:
    """Every record of the queue, in snapshot order (``!sqs|msg|byage|`` < ``data`` < ``vis``
    < ``!sqs|queue|``)."""

    def data_key(i: int) -> bytes:
        return message_data_key(QUEUE, None, GENERATION, _message_id(seed, i))

    def age_key(i: int) -> bytes:
        return message_byage_key(QUEUE, None, GENERATION, _send_ms(seed, i), _message_id(seed, i))

    by_age = sorted(range(messages), key=age_key) if side_records else []
    for i in by_age:
        yield age_key(i), _message_id(seed, i)
    for i in sorted(range(messages), key=data_key):
        yield data_key(i), _message_value(seed, i)
    for i in by_age:  # visible_at == send time: same order as byage
        msg_id = _message_id(seed, i)
        yield message_vis_key(QUEUE, None, GENERATION, _send_ms(seed, i), msg_id), msg_id
    yield queue_gen_key(QUEUE), str(GENERATION).encode()
    meta = {"name": QUEUE.decode(), "generation": GENERATION, "visibility_timeout_seconds": 30}
    yield queue_meta_key(QUEUE), QUEUE_META_MAGIC + orjson.dumps(meta)


def prepare(fsm: str, messages: int, side_records: bool, seed: int) -> dict[str, int]:
    """Write the synthetic snapshot; return its entry count and size."""
    return benchlib.write_fsm(Path(fsm), records(messages, side_records, seed))


def _options(side_records: bool) -> DecodeOptions:
    return DecodeOptions(
        adapters="sqs", adapter_options={"sqs": {"include_side_records": side_records}}
    )


async def decode(fsm: str, out: str, side_records: bool) -> dict[str, Any]:
    """The whole decode; return the report's counters and the size of ``messages.jsonl``."""
    report = await decode_snapshot(fsm, out, _options(side_records))
    return report.counters | {"messages_jsonl_bytes": _jsonl_size(out)}


async def feed(
    out: str, messages: int, side_records: bool, seed: int, budget: int | None
) -> dict[str, Any]:
    """Generate the records and feed them to the SQS decoder alone."""
    decoder = None
    if budget:

        def decoder(ctx: DecodeContext) -> SQSDecoder:
            return SQSDecoder(ctx, spill_budget=budget)

    report = await benchlib.feed_adapter(
        "sqs",
        Path(out),
        records(messages, side_records, seed),
        options=_options(side_records),
        decoder=decoder,
    )
    return report.counters | {"messages_jsonl_bytes": _jsonl_size(out)}


def _jsonl_size(out: str) -> int:
    return (Path(out) / "sqs" / QUEUE.decode() / "messages.jsonl").stat().st_size


def run(
    bench: benchlib.Bench,
    *,
    messages: int,
    mode: str = "pipeline",
    side_records: bool = False,
    budget: int | None = None,
    seed: int = 1,
) -> None:
    """Generate the queue, then measure one decode."""
    with bench.workspace("sqs") as work:
        # Adapter mode reads no file: the stream is only sized (written to /dev/null).
        fsm = str(work / "bench.fsm") if mode == "pipeline" else os.devnull
        shape = {"side_records": side_records, "seed": seed}
        made = bench.prepare(f"{messages:,} messages", prepare, fsm=fsm, messages=messages, **shape)
        out = str(work / "out")
        if mode == "pipeline":
            kwargs: dict[str, Any] = {"fsm": fsm, "out": out, "side_records": side_records}
        else:
            kwargs = {"out": out, "messages": messages, "budget": budget, **shape}
        label = "sqs" + (" +side records" if side_records else "")
        label += " (adapter)" if mode == "adapter" else ""
        target = decode if mode == "pipeline" else feed
        bench.measure(
            label,
            target,
            kwargs,
            items=messages,
            entries=made["entries"],
            input_bytes=made["bytes"],
        )


def main() -> None:
    """Parse the flags and run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--mode", choices=("pipeline", "adapter"), default="pipeline")
    parser.add_argument("--side-records", action="store_true")
    parser.add_argument("--budget", type=int, default=None, help="SQS spill budget (adapter mode)")
    parser.add_argument("--seed", type=int, default=1)
    benchlib.add_common_arguments(parser)
    args = parser.parse_args()
    bench = benchlib.bench_from_args(args)
    run(
        bench,
        messages=args.messages,
        mode=args.mode,
        side_records=args.side_records,
        budget=args.budget,
        seed=args.seed,
    )
    bench.finish()


if __name__ == "__main__":
    main()
