"""Queue configuration: the live ``!sqs|queue|meta|`` value and the dump's ``_queue.json``.

The live value is ``QUEUE_META_MAGIC`` + JSON of the adapter's catalog record; the dump keeps
the AWS-style projection (FIFO, dedup, timeouts, redrive and the immutable HT-FIFO
attributes). Live-only fields (generation, tags, throttle, timestamps) are not part of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ..._core import gojson
from ..._core.gojson_read import GoJSONError, as_object, get_bool, get_int, get_str, loads
from .keys import QUEUE_META_MAGIC

__all__ = [
    "FORMAT_VERSION",
    "QueueConfig",
    "decode_stored_meta",
    "parse_queue_json",
    "queue_json",
    "stored_meta_value",
]

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
    )


def queue_json(cfg: QueueConfig) -> bytes:
    """``_queue.json``: ``json.MarshalIndent`` of the projection, empty optionals omitted."""
    out: dict[str, Any] = {"format_version": FORMAT_VERSION, "name": cfg.name}
    if cfg.fifo:
        out["fifo"] = True
    if cfg.content_based_deduplication:
        out["content_based_deduplication"] = True
    out["visibility_timeout_seconds"] = cfg.visibility_timeout_seconds
    out["message_retention_seconds"] = cfg.message_retention_seconds
    out["delay_seconds"] = cfg.delay_seconds
    _put_nonzero(out, cfg, _OPTIONAL_TAIL)
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
    _put_nonzero(out, cfg, _OPTIONAL_TAIL[2:])
    return QUEUE_META_MAGIC + gojson.marshal(out)
