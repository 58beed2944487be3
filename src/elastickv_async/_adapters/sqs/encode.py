"""SQS encoder: ``sqs/<queue>/`` -> ``!sqs|`` records (REFERENCE_NOTES §6.6).

Per queue directory: the queue meta and its generation counter, then for every message of
``messages.jsonl`` its data record and the ``vis``/``byage`` index rows, the FIFO ``dedup``
row of the latest send per dedup tuple, and the FIFO sequence counter (the highest sequence
number). One pass reads the file: the dedup rows and the counter come after the last line,
and a message without an id is reported only once every line has passed the gates (the
reference checks every line before it writes any record). Everything is restored at
generation 1, with visibility state zeroed unless the tree is a full-fidelity one (then a
received FIFO message also gets its group's lock back); ``--rebase-time`` moves every message
time by the context's shift.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import IO, Any, Final

from ..._core import gojson
from ..._core.dump.names import encode_segment
from ..._core.dump.tree import DumpTree
from ..._core.gojson_read import GoJSONError, iter_values, loads
from ..base import EncodeContext
from . import keys, layout
from .errors import tree_error
from .keys import RESTORE_GENERATION
from .spill import right_sized
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

#: The live FIFO dedup window.
DEDUP_WINDOW_MS: Final = 300_000
#: The live HT-FIFO partition ceiling.
MAX_PARTITIONS: Final = 32
PER_MESSAGE_GROUP_ID: Final = "perMessageGroupId"
PER_QUEUE: Final = "perQueue"
SCOPE_MESSAGE_GROUP: Final = "messageGroup"
SCOPE_QUEUE: Final = "queue"

_BATCH: Final = 2048


def _wrap_int64(value: int) -> int:
    """Go's int64 addition wraps around."""
    return ((value + (1 << 63)) % (1 << 64)) - (1 << 63)


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
    several values on one line) switches to a whole-remainder stream parse.
    """

    def __init__(self, fh: IO[bytes], rel: str) -> None:
        self._fh = fh
        self._rel = rel
        self._values: Iterator[tuple[Any, bytes | str]] = self._lines()

    def batch(self) -> list[Message]:
        """Up to ``_BATCH`` records; an empty list at the end."""
        out = []
        for value, document in self._values:
            try:
                out.append(parse_dump_message(value, document))
            except GoJSONError as exc:
                raise tree_error("ErrSQSEncodeInvalidMessage", f"{self._rel}: {exc}") from None
            if len(out) >= _BATCH:
                break
        return out

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
            raise tree_error("ErrSQSEncodeInvalidMessage", f"{self._rel}: {exc}") from None


# --- per-queue encoding -------------------------------------------------------------------------


def _dedup_id(msg: Message, cfg: QueueConfig) -> bytes:
    """The live dedup id: explicit, else sha256(body) hex on content-based queues, else none."""
    if msg.message_deduplication_id:
        return msg.message_deduplication_id.encode()
    if cfg.content_based_deduplication:
        return hashlib.sha256(msg.body or b"").hexdigest().encode()
    return b""


@dataclass(slots=True)
class _Winner:
    """The message that owns a dedup row so far, with what its row is made of."""

    send_ms: int
    rank: tuple[int, bytes]
    message_id: str
    sequence_number: int
    partition: int | None
    group_id: bytes
    dedup_id: bytes


class _QueuePlan:
    """State of one queue while its messages are read: gates, dedup winners, highest
    sequence number."""

    def __init__(self, cfg: QueueConfig, rel: str) -> None:
        self.cfg = cfg
        self.rel = rel
        self.partitioned = cfg.partition_count > 1
        self.max_sequence = 0
        self._winners: dict[tuple[int, bytes, bytes], _Winner] = {}

    def check(self, msg: Message) -> None:
        """Apply the partition gates to one message and track its dedup claim."""
        self._check_partition(msg)
        self.max_sequence = max(self.max_sequence, msg.sequence_number)
        if not self.cfg.fifo:
            return
        dedup = _dedup_id(msg, self.cfg)
        if not dedup:
            return
        if self.partitioned:
            tuple_key = (msg.partition or 0, msg.message_group_id.encode(), dedup)
            # The reference sorts partitioned queues first: ties go to the lowest (seq, id).
            rank = (msg.sequence_number, msg.message_id.encode())
        else:
            tuple_key = (0, b"", dedup)
            rank = (0, b"")  # classic queues: ties go to the first line
        best = self._winners.get(tuple_key)
        if (
            best is None
            or msg.send_timestamp_millis > best.send_ms
            or (msg.send_timestamp_millis == best.send_ms and rank < best.rank)
        ):
            self._winners[tuple_key] = _Winner(
                msg.send_timestamp_millis,
                rank,
                msg.message_id,
                msg.sequence_number,
                msg.partition,
                msg.message_group_id.encode(),
                dedup,
            )

    def dedup_records(self) -> Iterator[tuple[bytes, bytes]]:
        """The dedup row of every dedup tuple, owned by its winning message."""
        name = self.cfg.name.encode()
        for w in self._winners.values():
            part = (w.partition or 0) if self.partitioned else None
            value: dict[str, Any] = {
                "message_id": w.message_id,
                "send_timestamp_ms": w.send_ms,
                "expires_at_millis": _wrap_int64(w.send_ms + DEDUP_WINDOW_MS),
            }
            if w.sequence_number:
                value["original_sequence"] = w.sequence_number
            key = keys.message_dedup_key(name, part, RESTORE_GENERATION, w.group_id, w.dedup_id)
            yield key, right_sized(gojson.marshal(value))

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
        out.append((group_key, right_sized(gojson.marshal(lock))))
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

    async def batches(self) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        """Every record of every queue directory, queue by queue, a read batch at a time."""
        for name in await self._tree.run(_queue_dirs, self._tree):
            async for batch in self._queue_batches(name):
                yield batch

    async def _queue_batches(self, dirname: str) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        cfg, fh = await self._tree.run(_open_queue, self._tree, dirname)
        name = cfg.name.encode()
        messages_rel = f"{layout.ROOT}/{dirname}/{layout.MESSAGES_FILE}"
        plan = _QueuePlan(cfg, messages_rel)
        try:
            yield [
                (keys.queue_meta_key(name), stored_meta_value(cfg, RESTORE_GENERATION)),
                (keys.queue_gen_key(name), str(RESTORE_GENERATION).encode()),
            ]
            if fh is not None:
                async for batch in self._message_batches(_MessageReader(fh, messages_rel), plan):
                    yield batch
                dedup = plan.dedup_records()
                while batch := list(islice(dedup, _BATCH)):
                    yield batch
        finally:
            if fh is not None:
                fh.close()  # a read-only descriptor: closing it does not block
        if cfg.fifo and plan.max_sequence > 0:
            # The live sender reads this as the last issued number and adds one.
            yield [(keys.queue_seq_key(name), str(plan.max_sequence).encode())]
        self._ctx.report.count("sqs.queues_encoded")

    async def _message_batches(
        self, reader: _MessageReader, plan: _QueuePlan
    ) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        """The records of every message (the dedup rows aside), each gated first, a read
        batch at a time."""
        locked: set[tuple[int, str]] = set()
        count = 0
        missing_id = False
        while batch := await self._tree.run(reader.batch):
            out: list[tuple[bytes, bytes]] = []
            for msg in batch:
                msg = shifted(msg, self._shift_ms)
                plan.check(msg)
                count += 1
                if not msg.message_id:
                    missing_id = True  # raised once every line has passed the gates
                if missing_id:
                    continue
                out += _message_records(
                    plan.cfg,
                    plan.partitioned,
                    msg,
                    self._keep_visibility,
                    self._holds_group_lock(plan.cfg, msg, locked),
                )
            yield out
        if missing_id:
            raise tree_error(
                "ErrSQSEncodeInvalidMessage", f"{plan.rel}: message without message_id"
            )
        self._ctx.report.count("sqs.messages_encoded", count)

    def _holds_group_lock(
        self, cfg: QueueConfig, msg: Message, locked: set[tuple[int, str]]
    ) -> bool:
        """Whether a restored FIFO message holds its group's lock.

        The live receive path locks a group to the message it delivers until that message is
        deleted, so a message received and still stored holds it. Messages come in send
        order, so the group's first received one (its head) wins should several claim it.
        """
        if not (self._keep_visibility and cfg.fifo and msg.receive_count > 0):
            return False
        group = (msg.partition or 0, msg.message_group_id)
        if group in locked:
            return False
        locked.add(group)
        return True
