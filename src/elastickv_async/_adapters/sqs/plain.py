"""The encoder's quick path: the records of a plain ``messages.jsonl`` object, built straight
from the parsed JSON.

Nearly every line a decode writes is an object of well-typed message fields with a string
body, no attributes and no receipt token. For such an object the data, vis and byage records
follow from its fields without building a :class:`~.values.Message` first, with each
queue's key head encoded once. Anything else (and a message the caller must treat specially)
is left to the general path, which also words the errors; both give the same bytes.
"""

from __future__ import annotations

import binascii
import struct
from typing import Any, Final, NamedTuple

import orjson

from ..._core import gojson
from ..._core.dump.names import b64url_segment
from . import keys

__all__ = ["PlainMessage", "PlainQueue"]

_I64_MIN: Final = -(1 << 63)
_I64_MAX: Final = (1 << 63) - 1
_U64_MAX: Final = (1 << 64) - 1
_pack_u64: Final = struct.Struct(">Q").pack

#: The fields a plain object may carry (the dump line's, attributes and partition aside).
_FIELDS: Final = frozenset(
    (
        "message_id",
        "body",
        "md5_of_body",
        "md5_of_message_attributes",
        "sender_id",
        "send_timestamp_millis",
        "available_at_millis",
        "visible_at_millis",
        "receive_count",
        "first_receive_millis",
        "current_receipt_token",
        "queue_generation",
        "message_group_id",
        "message_deduplication_id",
        "sequence_number",
        "dead_letter_source_arn",
    )
)


class PlainMessage(NamedTuple):
    """What the queue-wide checks need of a message taken by the quick path."""

    message_id: str
    body: bytes
    send_ms: int
    sequence: int
    dedup_id: str
    records: list[tuple[bytes, bytes]]


class PlainQueue:
    """The quick path for the messages of one queue with unpartitioned keys, restored at
    ``generation``; ``fifo``, ``keep_visibility`` and ``shift_ms`` as for the general path."""

    def __init__(
        self, name: bytes, generation: int, *, fifo: bool, keep_visibility: bool, shift_ms: int
    ) -> None:
        head = keys.message_data_key(name, None, generation, b"")[len(keys.MSG_DATA_PREFIX) :]
        self._data = keys.MSG_DATA_PREFIX + head
        self._vis = keys.MSG_VIS_PREFIX + head
        self._byage = keys.MSG_BYAGE_PREFIX + head
        self._generation = generation
        self._fifo = fifo
        self._keep_visibility = keep_visibility
        self._shift_ms = shift_ms

    def message(self, obj: Any) -> PlainMessage | None:
        """The records of the plain message ``obj`` (a parsed line), else ``None``.

        A message without an id, or a received message of a full-fidelity FIFO queue (it may
        hold its group's lock), is never plain here.
        """
        if type(obj) is not dict or not obj.keys() <= _FIELDS:
            return None
        get = obj.get
        message_id = get("message_id", "")
        body = get("body")
        md5_of_body = get("md5_of_body", "")
        md5_of_attributes = get("md5_of_message_attributes", "")
        sender_id = get("sender_id", "")
        group_id = get("message_group_id", "")
        dedup_id = get("message_deduplication_id", "")
        dead_letter = get("dead_letter_source_arn", "")
        send_ms = get("send_timestamp_millis", 0)
        available_ms = get("available_at_millis", 0)
        visible_ms = get("visible_at_millis", 0)
        receive_count = get("receive_count", 0)
        first_receive_ms = get("first_receive_millis", 0)
        generation = get("queue_generation", 0)
        sequence = get("sequence_number", 0)
        if not (
            type(message_id)
            is type(body)
            is type(md5_of_body)
            is type(md5_of_attributes)
            is type(sender_id)
            is type(group_id)
            is type(dedup_id)
            is type(dead_letter)
            is str
            and type(send_ms)
            is type(available_ms)
            is type(visible_ms)
            is type(receive_count)
            is type(first_receive_ms)
            is type(generation)
            is type(sequence)
            is int
            and message_id
            and min(send_ms, available_ms, visible_ms, receive_count, first_receive_ms) >= _I64_MIN
            and max(send_ms, available_ms, visible_ms, receive_count, first_receive_ms) <= _I64_MAX
            and 0 <= sequence <= _U64_MAX
            and 0 <= generation <= _U64_MAX
            and get("current_receipt_token") is None
        ):
            return None
        keep = self._keep_visibility
        if keep and self._fifo and receive_count > 0:
            return None  # it may hold its group's lock: the general path decides
        shift = self._shift_ms
        if shift:
            send_ms = send_ms + shift if send_ms else 0
            available_ms = available_ms + shift if available_ms else 0
            visible_ms = visible_ms + shift if visible_ms else 0
            first_receive_ms = first_receive_ms + shift if first_receive_ms else 0
        raw_body = body.encode()
        out: dict[str, Any] = {
            "message_id": message_id,
            "body": binascii.b2a_base64(raw_body, newline=False).decode("ascii"),
            "md5_of_body": md5_of_body,
        }
        if md5_of_attributes:
            out["md5_of_message_attributes"] = md5_of_attributes
        if sender_id:
            out["sender_id"] = sender_id
        out["send_timestamp_millis"] = send_ms
        out["available_at_millis"] = available_ms
        if keep:
            out["visible_at_millis"] = visible_ms
            out["receive_count"] = receive_count
            if first_receive_ms:
                out["first_receive_millis"] = first_receive_ms
        else:
            out["visible_at_millis"] = 0
            out["receive_count"] = 0
        out["current_receipt_token"] = None
        out["queue_generation"] = self._generation
        if group_id:
            out["message_group_id"] = group_id
        if dedup_id:
            out["message_deduplication_id"] = dedup_id
        if sequence:
            out["sequence_number"] = sequence
        if dead_letter:
            out["dead_letter_source_arn"] = dead_letter
        document = orjson.dumps(out)
        if b"<" in document or b">" in document or b"&" in document or not document.isascii():
            document = gojson.marshal(out)  # Go's escaping; rare in message text
        raw_id = message_id.encode()
        segment = b64url_segment(raw_id)
        # The vis row orders by the time the message is next visible (see the general path).
        visible = (visible_ms if keep else 0) or available_ms
        records = [
            (self._data + segment, keys.MESSAGE_MAGIC + document),
            (self._vis + _pack_u64(max(0, visible)) + segment, raw_id),
            (self._byage + _pack_u64(max(0, send_ms)) + segment, raw_id),
        ]
        return PlainMessage(message_id, raw_body, send_ms, sequence, dedup_id, records)
