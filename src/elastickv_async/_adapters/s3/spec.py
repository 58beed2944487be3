"""The S3 adapter's :class:`~..base.AdapterSpec` (loaded on first use of ``s3.SPEC``).

The decoder and the encoder are imported when the first one is made: an encode never
loads the decoder's modules, nor a decode the encoder's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import AdapterSpec
from . import keys, options
from .layout import ROOT, self_test_comparison

if TYPE_CHECKING:
    from ..base import DecodeContext, EncodeContext
    from .decode import S3Decoder
    from .encode import S3Encoder
    from .inventory import S3Inventory

__all__ = ["SPEC"]


def _empty_scope() -> dict[str, Any]:
    # What the decoder's finalize returns when nothing was routed to it.
    return {"buckets": []}


def _decoder(ctx: DecodeContext) -> S3Decoder:
    from .decode import S3Decoder

    return S3Decoder(ctx)


def _encoder(ctx: EncodeContext) -> S3Encoder:
    from .encode import S3Encoder

    return S3Encoder(ctx)


def _inventory() -> S3Inventory:
    # Only inspect counts: a decode or encode never loads the inventory.
    from .inventory import S3Inventory

    return S3Inventory()


SPEC = AdapterSpec(
    name=ROOT,
    routed_prefixes=(
        keys.BUCKET_META_PREFIX,
        keys.MANIFEST_PREFIX,
        keys.UPLOAD_META_PREFIX,
        keys.UPLOAD_PART_PREFIX,
        keys.BLOB_PREFIX,
        keys.CHUNKREF_PREFIX,
        keys.CHUNKBLOB_PREFIX,
    ),
    # The live generation counter, in-flight upload cleanup and the route table are
    # operational state; the active generation comes from the bucket meta, as in the reference.
    internal_prefixes=(keys.BUCKET_GEN_PREFIX, keys.GC_UPLOAD_PREFIX, keys.ROUTE_PREFIX),
    decoder=_decoder,
    empty_scope=_empty_scope,
    encoder=_encoder,
    encode_rank=3,
    route_key=keys.route_key,
    partition_unit=keys.partition_unit,
    inventory=_inventory,
    scope_unit=keys.partition_unit,
    decode_options=options.S3Options,
    manifest_fields=options.manifest_fields,
    read_manifest=options.read_manifest,
    encode_refusal=options.encode_refusal,
    full_fidelity=options.full_fidelity,
    compare=self_test_comparison,
)
