"""The Redis adapter: ``redis/db_0/`` in the dump tree (REFERENCE_NOTES §3.3, §6.3)."""

from __future__ import annotations

from ..base import AdapterSpec
from .decode import RedisDecoder
from .encode import RedisEncoder
from .keys import INTERNAL_PREFIXES, ROUTED_PREFIXES

__all__ = ["SPEC"]

SPEC = AdapterSpec(
    name="redis",
    routed_prefixes=ROUTED_PREFIXES,
    internal_prefixes=INTERNAL_PREFIXES,
    decoder=RedisDecoder,
    encoder=RedisEncoder,
)
