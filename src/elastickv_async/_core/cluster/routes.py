"""The cluster's route catalog: which Raft group owns which key.

elastickv shards by *route key*, not by raw store key: the store normalises each internal key
to the logical key it belongs to (``kv/shard_key.go`` ``routeKey``) and looks that up in the
catalog's ``[start, end)`` ranges. The catalog itself lives in the default group as
``!dist|route|<routeID u64 BE>`` rows (``distribution/catalog.go``); ``routes.json`` (what
``elastickv-list-routes`` prints) carries the same ranges.

A raw key that normalisation does not recognise routes as itself, which is why wide-column
Redis rows (``!hs|``, ``!st|``, ``!zs|``...) can sit in another group than their user key.
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

_REDIS: Final = b"!redis|"
_LIST_DELTA: Final = b"!lst|meta|d|"
_LIST_CLAIM: Final = b"!lst|claim|"
_LIST_META: Final = b"!lst|meta|"
_LIST_ITEM: Final = b"!lst|itm|"
_LIST_DELTA_SUFFIX: Final = 8 + 4  # commit ts + sequence in the transaction
_LIST_SEQ: Final = 8
_DDB_ROUTE: Final = b"!ddb|route|table|"
_DDB_TABLE_PREFIXES: Final = (b"!ddb|meta|table|", b"!ddb|meta|gen|")
_DDB_ITEM_PREFIXES: Final = (b"!ddb|item|", b"!ddb|gsi|")
_SQS: Final = b"!sqs|"
_SQS_ROUTE: Final = b"!sqs|route|global"
_S3_ROUTE: Final = b"!s3route|"
_S3_OBJECT_PREFIXES: Final = (
    b"!s3|obj|head|",
    b"!s3|upload|meta|",
    b"!s3|upload|part|",
    b"!s3|blob|",
    b"!s3|chunkref|",
    b"!s3|gc|upload|",
)


def _len_prefixed(rest: bytes, suffix: int) -> bytes | None:
    """``<u32 BE length><user key>`` followed by ``suffix`` bytes (list deltas and claims)."""
    if len(rest) < 4:
        return None
    (size,) = _U32.unpack_from(rest)
    if len(rest) < 4 + size + suffix and len(rest) != 4 + size:
        return None
    return rest[4 : 4 + size]


def _s3_segment_end(key: bytes, offset: int) -> int | None:
    """End (after the ``00 01`` terminator) of an escaped S3 key segment starting at ``offset``."""
    i = offset
    while True:
        i = key.find(b"\x00", i)
        if i < 0 or i + 1 >= len(key):
            return None
        follower = key[i + 1]
        if follower == 0x01:
            return i + 2
        if follower != 0xFF:
            return None
        i += 2


def _s3_route_key(key: bytes) -> bytes | None:
    prefix = next((p for p in _S3_OBJECT_PREFIXES if key.startswith(p)), None)
    if prefix is None:
        return None
    bucket_end = _s3_segment_end(key, len(prefix))
    if bucket_end is None or len(key) < bucket_end + 8:
        return None
    object_end = _s3_segment_end(key, bucket_end + 8)
    if object_end is None:
        return None
    return _S3_ROUTE + key[len(prefix) : object_end]


def route_key(key: bytes) -> bytes:
    """The key elastickv routes ``key`` by (the raw key when no rule normalises it)."""
    if key.startswith(_LIST_DELTA):
        return _len_prefixed(key[len(_LIST_DELTA) :], _LIST_DELTA_SUFFIX) or key
    if key.startswith(_LIST_CLAIM):
        return _len_prefixed(key[len(_LIST_CLAIM) :], _LIST_SEQ) or key
    if key.startswith(_LIST_META):
        return key[len(_LIST_META) :]
    if key.startswith(_LIST_ITEM):
        rest = key[len(_LIST_ITEM) :]
        return rest[:-_LIST_SEQ] if len(rest) >= _LIST_SEQ else key
    if key.startswith(_REDIS):
        rest = key[len(_REDIS) :]
        sep = rest.find(b"|")
        return rest[sep + 1 :] if sep > 0 else key
    for prefix in _DDB_TABLE_PREFIXES:
        if key.startswith(prefix):
            table = key[len(prefix) :]
            return _DDB_ROUTE + table if table else key
    for prefix in _DDB_ITEM_PREFIXES:
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            sep = rest.find(b"|")
            return _DDB_ROUTE + rest[:sep] if sep > 0 else key
    if key.startswith(_SQS):
        return _SQS_ROUTE
    return _s3_route_key(key) or key


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
