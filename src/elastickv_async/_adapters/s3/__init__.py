"""The S3 adapter: buckets and objects <-> ``s3/<bucket>/`` (REFERENCE_NOTES §3.2, §6.5)."""

from __future__ import annotations

from ..base import AdapterSpec
from . import keys, options
from .decode import S3Decoder
from .encode import S3Encoder
from .inventory import S3Inventory
from .layout import ROOT, self_test_comparison

__all__ = ["SPEC"]

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
    decoder=S3Decoder,
    encoder=S3Encoder,
    encode_rank=3,
    route_key=keys.route_key,
    partition_unit=keys.partition_unit,
    inventory=S3Inventory,
    scope_unit=keys.partition_unit,
    decode_options=options.S3Options,
    manifest_fields=options.manifest_fields,
    read_manifest=options.read_manifest,
    encode_refusal=options.encode_refusal,
    full_fidelity=options.full_fidelity,
    compare=self_test_comparison,
)
