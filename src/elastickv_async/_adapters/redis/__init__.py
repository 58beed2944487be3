"""The Redis adapter: ``redis/db_0/`` in the dump tree (REFERENCE_NOTES §3.3, §6.3)."""

from __future__ import annotations

from ..base import AdapterSpec
from . import options
from .decode import RedisDecoder
from .encode import RedisEncoder
from .inventory import RedisInventory
from .keys import INTERNAL_PREFIXES, ROUTED_PREFIXES, route_key, user_key
from .layout import ROOT, self_test_comparison

__all__ = ["SPEC"]

SPEC = AdapterSpec(
    name=ROOT,
    routed_prefixes=ROUTED_PREFIXES,
    internal_prefixes=INTERNAL_PREFIXES,
    decoder=RedisDecoder,
    encoder=RedisEncoder,
    encode_rank=1,
    route_key=route_key,
    inventory=RedisInventory,
    scope_unit=user_key,
    scope_glob=True,
    decode_options=options.RedisOptions,
    self_test_options=options.self_test_options,
    compare=self_test_comparison,
)
