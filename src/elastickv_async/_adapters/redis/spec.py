"""The Redis adapter's :class:`~..base.AdapterSpec` (loaded on first use of ``SPEC``).

The decoder and the encoder are imported when the first one is made: the CLI loads every
adapter's SPEC for its flags, and a run loads only the side it uses.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ..._core.dump.keymap import KEYMAP_FILE
from ..base import BYTES, LINE_SET, AdapterSpec, FileComparison
from . import options
from .keys import INTERNAL_PREFIXES, ROUTED_PREFIXES, route_key, user_key

if TYPE_CHECKING:
    from ..base import DecodeContext, EncodeContext
    from .decode import RedisDecoder
    from .encode import RedisEncoder
    from .inventory import RedisInventory

__all__ = ["SPEC", "self_test_comparison"]


@functools.cache
def _keyed_sidecars() -> frozenset[str]:
    """Sidecars keyed by Redis key, whose line order is the order the decoder met the records:
    a tree decoded from legacy values (TTL found in a later ``!redis|ttl|`` row) comes back
    in another order after a round trip, with the same records."""
    # Loaded here, not with the SPEC: every command line loads all SPECs, and the layout
    # (with the value classes it needs) only matters to a Redis self-test.
    from .layout import DB_NAME, HLL_TTL, STRINGS_TTL

    return frozenset(f"{DB_NAME}/{name}" for name in (STRINGS_TTL, HLL_TTL, KEYMAP_FILE))


def self_test_comparison(path: str) -> FileComparison:
    """How the self-test compares ``path`` (inside ``redis/``): keyed sidecars as line sets."""
    return LINE_SET if path in _keyed_sidecars() else BYTES


def _empty_scope() -> dict[str, Any]:
    # What the decoder's finalize returns when nothing was routed to it.
    return {"databases": []}


def _decoder(ctx: DecodeContext) -> RedisDecoder:
    from .decode import RedisDecoder

    return RedisDecoder(ctx)


def _encoder(ctx: EncodeContext) -> RedisEncoder:
    from .encode import RedisEncoder

    return RedisEncoder(ctx)


def _inventory() -> RedisInventory:
    # Only inspect counts: a decode or encode never loads the inventory.
    from .inventory import RedisInventory

    return RedisInventory()


SPEC = AdapterSpec(
    name="redis",  # the tree's top directory, layout.ROOT
    routed_prefixes=ROUTED_PREFIXES,
    internal_prefixes=INTERNAL_PREFIXES,
    decoder=_decoder,
    empty_scope=_empty_scope,
    encoder=_encoder,
    encode_rank=1,
    route_key=route_key,
    inventory=_inventory,
    scope_unit=user_key,
    scope_glob=True,
    decode_options=options.RedisOptions,
    self_test_options=options.self_test_options,
    compare=self_test_comparison,
)
