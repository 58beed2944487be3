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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, TypeAlias

import msgspec
import msgspec.json

from ..._core import gojson
from ..._core.dump.names import b64url_decode, b64url_encode, b64url_segment
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
    "PlainLine",
    "QueueConfig",
    "decode_stored_message",
    "decode_stored_meta",
    "dump_line",
    "dump_plain_lines",
    "parse_dump_message",
    "parse_queue_json",
    "plain_dump_line",
    "plain_line",
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

#: Go's ``int64`` and ``uint64``: a value out of range is the general path's error to word.
#: (msgspec bounds must fit an int64: the top of the ``uint64`` range is checked after.)
_I64: TypeAlias = Annotated[int, msgspec.Meta(ge=_I64_MIN, le=_I64_MAX)]
_U64: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]


class _PlainLive(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A live message value in the plain shape: only the live record's own field names,
    each absent or of exactly its JSON type, no attributes and a ``null`` receipt token.

    Decoding into it checks every field in C; whatever does not fit (an unknown or
    differently cased name, ``null`` for a string, a float, an out-of-range integer,
    invalid UTF-8, a lone surrogate) fails it and is left to the general path.
    """

    message_id: str = ""
    body: str = ""
    md5_of_body: str = ""
    md5_of_message_attributes: str = ""
    sender_id: str = ""
    send_timestamp_millis: _I64 = 0
    available_at_millis: _I64 = 0
    visible_at_millis: _I64 = 0
    receive_count: _I64 = 0
    first_receive_millis: _I64 = 0
    current_receipt_token: None = None
    queue_generation: _U64 = 0
    message_group_id: str = ""
    message_deduplication_id: str = ""
    sequence_number: _U64 = 0
    dead_letter_source_arn: str = ""


#: The default of the fields a ``messages.jsonl`` line always carries: no value they take
#: equals it, so ``omit_defaults`` never omits them.
_KEPT: Final = -(1 << 64)


class PlainLine(msgspec.Struct, omit_defaults=True, gc=False):
    """A ``messages.jsonl`` line without attributes or receipt token: :func:`dump_line`'s
    fields in its order, the optional ones omitted at their zero value. (Built with
    positional arguments: keywords would cost as much as the encoding.)"""

    message_id: str
    #: The body as a JSON string, or its already-encoded form (escaped, or an envelope).
    body: str | msgspec.Raw
    md5_of_body: str = ""
    md5_of_message_attributes: str = ""
    sender_id: str = ""
    send_timestamp_millis: int = _KEPT
    available_at_millis: int = _KEPT
    visible_at_millis: int = _KEPT
    receive_count: int = _KEPT
    first_receive_millis: int = 0
    queue_generation: int = _KEPT
    message_group_id: str = ""
    message_deduplication_id: str = ""
    sequence_number: int = 0
    dead_letter_source_arn: str = ""
    partition: int | None = None


_plain_decoder: Final = msgspec.json.Decoder(_PlainLive)
_line_encoder: Final = msgspec.json.Encoder()
_HTML_BYTES: Final = b"<>&"
_LINE_SEPARATORS: Final = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def plain_line(
    value: bytes, partition: int | None, *, preserve_visibility: bool
) -> PlainLine | None:
    """The ``messages.jsonl`` line of a plain live message value, as a struct to encode
    (:func:`dump_plain_lines`); it also carries what the message's sort key needs.

    The same line as :func:`decode_stored_message`, the visibility reset and
    :func:`dump_line`, without a :class:`Message` in between: the value is decoded into a
    typed struct (:class:`_PlainLive`) and the line built from it. ``None`` for anything else
    (attributes, a receipt token, ``null``s, a wrong type, a literal ``-0``, a body that is
    not strict base64, a value that does not parse): the general path decodes it and words
    its errors.
    """
    if not value.startswith(MESSAGE_MAGIC):
        return None
    # Go refuses -0 for an unsigned field; msgspec reads it as 0. The general reader decides.
    # (A one-byte search first: it is a memchr, the two-byte one is not.)
    minus = value.find(b"-", len(MESSAGE_MAGIC))
    if minus >= 0 and value.find(b"-0", minus) >= 0:
        return None
    try:
        live = _plain_decoder.decode(memoryview(value)[len(MESSAGE_MAGIC) :])
        raw = binascii.a2b_base64(live.body, strict_mode=True)
    except (msgspec.DecodeError, ValueError):  # ValueError: binascii.Error, non-ASCII body
        return None
    if max(live.queue_generation, live.sequence_number) > _U64_MAX:
        return None
    body: str | msgspec.Raw
    try:
        body = raw.decode()
    except UnicodeDecodeError:
        body = msgspec.Raw(b'{"base64":"' + b64url_segment(raw) + b'"}')
    else:
        # The body alone is HTML-escaped (json.Marshal), not the rest of the line.
        if len(raw.translate(None, _HTML_BYTES)) != len(raw):
            body = msgspec.Raw(gojson.marshal(body))
    return PlainLine(
        live.message_id,
        body,
        live.md5_of_body,
        live.md5_of_message_attributes,
        live.sender_id,
        live.send_timestamp_millis,
        live.available_at_millis,
        live.visible_at_millis if preserve_visibility else 0,
        live.receive_count if preserve_visibility else 0,
        live.first_receive_millis if preserve_visibility else 0,
        live.queue_generation,
        live.message_group_id,
        live.message_deduplication_id,
        live.sequence_number,
        live.dead_letter_source_arn,
        partition,
    )


def dump_plain_lines(lines: Sequence[PlainLine]) -> list[bytes]:
    """The ``messages.jsonl`` lines of :func:`plain_line` structs, each newline-ended and in
    an allocation of its own size."""
    encode = _line_encoder.encode
    out = []
    for plain in lines:
        line = encode(plain)
        # Go's encoder escapes U+2028 and U+2029 even without HTML escaping; they can only
        # be inside strings, where the escape means the same character.
        if not line.isascii() and b"\xe2\x80" in line:
            for raw_separator, escaped in _LINE_SEPARATORS:
                line = line.replace(raw_separator, escaped)
        out.append(line + b"\n")
    return out


def plain_dump_line(
    value: bytes, partition: int | None, *, preserve_visibility: bool
) -> tuple[bytes, int, int, str, int] | None:
    """One message's :func:`plain_line`, encoded: ``(line, send ms, sequence number,
    message id, generation)``, or ``None`` where :func:`plain_line` gives ``None``."""
    plain = plain_line(value, partition, preserve_visibility=preserve_visibility)
    if plain is None:
        return None
    (line,) = dump_plain_lines((plain,))
    return (
        line,
        plain.send_timestamp_millis,
        plain.sequence_number,
        plain.message_id,
        plain.queue_generation,
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
