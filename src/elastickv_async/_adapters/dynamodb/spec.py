"""The DynamoDB adapter's :class:`~..base.AdapterSpec` (loaded on first use of ``SPEC``).

The decoder and the encoder are imported when the first one is made: the CLI loads every
adapter's SPEC for its flags, and a run loads only the side it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import AdapterSpec, sorted_scopes
from . import options
from .keys import (
    GSI_PREFIX,
    ITEM_PREFIX,
    ROUTE_PREFIX,
    TABLE_GEN_PREFIX,
    TABLE_META_PREFIX,
    partition_unit,
    route_key,
)
from .tree import ROOT

if TYPE_CHECKING:
    from ..base import DecodeContext, EncodeContext
    from .decode import DynamoDBDecoder
    from .encode import DynamoDBEncoder
    from .inventory import DynamoDBInventory

__all__ = ["SPEC"]


def _empty_scope() -> dict[str, Any]:
    # What the decoder's finalize returns when nothing was routed to it.
    return {"tables": []}


def _decoder(ctx: DecodeContext) -> DynamoDBDecoder:
    from .decode import DynamoDBDecoder

    return DynamoDBDecoder(ctx)


def _encoder(ctx: EncodeContext) -> DynamoDBEncoder:
    from .encode import DynamoDBEncoder

    return DynamoDBEncoder(ctx)


def _inventory() -> DynamoDBInventory:
    # Only inspect counts: a decode or encode never loads the inventory.
    from .inventory import DynamoDBInventory

    return DynamoDBInventory()


SPEC = AdapterSpec(
    name=ROOT,
    routed_prefixes=(TABLE_META_PREFIX, TABLE_GEN_PREFIX, ITEM_PREFIX, GSI_PREFIX),
    internal_prefixes=(ROUTE_PREFIX,),
    decoder=_decoder,
    empty_scope=_empty_scope,
    encoder=_encoder,
    encode_rank=2,
    route_key=route_key,
    partition_unit=partition_unit,
    scope_unit=partition_unit,
    merge_scopes=sorted_scopes,
    inventory=_inventory,
    decode_options=options.DynamoDBOptions,
    manifest_fields=options.manifest_fields,
    read_manifest=options.read_manifest,
)
