"""Measure the SQS decoder on one large queue: messages/s and peak RSS.

Writes a synthetic ``.fsm`` holding one standard queue with ``--messages`` messages (random
message ids, so key order differs from send order and the sort does real work), then decodes
it in a child process and reports the child's wall time and peak RSS (Linux ``VmHWM``).

``--mode pipeline`` (default) runs the whole decode (reader, MVCC resolution, routing, SQS
adapter) with ``--adapter sqs``; ``--mode adapter`` feeds the same entries straight to the
SQS decoder, generated on the fly, to isolate the adapter's own cost.

Usage: ``python scripts/bench_sqs.py [--messages N] [--mode pipeline|adapter]
[--side-records] [--budget BYTES]``.
"""

from __future__ import annotations

import argparse
import base64
import random
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import orjson

_MASK = (1 << 64) - 1
_QUEUE = b"bench-queue"
_COMMIT_TS = 1 << 40


def _b64url(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _entries(messages: int, side_records: bool, seed: int) -> Iterator[tuple[bytes, bytes]]:
    """(user key, stored value) pairs of the synthetic queue, in snapshot key order."""
    rng = random.Random(seed)
    queue = _b64url(_QUEUE)
    gen = struct.pack(">Q", 1)
    ids = sorted(_b64url(rng.randbytes(16).hex().encode()) for _ in range(messages))
    rows: list[tuple[bytes, bytes]] = []
    for enc_id in ids:
        msg_id = base64.urlsafe_b64decode(enc_id + b"=" * (-len(enc_id) % 4))
        send = 1_700_000_000_000 + rng.randrange(86_400_000)
        record = {
            "message_id": msg_id.decode(),
            "body": base64.b64encode(
                b"payload %d " % send + rng.randbytes(48).hex().encode()
            ).decode(),
            "md5_of_body": rng.randbytes(16).hex(),
            "send_timestamp_millis": send,
            "available_at_millis": send,
            "visible_at_millis": send,
            "receive_count": 0,
            "current_receipt_token": base64.b64encode(rng.randbytes(16)).decode(),
            "queue_generation": 1,
        }
        value = b"\x00SM\x01" + orjson.dumps(record)
        yield b"!sqs|msg|data|" + queue + gen + enc_id, value
        if side_records:
            rows.append((struct.pack(">Q", send) + enc_id, msg_id))
    if side_records:
        rows.sort()
        for family in (b"!sqs|msg|byage|", b"!sqs|msg|vis|"):
            for tail, msg_id in rows:
                yield family + queue + gen + tail, msg_id
    yield b"!sqs|queue|gen|" + queue, b"1"
    meta = {"name": _QUEUE.decode(), "generation": 1, "visibility_timeout_seconds": 30}
    yield b"!sqs|queue|meta|" + queue, b"\x00SQ\x01" + orjson.dumps(meta)


def write_fsm(path: Path, messages: int, side_records: bool, seed: int) -> int:
    """Write the synthetic snapshot; return the number of entries."""
    pack = struct.Struct("<Q").pack
    suffix = struct.pack(">Q", _COMMIT_TS ^ _MASK)
    count = 0
    with path.open("wb") as out:
        out.write(b"EKVPBBL1" + pack(_COMMIT_TS))
        for key, value in _entries(messages, side_records, seed):
            full_key = key + suffix
            full_value = bytes(9) + value
            out.write(pack(len(full_key)) + full_key + pack(len(full_value)) + full_value)
            count += 1
    return count


async def _run_pipeline(fsm: Path, out: Path, side_records: bool) -> None:
    from elastickv_async.options import DecodeOptions
    from elastickv_async.pipeline import decode_snapshot

    options = DecodeOptions(adapters=("sqs",), include_sqs_side_records=side_records)
    await decode_snapshot(fsm, out, options)


async def _run_adapter(
    out: Path, messages: int, side_records: bool, seed: int, budget: int | None
) -> None:
    from elastickv_async.adapters.base import DecodeContext
    from elastickv_async.adapters.sqs import keys
    from elastickv_async.adapters.sqs.decode import SQSDecoder
    from elastickv_async.dump.writer import DumpWriter
    from elastickv_async.options import DecodeOptions
    from elastickv_async.report import Report, make_logger
    from elastickv_async.snapshot.entry import Entry, SnapshotHeader

    report = Report()
    scratch = out / ".scratch"
    scratch.mkdir(parents=True)
    ctx = DecodeContext(
        options=DecodeOptions(adapters=("sqs",), include_sqs_side_records=side_records),
        writer=DumpWriter(out),
        log=make_logger(report),
        report=report,
        header=SnapshotHeader(_COMMIT_TS),
        scratch=scratch,
        now_ms=0,
    )
    decoder = SQSDecoder(ctx, spill_budget=budget) if budget else SQSDecoder(ctx)
    prefixes = sorted(keys.ROUTED_PREFIXES, key=len, reverse=True)
    batch = []
    for key, value in _entries(messages, side_records, seed):
        prefix = next(p for p in prefixes if key.startswith(p))
        batch.append((prefix, Entry(key, value, _COMMIT_TS, 0, False)))
        if len(batch) == 512:
            await decoder.handle(batch)
            batch = []
    await decoder.handle(batch)
    await decoder.finalize()


def _peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM: per address space, so not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit("no VmHWM in /proc/self/status (Linux only)")


def _child(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if args.mode == "pipeline":
        anyio.run(_run_pipeline, Path(args.fsm), out, args.side_records)
    else:
        anyio.run(_run_adapter, out, args.messages, args.side_records, args.seed, args.budget)
    print(_peak_rss_kib())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--mode", choices=("pipeline", "adapter"), default="pipeline")
    parser.add_argument("--side-records", action="store_true")
    parser.add_argument("--budget", type=int, default=None, help="SQS spill budget (adapter mode)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fsm", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-sqs-") as tmp:
        fsm = Path(tmp) / "bench.fsm"
        if args.mode == "pipeline":
            start = time.perf_counter()
            entries = write_fsm(fsm, args.messages, args.side_records, args.seed)
            print(
                f"wrote {entries} entries ({fsm.stat().st_size / 2**20:.0f} MiB) "
                f"in {time.perf_counter() - start:.1f}s",
                flush=True,
            )
        cmd = [sys.executable, __file__, "--child", "--fsm", str(fsm), "--out", f"{tmp}/out"]
        cmd += ["--mode", args.mode, "--messages", str(args.messages), "--seed", str(args.seed)]
        cmd += ["--side-records"] if args.side_records else []
        cmd += ["--budget", str(args.budget)] if args.budget else []
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, check=True)
        elapsed = time.perf_counter() - start
        peak_kib = int(proc.stdout.split()[-1])
        out_file = Path(tmp) / "out" / "sqs" / _QUEUE.decode() / "messages.jsonl"
        size = out_file.stat().st_size / 2**20
        print(
            f"{args.mode}: {args.messages} messages in {elapsed:.1f}s = "
            f"{args.messages / elapsed:,.0f} messages/s; "
            f"peak RSS {peak_kib / 1024:.0f} MiB; messages.jsonl {size:.0f} MiB"
        )


if __name__ == "__main__":
    main()
