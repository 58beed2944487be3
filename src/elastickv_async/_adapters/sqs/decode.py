"""SQS decoder: ``!sqs|`` records -> ``sqs/<queue>/`` (REFERENCE_NOTES §3.4).

Differences from the reference, on purpose: the FIFO sequence counter key (no trailer) is
exported like any side record instead of aborting the decode; every malformed key or value
is a typed error naming the key; a queue known only from its surviving generation counter
(the normal trace of a deleted queue) is not reported as an orphan; queue names ``.``/``..``
are refused; messages wait in a bounded-memory spill (:mod:`.spill`) instead of RAM.

Rendering a message (parse the stored JSON, reset visibility, undo a time shift, build its
``messages.jsonl`` line and sort key) and sorting a chunk's messages into packed runs is
pure CPU work: it runs in chunks in ``ctx.workers`` (and in this process, while worker
processes fall behind and once the input is read) while the snapshot is still being read.
A chunk's messages carry their arrival numbers in their sort keys, so the order in which
chunks finish does not change the output, nor does the number of workers.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..._core import gojson
from ..._core.concurrency import task_group
from ..._core.dump.names import b64url_encode, encode_segment
from ..._core.gojson import go_str
from ..._core.gojson_read import GoJSONError
from ..base import DecodeContext, Routed
from . import keys, layout
from .errors import record_error
from .options import SQSOptions
from .render import Chunk, Rendered, RenderSettings, Runner, pack_records, render_messages
from .spill import MessageSpill
from .values import QueueConfig, decode_stored_meta, queue_json

__all__ = ["SQSDecoder"]

_MAX_UINT64: Final = (1 << 64) - 1
_PREFIX: Final = itemgetter(0)
_ENTRY: Final = itemgetter(1)
_KEY_VALUE: Final = attrgetter("key", "value")
_ORPHAN_HINT: Final = (
    "no !sqs|queue|meta record matched this encoded prefix; messages dropped from the dump"
)
#: Messages per worker call: enough that a call's overhead (pickling, the pipe) is small
#: beside its work, few enough (about 1 MiB of values) to keep the pipeline moving.
RENDER_CHUNK: Final = 2048

#: Chunks queued per render lane: enough to bridge a worker process's round trips, so that
#: a chunk is rendered in the run's own process only when the workers fall behind.
_QUEUED: Final = 4

#: Messages rendered at once when this process renders a chunk on its event loop (about a
#: millisecond of work), so that the worker processes' replies are taken without delay.
_INLINE_SLICE: Final = 256

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


async def _run_here(
    func: Callable[[list[tuple[bytes, bytes]], RenderSettings, int], list[Rendered]],
    records: list[tuple[bytes, bytes]],
    settings: RenderSettings,
    first: int,
) -> list[Rendered]:
    """A :data:`~.render.Runner` that renders on the event loop."""
    return func(records, settings, first)


class SQSDecoder:
    """Decode adapter for the SQS keyspace.

    ``spill_budget`` (default: the adapter's memory share, ``ctx.memory``, and from the end
    of the input ``ctx.flush_memory()``) bounds the bytes of buffered output (all queues
    together) before it is spilled to ``ctx.scratch``, and what a queue's sort may hold;
    ``render_chunk`` is the number of messages per worker call.
    """

    def __init__(
        self,
        ctx: DecodeContext,
        *,
        spill_budget: int | None = None,
        render_chunk: int = RENDER_CHUNK,
    ) -> None:
        self._ctx = ctx
        self._chunk = render_chunk
        options: SQSOptions = ctx.adapter_options
        self._preserve_visibility = options.preserve_visibility
        self._full_fidelity = ctx.options.full_fidelity
        # Undoes an encode --rebase-time (the self-test's decode); 0 otherwise.
        self._unshift_ms = -ctx.options.time_shift_ms
        self._side_records = options.include_side_records
        self._queues: dict[str, _Queue] = {}
        self._lent_memory = spill_budget is None
        budget = ctx.memory if spill_budget is None else spill_budget
        self._spill = MessageSpill(ctx.scratch, budget)
        self._scratch_names = itertools.count()
        self._limiter = anyio.CapacityLimiter(max(1, ctx.options.jobs))
        handlers: dict[bytes, Callable[[bytes, bytes, bytes], None]] = {
            keys.QUEUE_META_PREFIX: self._on_meta,
            keys.QUEUE_GEN_PREFIX: self._on_gen,
        }
        if self._side_records:
            for prefix in keys.SIDE_RECORD_PREFIXES:
                handlers[prefix] = self._on_side
        self._handlers = handlers
        # Side records are not exported without --include-sqs-side-records: not even parsed.
        self._skipped = frozenset(() if self._side_records else keys.SIDE_RECORD_PREFIXES)
        self._render_settings = RenderSettings(options.preserve_visibility, self._unshift_ms)
        #: Message ``(key, value)`` pairs not yet cut into chunks.
        self._pending: list[tuple[bytes, bytes]] = []
        #: Messages cut into chunks so far: the arrival number of the next one.
        self._arrivals = 0
        # Chunks rendered at once: enough to keep every worker process busy.
        self._in_flight = ctx.workers.in_flight
        # The spill is changed on the event loop and spilled in a worker thread: one at a time.
        self._spill_lock = anyio.Lock(fast_acquire=True)
        self._order_lock = anyio.Lock(fast_acquire=True)
        #: The first chunk (by arrival number) whose rendering failed, and its error.
        self._render_failure: tuple[int, Exception] | None = None

    def _queue(self, encoded: str) -> _Queue:
        q = self._queues.get(encoded)
        if q is None:
            q = self._queues[encoded] = _Queue(encoded)
        return q

    async def handle(self, batch: Sequence[Routed]) -> None:
        """Route each record to its family's handler; render messages in worker batches."""
        failure = self._take(batch)
        if failure is not None or len(self._pending) >= self._chunk * self._in_flight:
            await self._render_pending()
        if failure is not None:
            raise failure  # once the messages before it are rendered
        if self._spill.over_budget:  # side records alone
            await self._spill_buffers()

    async def consume(self, batches: AsyncIterable[Sequence[Routed]]) -> dict[str, Any]:
        """:meth:`handle` every batch, then :meth:`finalize`, with the messages rendered
        in the background: chunks go to render lanes (one per worker process, or one worker
        thread) while the next batches are taken, and each lane adds what it rendered."""
        lanes = self._in_flight
        chunks, lane_chunks = anyio.create_memory_object_stream[Chunk](_QUEUED * lanes)
        failure: Exception | None = None
        started = False
        async with task_group() as tg, chunks, lane_chunks:
            queued = lane_chunks.clone()
            async with queued:
                async for batch in batches:
                    if not started:
                        # With the first SQS records: a snapshot without any starts no lane
                        # and no worker process.
                        for lane in range(lanes):
                            tg.start_soon(self._render_lane, lane_chunks.clone(), lane)
                        lane_chunks.close()
                        started = True
                    async with self._spill_lock:
                        failure = self._take(batch)
                    for chunk in self._cut(whole=failure is not None):
                        await self._send(chunks, chunk)
                    if failure is not None or self._render_failure is not None:
                        break
                    if self._spill.over_budget:  # side records alone
                        await self._spill_buffers()
                else:
                    for chunk in self._cut(whole=True):
                        await self._send(chunks, chunk)
                chunks.close()
                if self._ctx.workers.processes:
                    # The input is read: this process takes its share of what is queued.
                    async for first, records in queued:
                        await self._render_here(first, records)
        self._raise_render_failure()
        if failure is not None:
            raise failure  # once the messages before it are rendered
        return await self.finalize()

    def _take(self, batch: Sequence[Routed]) -> Exception | None:
        """Apply the batch's records in order, messages to :attr:`_pending`; stop at the
        first record that fails and return its error."""
        handlers, pending, data = self._handlers, self._pending, keys.MSG_DATA_PREFIX
        skipped = self._skipped
        # Records come in runs of one prefix: messages and skipped families are taken a run
        # at a time, with no Python step per record.
        for prefix, run in groupby(batch, _PREFIX):
            if prefix == data:
                pending += map(_KEY_VALUE, map(_ENTRY, run))
            elif prefix not in skipped:
                for _, entry in run:
                    try:
                        handlers[prefix](prefix, entry.key, entry.value)
                    except Exception as exc:
                        return exc
        return None

    def _cut(self, *, whole: bool) -> list[Chunk]:
        """The pending messages in chunks, numbered in snapshot order; a last part shorter
        than a chunk stays pending unless ``whole``."""
        pending, size = self._pending, self._chunk
        end = len(pending) if whole else len(pending) - len(pending) % size
        chunks = []
        for start in range(0, end, size):
            part = pending[start : min(start + size, end)]
            chunks.append((self._arrivals, part))
            self._arrivals += len(part)
        del pending[:end]
        return chunks

    async def _send(self, chunks: MemoryObjectSendStream[Chunk], chunk: Chunk) -> None:
        """Queue ``chunk`` for the lanes. When worker processes are all busy and the queue is
        full (they are still starting, or the machine is loaded), render it in this process
        instead of waiting: the time would otherwise be lost to the reading."""
        try:
            chunks.send_nowait(chunk)
        except anyio.WouldBlock:
            if self._ctx.workers.processes:
                await self._render_here(*chunk, hand_back=chunks)
            else:  # the lane is a thread of this process already
                await chunks.send(chunk)

    async def _render_here(
        self,
        first: int,
        records: list[tuple[bytes, bytes]],
        *,
        hand_back: MemoryObjectSendStream[Chunk] | None = None,
    ) -> None:
        """Render a chunk on the event loop, a slice at a time. Not in a worker thread: that
        thread would hold the GIL against the event loop for whole switch intervals, and the
        worker processes would wait that long for each reply to be taken.

        With ``hand_back``, the rest of the chunk goes back to the lanes as soon as their
        queue has room (a worker process caught up): this process's own time is the
        reading's."""
        for start in range(0, len(records), _INLINE_SLICE):
            if start and hand_back is not None:
                try:
                    hand_back.send_nowait((first + start, records[start:]))
                except anyio.WouldBlock:
                    pass
                else:
                    return
            part = records[start : start + _INLINE_SLICE]
            await self._render(_run_here, first + start, part)
            await anyio.lowlevel.checkpoint()

    async def _render_lane(self, chunks: MemoryObjectReceiveStream[Chunk], lane: int) -> None:
        run: Runner = self._ctx.workers.run
        async with chunks:
            if self._ctx.workers.processes:
                run = self._run_packed
            if lane < self._ctx.workers.processes:
                # An empty call starts a worker process and loads the renderer while the
                # first chunks are read, not when the first one is due.
                await run(render_messages, [], self._render_settings, 0)
            async for first, records in chunks:
                await self._render(run, first, records)

    async def _run_packed(
        self,
        func: Callable[[list[tuple[bytes, bytes]] | bytes, RenderSettings, int], list[Rendered]],
        records: list[tuple[bytes, bytes]],
        settings: RenderSettings,
        first: int,
    ) -> list[Rendered]:
        """A :data:`~.render.Runner` for the worker processes: the records cross packed."""
        return await self._ctx.workers.run(func, pack_records(records), settings, first)

    async def _render_pending(self) -> None:
        """Render the pending messages, one chunk per worker at once; add them (or raise the
        first failure)."""
        async with task_group() as tg:
            for first, records in self._cut(whole=True):
                tg.start_soon(self._render, self._ctx.workers.run, first, records)
        self._raise_render_failure()

    async def _render(self, run: Runner, first: int, records: list[tuple[bytes, bytes]]) -> None:
        """Render and add one chunk. A chunk that fails is remembered rather than raised, so
        that the error does not depend on which chunk finishes first: chunks after it are
        skipped, chunks before it still render (no sibling call is cancelled midway), and
        :meth:`_raise_render_failure` raises the first failure in snapshot order."""
        failed = self._render_failure
        if failed is not None and first > failed[0]:
            return
        try:
            rendered = await run(render_messages, records, self._render_settings, first)
        except Exception as exc:
            failed = self._render_failure
            if failed is None or first < failed[0]:
                self._render_failure = (first, exc)
            return
        await self._add(rendered)

    def _raise_render_failure(self) -> None:
        if self._render_failure is not None:
            raise self._render_failure[1]

    async def _add(self, rendered: list[Rendered]) -> None:
        """Add one chunk's runs to the spill (spilled when over budget)."""
        async with self._spill_lock:
            for encoded, generation, run, count in rendered:
                self._queue(encoded)
                self._spill.add_run(encoded, generation, run, count)
            if self._spill.over_budget:
                await anyio.to_thread.run_sync(self._spill.spill, limiter=self._limiter)

    async def _spill_buffers(self) -> None:
        async with self._spill_lock:
            await anyio.to_thread.run_sync(self._spill.spill, limiter=self._limiter)

    # --- per-family handlers ----------------------------------------------------------------

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
        await self._render_pending()
        if self._lent_memory:
            # A queue whose messages fit this share once unpacked is sorted in one pass.
            self._spill.widen(self._ctx.flush_memory())
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
        written, dropped = self._spill.message_counts(q.encoded, q.active_gen)
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
            lines = self._spill.message_lines(q.encoded, q.active_gen)
            # One queue at a time: putting a queue in order may take the whole budget.
            async with self._order_lock:
                await self._ctx.writer.write_chunks(f"{directory}/{layout.MESSAGES_FILE}", lines)
            self._ctx.report.count("sqs.messages", written)

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
