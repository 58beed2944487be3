"""The cluster's route catalog: which Raft group owns which key.

elastickv shards by *route key*, not by raw store key: the store normalises each internal key
to the logical key it belongs to (``kv/shard_key.go`` ``routeKey``) and looks that up in the
catalog's ``[start, end)`` ranges. The catalog itself lives in the default group as
``!dist|route|<routeID u64 BE>`` rows (``distribution/catalog.go``); ``routes.json`` (what
``elastickv-list-routes`` prints) carries the same ranges.

A raw key that normalisation does not recognise routes as itself, which is why some of an
adapter's rows (wide-column collection rows, for one) can sit in another group than the
logical key they belong to.
"""

from __future__ import annotations

import base64
import bisect
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..._adapters.registry import REGISTRY
from ..errors import DataError, UsageError

__all__ = [
    "CATALOG_ROUTE_PREFIX",
    "Route",
    "RouteCatalog",
    "decode_route_descriptor",
    "route_key",
]

CATALOG_ROUTE_PREFIX: Final = b"!dist|route|"
_U64: Final = struct.Struct(">Q")
_U32: Final = struct.Struct(">I")
_ROUTE_CODEC_VERSIONS: Final = (1, 2)
_ROUTE_STATES: Final = 4


def route_key(key: bytes) -> bytes:
    """The key elastickv routes ``key`` by: the rule of the adapter whose keyspace holds it
    (``AdapterSpec.route_key``), else the raw key."""
    routed = REGISTRY.route_key(key)
    return key if routed is None else routed


@dataclass(frozen=True, slots=True)
class Route:
    """One catalog range: keys in ``[start, end)`` (``end=None``: unbounded) live in ``group``."""

    route_id: int
    start: bytes
    end: bytes | None
    group: int


def decode_route_descriptor(value: bytes) -> Route:
    """Decode a ``!dist|route|`` row's value (codec versions 1 and 2).

    Layout: version byte, route id, group id (u64 BE), state byte, parent route id (u64 BE),
    start (u64 BE length + bytes), an end-present byte and, if 1, the end (length + bytes);
    version 2 appends the split HLC (u64 BE). Raises :class:`DataError` when malformed.
    """
    try:
        version = value[0]
        if version not in _ROUTE_CODEC_VERSIONS:
            raise DataError(f"route catalog row has unsupported codec version {version}")
        route_id, group = _U64.unpack_from(value, 1)[0], _U64.unpack_from(value, 9)[0]
        if value[17] >= _ROUTE_STATES:
            raise DataError(f"route {route_id} has an unknown state {value[17]}")
        pos = 18 + 8  # state byte, then the parent route id
        (size,) = _U64.unpack_from(value, pos)
        pos += 8
        start = value[pos : pos + size]
        if len(start) != size:
            raise DataError(f"route {route_id} start is truncated")
        pos += size
        end: bytes | None = None
        has_end = value[pos]
        pos += 1
        if has_end:
            (size,) = _U64.unpack_from(value, pos)
            pos += 8
            end = value[pos : pos + size]
            if len(end) != size:
                raise DataError(f"route {route_id} end is truncated")
            pos += size
        if version == 2:
            pos += 8
        if pos != len(value):
            raise DataError(f"route {route_id} row length does not match its fields")
    except (IndexError, struct.error):
        raise DataError("route catalog row is truncated") from None
    if group == 0 or route_id == 0:
        raise DataError("route catalog row has a zero route or group id")
    return Route(route_id, bytes(start), None if end is None else bytes(end), group)


class RouteCatalog:
    """Sorted, non-overlapping routes; :meth:`owner` finds the group that owns a raw key."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = sorted(routes, key=lambda r: r.start)
        for left, right in zip(self.routes, self.routes[1:], strict=False):
            if left.end is None or left.end > right.start:
                raise DataError(f"routes {left.route_id} and {right.route_id} overlap")
        self._starts = [r.start for r in self.routes]

    def owner(self, key: bytes) -> int | None:
        """The group whose route holds ``key``'s route key, or ``None`` outside every route."""
        rkey = route_key(key)
        i = bisect.bisect_right(self._starts, rkey) - 1
        if i < 0:
            return None
        route = self.routes[i]
        return route.group if route.end is None or rkey < route.end else None

    def to_json(self) -> list[dict[str, Any]]:
        """The routes as MANIFEST records them (base64 bounds, like ``routes.json``)."""
        return [
            {
                "route_id": r.route_id,
                "raft_group_id": r.group,
                "start_b64": base64.b64encode(r.start).decode(),
                "end_b64": None if r.end is None else base64.b64encode(r.end).decode(),
            }
            for r in self.routes
        ]

    @classmethod
    def from_rows(cls, rows: Mapping[bytes, bytes]) -> RouteCatalog:
        """Build from the visible ``!dist|route|`` rows (raw key -> value)."""
        return cls(decode_route_descriptor(value) for value in rows.values())

    @classmethod
    def from_json_file(cls, path: Path) -> RouteCatalog:
        """Read ``routes.json`` as ``elastickv-list-routes`` writes it (``start_b64``/``end_b64``).

        An empty ``end_b64`` is the unbounded last route. Raises :class:`UsageError` when the
        file is unreadable or not such a document.
        """
        try:
            doc = json.loads(path.read_bytes())
            routes = [
                Route(
                    int(r["route_id"]),
                    base64.b64decode(r["start_b64"], validate=True),
                    base64.b64decode(r["end_b64"], validate=True) if r["end_b64"] else None,
                    int(r["raft_group_id"]),
                )
                for r in doc["routes"]
            ]
        except OSError as exc:
            raise UsageError(f"cannot read routes {str(path)!r}: {exc.strerror or exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"routes file {str(path)!r} is not a route list: {exc}") from None
        try:
            return cls(routes)
        except DataError as exc:
            raise UsageError(f"routes file {str(path)!r}: {exc}") from None
