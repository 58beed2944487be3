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

import hashlib
from collections.abc import AsyncIterator, Iterator
from itertools import islice
from typing import IO, Any, Final

import anyio
import anyio.to_thread

from ..._core import gojson
from ..._core.dump.names import encode_segment
from ..._core.dump.tree import DumpTree
from ..._core.gojson_read import GoJSONError, iter_values, loads
from ..base import EncodeContext
from . import keys, layout
from .dedup import DedupClaims
from .errors import tree_error
from .keys import RESTORE_GENERATION
from .plain import PlainQueue
from .values import (
    FORMAT_VERSION,
    Message,
    QueueConfig,
    parse_dump_message,
    parse_queue_json,
    shifted,
    stored_meta_value,
    stored_value,
)

__all__ = ["SQSEncoder"]

#: The live HT-FIFO partition ceiling.
MAX_PARTITIONS: Final = 32
PER_MESSAGE_GROUP_ID: Final = "perMessageGroupId"
PER_QUEUE: Final = "perQueue"
SCOPE_MESSAGE_GROUP: Final = "messageGroup"
SCOPE_QUEUE: Final = "queue"

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


class _MessageReader:
    """The records of one ``messages.jsonl``, parsed like Go's ``json.Decoder`` stream.

    One object per line is the fast path; anything else (an object spread over several lines,
    several values on one line) switches to a whole-remainder stream parse. Each message is
    gated as it is read; its records come from :class:`~.plain.PlainQueue` when it is plain,
    else from the general path. Synchronous: each :meth:`batch` runs in a worker thread.
    """

    def __init__(
        self,
        fh: IO[bytes],
        plan: _QueuePlan,
        *,
        keep_visibility: bool,
        shift_ms: int,
    ) -> None:
        self._fh = fh
        self._plan = plan
        self._keep_visibility = keep_visibility
        self._shift_ms = shift_ms
        cfg = plan.cfg
        self._plain = (
            None
            if plan.partitioned
            else PlainQueue(
                cfg.name.encode(),
                RESTORE_GENERATION,
                fifo=cfg.fifo,
                keep_visibility=keep_visibility,
                shift_ms=shift_ms,
            )
        )
        self._values: Iterator[tuple[Any, bytes | str]] = self._lines()
        self._locked: set[tuple[int, str]] = set()
        self.count = 0
        #: A message without an id was read: no more records, and an error at the end.
        self.missing_id = False

    def batch(self) -> list[tuple[bytes, bytes]]:
        """The records of up to ``_BATCH`` more messages; an empty list at the end."""
        out: list[tuple[bytes, bytes]] = []
        plan, plain = self._plan, self._plain
        for read, (value, document) in enumerate(self._values, 1):
            self.count += 1
            quick = None if plain is None else plain.message(value)
            if quick is not None:
                plan.note(
                    quick.message_id,
                    quick.body,
                    quick.dedup_id,
                    "",
                    None,
                    quick.send_ms,
                    quick.sequence,
                )
                if not self.missing_id:
                    out += quick.records
            else:
                out += self._general(value, document)
            if read >= _BATCH:
                break
        return out

    def _general(self, value: Any, document: bytes | str) -> list[tuple[bytes, bytes]]:
        plan = self._plan
        try:
            msg = parse_dump_message(value, document)
        except GoJSONError as exc:
            raise tree_error("ErrSQSEncodeInvalidMessage", f"{plan.rel}: {exc}") from None
        msg = shifted(msg, self._shift_ms)
        plan.check(msg)
        if not msg.message_id:
            self.missing_id = True  # raised once every line has passed the gates
        if self.missing_id:
            return []
        return _message_records(
            plan.cfg,
            plan.partitioned,
            msg,
            self._keep_visibility,
            self._holds_group_lock(plan.cfg, msg),
        )

    def _holds_group_lock(self, cfg: QueueConfig, msg: Message) -> bool:
        """Whether a restored FIFO message holds its group's lock.

        The live receive path locks a group to the message it delivers until that message is
        deleted, so a message received and still stored holds it. Messages come in send
        order, so the group's first received one (its head) wins should several claim it.
        """
        if not (self._keep_visibility and cfg.fifo and msg.receive_count > 0):
            return False
        group = (msg.partition or 0, msg.message_group_id)
        if group in self._locked:
            return False
        self._locked.add(group)
        return True

    def _lines(self) -> Iterator[tuple[Any, bytes | str]]:
        for line in self._fh:
            if not line.strip():
                continue
            try:
                yield loads(line), line
            except GoJSONError:
                yield from self._stream(line + self._fh.read())
                return

    def _stream(self, data: bytes) -> Iterator[tuple[Any, str]]:
        try:
            yield from iter_values(data)
        except GoJSONError as exc:
            raise tree_error("ErrSQSEncodeInvalidMessage", f"{self._plan.rel}: {exc}") from None


