"""The SQS adapter's :class:`~..base.AdapterSpec` (loaded on first use of ``sqs.SPEC``)."""

from __future__ import annotations

from ..base import AdapterSpec, sorted_scopes
from . import options
from .decode import SQSDecoder
from .encode import SQSEncoder
from .inventory import SQSInventory
from .keys import INTERNAL_PREFIXES, ROUTED_PREFIXES, partition_unit, route_key
from .layout import ROOT, self_test_comparison

__all__ = ["SPEC"]

SPEC = AdapterSpec(
    name=ROOT,
    routed_prefixes=ROUTED_PREFIXES,
    internal_prefixes=INTERNAL_PREFIXES,
    decoder=SQSDecoder,
    encoder=SQSEncoder,
    encode_rank=4,
    route_key=route_key,
    partition_unit=partition_unit,
    scope_unit=partition_unit,
    merge_scopes=sorted_scopes,
    inventory=SQSInventory,
    decode_options=options.SQSOptions,
    manifest_fields=options.manifest_fields,
    read_manifest=options.read_manifest,
    encode_refusal=options.encode_refusal,
    full_fidelity=options.full_fidelity,
    compare=self_test_comparison,
)
