"""The SQS adapter's :class:`~..base.AdapterSpec` (loaded on first use of ``sqs.SPEC``).

The decoder and the encoder are imported when the first one is made: the CLI loads every
adapter's SPEC for its flags, and a run loads only the side it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import AdapterSpec, sorted_scopes
from . import options
from .keys import INTERNAL_PREFIXES, ROUTED_PREFIXES, partition_unit, route_key
from .layout import ROOT, self_test_comparison

if TYPE_CHECKING:
    from ..base import DecodeContext, EncodeContext
    from .decode import SQSDecoder
    from .encode import SQSEncoder
    from .inventory import SQSInventory

__all__ = ["SPEC"]


def _empty_scope() -> dict[str, Any]:
    # What the decoder's finalize returns when nothing was routed to it.
    return {"queues": []}


def _decoder(ctx: DecodeContext) -> SQSDecoder:
    from .decode import SQSDecoder

    return SQSDecoder(ctx)


def _encoder(ctx: EncodeContext) -> SQSEncoder:
    from .encode import SQSEncoder

    return SQSEncoder(ctx)


def _inventory() -> SQSInventory:
    # Only inspect counts: a decode or encode never loads the inventory.
    from .inventory import SQSInventory

    return SQSInventory()


SPEC = AdapterSpec(
    name=ROOT,
    routed_prefixes=ROUTED_PREFIXES,
    internal_prefixes=INTERNAL_PREFIXES,
    decoder=_decoder,
    empty_scope=_empty_scope,
    encoder=_encoder,
    encode_rank=4,
    route_key=route_key,
    partition_unit=partition_unit,
    scope_unit=partition_unit,
    merge_scopes=sorted_scopes,
    inventory=_inventory,
    decode_options=options.SQSOptions,
    manifest_fields=options.manifest_fields,
    read_manifest=options.read_manifest,
    encode_refusal=options.encode_refusal,
    full_fidelity=options.full_fidelity,
    compare=self_test_comparison,
)
