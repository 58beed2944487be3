"""The cluster decode's parts: route keys and catalog, runs, the merge, group discovery."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cluster_support import catalog_row
from structlog.testing import capture_logs

from elastickv_async._core.cluster.inputs import GroupInput, discover_groups, parse_group_inputs
from elastickv_async._core.cluster.merge import merge_runs
from elastickv_async._core.cluster.routes import (
    Route,
    RouteCatalog,
    decode_route_descriptor,
    route_key,
)
from elastickv_async._core.cluster.runs import RunFile, RunReader, RunWriter, Unit
from elastickv_async._core.errors import DataError, UsageError
from elastickv_async._core.snapshot.entry import Entry

U32 = struct.Struct(">I").pack
U64 = struct.Struct(">Q").pack


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"!redis|str|user:1", b"user:1"),
        (b"!redis|ttl|a|b", b"a|b"),
        (b"!lst|meta|mylist", b"mylist"),
        (b"!lst|itm|mylist" + U64(7), b"mylist"),
        (b"!lst|meta|d|" + U32(6) + b"mylist" + U64(9) + U32(0), b"mylist"),
        (b"!lst|claim|" + U32(6) + b"mylist" + U64(3), b"mylist"),
        (b"!ddb|meta|table|dGFi", b"!ddb|route|table|dGFi"),
        (b"!ddb|item|dGFi|3|pk", b"!ddb|route|table|dGFi"),
        (b"!ddb|gsi|dGFi|idx", b"!ddb|route|table|dGFi"),
        (b"!sqs|queue|meta|cQ", b"!sqs|route|global"),
        (
            b"!s3|obj|head|bk\x00\x01" + U64(2) + b"a\x00\xffb\x00\x01rest",
            b"!s3route|bk\x00\x01" + U64(2) + b"a\x00\xffb\x00\x01",
        ),
        (b"!s3|bucket|meta|bk", b"!s3|bucket|meta|bk"),
        (b"!hs|fld|raw", b"!hs|fld|raw"),
    ],
)
def test_route_key_normalises_like_the_store(raw: bytes, expected: bytes) -> None:
    """Each key family routes by the logical key ``kv/shard_key.go`` derives."""
    assert route_key(raw) == expected


def test_catalog_owner_and_bounds() -> None:
    """Half-open ranges; the last route unbounded; keys outside every route have no owner."""
    catalog = RouteCatalog([Route(2, b"m", None, 2), Route(1, b"b", b"m", 1)])
    assert catalog.owner(b"!redis|str|cherry") == 1
    assert catalog.owner(b"!redis|str|m") == 2
    assert catalog.owner(b"!redis|str|a") is None
    with pytest.raises(DataError, match="overlap"):
        RouteCatalog([Route(1, b"", b"n", 1), Route(2, b"m", None, 2)])


def test_route_descriptor_versions_and_damage() -> None:
    """v2 rows (and v1, without the split HLC) decode; truncation and bad versions fail."""
    _, _, value = catalog_row(5, 3, b"a", b"q")
    assert decode_route_descriptor(value) == Route(5, b"a", b"q", 3)
    v1 = b"\x01" + value[1:-8]
    assert decode_route_descriptor(v1) == Route(5, b"a", b"q", 3)
    _, _, open_end = catalog_row(6, 2, b"q", None)
    assert decode_route_descriptor(open_end).end is None
    with pytest.raises(DataError, match="truncated"):
        decode_route_descriptor(value[:20])
    with pytest.raises(DataError, match="version"):
        decode_route_descriptor(b"\x09" + value[1:])
    with pytest.raises(DataError, match="length"):
        decode_route_descriptor(value + b"x")


def test_routes_json_reading(tmp_path: Path) -> None:
    """routes.json bounds are base64; an empty end is unbounded; junk is a usage error."""
    path = tmp_path / "routes.json"
    routes = [
        {"route_id": 1, "raft_group_id": 1, "start_b64": "", "end_b64": "bQ=="},
        {"route_id": 2, "raft_group_id": 2, "start_b64": "bQ==", "end_b64": ""},
    ]
    path.write_text(json.dumps({"routes": routes}))
    catalog = RouteCatalog.from_json_file(path)
    assert [r.end for r in catalog.routes] == [b"m", None]
    assert catalog.to_json()[0]["end_b64"] == base64.b64encode(b"m").decode()
    path.write_text("{}")
    with pytest.raises(UsageError, match="not a route list"):
        RouteCatalog.from_json_file(path)


def _entry(key: bytes, ts: int, value: bytes = b"") -> Entry:
    return Entry(key, value or key, ts, 0, False)


async def _run(entries: list[Entry], path: Path, units: list[Unit] | None = None) -> RunFile:
    writer = RunWriter(path)
    for entry, unit in zip(entries, units or [None] * len(entries), strict=True):
        await writer.add(entry, unit)
    return await writer.finish()


async def _read(reader: RunReader) -> list[Entry]:
    got: list[Entry] = []
    while batch := await reader.next_batch():
        got.extend(batch)
    return got


async def _drain(readers: list[tuple[int, RunReader]], catalog: Any, log: Any) -> list[Entry]:
    out: list[Entry] = []
    async for batch in merge_runs(readers, catalog, log, batch_size=2):
        out.extend(batch)
    return out


@pytest.mark.anyio
async def test_run_round_trip_and_unit_ranges(tmp_path: Path) -> None:
    """A run reads back whole, or unit by unit from the sections the writer noted.

    Unit ``a`` has two stretches (its entries are apart in key order): reading its ranges
    gives exactly its entries, in order, as reading the whole run and filtering does.
    """
    big = Entry(b"b1", b"v" * 3_000_000, 9, 77, False)
    marker = Entry(b"a3", b"", 4, 0, True)
    entries = [_entry(b"a1", 3), _entry(b"a2", 1), big, _entry(b"b2", 2), marker, _entry(b"c", 5)]
    units: list[Unit] = [b"a", b"a", b"b", b"b", b"a", None]
    run = await _run(entries, tmp_path / "r.run", units)
    assert run.entries == 6
    assert await _read(RunReader(run.path)) == entries
    assert len(run.segments[b"a"]) == 2 and len(run.segments[b"b"]) == 1
    for unit in (b"a", b"b", None):
        wanted = [e for e, u in zip(entries, units, strict=True) if u == unit]
        reader = RunReader(run.path, run.segments[unit])
        assert await _read(reader) == wanted


@pytest.mark.anyio
async def test_merge_orders_by_encoded_key_and_meets_copies_kept_apart(tmp_path: Path) -> None:
    """Copies of K at ts 5 and 3 sort apart (K‖X falls between); only the owner's survives."""
    between = b"K" + b"\xff" * 7 + b"\xfb"
    group1 = [_entry(b"A", 1), _entry(b"K", 5, b"stale"), _entry(between, 2)]
    group2 = [_entry(b"K", 3, b"owned"), _entry(b"Z", 4)]
    catalog = RouteCatalog([Route(1, b"", b"K", 1), Route(2, b"K", None, 2)])
    run1, run2 = await _run(group1, tmp_path / "1.run"), await _run(group2, tmp_path / "2.run")
    readers = [(1, RunReader(run1.path)), (2, RunReader(run2.path))]
    with capture_logs() as logs:
        from structlog import get_logger

        merged = await _drain(readers, catalog, get_logger())
    assert [(e.key, e.value) for e in merged] == [
        (b"A", b"A"),
        (b"K", b"owned"),
        (between, between),
        (b"Z", b"Z"),
    ]
    assert [log["event"] for log in logs] == ["cross_group_duplicate"]
    assert logs[0]["kept_group"] == 2 and logs[0]["groups"] == [1, 2]


