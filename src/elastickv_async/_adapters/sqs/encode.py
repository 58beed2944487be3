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

from collections.abc import AsyncIterator, Iterator
from itertools import islice
from typing import IO, Any, Final

import anyio
import anyio.to_thread

from ..._core.concurrency import task_group
from ..._core.dump.names import encode_segment
from ..._core.dump.tree import DumpTree
from ..._core.gojson_read import GoJSONError, iter_values
from ..._core.workers import Workers
from ..base import EncodeContext, SendBatch, send_batches
from . import keys, layout
from .dedup import DedupClaims
from .errors import tree_error
from .keys import RESTORE_GENERATION
from .lines import PER_QUEUE, Encoded, QueueSettings, Record, encode_lines, encode_values
from .values import FORMAT_VERSION, QueueConfig, parse_queue_json, stored_meta_value

__all__ = ["SQSEncoder"]

#: The live HT-FIFO partition ceiling.
MAX_PARTITIONS: Final = 32
PER_MESSAGE_GROUP_ID: Final = "perMessageGroupId"
SCOPE_MESSAGE_GROUP: Final = "messageGroup"
SCOPE_QUEUE: Final = "queue"

#: Lines encoded per call (some 2-3 MiB of records).
_BATCH: Final = 2048


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

    def take(self, runs: int) -> list[list[bytes]]:
        """Up to ``runs`` runs of ``_BATCH`` lines; fewer (or none) at the end."""
        out = []
        for _ in range(runs):
            run = list(islice(self._fh, _BATCH))
            if not run:
                break
            out.append(run)
        return out

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


class SQSEncoder:
    """Encode adapter for ``sqs/``: yields ``(user_key, user_value)`` records.

    The lines of each ``messages.jsonl`` are encoded a run at a time, one run per worker
    process (``ctx.workers``) at once, or one in a worker thread without them; the outcomes
    are taken in line order. This process keeps no run for itself: meanwhile it sorts what
    the previous runs gave.
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
        """Send the lists :meth:`batches` yields (a ``BatchEncodeAdapter``)."""
        await send_batches(self.batches(), send)

    async def batches(self) -> AsyncIterator[list[Record]]:
        """Every record of every queue directory, queue by queue, a read batch at a time."""
        for name in await self._tree.run(_queue_dirs, self._tree):
            async for batch in self._queue_batches(name):
                yield batch

    async def _queue_batches(self, dirname: str) -> AsyncIterator[list[Record]]:
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
            yield [
                (keys.queue_meta_key(name), stored_meta_value(cfg, RESTORE_GENERATION)),
                (keys.queue_gen_key(name), str(RESTORE_GENERATION).encode()),
            ]
            if fh is not None:
                async for batch in self._message_batches(settings, _Lines(fh), state):
                    yield batch
                if state.missing_id:
                    raise tree_error(
                        "ErrSQSEncodeInvalidMessage",
                        f"{settings.rel}: message without message_id",
                    )
                self._ctx.report.count("sqs.messages_encoded", state.messages)
                rows = claims.rows()
                while batch := await self._tree.run(_take, rows):
                    yield batch
        finally:
            if fh is not None:
                fh.close()  # a read-only descriptor: closing it does not block
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(claims.close)
        if cfg.fifo and state.max_sequence > 0:
            # The live sender reads this as the last issued number and adds one.
            yield [(keys.queue_seq_key(name), str(state.max_sequence).encode())]
        self._ctx.report.count("sqs.queues_encoded")

    async def _message_batches(
        self, settings: QueueSettings, lines: _Lines, state: _QueueState
    ) -> AsyncIterator[list[Record]]:
        """The records of every message (the dedup rows aside), each gated first."""
        while runs := await self._tree.run(lines.take, max(1, self._workers.processes)):
            for index, result in enumerate(await self._encode(settings, runs)):
                records = await self._tree.run(state.apply, result)
                if records:
                    yield records
                if result.failure is not None:
                    raise tree_error(*result.failure)
                if result.stream_from is not None:
                    # Not one object per line: the rest is read as Go's json.Decoder would.
                    taken = [*runs[index][result.stream_from :], *_joined(runs[index + 1 :])]
                    rest = b"".join(taken) + await self._tree.run(lines.rest)
                    async for batch in self._stream_batches(settings, rest, state):
                        yield batch
                    return

    async def _stream_batches(
        self, settings: QueueSettings, data: bytes, state: _QueueState
    ) -> AsyncIterator[list[Record]]:
        values = iter_values(data)
        while True:
            result = await self._tree.run(_stream_run, settings, values)
            records = await self._tree.run(state.apply, result)
            if records:
                yield records
            if result.failure is not None:
                raise tree_error(*result.failure)
            if not result.messages:
                return

    async def _encode(self, settings: QueueSettings, runs: list[list[bytes]]) -> list[Encoded]:
        """Encode ``runs`` side by side, one in each worker process (or the one in a worker
        thread without them); the outcomes in run order."""
        results: list[Encoded] = [Encoded() for _ in runs]

        async def one(index: int) -> None:
            if index < self._workers.processes:
                results[index] = await self._workers.run(encode_lines, settings, runs[index])
            else:
                results[index] = await anyio.to_thread.run_sync(encode_lines, settings, runs[index])

        # The group is entered and left within this call, never across a yield.
        async with task_group() as tg:
            for index in range(len(runs)):
                tg.start_soon(one, index)
        return results


def _joined(runs: list[list[bytes]]) -> list[bytes]:
    return [line for run in runs for line in run]


def _take(rows: Iterator[Record]) -> list[Record]:
    """The next ``_BATCH`` dedup rows (they may come from spilled runs: a worker thread)."""
    return list(islice(rows, _BATCH))
