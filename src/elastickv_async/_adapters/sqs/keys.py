"""SQS snapshot key layouts, prefixes and value magics (REFERENCE_NOTES §3.4, §6.6).

Queue and message ids are stored as unpadded base64url segments, so a segment ends at the
first byte outside ``[A-Za-z0-9_-]``. Classic message keys are
``<family><b64 queue><gen u64><...>``; partitioned (HT-FIFO) keys insert ``p|`` after the
family and terminate the queue segment with ``|``:
``<family>p|<b64 queue>|<partition u32><gen u64><...>``. All integers are big-endian.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterable
from typing import Final

from ..._core.dump.names import b64url_decode, b64url_segment, is_b64url
from ..._core.errors import AdapterRecordError
from .errors import record_error

__all__ = [
    "INTERNAL_PREFIXES",
    "MESSAGE_MAGIC",
    "MSG_BYAGE_PREFIX",
    "MSG_DATA_PREFIX",
    "MSG_DEDUP_PREFIX",
    "MSG_GROUP_PREFIX",
    "MSG_VIS_PREFIX",
    "QUEUE_GEN_PREFIX",
    "QUEUE_META_MAGIC",
    "QUEUE_META_PREFIX",
    "QUEUE_SEQ_PREFIX",
    "QUEUE_TOMBSTONE_PREFIX",
    "RESTORE_GENERATION",
    "ROUTED_PREFIXES",
    "SIDE_RECORD_PREFIXES",
    "MessageDataQueues",
    "key_repr",
    "message_byage_key",
    "message_data_key",
    "message_data_queue",
    "message_data_queues",
    "message_dedup_key",
    "message_group_key",
    "message_keys",
    "message_vis_key",
    "partition_for_group",
    "partition_unit",
    "queue_gen_key",
    "queue_key_segment",
    "queue_meta_key",
    "queue_seq_key",
    "route_key",
    "side_record_queue",
]

#: Generation stamped on every restored queue, message key and message.
RESTORE_GENERATION: Final = 1

QUEUE_META_PREFIX: Final = b"!sqs|queue|meta|"
QUEUE_GEN_PREFIX: Final = b"!sqs|queue|gen|"
QUEUE_SEQ_PREFIX: Final = b"!sqs|queue|seq|"
QUEUE_TOMBSTONE_PREFIX: Final = b"!sqs|queue|tombstone|"
MSG_DATA_PREFIX: Final = b"!sqs|msg|data|"
MSG_VIS_PREFIX: Final = b"!sqs|msg|vis|"
MSG_BYAGE_PREFIX: Final = b"!sqs|msg|byage|"
MSG_DEDUP_PREFIX: Final = b"!sqs|msg|dedup|"
MSG_GROUP_PREFIX: Final = b"!sqs|msg|group|"

#: Families exported raw with ``--include-sqs-side-records``.
SIDE_RECORD_PREFIXES: Final = (
    MSG_VIS_PREFIX,
    MSG_BYAGE_PREFIX,
    MSG_DEDUP_PREFIX,
    MSG_GROUP_PREFIX,
    QUEUE_SEQ_PREFIX,
    QUEUE_TOMBSTONE_PREFIX,
)
ROUTED_PREFIXES: Final = (
    QUEUE_META_PREFIX,
    QUEUE_GEN_PREFIX,
    MSG_DATA_PREFIX,
    *SIDE_RECORD_PREFIXES,
)
#: Live routing rows of the SQS keyspace: not data.
INTERNAL_PREFIXES: Final = (b"!sqs|route|",)

QUEUE_META_MAGIC: Final = b"\x00SQ\x01"
MESSAGE_MAGIC: Final = b"\x00SM\x01"

_PARTITIONED: Final = b"p|"
_TERMINATOR: Final = b"|"
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_PARTITIONED_TRAILER: Final = _U32.size + _U64.size

_FNV32_OFFSET: Final = 2166136261
_FNV32_PRIME: Final = 16777619


def key_repr(key: bytes) -> str:
    """How error messages name a key: the repr of its first 96 bytes."""
    return repr(key[:96])


def _malformed(key: bytes, why: str) -> AdapterRecordError:
    return record_error("ErrSQSMalformedKey", f"malformed SQS key {key_repr(key)}: {why}", key=key)


@functools.cache
def _b64url_run() -> re.Pattern[bytes]:
    # Compiled on first use: only SQS keys need it, and compiling at import is paid by every
    # start-up (the spec loads these keys).
    return re.compile(rb"[A-Za-z0-9_-]*")


def _b64url_run_end(data: bytes) -> int:
    """Length of the leading base64url run of ``data`` (where a classic queue segment ends)."""
    match = _b64url_run().match(data)
    return match.end() if match else 0


def _check_segment(seg: bytes, key: bytes, what: str) -> None:
    """Check one unpadded base64url segment of ``key`` without decoding it.

    Non-empty, alphabet only and a length that is not 1 modulo 4: exactly what a
    non-strict unpadded decoder accepts.
    """
    if not seg:
        raise _malformed(key, f"empty {what} segment")
    if not is_b64url(seg):
        raise _malformed(key, f"{what} segment is not base64url")
    if len(seg) % 4 == 1:
        raise _malformed(key, f"{what} segment has an impossible base64url length")


def _segment(seg: bytes, key: bytes, what: str) -> bytes:
    """Decode one base64url segment of ``key`` (checked as in :func:`_check_segment`)."""
    _check_segment(seg, key, what)
    return b64url_decode(seg)


def queue_key_segment(key: bytes, prefix: bytes) -> tuple[str, bytes]:
    """Parse ``<prefix><b64 queue>`` (meta and gen keys): the encoded segment and the name."""
    seg = key[len(prefix) :]
    name = _segment(seg, key, "queue")
    return seg.decode("ascii"), name


def message_data_queue(key: bytes) -> tuple[str, int | None]:
    """Parse a message data key: the encoded queue segment and the partition (``None``: classic).

    Classic keys find the queue's end at the first non-base64url byte, which is the first
    byte of the generation for every generation below 2**56 (as in the reference).
    """
    encoded, partition, _ = _message_data_head(key)
    return encoded, partition


def _message_data_head(key: bytes) -> tuple[str, int | None, int]:
    """:func:`message_data_queue` and where the message-id segment starts."""
    rest = key[len(MSG_DATA_PREFIX) :]
    if rest.startswith(_PARTITIONED):
        enc, partition, trailer = _partitioned(key, rest)
        if len(trailer) <= _PARTITIONED_TRAILER:
            raise _malformed(key, "partitioned message key has no message-id segment")
        _check_segment(trailer[_PARTITIONED_TRAILER:], key, "message-id")
        return enc, partition, len(key) - len(trailer) + _PARTITIONED_TRAILER
    end = _b64url_run_end(rest)
    if end == 0:
        raise _malformed(key, "empty queue segment")
    if end + _U64.size >= len(rest):
        raise _malformed(key, "message key has no generation and message-id trailer")
    _check_segment(rest[:end], key, "queue")
    _check_segment(rest[end + _U64.size :], key, "message-id")
    return rest[:end].decode("ascii"), None, len(MSG_DATA_PREFIX) + end + _U64.size


class MessageDataQueues:
    """:func:`message_data_queue` over keys in snapshot order.

    Keys of one queue and generation share everything before the message id; the last such
    head is remembered, so that a key starting with it only has its message id checked.
    """

    def __init__(self) -> None:
        self._head = b"\xff"  # no data key starts with it
        self._queue: tuple[str, int | None] = ("", None)

    def __call__(self, key: bytes) -> tuple[str, int | None]:
        """What :func:`message_data_queue` returns for ``key`` (and raises)."""
        head = self._head
        if len(key) > len(head) and key.startswith(head):
            _check_segment(key[len(head) :], key, "message-id")
            return self._queue
        encoded, partition, id_start = _message_data_head(key)
        self._head, self._queue = key[:id_start], (encoded, partition)
        return self._queue


def message_data_queues(data_keys: Iterable[bytes]) -> list[tuple[str, int | None]] | None:
    """:func:`message_data_queue` of each key, in order; ``None`` when any key is malformed
    (the caller then parses them one at a time, to raise the first error where it occurs).

    Keys of one queue and generation share everything before the message id: after the
    first, only their message-id segments are taken, and those are checked all at once.
    """
    queues: list[tuple[str, int | None]] = []
    ids: list[bytes] = []
    head, size = b"\xff", 1  # no data key starts with it
    queue: tuple[str, int | None] = ("", None)
    for key in data_keys:
        if key.startswith(head) and len(key) > size:
            ids.append(key[size:])
        else:
            try:
                encoded, partition, size = _message_data_head(key)
            except AdapterRecordError:
                return None
            head, queue = key[:size], (encoded, partition)
        queues.append(queue)
    # The checks of _check_segment, over every segment at once.
    if not is_b64url(b"".join(ids)):
        return None
    if 1 in {len(seg) & 3 for seg in ids}:
        return None
    return queues


def side_record_queue(key: bytes, prefix: bytes) -> str:
    """The encoded queue segment of a side record (vis, byage, dedup, group, seq, tombstone).

    Every family carries a binary trailer after the queue segment (at least the partition and
    generation when partitioned), except the FIFO sequence counter ``!sqs|queue|seq|<b64>``,
    whose key is the bare queue segment.
    """
    rest = key[len(prefix) :]
    if rest.startswith(_PARTITIONED) and prefix != QUEUE_SEQ_PREFIX:
        return _partitioned(key, rest)[0]
    end = _b64url_run_end(rest)
    if end == len(rest) and prefix != QUEUE_SEQ_PREFIX:
        raise _malformed(key, "side record has no trailer after the queue segment")
    _check_segment(rest[:end], key, "queue")
    return rest[:end].decode("ascii")


def _partitioned(key: bytes, rest: bytes) -> tuple[str, int, bytes]:
    """Split ``p|<b64 queue>|<partition u32><gen u64>...``: queue, partition, trailer."""
    body = rest[len(_PARTITIONED) :]
    end = body.find(_TERMINATOR)
    if end <= 0:
        raise _malformed(key, "partitioned key has no queue segment terminated by '|'")
    _check_segment(body[:end], key, "queue")
    trailer = body[end + 1 :]
    if len(trailer) < _PARTITIONED_TRAILER:
        raise _malformed(key, "partitioned key trailer shorter than partition + generation")
    (partition,) = _U32.unpack_from(trailer)
    return body[:end].decode("ascii"), partition, trailer


# --- key builders (encode direction) ------------------------------------------------------------


def _seg(raw: bytes) -> bytes:
    return b64url_segment(raw)


def queue_meta_key(name: bytes) -> bytes:
    """``!sqs|queue|meta|<b64 name>``."""
    return QUEUE_META_PREFIX + _seg(name)


def queue_gen_key(name: bytes) -> bytes:
    """``!sqs|queue|gen|<b64 name>``."""
    return QUEUE_GEN_PREFIX + _seg(name)


def queue_seq_key(name: bytes) -> bytes:
    """``!sqs|queue|seq|<b64 name>`` (FIFO sequence counter)."""
    return QUEUE_SEQ_PREFIX + _seg(name)


def _queue_head(prefix: bytes, name: bytes, partition: int | None, gen: int) -> bytes:
    if partition is None:
        return prefix + _seg(name) + _U64.pack(gen)
    return prefix + _PARTITIONED + _seg(name) + _TERMINATOR + _U32.pack(partition) + _U64.pack(gen)


def message_data_key(name: bytes, partition: int | None, gen: int, message_id: bytes) -> bytes:
    """Classic or partitioned ``!sqs|msg|data|`` key."""
    return _queue_head(MSG_DATA_PREFIX, name, partition, gen) + _seg(message_id)


def message_keys(
    name: bytes,
    partition: int | None,
    gen: int,
    visible_at_ms: int,
    send_ms: int,
    message_id: bytes,
) -> tuple[bytes, bytes, bytes]:
    """What :func:`message_data_key`, :func:`message_vis_key` and :func:`message_byage_key`
    return for one message, with each segment encoded once (the encoder's per-message path)."""
    head = _queue_head(b"", name, partition, gen)
    tail = _seg(message_id)
    return (
        MSG_DATA_PREFIX + head + tail,
        MSG_VIS_PREFIX + head + _U64.pack(max(0, visible_at_ms)) + tail,
        MSG_BYAGE_PREFIX + head + _U64.pack(max(0, send_ms)) + tail,
    )


def message_vis_key(
    name: bytes, partition: int | None, gen: int, visible_at_ms: int, message_id: bytes
) -> bytes:
    """``!sqs|msg|vis|`` key; a negative time is clamped to 0 like the live adapter."""
    head = _queue_head(MSG_VIS_PREFIX, name, partition, gen)
    return head + _U64.pack(max(0, visible_at_ms)) + _seg(message_id)


def message_byage_key(
    name: bytes, partition: int | None, gen: int, send_ms: int, message_id: bytes
) -> bytes:
    """``!sqs|msg|byage|`` key; a negative time is clamped to 0 like the live adapter."""
    head = _queue_head(MSG_BYAGE_PREFIX, name, partition, gen)
    return head + _U64.pack(max(0, send_ms)) + _seg(message_id)


def message_dedup_key(
    name: bytes, partition: int | None, gen: int, group_id: bytes, dedup_id: bytes
) -> bytes:
    """``!sqs|msg|dedup|`` key: classic keys hold the dedup id only, partitioned keys
    ``<b64 group>|<b64 dedup>`` (the ``|`` keeps distinct pairs apart)."""
    head = _queue_head(MSG_DEDUP_PREFIX, name, partition, gen)
    if partition is None:
        return head + _seg(dedup_id)
    return head + _seg(group_id) + _TERMINATOR + _seg(dedup_id)


def message_group_key(name: bytes, partition: int | None, gen: int, group_id: bytes) -> bytes:
    """``!sqs|msg|group|`` key: the FIFO lock of one message group."""
    return _queue_head(MSG_GROUP_PREFIX, name, partition, gen) + _seg(group_id)


def partition_for_group(partition_count: int, per_queue: bool, group_id: bytes) -> int:
    """The live HT-FIFO router: FNV-1a 32 of the group id masked to the partition count.

    Classic queues, ``perQueue`` throughput and an empty group all route to partition 0.
    """
    if partition_count <= 1 or per_queue or not group_id:
        return 0
    h = _FNV32_OFFSET
    for byte in group_id:
        h = ((h ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return h & (partition_count - 1)


#: Every SQS row routes by one global key.
_FAMILY: Final = b"!sqs|"
_GLOBAL_ROUTE: Final = b"!sqs|route|global"


def route_key(key: bytes) -> bytes | None:
    """The key the store routes ``key`` by, or ``None`` when no SQS rule applies."""
    return _GLOBAL_ROUTE if key.startswith(_FAMILY) else None


def partition_unit(prefix: bytes, key: bytes) -> bytes | None:
    """The queue a row belongs to, by decoded name (``AdapterSpec.partition_unit``).

    Meta, generation, messages and side records name their queue by its key segment,
    parsed as the decoder parses it; ``None`` for a key the decoder would reject.
    """
    try:
        if prefix in (QUEUE_META_PREFIX, QUEUE_GEN_PREFIX):
            return queue_key_segment(key, prefix)[1]
        if prefix == MSG_DATA_PREFIX:
            return b64url_decode(message_data_queue(key)[0])
        return b64url_decode(side_record_queue(key, prefix))
    except (AdapterRecordError, ValueError):
        return None
