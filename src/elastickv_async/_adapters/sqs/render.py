"""Rendering SQS messages: live ``!sqs|msg|data|`` records -> ``messages.jsonl`` lines.

Pure computation, run in worker processes (and threads) by :class:`~.decode.SQSDecoder`:
this module imports only what rendering needs, so that a worker process starts quickly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..._core.gojson_read import GoJSONError
from ..._core.scratch import Record
from . import keys
from .errors import record_error
from .spill import message_key, pack_run, right_sized
from .values import decode_stored_message, dump_line, plain_dump_line, shifted

__all__ = ["Chunk", "RenderSettings", "Rendered", "Runner", "render_messages"]


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
#: Runs :func:`render_messages` somewhere: ``Workers.run`` or ``anyio.to_thread.run_sync``.
Runner = Callable[..., Awaitable[list[Rendered]]]


def render_messages(
    records: list[tuple[bytes, bytes]], settings: RenderSettings, first_arrival: int
) -> list[Rendered]:
    """Render message records (in snapshot order, arrival numbers from ``first_arrival``)
    into sorted runs, one per queue and generation, in the order each first appears.

    Runs in a worker process: computes only. A malformed record raises its typed error.
    """
    groups: dict[tuple[str, int], list[Record]] = {}
    preserve, unshift_ms = settings.preserve_visibility, settings.unshift_ms
    queue_of = keys.MessageDataQueues()
    for arrival, (key, value) in enumerate(records, first_arrival):
        encoded, partition = queue_of(key)
        quick = (
            None if unshift_ms else plain_dump_line(value, partition, preserve_visibility=preserve)
        )
        if quick is not None:
            # The line is already in an allocation of its own size.
            line, send_ms, sequence, message_id, generation = quick
            sort_key = message_key(send_ms, sequence, message_id.encode(), arrival)
        else:
            try:
                msg = decode_stored_message(value)
            except GoJSONError as exc:
                raise record_error(
                    "ErrSQSInvalidMessage",
                    f"invalid SQS message at key {keys.key_repr(key)}: {exc}",
                ) from None
            if not preserve:
                msg.visible_at_millis = 0
                msg.current_receipt_token = None
                msg.receive_count = 0
                msg.first_receive_millis = 0
            msg = shifted(msg, unshift_ms)
            msg.partition = partition
            generation = msg.queue_generation
            sort_key = message_key(
                msg.send_timestamp_millis, msg.sequence_number, msg.message_id.encode(), arrival
            )
            line = right_sized(dump_line(msg))
        group = groups.get((encoded, generation))
        if group is None:
            group = groups[encoded, generation] = []
        group.append((sort_key, line))
    return [
        (encoded, generation, pack_run(group), len(group))
        for (encoded, generation), group in groups.items()
    ]
