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
    "CATALOG_PREFIX",
    "CATALOG_ROUTE_PREFIX",
    "CATALOG_VERSION_KEY",
    "Route",
    "RouteCatalog",
    "catalog_rows",
    "decode_route_descriptor",
    "encode_route_descriptor",
    "route_key",
]

#: Every key of the catalog's keyspace; the node reads them all from one group's store.
CATALOG_PREFIX: Final = b"!dist|"
CATALOG_ROUTE_PREFIX: Final = b"!dist|route|"
#: The node stores its catalog in the group that routes this key (``main.go``
#: ``distributionCatalogGroupID``).
CATALOG_VERSION_KEY: Final = b"!dist|meta|version"
_CATALOG_NEXT_ROUTE_ID_KEY: Final = b"!dist|meta|next_route_id"
_CATALOG_RECORD_VERSION: Final = 1
_ROUTE_CODEC_V2: Final = 2
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


def encode_route_descriptor(route: Route) -> bytes:
    """A ``!dist|route|`` row's value (codec version 2), as :func:`decode_route_descriptor`
    reads it: an active route, no parent, no split HLC (a restored catalog starts afresh)."""
    value = bytes([_ROUTE_CODEC_V2]) + _U64.pack(route.route_id) + _U64.pack(route.group)
    value += b"\x00" + _U64.pack(0) + _U64.pack(len(route.start)) + route.start
    if route.end is None:
        value += b"\x00"
    else:
        value += b"\x01" + _U64.pack(len(route.end)) + route.end
    return value + _U64.pack(0)


def catalog_rows(routes: Iterable[Route], version: int = 1) -> list[tuple[bytes, bytes]]:
    """The store rows of a catalog holding ``routes``, sorted by key.

    What ``distribution/catalog.go`` reads at startup: one ``!dist|route|<id u64 BE>`` row per
    route, the catalog version and the next route id (version byte + u64 BE each). A
    nonzero version with routes makes the node use them instead of seeding its own from
    ``--shardRanges``. No delta rows are written: without a delta floor, a watcher asks for
    the whole catalog.
    """
    listed = list(routes)
    rows = [
        (CATALOG_ROUTE_PREFIX + _U64.pack(r.route_id), encode_route_descriptor(r)) for r in listed
    ]
    next_id = max((r.route_id for r in listed), default=0) + 1
    rows.append((CATALOG_VERSION_KEY, bytes([_CATALOG_RECORD_VERSION]) + _U64.pack(version)))
    rows.append((_CATALOG_NEXT_ROUTE_ID_KEY, bytes([_CATALOG_RECORD_VERSION]) + _U64.pack(next_id)))
    return sorted(rows)


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

    def group_ids(self) -> set[int]:
        """The groups the routes name."""
        return {r.group for r in self.routes}

    @classmethod
    def from_manifest(cls, records: Any) -> RouteCatalog:
        """Read the routes a cluster MANIFEST.json records (:meth:`to_json`'s form).

        Raises :class:`DataError` (``ErrInvalidManifest``) when they are not such a list.
        """
        try:
            return cls(
                Route(
                    int(r["route_id"]),
                    base64.b64decode(r["start_b64"], validate=True),
                    None if r["end_b64"] is None else base64.b64decode(r["end_b64"], validate=True),
                    int(r["raft_group_id"]),
                )
                for r in records
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"MANIFEST.json cluster.routes is not a route list: {exc}",
                code="ErrInvalidManifest",
            ) from None

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
