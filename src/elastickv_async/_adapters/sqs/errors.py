"""Typed errors of the SQS adapter (both directions).

Decode errors are :class:`AdapterRecordError` (a malformed snapshot record); encode errors
are :class:`DumpTreeError` (a malformed dump tree). Each name mirrors the reference's
sentinel where one exists (REFERENCE_NOTES Appendix A).
"""

from __future__ import annotations

from ..._core.errors import AdapterRecordError, DumpTreeError

__all__ = [
    "SQSEncodeInvalidMessage",
    "SQSEncodeInvalidQueue",
    "SQSEncodeMissingPartition",
    "SQSEncodeOutOfRangePartition",
    "SQSEncodePartitionHashMismatch",
    "SQSEncodePartitionRoutingMismatch",
    "SQSInvalidMessage",
    "SQSInvalidQueueGen",
    "SQSInvalidQueueMeta",
    "SQSMalformedKey",
]


# --- decode -----------------------------------------------------------------------------------


class SQSMalformedKey(AdapterRecordError):
    """An ``!sqs|`` key whose queue, trailer or message-id segment cannot be parsed."""


class SQSInvalidQueueMeta(AdapterRecordError):
    """A ``!sqs|queue|meta|`` value without its magic or with an undecodable JSON body."""


class SQSInvalidQueueGen(AdapterRecordError):
    """A ``!sqs|queue|gen|`` value that is not a decimal uint64."""


class SQSInvalidMessage(AdapterRecordError):
    """A ``!sqs|msg|data|`` value without its magic or with an undecodable JSON body."""


# --- encode -----------------------------------------------------------------------------------


class SQSEncodeInvalidQueue(DumpTreeError):
    """A queue directory whose ``_queue.json`` is missing, malformed or inconsistent."""


class SQSEncodeInvalidMessage(DumpTreeError):
    """A ``messages.jsonl`` record that cannot be parsed or restored."""


class SQSEncodeMissingPartition(DumpTreeError):
    """A message of a partitioned (HT-FIFO) queue carries no ``partition``."""


class SQSEncodeOutOfRangePartition(DumpTreeError):
    """A message's ``partition`` is not below the queue's ``partition_count``."""


class SQSEncodePartitionRoutingMismatch(DumpTreeError):
    """A ``perQueue`` HT-FIFO queue has a message outside partition 0."""


class SQSEncodePartitionHashMismatch(DumpTreeError):
    """A ``perMessageGroupId`` message's partition disagrees with the group-id hash."""
