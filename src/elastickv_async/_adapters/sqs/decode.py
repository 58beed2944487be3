"""SQS decoder: ``!sqs|`` records -> ``sqs/<queue>/`` (REFERENCE_NOTES §3.4).

Differences from the reference, on purpose: the FIFO sequence counter key (no trailer) is
exported like any side record instead of aborting the decode; every malformed key or value
is a typed error naming the key; a queue known only from its surviving generation counter
(the normal trace of a deleted queue) is not reported as an orphan; queue names ``.``/``..``
are refused; messages wait in a bounded-memory spill (:mod:`.spill`) instead of RAM.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread

from ..._core import gojson
from ..._core.concurrency import task_group
from ..._core.dump.names import b64url_encode, encode_segment
from ..._core.gojson import go_str
from ..._core.gojson_read import GoJSONError
from ..base import DecodeContext, Routed
from . import keys, layout
from .errors import record_error
from .options import SQSOptions
from .spill import DEFAULT_BUDGET, MessageSpill
from .values import (
    QueueConfig,
    decode_stored_message,
    decode_stored_meta,
    dump_line,
    queue_json,
    shifted,
)

__all__ = ["SQSDecoder"]

_MAX_UINT64: Final = (1 << 64) - 1
_ORPHAN_HINT: Final = (
    "no !sqs|queue|meta record matched this encoded prefix; messages dropped from the dump"
)
_STALE_HINT: Final = (
    "messages with mismatched queue_generation suppressed; "
    "reaper had not finished cleanup at snapshot time"
)


@dataclass(slots=True)
class _Queue:
    """What is known about one queue, keyed by its base64url key segment."""

    encoded: str
    #: Raw queue name from the meta key (None until the meta record arrives).
    name: bytes | None = None
    config: QueueConfig | None = None
    #: Generation from ``!sqs|queue|gen|``; 0 means "none seen": no filtering.
    active_gen: int = 0


class SQSDecoder:
    """Decode adapter for the SQS keyspace.

    ``spill_budget`` bounds the bytes of buffered output (all queues together) before it is
    spilled to ``ctx.scratch``.
    """

    def __init__(self, ctx: DecodeContext, *, spill_budget: int = DEFAULT_BUDGET) -> None:
        self._ctx = ctx
        options: SQSOptions = ctx.adapter_options
        self._preserve_visibility = options.preserve_visibility
        self._full_fidelity = ctx.options.full_fidelity
        # Undoes an encode --rebase-time (the self-test's decode); 0 otherwise.
        self._unshift_ms = -ctx.options.time_shift_ms
        self._side_records = options.include_side_records
        self._queues: dict[str, _Queue] = {}
        self._spill = MessageSpill(ctx.scratch, spill_budget)
        self._scratch_names = itertools.count()
        self._limiter = anyio.CapacityLimiter(max(1, ctx.options.jobs))
        handlers: dict[bytes, Callable[[bytes, bytes, bytes], None]] = {
            keys.MSG_DATA_PREFIX: self._on_message,
            keys.QUEUE_META_PREFIX: self._on_meta,
            keys.QUEUE_GEN_PREFIX: self._on_gen,
        }
        side = self._on_side if self._side_records else _ignore
        for prefix in keys.SIDE_RECORD_PREFIXES:
            handlers[prefix] = side
        self._handlers = handlers

    def _queue(self, encoded: str) -> _Queue:
        q = self._queues.get(encoded)
        if q is None:
            q = self._queues[encoded] = _Queue(encoded)
        return q

    async def handle(self, batch: Sequence[Routed]) -> None:
        """Route each record to its family's handler; spill when the buffers grow too big."""
        handlers = self._handlers
        for prefix, entry in batch:
            handlers[prefix](prefix, entry.key, entry.value)
        if self._spill.over_budget:
            await anyio.to_thread.run_sync(self._spill.spill, limiter=self._limiter)

    # --- per-family handlers ----------------------------------------------------------------

    def _on_message(self, _prefix: bytes, key: bytes, value: bytes) -> None:
        encoded, partition = keys.message_data_queue(key)
        try:
            msg = decode_stored_message(value)
        except GoJSONError as exc:
            raise record_error(
                "ErrSQSInvalidMessage", f"invalid SQS message at key {keys.key_repr(key)}: {exc}"
            ) from None
        if not self._preserve_visibility:
            msg.visible_at_millis = 0
            msg.current_receipt_token = None
            msg.receive_count = 0
            msg.first_receive_millis = 0
        msg = shifted(msg, self._unshift_ms)
        msg.partition = partition
        self._queue(encoded)
        self._spill.add_message(
            encoded,
            msg.send_timestamp_millis,
            msg.sequence_number,
            msg.message_id.encode(),
            msg.queue_generation,
            dump_line(msg),
        )

    def _on_meta(self, prefix: bytes, key: bytes, value: bytes) -> None:
        encoded, name = keys.queue_key_segment(key, prefix)
        if encode_segment(name) in (".", ".."):
            raise record_error(
                "ErrSQSMalformedKey",
                f"queue name {name!r} in key {keys.key_repr(key)} cannot be a directory name",
            )
        try:
            config = decode_stored_meta(value)
        except GoJSONError as exc:
            raise record_error(
                "ErrSQSInvalidQueueMeta",
                f"invalid SQS queue meta at key {keys.key_repr(key)}: {exc}",
            ) from None
        if not config.name:
            config.name = go_str(name)
        q = self._queue(encoded)
        q.name = name
        q.config = config

    def _on_gen(self, prefix: bytes, key: bytes, value: bytes) -> None:
        encoded, _ = keys.queue_key_segment(key, prefix)
        text = value.strip()
        if not text.isdigit() or int(text) > _MAX_UINT64:
            raise record_error(
                "ErrSQSInvalidQueueGen",
                f"SQS queue generation {value[:32]!r} at key {keys.key_repr(key)} is not a uint64",
            )
        self._queue(encoded).active_gen = int(text)

    def _on_side(self, prefix: bytes, key: bytes, value: bytes) -> None:
        encoded = keys.side_record_queue(key, prefix)
        self._queue(encoded)
        line = gojson.encoder_line(
            {"prefix": prefix.decode(), "key_hex": key.hex(), "value_b64": b64url_encode(value)}
        )
        self._spill.add_side(encoded, line)

    # --- output -----------------------------------------------------------------------------

    async def finalize(self) -> dict[str, Any]:
        """Write every queue, ``jobs`` at a time; return ``{"queues": [sorted queue names]}``."""
        names: list[str] = []
        pending = iter(sorted(self._queues))

        async def worker() -> None:
            for encoded in pending:  # shared by the workers: each queue is taken once
                await self._flush(self._queues[encoded], names)

        async with task_group() as tg:
            for _ in range(max(1, self._ctx.options.jobs)):
                tg.start_soon(worker)
        return {"queues": sorted(names)}

    async def _flush(self, q: _Queue, names: list[str]) -> None:
        if q.config is None or q.name is None:
            await self._flush_orphan(q)
            return
        directory = f"{layout.ROOT}/{encode_segment(q.name)}"
        await self._ctx.writer.write(
            f"{directory}/{layout.QUEUE_FILE}",
            queue_json(q.config, full_fidelity=self._full_fidelity),
        )
        if self._spill.message_count(q.encoded):
            await self._flush_messages(q, q.name, directory)
        await self._flush_sides(q, directory)
        self._ctx.report.count("sqs.queues")
        names.append(go_str(q.name))

    async def _flush_orphan(self, q: _Queue) -> None:
        messages = self._spill.message_count(q.encoded)
        sides = self._spill.side_count(q.encoded)
        if not messages and not sides:
            return  # only a generation counter: what DeleteQueue leaves behind by design
        self._ctx.log.warning(
            "sqs_orphan_messages",
            encoded_queue=q.encoded,
            buffered_messages=messages,
            buffered_side_records=sides,
            hint=_ORPHAN_HINT,
        )
        self._ctx.report.count("sqs.orphan_messages_dropped", messages)
        await self._flush_sides(q, f"{layout.ROOT}/{q.encoded}{layout.ORPHAN_SUFFIX}")

    def _scratch_file(self, kind: str) -> Path:
        return self._ctx.scratch / f"sqs-{kind}-{next(self._scratch_names)}.jsonl"

    async def _flush_messages(self, q: _Queue, name: bytes, directory: str) -> None:
        dest = self._scratch_file("messages")
        written, dropped = await anyio.to_thread.run_sync(
            self._spill.write_messages, q.encoded, q.active_gen, dest, limiter=self._limiter
        )
        if dropped:
            self._ctx.log.warning(
                "sqs_stale_generation_messages_dropped",
                queue=go_str(name),
                active_gen=q.active_gen,
                dropped=dropped,
                hint=_STALE_HINT,
            )
            self._ctx.report.count("sqs.stale_messages_dropped", dropped)
        if written:
            await self._ctx.writer.install(f"{directory}/{layout.MESSAGES_FILE}", dest)
            self._ctx.report.count("sqs.messages", written)
        else:
            await anyio.to_thread.run_sync(dest.unlink)

    async def _flush_sides(self, q: _Queue, directory: str) -> None:
        count = self._spill.side_count(q.encoded)
        if not count:
            return
        dest = self._scratch_file("sides")
        await anyio.to_thread.run_sync(
            self._spill.write_sides, q.encoded, dest, limiter=self._limiter
        )
        await self._ctx.writer.install(f"{directory}/{layout.SIDE_RECORDS_FILE}", dest)
        self._ctx.report.count("sqs.side_records", count)


def _ignore(_prefix: bytes, _key: bytes, _value: bytes) -> None:
    """Side records are not exported without ``--include-sqs-side-records``."""
