"""The per-message work of the SQS encoder: ``messages.jsonl`` lines in, records out.

One call takes a run of lines of one queue and returns, in line order, the records of its
messages, their dedup claims and FIFO group-lock candidates, the highest sequence number,
and where it stopped: the first message that failed a gate (its error, as code and text), or
the first line that is not one JSON value (the caller reads the rest as a stream). The call
is pure and its arguments and result pickle, so it may run in a worker process; what
depends on earlier calls (dedup winners, group locks, a message without an id) is the
caller's. This module stays light for that: no adapter SPEC, no structlog, no anyio.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from ..._core import gojson
from ..._core.gojson_read import GoJSONError, loads
from . import keys
from .errors import TreeCode
from .keys import RESTORE_GENERATION
from .plain import PlainQueue
from .values import Message, QueueConfig, parse_dump_message, shifted, stored_value

__all__ = ["Encoded", "QueueSettings", "encode_lines", "encode_values", "started"]

#: The live HT-FIFO throughput mode that routes every group to partition 0.
PER_QUEUE: Final = "perQueue"

Record = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """What encoding one queue's messages needs; ``rel`` names its ``messages.jsonl``."""

    cfg: QueueConfig
    rel: str
    keep_visibility: bool
    shift_ms: int

    @property
    def partitioned(self) -> bool:
        """Whether the queue's keys carry a partition (HT-FIFO)."""
        return self.cfg.partition_count > 1


@dataclass(slots=True)
class Encoded:
    """The outcome of one run of lines, in line order (see the module docstring)."""

    records: list[Record] = field(default_factory=list)
    #: ``(row key, send ms, sequence, message id)`` of every message with a dedup id.
    claims: list[tuple[bytes, int, int, bytes]] = field(default_factory=list)
    #: ``((partition, group), lock record)`` of every received message that may hold its
    #: group's lock (full-fidelity FIFO queues): the first of each group holds it.
    locks: list[tuple[tuple[int, str], Record]] = field(default_factory=list)
    max_sequence: int = 0
    messages: int = 0
    #: A message without an id was met: no records from it on (the caller raises at the end).
    missing_id: bool = False
    #: The ``(code, message)`` of the first message that failed; nothing after it was read.
    failure: tuple[TreeCode, str] | None = None
    #: The index of the first line that is not one JSON value; nothing from it on was read.
    stream_from: int | None = None


def started() -> None:
    """Nothing: the first call of a worker process, which starts it and imports this module
    there before its lanes send runs."""


def encode_lines(settings: QueueSettings, lines: list[bytes]) -> Encoded:
    """Encode ``lines`` (each one JSON object, blank ones skipped) as far as they go."""
    out = Encoded()
    step = _Encoder(settings, out)
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            value = loads(line)
        except GoJSONError:
            out.stream_from = index
            break
        if not step.add(value, line):
            break
    return out


def encode_values(settings: QueueSettings, values: Iterable[tuple[Any, bytes | str]]) -> Encoded:
    """Encode already parsed ``(value, source text)`` pairs (the stream reader's)."""
    out = Encoded()
    step = _Encoder(settings, out)
    for value, document in values:
        if not step.add(value, document):
            break
    return out


