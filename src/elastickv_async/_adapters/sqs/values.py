"""SQS store values and their dump forms: queue configuration and messages.

Queue configuration: the live ``!sqs|queue|meta|`` value is ``QUEUE_META_MAGIC`` + JSON of the
adapter's catalog record; the dump's ``_queue.json`` keeps the AWS-style projection (FIFO,
dedup, timeouts, redrive and the immutable HT-FIFO attributes). Live-only fields (generation,
tags, throttle, timestamps) are not part of it.

Messages: the live ``!sqs|msg|data|`` value and the dump's ``messages.jsonl`` line carry the
same JSON field names. They differ in the body (the live value stores padded standard
base64; the dump stores a plain string when the body is valid UTF-8, else a
``{"base64": <base64url>}`` envelope) and in ``partition``, which only the dump has (it comes
from a partitioned key). Message attributes are Go ``json.RawMessage`` values and keep their
source text.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import orjson

from ..._core import gojson
from ..._core.dump.names import b64url_decode, b64url_encode
from ..._core.gojson import go_str
from ..._core.gojson_read import (
    GoJSONError,
    as_object,
    get_bool,
    get_bytes,
    get_int,
    get_str,
    loads,
    raw_member,
    raw_object_members,
)
from .keys import MESSAGE_MAGIC, QUEUE_META_MAGIC

__all__ = [
    "FORMAT_VERSION",
    "TIMESTAMP_FIELDS",
    "Message",
    "QueueConfig",
    "decode_stored_message",
    "decode_stored_meta",
    "dump_line",
    "parse_dump_message",
    "parse_queue_json",
    "plain_dump_line",
    "queue_json",
    "shifted",
    "stored_meta_value",
    "stored_value",
]

# --- queue configuration ---------------------------------------------------------------------

#: ``_queue.json`` ``format_version``.
FORMAT_VERSION: Final = 1

#: Trailing fields omitted when empty, in declaration order. The live record always carries
#: the first two; the dump projection omits them when zero.
_OPTIONAL_TAIL: Final = (
    "receive_message_wait_seconds",
    "maximum_message_size",
    "redrive_policy",
    "redrive_allow_policy",
    "partition_count",
    "fifo_throughput_limit",
    "deduplication_scope",
)


@dataclass(slots=True)
class QueueConfig:
    """The restorable configuration of one queue."""

    name: str
    fifo: bool = False
    content_based_deduplication: bool = False
    visibility_timeout_seconds: int = 0
    message_retention_seconds: int = 0
    delay_seconds: int = 0
    receive_message_wait_seconds: int = 0
    maximum_message_size: int = 0
    redrive_policy: str = ""
    redrive_allow_policy: str = ""
    partition_count: int = 0
    fifo_throughput_limit: str = ""
    deduplication_scope: str = ""
    #: Live-only wall-clock times (Unix ms; 0: unknown). Only a full-fidelity ``_queue.json``
    #: carries them: the node reports the first two as CreatedTimestamp/LastModifiedTimestamp
    #: and rate-limits PurgeQueue by the third.
    created_at_millis: int = 0
    last_modified_at_millis: int = 0
    last_purged_at_millis: int = 0


#: The full-fidelity fields of ``_queue.json``, spelled as in the live record.
TIMESTAMP_FIELDS: Final = ("last_purged_at_millis", "created_at_millis", "last_modified_at_millis")


def _timestamps(obj: dict[str, Any]) -> dict[str, Any]:
    return {name: get_int(obj, name) for name in TIMESTAMP_FIELDS}


def _common(obj: dict[str, Any]) -> dict[str, Any]:
    """Fields spelled the same in the live record and in ``_queue.json``."""
    return {
        "visibility_timeout_seconds": get_int(obj, "visibility_timeout_seconds"),
        "message_retention_seconds": get_int(obj, "message_retention_seconds"),
        "delay_seconds": get_int(obj, "delay_seconds"),
        "receive_message_wait_seconds": get_int(obj, "receive_message_wait_seconds"),
        "maximum_message_size": get_int(obj, "maximum_message_size"),
        "redrive_policy": get_str(obj, "redrive_policy"),
        "redrive_allow_policy": get_str(obj, "redrive_allow_policy"),
        "partition_count": get_int(obj, "partition_count", "u32"),
        "fifo_throughput_limit": get_str(obj, "fifo_throughput_limit"),
        "deduplication_scope": get_str(obj, "deduplication_scope"),
    }


def decode_stored_meta(value: bytes) -> QueueConfig:
    """Decode a live queue-meta value; raises :class:`GoJSONError` when it is not one."""
    if not value.startswith(QUEUE_META_MAGIC):
        raise GoJSONError("missing magic prefix")
    obj = as_object(loads(value[len(QUEUE_META_MAGIC) :]))
    return QueueConfig(
        name=get_str(obj, "name"),
        fifo=get_bool(obj, "is_fifo"),
        content_based_deduplication=get_bool(obj, "content_based_dedup"),
        **_common(obj),
        **_timestamps(obj),
    )


def queue_json(cfg: QueueConfig, *, full_fidelity: bool = False) -> bytes:
    """``_queue.json``: ``json.MarshalIndent`` of the projection, empty optionals omitted;
    in full-fidelity mode followed by the queue's non-zero timestamps."""
    out: dict[str, Any] = {"format_version": FORMAT_VERSION, "name": cfg.name}
    if cfg.fifo:
        out["fifo"] = True
    if cfg.content_based_deduplication:
        out["content_based_deduplication"] = True
    out["visibility_timeout_seconds"] = cfg.visibility_timeout_seconds
    out["message_retention_seconds"] = cfg.message_retention_seconds
    out["delay_seconds"] = cfg.delay_seconds
    _put_nonzero(out, cfg, _OPTIONAL_TAIL)
    if full_fidelity:
        _put_nonzero(out, cfg, TIMESTAMP_FIELDS)
    return gojson.marshal_indent(out)


