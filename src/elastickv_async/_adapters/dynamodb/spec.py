"""The DynamoDB adapter's :class:`~..base.AdapterSpec` (loaded on first use of ``SPEC``)."""

from __future__ import annotations

from ..base import AdapterSpec, sorted_scopes
from . import options
from .decode import DynamoDBDecoder
from .encode import DynamoDBEncoder
from .inventory import DynamoDBInventory
from .keys import (
    GSI_PREFIX,
    ITEM_PREFIX,
    ROUTE_PREFIX,
    TABLE_GEN_PREFIX,
    TABLE_META_PREFIX,
    partition_unit,
    route_key,
)
from .layout import ROOT

__all__ = ["SPEC"]

SPEC = AdapterSpec(
    name=ROOT,
    routed_prefixes=(TABLE_META_PREFIX, TABLE_GEN_PREFIX, ITEM_PREFIX, GSI_PREFIX),
    internal_prefixes=(ROUTE_PREFIX,),
    decoder=DynamoDBDecoder,
    encoder=DynamoDBEncoder,
    encode_rank=2,
    route_key=route_key,
    partition_unit=partition_unit,
    scope_unit=partition_unit,
    merge_scopes=sorted_scopes,
    inventory=DynamoDBInventory,
    decode_options=options.DynamoDBOptions,
    manifest_fields=options.manifest_fields,
    read_manifest=options.read_manifest,
)