# --- per-queue encoding -------------------------------------------------------------------------


class _QueuePlan:
    """State of one queue while its messages are read: gates, dedup claims, highest
    sequence number."""

    def __init__(self, cfg: QueueConfig, rel: str, claims: DedupClaims) -> None:
        self.cfg = cfg
        self.rel = rel
        self.partitioned = cfg.partition_count > 1
        self.max_sequence = 0
        self.claims = claims
        self._name = cfg.name.encode()

    def check(self, msg: Message) -> None:
        """Apply the partition gates to one message and record its dedup claim."""
        self._check_partition(msg)
        self.note(
            msg.message_id,
            msg.body,
            msg.message_deduplication_id,
            msg.message_group_id,
            msg.partition,
            msg.send_timestamp_millis,
            msg.sequence_number,
        )

    def note(
        self,
        message_id: str,
        body: bytes | None,
        dedup_id: str,
        group_id: str,
        partition: int | None,
        send_ms: int,
        sequence: int,
    ) -> None:
        """Track a gated message's sequence number and its dedup claim.

        The live dedup id is the explicit one, else sha256(body) hex on content-based
        queues, else there is none.
        """
        self.max_sequence = max(self.max_sequence, sequence)
        if not self.cfg.fifo:
            return
        if dedup_id:
            dedup = dedup_id.encode()
        elif self.cfg.content_based_deduplication:
            dedup = hashlib.sha256(body or b"").hexdigest().encode()
        else:
            return
        if self.partitioned:
            part: int | None = partition or 0
            group = group_id.encode()
        else:
            part, group = None, b""
        key = keys.message_dedup_key(self._name, part, RESTORE_GENERATION, group, dedup)
        self.claims.claim(key, send_ms, sequence, message_id.encode())

    def _check_partition(self, msg: Message) -> None:
        cfg, part = self.cfg, msg.partition
        where = f"{self.rel}: message {msg.message_id!r}"
        if not self.partitioned:
            if part:
                raise tree_error(
                    "ErrSQSEncodeInvalidMessage", f"{where} has partition {part} on a classic queue"
                )
            return
        if part is None:
            raise tree_error(
                "ErrSQSEncodeMissingPartition", f"{where} has no partition (partitioned queue)"
            )
        if part >= cfg.partition_count:
            raise tree_error(
                "ErrSQSEncodeOutOfRangePartition",
                f"{where}: partition {part} >= partition_count {cfg.partition_count}",
            )
        per_queue = cfg.fifo_throughput_limit == PER_QUEUE
        if per_queue and part != 0:
            raise tree_error(
                "ErrSQSEncodePartitionRoutingMismatch",
                f"{where}: partition {part}, but {PER_QUEUE} queues use partition 0 only",
            )
        want = keys.partition_for_group(
            cfg.partition_count, per_queue, msg.message_group_id.encode()
        )
        if part != want:
            raise tree_error(
                "ErrSQSEncodePartitionHashMismatch",
                f"{where}: partition {part}, but group {msg.message_group_id!r} hashes to {want}",
            )