def _put_nonzero(out: dict[str, Any], cfg: QueueConfig, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value:
            out[name] = value


def parse_queue_json(data: bytes) -> tuple[int, QueueConfig]:
    """Parse ``_queue.json``: its ``format_version`` and configuration (not yet validated)."""
    obj = as_object(loads(data))
    version = get_int(obj, "format_version", "u32")
    return version, QueueConfig(
        name=get_str(obj, "name"),
        fifo=get_bool(obj, "fifo"),
        content_based_deduplication=get_bool(obj, "content_based_deduplication"),
        **_common(obj),
        **_timestamps(obj),
    )


def stored_meta_value(cfg: QueueConfig, generation: int) -> bytes:
    """The live queue-meta value a restore writes (``json.Marshal`` of the catalog subset)."""
    out: dict[str, Any] = {"name": cfg.name, "generation": generation}
    if cfg.fifo:
        out["is_fifo"] = True
    if cfg.content_based_deduplication:
        out["content_based_dedup"] = True
    out["visibility_timeout_seconds"] = cfg.visibility_timeout_seconds
    out["message_retention_seconds"] = cfg.message_retention_seconds
    out["delay_seconds"] = cfg.delay_seconds
    out["receive_message_wait_seconds"] = cfg.receive_message_wait_seconds
    out["maximum_message_size"] = cfg.maximum_message_size
    # The live record's field order: redrive policies, the timestamps, then HT-FIFO fields.
    _put_nonzero(out, cfg, _OPTIONAL_TAIL[2:4])
    _put_nonzero(out, cfg, TIMESTAMP_FIELDS)
    _put_nonzero(out, cfg, _OPTIONAL_TAIL[4:])
    return QUEUE_META_MAGIC + gojson.marshal(out)


# --- messages ---------------------------------------------------------------------------------

_ATTRIBUTES: Final = "message_attributes"
_ENVELOPE_KEY: Final = "base64"


@dataclass(slots=True)
class Message:
    """One message, in the fields both formats share (plus the dump-only partition)."""

    message_id: str
    #: ``None`` is Go's nil slice (field absent or ``null``), distinct from ``b""``.
    body: bytes | None
    md5_of_body: str
    md5_of_message_attributes: str
    #: Attribute name -> compacted raw JSON text of its value; ``None`` when absent.
    message_attributes: dict[str, str] | None
    sender_id: str
    send_timestamp_millis: int
    available_at_millis: int
    visible_at_millis: int
    receive_count: int
    first_receive_millis: int
    current_receipt_token: bytes | None
    queue_generation: int
    message_group_id: str
    message_deduplication_id: str
    sequence_number: int
    dead_letter_source_arn: str
    partition: int | None = None


def _attributes(obj: dict[str, Any], document: bytes | str) -> dict[str, str] | None:
    value = obj.get(_ATTRIBUTES)
    if value is None:
        return None
    if not as_object(value, _ATTRIBUTES):
        return {}
    # The parsed values lose their source text; fetch it (only for messages that have any).
    text = go_str(document) if isinstance(document, bytes) else document
    raw = raw_member(text, _ATTRIBUTES)
    assert raw is not None
    return raw_object_members(raw)


_I64_MIN: Final = -(1 << 63)
_I64_MAX: Final = (1 << 63) - 1
_U64_MAX: Final = (1 << 64) - 1


def _plain_message(obj: dict[str, Any], body: bytes | None) -> Message | None:
    """The message of a well-typed object without attributes, else ``None``.

    Every field is present with its JSON type or absent, so one type test per field stands
    for the getters' checks: the common case costs no per-field calls. Anything else
    (``null``, a wrong type, attributes) is left to the getters, which also word the errors.
    """
    if _ATTRIBUTES in obj:
        return None
    get = obj.get
    message_id = get("message_id", "")
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
    token = get("current_receipt_token")
    if not (
        type(message_id)
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
        and min(send_ms, available_ms, visible_ms, receive_count, first_receive_ms) >= _I64_MIN
        and max(send_ms, available_ms, visible_ms, receive_count, first_receive_ms) <= _I64_MAX
        and min(generation, sequence) >= 0
        and max(generation, sequence) <= _U64_MAX
        and token is None
    ):
        return None
    return Message(
        message_id,
        body,
        md5_of_body,
        md5_of_attributes,
        None,
        sender_id,
        send_ms,
        available_ms,
        visible_ms,
        receive_count,
        first_receive_ms,
        None,
        generation,
        group_id,
        dedup_id,
        sequence,
        dead_letter,
    )


def _message(obj: dict[str, Any], document: bytes | str, body: bytes | None) -> Message:
    fast = _plain_message(obj, body)
    if fast is not None:
        return fast
    return Message(
        message_id=get_str(obj, "message_id"),
        body=body,
        md5_of_body=get_str(obj, "md5_of_body"),
        md5_of_message_attributes=get_str(obj, "md5_of_message_attributes"),
        message_attributes=_attributes(obj, document),
        sender_id=get_str(obj, "sender_id"),
        send_timestamp_millis=get_int(obj, "send_timestamp_millis"),
        available_at_millis=get_int(obj, "available_at_millis"),
        visible_at_millis=get_int(obj, "visible_at_millis"),
        receive_count=get_int(obj, "receive_count"),
        first_receive_millis=get_int(obj, "first_receive_millis"),
        current_receipt_token=get_bytes(obj, "current_receipt_token"),
        queue_generation=get_int(obj, "queue_generation", "u64"),
        message_group_id=get_str(obj, "message_group_id"),
        message_deduplication_id=get_str(obj, "message_deduplication_id"),
        sequence_number=get_int(obj, "sequence_number", "u64"),
        dead_letter_source_arn=get_str(obj, "dead_letter_source_arn"),
    )


def decode_stored_message(value: bytes) -> Message:
    """Decode a live message value; raises :class:`GoJSONError` when it is not one."""
    if not value.startswith(MESSAGE_MAGIC):
        raise GoJSONError("missing magic prefix")
    document = value[len(MESSAGE_MAGIC) :]
    obj = as_object(loads(document))
    return _message(obj, document, get_bytes(obj, "body"))


# --- the plain message's dump line, straight from its live value -----------------------------

#: The live record's fields in the order Go marshals them, with the type each must have on
#: the quick path (attributes and a receipt token always take the general one).
_LIVE_FIELDS: Final[dict[str, type]] = {
    "message_id": str,
    "body": str,
    "md5_of_body": str,
    "md5_of_message_attributes": str,
    "sender_id": str,
    "send_timestamp_millis": int,
    "available_at_millis": int,
    "visible_at_millis": int,
    "receive_count": int,
    "first_receive_millis": int,
    "current_receipt_token": type(None),
    "queue_generation": int,
    "message_group_id": str,
    "message_deduplication_id": str,
    "sequence_number": int,
    "dead_letter_source_arn": str,
}
#: Fields ``messages.jsonl`` always carries: a record without one takes the general path.
_ALWAYS: Final = frozenset(
    (
        "message_id",
        "body",
        "send_timestamp_millis",
        "available_at_millis",
        "visible_at_millis",
        "receive_count",
        "queue_generation",
    )
)
_U64_FIELDS: Final = ("queue_generation", "sequence_number")
#: Fields the dump omits when empty or zero (receipt tokens are only ever null here).
_OMITTED_WHEN_EMPTY: Final = (
    "md5_of_body",
    "md5_of_message_attributes",
    "sender_id",
    "first_receive_millis",
    "current_receipt_token",
    "message_group_id",
    "message_deduplication_id",
    "sequence_number",
    "dead_letter_source_arn",
)
_HTML_BYTES: Final = b"<>&"
#: Distinct field layouts remembered; a store writes a handful (FIFO or not, sender or not).
_MAX_LAYOUTS: Final = 64


@dataclass(frozen=True, slots=True)
class _Layout:
    """How to check and rewrite a live object whose fields come in one known order."""

    types: tuple[type, ...]
    #: The signed 64-bit fields' values (at least the four always-dumped times and counts).
    signed: Callable[[dict[str, Any]], tuple[int, ...]]
    #: Present fields the dump omits when empty, and those it omits always.
    optional: tuple[str, ...]
    dropped: tuple[str, ...]
    has_sequence: bool


def _layout(fields: tuple[str, ...], preserve_visibility: bool) -> _Layout | None:
    """The rewrite plan of ``fields`` (a live object's keys, in order), or ``None`` when
    they are not a subsequence of the live record's fields holding every always-dumped one."""
    order = list(_LIVE_FIELDS)
    positions = [order.index(name) if name in _LIVE_FIELDS else -1 for name in fields]
    if -1 in positions or positions != sorted(positions) or not _ALWAYS.issubset(fields):
        return None
    signed = [n for n in fields if _LIVE_FIELDS[n] is int and n not in _U64_FIELDS]
    dropped = ["current_receipt_token"]
    if not preserve_visibility:
        dropped.append("first_receive_millis")
    return _Layout(
        types=tuple(_LIVE_FIELDS[name] for name in fields),
        signed=itemgetter(*signed),
        optional=tuple(n for n in _OMITTED_WHEN_EMPTY if n in fields and n not in dropped),
        dropped=tuple(n for n in dropped if n in fields),
        has_sequence="sequence_number" in fields,
    )


#: Layouts seen in this process (a worker process has its own), by visibility mode and fields.
_layouts: dict[tuple[bool, tuple[str, ...]], _Layout | None] = {}
_last_layout: list[Any] = [None, None]


def plain_dump_line(
    value: bytes, partition: int | None, *, preserve_visibility: bool
) -> tuple[bytes, int, int, str, int] | None:
    """The ``messages.jsonl`` line of a plain live message value, and what its sort key
    needs: ``(line, send ms, sequence number, message id, generation)``.

    The same line as :func:`decode_stored_message`, the visibility reset and
    :func:`dump_line`, without a :class:`Message` in between: the parsed object is checked
    field by field in one pass against its layout (the live record's field order) and
    rewritten in place. ``None`` for anything else (attributes, a receipt token, ``null``s,
    another field order, a wrong type, a literal ``-0``, a value that does not parse): the
    general path decodes it and words its errors.
    """
    if not value.startswith(MESSAGE_MAGIC):
        return None
    if value.find(b"-0", len(MESSAGE_MAGIC)) >= 0:  # Go's rules for -0: the general reader
        return None
    try:
        obj = orjson.loads(memoryview(value)[len(MESSAGE_MAGIC) :])
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    key = (preserve_visibility, tuple(obj))
    last_key, layout = _last_layout
    # Consecutive messages share a layout, and orjson reuses the key strings: comparing
    # with the last one is cheaper than hashing the field names again.
    if key != last_key:
        if key in _layouts:
            layout = _layouts[key]
        else:
            layout = _layout(key[1], preserve_visibility)
            if len(_layouts) < _MAX_LAYOUTS:
                _layouts[key] = layout
        _last_layout[:] = key, layout
    if layout is None or tuple(map(type, obj.values())) != layout.types:
        return None
    # orjson reads integers into [-2**63, 2**64 - 1] (floats beyond), so one bound each.
    sequence = obj["sequence_number"] if layout.has_sequence else 0
    if max(layout.signed(obj)) > _I64_MAX or min(obj["queue_generation"], sequence) < 0:
        return None
    try:
        raw = binascii.a2b_base64(obj["body"], strict_mode=True)
    except ValueError:  # binascii.Error, or a non-ASCII string
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        obj["body"] = {_ENVELOPE_KEY: b64url_encode(raw)}
    else:
        # The body alone is HTML-escaped (json.Marshal), not the rest of the line.
        if len(raw.translate(None, _HTML_BYTES)) != len(raw):
            obj["body"] = gojson.Fragment(gojson.marshal(text))
        else:
            obj["body"] = text
    if not preserve_visibility:
        obj["visible_at_millis"] = obj["receive_count"] = 0
    for name in layout.dropped:
        del obj[name]
    for name in layout.optional:
        if not obj[name]:
            del obj[name]
    if partition is not None:
        obj["partition"] = partition
    return (
        gojson.encoder_line(obj),
        obj["send_timestamp_millis"],
        sequence,
        obj["message_id"],
        obj["queue_generation"],
    )


def _raw_map(attrs: dict[str, str]) -> bytes:
    """A ``map[string]json.RawMessage`` as Go's encoder writes it: sorted keys, raw values."""
    members = [gojson.encoder_line(k)[:-1] + b":" + attrs[k].encode() for k in sorted(attrs)]
    return b"{" + b",".join(members) + b"}"


def _body_json(body: bytes | None) -> Any:
    raw = body or b""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {_ENVELOPE_KEY: b64url_encode(raw)}
    # Produced by json.Marshal, so HTML-escaped even inside the non-escaping JSONL encoder.
    return gojson.Fragment(gojson.marshal(text))


def dump_line(msg: Message) -> bytes:
    """One ``messages.jsonl`` line (``json.Encoder`` without HTML escaping, newline ended)."""
    head: dict[str, Any] = {"message_id": msg.message_id, "body": _body_json(msg.body)}
    if msg.md5_of_body:
        head["md5_of_body"] = msg.md5_of_body
    if msg.md5_of_message_attributes:
        head["md5_of_message_attributes"] = msg.md5_of_message_attributes
    tail: dict[str, Any] = {}
    if msg.sender_id:
        tail["sender_id"] = msg.sender_id
    tail["send_timestamp_millis"] = msg.send_timestamp_millis
    tail["available_at_millis"] = msg.available_at_millis
    tail["visible_at_millis"] = msg.visible_at_millis
    tail["receive_count"] = msg.receive_count
    if msg.first_receive_millis:
        tail["first_receive_millis"] = msg.first_receive_millis
    if msg.current_receipt_token:
        tail["current_receipt_token"] = base64.b64encode(msg.current_receipt_token).decode()
    tail["queue_generation"] = msg.queue_generation
    _put_fifo_fields(tail, msg)
    if msg.partition is not None:
        tail["partition"] = msg.partition
    if not msg.message_attributes:
        return gojson.encoder_line(head | tail)
    # Raw attribute text must not pass through the encoder's escaping: splice it in.
    return (
        gojson.encoder_line(head)[:-2]
        + b',"message_attributes":'
        + _raw_map(msg.message_attributes)
        + b","
        + gojson.encoder_line(tail)[1:]
    )


def _put_fifo_fields(out: dict[str, Any], msg: Message) -> None:
    if msg.message_group_id:
        out["message_group_id"] = msg.message_group_id
    if msg.message_deduplication_id:
        out["message_deduplication_id"] = msg.message_deduplication_id
    if msg.sequence_number:
        out["sequence_number"] = msg.sequence_number
    if msg.dead_letter_source_arn:
        out["dead_letter_source_arn"] = msg.dead_letter_source_arn


def _dump_body(value: Any) -> bytes:
    """The dump body: a string, or exactly ``{"base64": <base64url>}``."""
    if value is None:
        return b""  # Go hands null to the string branch: an empty, non-nil body
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, dict) or set(value) - {_ENVELOPE_KEY}:
        raise GoJSONError('field "body": expected a string or a {"base64": ...} envelope')
    encoded = value.get(_ENVELOPE_KEY)
    if not isinstance(encoded, str):
        raise GoJSONError('field "body": envelope missing its "base64" string')
    try:
        return b64url_decode(encoded)
    except ValueError as exc:
        raise GoJSONError(f'field "body": bad base64url ({exc})') from None