class _Encoder:
    def __init__(self, settings: QueueSettings, out: Encoded) -> None:
        self._settings = settings
        self._out = out
        cfg = settings.cfg
        self._name = cfg.name.encode()
        self._plain = (
            None
            if settings.partitioned
            else PlainQueue(
                self._name,
                RESTORE_GENERATION,
                fifo=cfg.fifo,
                keep_visibility=settings.keep_visibility,
                shift_ms=settings.shift_ms,
            )
        )

    def add(self, value: Any, document: bytes | str) -> bool:
        """Gate and encode one message; False once a message failed."""
        out = self._out
        out.messages += 1
        quick = None if self._plain is None else self._plain.message(value)
        if quick is not None:
            self._note(
                quick.message_id,
                quick.body,
                quick.dedup_id,
                "",
                None,
                quick.send_ms,
                quick.sequence,
            )
            if not out.missing_id:
                out.records += quick.records
            return True
        settings = self._settings
        try:
            msg = parse_dump_message(value, document)
        except GoJSONError as exc:
            out.failure = ("ErrSQSEncodeInvalidMessage", f"{settings.rel}: {exc}")
            return False
        msg = shifted(msg, settings.shift_ms)
        out.failure = _partition_fault(settings, msg)
        if out.failure is not None:
            return False
        self._note(
            msg.message_id,
            msg.body,
            msg.message_deduplication_id,
            msg.message_group_id,
            msg.partition,
            msg.send_timestamp_millis,
            msg.sequence_number,
        )
        if not msg.message_id:
            out.missing_id = True
        if out.missing_id:
            return True
        out.records += message_records(settings, msg)
        cfg = settings.cfg
        if settings.keep_visibility and cfg.fifo and msg.receive_count > 0:
            out.locks.append(((msg.partition or 0, msg.message_group_id), _lock(settings, msg)))
        return True

    def _note(
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
        out = self._out
        if sequence > out.max_sequence:
            out.max_sequence = sequence
        cfg = self._settings.cfg
        if not cfg.fifo:
            return
        if dedup_id:
            dedup = dedup_id.encode()
        elif cfg.content_based_deduplication:
            dedup = hashlib.sha256(body or b"").hexdigest().encode()
        else:
            return
        if self._settings.partitioned:
            part: int | None = partition or 0
            group = group_id.encode()
        else:
            part, group = None, b""
        key = keys.message_dedup_key(self._name, part, RESTORE_GENERATION, group, dedup)
        out.claims.append((key, send_ms, sequence, message_id.encode()))


def _partition_fault(settings: QueueSettings, msg: Message) -> tuple[TreeCode, str] | None:
    """The reference's partition gates for one message: ``(code, message)`` of the first
    that fails, else ``None``."""
    cfg, part = settings.cfg, msg.partition
    where = f"{settings.rel}: message {msg.message_id!r}"
    if not settings.partitioned:
        if part:
            return "ErrSQSEncodeInvalidMessage", f"{where} has partition {part} on a classic queue"
        return None
    if part is None:
        return "ErrSQSEncodeMissingPartition", f"{where} has no partition (partitioned queue)"
    if part >= cfg.partition_count:
        return (
            "ErrSQSEncodeOutOfRangePartition",
            f"{where}: partition {part} >= partition_count {cfg.partition_count}",
        )
    per_queue = cfg.fifo_throughput_limit == PER_QUEUE
    if per_queue and part != 0:
        return (
            "ErrSQSEncodePartitionRoutingMismatch",
            f"{where}: partition {part}, but {PER_QUEUE} queues use partition 0 only",
        )
    want = keys.partition_for_group(cfg.partition_count, per_queue, msg.message_group_id.encode())
    if part != want:
        return (
            "ErrSQSEncodePartitionHashMismatch",
            f"{where}: partition {part}, but group {msg.message_group_id!r} hashes to {want}",
        )
    return None


def message_records(settings: QueueSettings, msg: Message) -> list[Record]:
    """Data, vis and byage rows of one message.

    The vis row is ordered by the time the message is next visible: its visible-at when the
    visibility state is kept (an in-flight message stays hidden until then), else its
    available-at.
    """
    keep = settings.keep_visibility
    part = (msg.partition or 0) if settings.partitioned else None
    msg_id = msg.message_id.encode()
    visible = (msg.visible_at_millis if keep else 0) or msg.available_at_millis
    data = stored_value(msg, RESTORE_GENERATION, keep_visibility=keep)
    data_key, vis_key, byage_key = keys.message_keys(
        settings.cfg.name.encode(),
        part,
        RESTORE_GENERATION,
        visible,
        msg.send_timestamp_millis,
        msg_id,
    )
    return [(data_key, data), (vis_key, msg_id), (byage_key, msg_id)]


def _lock(settings: QueueSettings, msg: Message) -> Record:
    """The group-lock row of a received FIFO message.

    Only the owner's id steers the live receive path; the two times are informational (the
    acquisition time is the last receive, which no record keeps: the first one stands in for
    it).
    """
    lock = {
        "message_id": msg.message_id,
        "acquired_at_ms": msg.first_receive_millis,
        "visible_at_ms": msg.visible_at_millis,
    }
    part = (msg.partition or 0) if settings.partitioned else None
    key = keys.message_group_key(
        settings.cfg.name.encode(), part, RESTORE_GENERATION, msg.message_group_id.encode()
    )
    return key, gojson.marshal(lock)
