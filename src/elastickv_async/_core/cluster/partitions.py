"""Where a cluster decode may cut an adapter's keyspace: the partition rule.

A partition is one adapter's rows of one *unit*, decoded by one adapter instance on one
worker. Each adapter declares its units (``AdapterSpec.partition_unit``): names whose rows
it turns into files without looking at any other unit's rows, all under its own subtree
``<adapter>/<encoded unit>``. The cut follows the adapters' own key parsers, so it never
splits what an adapter joins.

A row that belongs to no single unit (the adapter says ``None``: a row any unit may use, a
key the adapter would reject, or an adapter that declares no units at all) makes that
adapter one partition for the whole cluster, where it then joins, or rejects, exactly as a
single-file decode does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..._adapters.registry import REGISTRY
from ..dump.names import encode_segment
from .runs import Unit

__all__ = ["merge_scopes", "subtree", "unit_rules"]


def unit_rules(adapters: Sequence[str]) -> dict[str, Callable[[bytes, bytes], Unit]]:
    """Each adapter's ``partition_unit(prefix, key)``."""
    return {name: REGISTRY[name].partition_unit for name in adapters}


def subtree(adapter: str, unit: Unit) -> str:
    """The part of the tree a partition writes: ``<adapter>`` or ``<adapter>/<unit dir>``."""
    return adapter if unit is None else f"{adapter}/{encode_segment(unit)}"


def merge_scopes(adapter: str, scopes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One adapter's MANIFEST scope from its partitions' scopes, given in unit order."""
    if len(scopes) == 1:
        return dict(scopes[0])
    return REGISTRY[adapter].merge_scopes(scopes)