def parse_dump_message(value: Any, document: bytes | str) -> Message:
    """Decode one ``messages.jsonl`` record (``value`` parsed from the text ``document``)."""
    obj = as_object(value)
    body = _dump_body(obj["body"]) if "body" in obj else None
    msg = _message(obj, document, body)
    if obj.get("partition") is not None:
        msg.partition = get_int(obj, "partition", "u32")
    return msg


def shifted(msg: Message, shift_ms: int) -> Message:
    """``msg`` with every time the node keeps a deadline by moved by ``shift_ms`` (zero
    times, meaning "never", stay zero)."""
    if not shift_ms:
        return msg

    def move(ms: int) -> int:
        return ms + shift_ms if ms else 0

    return dataclasses.replace(
        msg,
        send_timestamp_millis=move(msg.send_timestamp_millis),
        available_at_millis=move(msg.available_at_millis),
        visible_at_millis=move(msg.visible_at_millis),
        first_receive_millis=move(msg.first_receive_millis),
    )


def stored_value(msg: Message, generation: int, *, keep_visibility: bool = False) -> bytes:
    """The live value a restore writes: generation replaced, visibility state (receive
    count, visible-at, first receive, receipt token) kept or zeroed."""
    out: dict[str, Any] = {
        "message_id": msg.message_id,
        "body": None if msg.body is None else base64.b64encode(msg.body).decode(),
        "md5_of_body": msg.md5_of_body,
    }
    if msg.md5_of_message_attributes:
        out["md5_of_message_attributes"] = msg.md5_of_message_attributes
    if msg.message_attributes:
        # json.Marshal HTML-escapes keys and raw values alike; gojson.marshal does that pass.
        out["message_attributes"] = gojson.Fragment(_raw_map(msg.message_attributes))
    if msg.sender_id:
        out["sender_id"] = msg.sender_id
    out["send_timestamp_millis"] = msg.send_timestamp_millis
    out["available_at_millis"] = msg.available_at_millis
    if keep_visibility:
        out["visible_at_millis"] = msg.visible_at_millis
        out["receive_count"] = msg.receive_count
        if msg.first_receive_millis:
            out["first_receive_millis"] = msg.first_receive_millis
        token = msg.current_receipt_token
        out["current_receipt_token"] = None if token is None else base64.b64encode(token).decode()
    else:
        out["visible_at_millis"] = 0
        out["receive_count"] = 0
        out["current_receipt_token"] = None
    out["queue_generation"] = generation
    _put_fifo_fields(out, msg)
    return MESSAGE_MAGIC + gojson.marshal(out)
