"""Rendering SQS messages: live ``!sqs|msg|data|`` records -> ``messages.jsonl`` lines.

Pure computation, run in worker processes (and threads) by :class:`~.decode.SQSDecoder`:
this module imports only what rendering needs, so that a worker process starts quickly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from itertools import count
from typing import Final

import msgspec

from ..._core.gojson_read import GoJSONError
from ..._core.scratch import Record
from . import keys
from .errors import record_error
from .spill import message_key, pack_run
from .values import (
    PlainLine,
    decode_stored_message,
    dump_line,
    dump_plain_lines,
    plain_line,
    shifted,
)

__all__ = ["Chunk", "RenderSettings", "Rendered", "Runner", "pack_records", "render_messages"]


@dataclass(frozen=True, slots=True)
class RenderSettings:
    """What :func:`render_messages` needs to know of the run (picklable)."""

    preserve_visibility: bool
    unshift_ms: int


#: A chunk of message records to render: the arrival number of its first, its records.
Chunk = tuple[int, list[tuple[bytes, bytes]]]
#: What a chunk renders to, per queue and generation: the queue's encoded name, the
#: generation, its messages as one sorted run (:func:`~.spill.pack_run`) and their number.
Rendered = tuple[str, int, bytes, int]
_PACK_RECORDS: Final = msgspec.msgpack.Encoder()
_UNPACK_RECORDS: Final = msgspec.msgpack.Decoder(list[tuple[bytes, bytes]])


def pack_records(records: list[tuple[bytes, bytes]]) -> bytes:
    """``records`` as one byte string for :func:`render_messages` in another process.

    A chunk crosses the pipe to a worker process this way rather than pickled: pickle
    memoises each of its thousands of objects (some 2.5 ms a chunk, on the event loop),
    msgpack copies them (some 0.15 ms)."""
    return _PACK_RECORDS.encode(records)


#: Runs :func:`render_messages` somewhere: ``Workers.run`` or ``anyio.to_thread.run_sync``.
Runner = Callable[..., Awaitable[list[Rendered]]]


@dataclass(slots=True)
class _Group:
    """The messages of one queue and generation in a chunk, as they are rendered."""

    #: Sort keys and structs of the messages taken by the quick path, to encode at once.
    plain_keys: list[bytes] = field(default_factory=list)
    plain: list[PlainLine] = field(default_factory=list)
    #: ``(sort key, line)`` of the others.
    general: list[Record] = field(default_factory=list)

    def run(self) -> tuple[bytes, int]:
        records = list(zip(self.plain_keys, dump_plain_lines(self.plain), strict=True))
        records += self.general
        return pack_run(records), len(records)


def render_messages(
    records: list[tuple[bytes, bytes]] | bytes, settings: RenderSettings, first_arrival: int
) -> list[Rendered]:
    """Render message records (in snapshot order, arrival numbers from ``first_arrival``;
    a list or :func:`pack_records`) into sorted runs, one per queue and generation, in the
    order each first appears.

    Runs in a worker process: computes only. A malformed record raises its typed error.
    """
    if isinstance(records, bytes):
        records = _UNPACK_RECORDS.decode(records)
    queues: Iterable[tuple[str, int | None]] | None
    queues = keys.message_data_queues([key for key, _ in records])
    if queues is None:
        # A malformed key: each key is parsed where its record is, so that the first
        # malformed record (key or value) raises.
        queue_of = keys.MessageDataQueues()
        queues = (queue_of(key) for key, _ in records)
    groups: dict[tuple[str, int], _Group] = {}
    preserve, unshift_ms = settings.preserve_visibility, settings.unshift_ms
    # Messages of one queue and generation are mostly contiguous: the group found last is
    # looked up again only when they change.
    last: tuple[str, int] = ("", -1)
    group = _Group()
    for arrival, (key, value), (encoded, partition) in zip(
        count(first_arrival), records, queues, strict=False
    ):
        plain = None if unshift_ms else plain_line(value, partition, preserve_visibility=preserve)
        if plain is None:
            generation, record = _general(key, value, partition, settings, arrival)
        else:
            generation = plain.queue_generation
        if last[1] != generation or last[0] != encoded:
            last = (encoded, generation)
            found = groups.get(last)
            group = groups[last] = _Group() if found is None else found
        if plain is None:
            group.general.append(record)
            continue
        sort_key = message_key(
            plain.send_timestamp_millis, plain.sequence_number, plain.message_id.encode(), arrival
        )
        group.plain_keys.append(sort_key)
        group.plain.append(plain)
    return [(encoded, generation, *group.run()) for (encoded, generation), group in groups.items()]


def _general(
    key: bytes, value: bytes, partition: int | None, settings: RenderSettings, arrival: int
) -> tuple[int, Record]:
    """A message the quick path leaves: its generation and ``(sort key, line)``."""
    try:
        msg = decode_stored_message(value)
    except GoJSONError as exc:
        raise record_error(
            "ErrSQSInvalidMessage",
            f"invalid SQS message at key {keys.key_repr(key)}: {exc}",
        ) from None
    if not settings.preserve_visibility:
        msg.visible_at_millis = 0
        msg.current_receipt_token = None
        msg.receive_count = 0
        msg.first_receive_millis = 0
    msg = shifted(msg, settings.unshift_ms)
    msg.partition = partition
    sort_key = message_key(
        msg.send_timestamp_millis, msg.sequence_number, msg.message_id.encode(), arrival
    )
    return msg.queue_generation, (sort_key, dump_line(msg))
