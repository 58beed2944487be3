"""SQS encoder: ``sqs/<queue>/`` -> ``!sqs|`` records (REFERENCE_NOTES §6.6).

Per queue directory: the queue meta and its generation counter, then for every message of
``messages.jsonl`` its data record and the ``vis``/``byage`` index rows, the FIFO ``dedup``
row of the latest send per dedup tuple (chosen in bounded memory by :mod:`.dedup`), and the
FIFO sequence counter (the highest sequence number). Plain messages take the quick path of
:mod:`.plain`. One pass reads the file: the dedup rows and the counter come after the last line,
and a message without an id is reported only once every line has passed the gates (the
reference checks every line before it writes any record). Everything is restored at
generation 1, with visibility state zeroed unless the tree is a full-fidelity one (then a
received FIFO message also gets its group's lock back); ``--rebase-time`` moves every message
time by the context's shift.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import IO, Any, Final

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..._core.concurrency import task_group
from ..._core.dump.names import encode_segment
from ..._core.dump.tree import DumpTree
from ..._core.gojson_read import GoJSONError, iter_values
from ..._core.workers import OUTSTANDING, Workers
from ..base import EncodeContext, SendBatch
from . import keys, layout
from .dedup import DedupClaims
from .errors import tree_error
from .keys import RESTORE_GENERATION
from .lines import (
    PER_QUEUE,
    Encoded,
    QueueSettings,
    Record,
    encode_lines,
    encode_values,
    started,
)
from .values import FORMAT_VERSION, QueueConfig, parse_queue_json, stored_meta_value

__all__ = ["SQSEncoder"]

#: The live HT-FIFO partition ceiling.
MAX_PARTITIONS: Final = 32
PER_MESSAGE_GROUP_ID: Final = "perMessageGroupId"
SCOPE_MESSAGE_GROUP: Final = "messageGroup"
SCOPE_QUEUE: Final = "queue"

#: Lines encoded per call at most.
_BATCH: Final = 2048
#: What a run holds in memory at its peak, in multiples of its lines' bytes: the lines,
#: their records (some three times as large: base64 bodies, keys, stored documents) and a
#: worker process's reply on its way.
_RUN_GROWTH: Final = 5
#: Lanes per worker process: it holds its next run while it encodes one.
PROCESS_LANES: Final = OUTSTANDING


# --- file access (worker threads) ---------------------------------------------------------------


def _queue_dirs(tree: DumpTree) -> list[str]:
    """The queue directories under ``sqs/`` in name order (no ``sqs/``: none)."""
    top = tree.open_dir((layout.ROOT,))
    if top is None:
        return []
    with top:
        return [entry.name for entry in top.entries() if entry.is_dir]


def _open_queue(tree: DumpTree, dirname: str) -> tuple[QueueConfig, IO[bytes] | None]:
    """Read ``sqs/<dirname>/_queue.json`` and open its ``messages.jsonl`` (None: absent)."""
    queue_dir = tree.open_dir((layout.ROOT, dirname))
    if queue_dir is None:
        raise tree_error(
            "ErrSQSEncodeInvalidQueue", f"{layout.ROOT}/{dirname} was removed while it was read"
        )
    with queue_dir:
        rel = queue_dir.path(layout.QUEUE_FILE)
        data = queue_dir.read(layout.QUEUE_FILE)
        if data is None:
            raise tree_error("ErrSQSEncodeInvalidQueue", f"{rel}: missing")
        try:
            version, cfg = parse_queue_json(data)
        except GoJSONError as exc:
            raise tree_error("ErrSQSEncodeInvalidQueue", f"{rel}: {exc}") from None
        _validate_queue(version, cfg, rel)
        if not cfg.name:
            raise tree_error("ErrSQSEncodeInvalidQueue", f"{rel}: empty queue name")
        # The decoder cannot give such a queue a directory, so a .fsm holding it would not decode.
        if encode_segment(cfg.name.encode()) in (".", ".."):
            raise tree_error(
                "ErrSQSEncodeInvalidQueue",
                f"{rel}: queue name {cfg.name!r} cannot be a directory name",
            )
        messages = queue_dir.open_name(layout.MESSAGES_FILE)
    return cfg, None if messages is None else messages.stream()


def _validate_queue(version: int, cfg: QueueConfig, rel: str) -> None:
    """The reference's queue gates: format version, HT-FIFO enums and combinations."""
    problem = None
    count = cfg.partition_count
    if version != FORMAT_VERSION:
        problem = f"unsupported format_version {version}"
    elif cfg.fifo_throughput_limit not in ("", PER_MESSAGE_GROUP_ID, PER_QUEUE):
        problem = f"unsupported fifo_throughput_limit {cfg.fifo_throughput_limit!r}"
    elif cfg.deduplication_scope not in ("", SCOPE_MESSAGE_GROUP, SCOPE_QUEUE):
        problem = f"unsupported deduplication_scope {cfg.deduplication_scope!r}"
    elif count & (count - 1):
        problem = f"partition_count {count} must be a power of two"
    elif count > MAX_PARTITIONS:
        problem = f"partition_count {count} exceeds max {MAX_PARTITIONS}"
    elif not cfg.fifo and (count > 1 or cfg.fifo_throughput_limit or cfg.deduplication_scope):
        problem = "partition_count, fifo_throughput_limit and deduplication_scope need a FIFO queue"
    elif cfg.fifo and count > 1 and cfg.deduplication_scope == SCOPE_QUEUE:
        problem = (
            f"deduplication_scope={SCOPE_QUEUE!r} is incompatible with partition_count {count}"
        )
    elif cfg.fifo_throughput_limit == PER_MESSAGE_GROUP_ID and count <= 1:
        problem = f"fifo_throughput_limit={PER_MESSAGE_GROUP_ID!r} requires partition_count > 1"
    if problem:
        raise tree_error("ErrSQSEncodeInvalidQueue", f"{rel}: {problem}")


