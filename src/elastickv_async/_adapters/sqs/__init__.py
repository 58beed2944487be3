"""SQS adapter: queues and messages (``!sqs|`` keyspace) <-> ``sqs/<queue>/``."""

from __future__ import annotations

from ..base import AdapterSpec
from .decode import SQSDecoder
from .encode import SQSEncoder
from .keys import INTERNAL_PREFIXES, ROUTED_PREFIXES

__all__ = ["SPEC"]

SPEC = AdapterSpec(
    name="sqs",
    routed_prefixes=ROUTED_PREFIXES,
    internal_prefixes=INTERNAL_PREFIXES,
    decoder=SQSDecoder,
    encoder=SQSEncoder,
)