def _message_records(
    cfg: QueueConfig,
    partitioned: bool,
    msg: Message,
    keep_visibility: bool,
    owns_group_lock: bool = False,
) -> list[tuple[bytes, bytes]]:
    """Data, vis and byage rows of one message, plus its group's FIFO lock when it holds it.

    The vis row is ordered by the time the message is next visible: its visible-at when the
    visibility state is kept (an in-flight message stays hidden until then), else its
    available-at.
    """
    name = cfg.name.encode()
    part = (msg.partition or 0) if partitioned else None
    gen = RESTORE_GENERATION
    msg_id = msg.message_id.encode()
    visible = (msg.visible_at_millis if keep_visibility else 0) or msg.available_at_millis
    data = stored_value(msg, gen, keep_visibility=keep_visibility)
    data_key, vis_key, byage_key = keys.message_keys(
        name, part, gen, visible, msg.send_timestamp_millis, msg_id
    )
    out = [(data_key, data), (vis_key, msg_id), (byage_key, msg_id)]
    if owns_group_lock:
        # Only the owner's id steers the live receive path; the two times are informational
        # (the acquisition time is the last receive, which no record keeps: the first one
        # stands in for it).
        lock = {
            "message_id": msg.message_id,
            "acquired_at_ms": msg.first_receive_millis,
            "visible_at_ms": msg.visible_at_millis,
        }
        group_key = keys.message_group_key(name, part, gen, msg.message_group_id.encode())
        out.append((group_key, gojson.marshal(lock)))
    return out


class SQSEncoder:
    """Encode adapter for ``sqs/``: yields ``(user_key, user_value)`` records."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._ctx = ctx
        self._tree = ctx.tree
        # A full-fidelity tree keeps each message's visibility state and its queue's
        # timestamps; a default one has neither (they are zero, and restored as such).
        self._keep_visibility = ctx.full_fidelity
        self._shift_ms = ctx.time_shift_ms
        self._queues = 0

    async def batches(self) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        """Every record of every queue directory, queue by queue, a read batch at a time."""
        for name in await self._tree.run(_queue_dirs, self._tree):
            async for batch in self._queue_batches(name):
                yield batch

    async def _queue_batches(self, dirname: str) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        cfg, fh = await self._tree.run(_open_queue, self._tree, dirname)
        name = cfg.name.encode()
        messages_rel = f"{layout.ROOT}/{dirname}/{layout.MESSAGES_FILE}"
        # Numbered, not named: a queue name need not be a usable file name.
        self._queues += 1
        claims = DedupClaims(
            self._ctx.scratch / f"dedup-{self._queues}", partitioned=cfg.partition_count > 1
        )
        plan = _QueuePlan(cfg, messages_rel, claims)
        try:
            yield [
                (keys.queue_meta_key(name), stored_meta_value(cfg, RESTORE_GENERATION)),
                (keys.queue_gen_key(name), str(RESTORE_GENERATION).encode()),
            ]
            if fh is not None:
                reader = _MessageReader(
                    fh, plan, keep_visibility=self._keep_visibility, shift_ms=self._shift_ms
                )
                while batch := await self._tree.run(reader.batch):
                    yield batch
                if reader.missing_id:
                    raise tree_error(
                        "ErrSQSEncodeInvalidMessage", f"{messages_rel}: message without message_id"
                    )
                self._ctx.report.count("sqs.messages_encoded", reader.count)
                rows = claims.rows()
                while batch := await self._tree.run(_take, rows):
                    yield batch
        finally:
            if fh is not None:
                fh.close()  # a read-only descriptor: closing it does not block
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(claims.close)
        if cfg.fifo and plan.max_sequence > 0:
            # The live sender reads this as the last issued number and adds one.
            yield [(keys.queue_seq_key(name), str(plan.max_sequence).encode())]
        self._ctx.report.count("sqs.queues_encoded")


def _take(rows: Iterator[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The next ``_BATCH`` dedup rows (they may come from spilled runs: a worker thread)."""
    return list(islice(rows, _BATCH))