@pytest.mark.anyio
async def test_merge_arbitrates_deletion_markers_and_drops_them(tmp_path: Path) -> None:
    """Markers never leave the merge; an owner's marker drops a newer stale live copy (said),
    a stale group's marker loses to the owner's live copy (nothing to say)."""
    deleted = Entry(b"D", b"", 3, 0, True)
    group1 = [deleted, _entry(b"E", 2, b"owned"), Entry(b"F", b"", 9, 0, True)]
    group2 = [_entry(b"D", 8, b"stale"), Entry(b"E", b"", 9, 0, True)]
    catalog = RouteCatalog([Route(1, b"", None, 1)])
    run1, run2 = await _run(group1, tmp_path / "1.run"), await _run(group2, tmp_path / "2.run")
    readers = [(1, RunReader(run1.path)), (2, RunReader(run2.path))]
    with capture_logs() as logs:
        from structlog import get_logger

        merged = await _drain(readers, catalog, get_logger())
    assert [(e.key, e.value) for e in merged] == [(b"E", b"owned")]
    assert [(log["event"], log["key"], log["kept_group"]) for log in logs] == [
        ("cross_group_duplicate", b"D", 1)
    ]


def test_group_inputs_from_flags_and_layout(tmp_path: Path) -> None:
    """``GROUP=PATH`` wins, then ``group-<g>/fsm-snap/``, then the position; pins attach."""
    layout = tmp_path / "group-7/fsm-snap/0000000000000002.fsm"
    groups = parse_group_inputs([f"3={tmp_path}/x.fsm", layout], {7: "worker-a"})
    assert [(g.group, g.path, g.worker) for g in groups] == [
        (3, tmp_path / "x.fsm", None),
        (7, layout, "worker-a"),
    ]
    with pytest.raises(UsageError, match="--pin names group 9"):
        parse_group_inputs([layout], {9: "w"})


def test_positional_group_ids_and_collisions(tmp_path: Path) -> None:
    """Plain paths take their 1-based position; an explicit id equal to one collides."""
    groups = parse_group_inputs(["a.fsm", "b.fsm"])
    assert [(g.group, g.path.name) for g in groups] == [(1, "a.fsm"), (2, "b.fsm")]
    with pytest.raises(UsageError, match="given twice"):
        parse_group_inputs(["a.fsm", "1=b.fsm"])
    assert parse_group_inputs([GroupInput(4, Path("c.fsm"), "w")])[0].worker == "w"


def test_discover_takes_the_newest_snapshot_per_group(tmp_path: Path) -> None:
    """Every group-<g>/fsm-snap/ contributes its highest-index .fsm; other names are ignored."""
    for group, names in ((1, ["0000000000000009.fsm", "000000000000000a.fsm"]), (12, ["5.fsm"])):
        snaps = tmp_path / f"group-{group}/fsm-snap"
        snaps.mkdir(parents=True)
        for name in names:
            (snaps / name).write_bytes(b"")
    (tmp_path / "group-3/fsm-snap").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    found = discover_groups(tmp_path)
    assert [(g.group, g.path.name) for g in found] == [(1, "000000000000000a.fsm"), (12, "5.fsm")]
    with pytest.raises(UsageError, match="no group"):
        discover_groups(tmp_path / "other")