class _Lines:
    """One ``messages.jsonl``, read in runs of lines (in worker threads)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh

    def take(self, size: int) -> list[bytes]:
        """The next ``_BATCH`` lines, or fewer holding ``size`` bytes (at least one line);
        none at the end."""
        run = []
        for line in islice(self._fh, _BATCH):
            run.append(line)
            size -= len(line)
            if size <= 0:
                break
        return run

    def rest(self) -> bytes:
        """Everything not taken yet."""
        return self._fh.read()


class _QueueState:
    """What one queue's messages leave behind as they are encoded, in line order: dedup
    claims, group locks taken, the highest sequence number, a message without an id."""

    def __init__(self, claims: DedupClaims) -> None:
        self.claims = claims
        self.max_sequence = 0
        self.messages = 0
        self.missing_id = False
        self._locked: set[tuple[int, str]] = set()

    def apply(self, result: Encoded) -> list[Record]:
        """Take in the next run's outcome; return the records it adds (blocking: claims may
        spill)."""
        for claim in result.claims:
            self.claims.claim(*claim)
        self.max_sequence = max(self.max_sequence, result.max_sequence)
        self.messages += result.messages
        if self.missing_id:
            return []  # raised once every line has passed the gates
        self.missing_id = result.missing_id
        records = result.records
        # The live receive path locks a group to the message it delivers until that message
        # is deleted, so a received message still stored holds it. Messages come in send
        # order, so the group's first received one (its head) wins should several claim it.
        for group, lock in result.locks:
            if group not in self._locked:
                self._locked.add(group)
                records.append(lock)
        return records


def _stream_run(settings: QueueSettings, values: Iterator[tuple[Any, str]]) -> Encoded:
    """The next ``_BATCH`` values of a stream-parsed remainder."""
    try:
        return encode_values(settings, islice(values, _BATCH))
    except GoJSONError as exc:
        raise tree_error("ErrSQSEncodeInvalidMessage", f"{settings.rel}: {exc}") from None


class _Run:
    """One run of lines on its way: encoded by a lane, applied by the sender in line order."""

    __slots__ = ("done", "lines", "result")

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.result = Encoded()
        self.done = anyio.Event()


class SQSEncoder:
    """Encode adapter for ``sqs/``: sends ``(user_key, user_value)`` records.

    The lines of each ``messages.jsonl`` are encoded a run at a time in lanes: two per worker
    process (``ctx.workers``; a process holds its next run while it encodes one), and one
    worker thread, which stops once the processes have started when there are any. The
    outcomes are applied and sent in line order while the lanes encode the next runs, and
    meanwhile the core sorts what was sent.
    """

    def __init__(self, ctx: EncodeContext) -> None:
        self._ctx = ctx
        self._tree = ctx.tree
        self._workers: Workers = ctx.workers
        # A full-fidelity tree keeps each message's visibility state and its queue's
        # timestamps; a default one has neither (they are zero, and restored as such).
        self._keep_visibility = ctx.full_fidelity
        self._shift_ms = ctx.time_shift_ms
        self._queues = 0

    async def produce(self, send: SendBatch) -> None:
        """Send the records of every queue directory, queue by queue (a
        ``BatchEncodeAdapter``)."""
        names = await self._tree.run(_queue_dirs, self._tree)
        if not names:
            return  # no worker process started for nothing
        async with task_group() as tg:
            # The worker processes start while the first queue is opened and read.
            warm = anyio.Event()
            tg.start_soon(self._workers.start_all, started, warm)
            for name in names:
                await self._queue(name, send, warm)

    async def _queue(self, dirname: str, send: SendBatch, warm: anyio.Event) -> None:
        cfg, fh = await self._tree.run(_open_queue, self._tree, dirname)
        name = cfg.name.encode()
        settings = QueueSettings(
            cfg,
            f"{layout.ROOT}/{dirname}/{layout.MESSAGES_FILE}",
            self._keep_visibility,
            self._shift_ms,
        )
        # Numbered, not named: a queue name need not be a usable file name.
        self._queues += 1
        # Queues are encoded one at a time: a queue's claims may hold half the encoder's
        # share, the other half being the lines and records of the runs in flight.
        claims = DedupClaims(
            self._ctx.scratch / f"dedup-{self._queues}",
            partitioned=settings.partitioned,
            budget=max(1, self._ctx.memory // 2),
        )
        state = _QueueState(claims)
        try:
            await send(
                [
                    (keys.queue_meta_key(name), stored_meta_value(cfg, RESTORE_GENERATION)),
                    (keys.queue_gen_key(name), str(RESTORE_GENERATION).encode()),
                ]
            )
            if fh is not None:
                rest = await self._messages(settings, _Lines(fh), state, send, warm)
                if rest is not None:
                    await self._stream(settings, rest, state, send)
                if state.missing_id:
                    raise tree_error(
                        "ErrSQSEncodeInvalidMessage",
                        f"{settings.rel}: message without message_id",
                    )
                self._ctx.report.count("sqs.messages_encoded", state.messages)
                rows = claims.rows()
                while batch := await self._tree.run(_take, rows):
                    await send(batch)
        finally:
            if fh is not None:
                fh.close()  # a read-only descriptor: closing it does not block
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(claims.close)
        if cfg.fifo and state.max_sequence > 0:
            # The live sender reads this as the last issued number and adds one.
            await send([(keys.queue_seq_key(name), str(state.max_sequence).encode())])
        self._ctx.report.count("sqs.queues_encoded")

    async def _messages(
        self,
        settings: QueueSettings,
        lines: _Lines,
        state: _QueueState,
        send: SendBatch,
        warm: anyio.Event,
    ) -> bytes | None:
        """Send the records of every message (the dedup rows aside), each gated first.

        Returns the rest of the file from the first line that is not one JSON value (to be
        read as Go's ``json.Decoder`` would), else ``None``. At most one run more than the
        lanes is out at once (read and not yet sent), so a lane that finishes finds its next
        run waiting.
        """
        lanes = PROCESS_LANES * self._workers.processes
        ahead = lanes + 1
        # The runs out at once share half the encoder's share (the claims have the rest).
        run_bytes = max(1, self._ctx.memory // 2 // (ahead * _RUN_GROWTH))
        to_lanes, for_lanes = anyio.create_memory_object_stream[_Run](ahead)
        # The lanes share one receiving end, closed here: a lane cancelled before it ran
        # never held it.
        with for_lanes:
            async with task_group() as tg:
                for _ in range(lanes):
                    tg.start_soon(self._process_lane, settings, for_lanes, warm)
                tg.start_soon(self._thread_lane, settings, for_lanes, warm)
                with to_lanes:
                    rest = await self._send_runs(settings, lines, state, send, to_lanes, run_bytes)
                # A stop on a line that is not one object leaves the runs after it to be
                # read again: their lanes' work is dropped.
                tg.cancel_scope.cancel()
        return rest

    async def _send_runs(
        self,
        settings: QueueSettings,
        lines: _Lines,
        state: _QueueState,
        send: SendBatch,
        to_lanes: MemoryObjectSendStream[_Run],
        run_bytes: int,
    ) -> bytes | None:
        """Hand runs to the lanes and send their outcomes in line order (see
        :meth:`_messages`)."""
        out: deque[_Run] = deque()
        ahead = to_lanes.statistics().max_buffer_size
        more = True
        while True:
            while more and len(out) < ahead:
                taken = await self._tree.run(lines.take, run_bytes)
                more = bool(taken)
                if more:
                    out.append(_Run(taken))
                    to_lanes.send_nowait(out[-1])
            if not out:
                return None
            run = out.popleft()
            await run.done.wait()
            result = run.result
            records = await self._tree.run(state.apply, result)
            if records:
                await send(records)
            if result.failure is not None:
                raise tree_error(*result.failure)
            if result.stream_from is not None:
                # Not one object per line: the rest is read as Go's json.Decoder would.
                taken = [*run.lines[result.stream_from :], *_joined(out)]
                return b"".join(taken) + await self._tree.run(lines.rest)

    async def _process_lane(
        self, settings: QueueSettings, runs: MemoryObjectReceiveStream[_Run], warm: anyio.Event
    ) -> None:
        await warm.wait()
        async for run in runs:
            run.result = await self._workers.run(encode_lines, settings, run.lines)
            run.done.set()

    async def _thread_lane(
        self, settings: QueueSettings, runs: MemoryObjectReceiveStream[_Run], warm: anyio.Event
    ) -> None:
        # Beside worker processes, encoding here would hold the GIL the core's sort and the
        # processes' replies wait for: this lane only bridges their start-up.
        beside = self._workers.processes > 0
        while not (beside and warm.is_set()):
            try:
                run = await runs.receive()
            except anyio.EndOfStream:
                return
            run.result = await anyio.to_thread.run_sync(encode_lines, settings, run.lines)
            run.done.set()

    async def _stream(
        self, settings: QueueSettings, data: bytes, state: _QueueState, send: SendBatch
    ) -> None:
        values = iter_values(data)
        while True:
            result = await self._tree.run(_stream_run, settings, values)
            records = await self._tree.run(state.apply, result)
            if records:
                await send(records)
            if result.failure is not None:
                raise tree_error(*result.failure)
            if not result.messages:
                return


def _joined(runs: Iterable[_Run]) -> list[bytes]:
    return [line for run in runs for line in run.lines]


def _take(rows: Iterator[Record]) -> list[Record]:
    """The next ``_BATCH`` dedup rows (they may come from spilled runs: a worker thread)."""
    return list(islice(rows, _BATCH))
