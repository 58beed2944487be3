"""The DynamoDB decoder driven directly: golden inputs, warnings, errors, spill and jsonl."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from ddb_support import Harness, b64, golden_case, harness, read_fsm, routed
from support import raises_code

from elastickv_async._adapters.base import Routed
from elastickv_async._adapters.dynamodb import SPEC, decode
from elastickv_async._adapters.dynamodb.dynamodb_internal_pb2 import DynamoItem, DynamoTableSchema
from elastickv_async._adapters.dynamodb.values import encode_item, encode_schema
from elastickv_async._core.cli import main
from elastickv_async._core.dump.writer import WriteLane
from elastickv_async._core.errors import AdapterRecordError, OutputError

pytestmark = pytest.mark.anyio

CLEAN_CASES = [
    "ddb_all_kinds",
    "ddb_binary_keys",
    "ddb_composite",
    "ddb_gsi",
    "ddb_hash_only",
    "ddb_long_keys",
    "ddb_migrating",
    "ddb_multi_tables",
    "ddb_number_keys",
    "ddb_orphan_items",
    "ddb_pct_names",
    "ddb_stale_gen",
]


async def _decode(
    h: Harness, records: list[tuple[bytes, bytes]], batch: int = 3
) -> dict[str, object]:
    entries = routed(records)
    for start in range(0, len(entries), batch):
        await h.decoder.handle(entries[start : start + batch])
    return await h.decoder.finalize()


def _expected_ddb(case: Path) -> dict[str, bytes]:
    root = case / "expected"
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted((root / "dynamodb").rglob("*"))
        if p.is_file()
    }


def test_spec_routes() -> None:
    assert SPEC.name == "dynamodb"
    assert set(SPEC.routed_prefixes) == {
        b"!ddb|meta|table|",
        b"!ddb|meta|gen|",
        b"!ddb|item|",
        b"!ddb|gsi|",
    }
    assert SPEC.internal_prefixes == (b"!ddb|route|",)
    assert SPEC.encoder is not None


@pytest.mark.parametrize("case", CLEAN_CASES)
async def test_golden_case_decodes_byte_identical(case: str, tmp_path: Path) -> None:
    path = golden_case(case)
    records = [(k, v) for k, v in read_fsm(path / "input.fsm") if k.startswith(b"!ddb|")]
    h = harness(tmp_path)
    scope = await _decode(h, records)
    expected = _expected_ddb(path)
    assert h.files() == expected
    tables = {rel.split("/")[1] for rel in expected if rel.endswith("/_schema.json")}
    schema_names = sorted(
        json.loads(expected[f"dynamodb/{t}/_schema.json"])["table_name"] for t in tables
    )
    assert scope == {"tables": schema_names}


async def test_stale_generation_warning(tmp_path: Path) -> None:
    records = read_fsm(golden_case("ddb_stale_gen") / "input.fsm")
    h = harness(tmp_path)
    await _decode(h, [r for r in records if r[0].startswith(b"!ddb|")])
    # Items in generations 1 and 2 while the schema says generation 3 (see the input keys).
    assert h.warnings("ddb_stale_generation_items") == [
        {
            "adapter": "dynamodb",
            "table": "inventory",
            "active_generation": 3,
            "migration_source_generation": 0,
            "stale_count": 2,
            "hint": "stale-gen rows excluded; restore would otherwise emit them under the new "
            "schema",
        }
    ]


async def test_orphan_items_warning(tmp_path: Path) -> None:
    records = read_fsm(golden_case("ddb_orphan_items") / "input.fsm")
    h = harness(tmp_path)
    scope = await _decode(h, [r for r in records if r[0].startswith(b"!ddb|")])
    assert h.warnings("ddb_orphan_items") == [
        {"adapter": "dynamodb", "encoded_table": b64("ghost-table"), "buffered_items": 2}
    ]
    assert scope == {"tables": ["kept"]}


async def test_dot_segment_is_a_typed_error(tmp_path: Path) -> None:
    records = read_fsm(golden_case("ddb_dot_segment") / "input.fsm")
    h = harness(tmp_path)
    with raises_code(AdapterRecordError, "ErrDDBInvalidItem"):
        await _decode(h, [r for r in records if r[0].startswith(b"!ddb|")])


# --- hand-built records ----------------------------------------------------------------------


def _schema(name: str, hash_key: str, range_key: str = "", generation: int = 1) -> bytes:
    schema = DynamoTableSchema(table_name=name, generation=generation)
    schema.primary_key.hash_key = hash_key
    schema.primary_key.range_key = range_key
    schema.attribute_definitions[hash_key] = "S"
    return encode_schema(schema)


def _item(**attrs: str) -> bytes:
    item = DynamoItem()
    for name, value in attrs.items():
        item.attributes[name].s = value
    return encode_item(item)


def _item_key(table: str, tail: str, generation: int = 1) -> bytes:
    return f"!ddb|item|{b64(table)}|{generation}|{tail}".encode()


async def test_unsafe_table_name_is_rejected_at_the_schema(tmp_path: Path) -> None:
    h = harness(tmp_path)
    with raises_code(AdapterRecordError, "ErrDDBMalformedKey"):
        await _decode(h, [(b"!ddb|meta|table|" + b64("..").encode(), _schema("..", "id"))])


@pytest.mark.parametrize(
    ("record", "code"),
    [
        ((b"!ddb|meta|table|dA", b"\x00DI\x01"), "ErrDDBInvalidSchema"),
        ((b"!ddb|item|dA|1|k", b"\x00DS\x01"), "ErrDDBInvalidItem"),
        ((b"!ddb|item|dA|1|k", b"\x00DI\x01\xff"), "ErrDDBInvalidItem"),
        ((b"!ddb|item|dA|x|k", b"\x00DI\x01"), "ErrDDBMalformedKey"),
        ((b"!ddb|meta|table|", b"\x00DS\x01"), "ErrDDBMalformedKey"),
    ],
)
async def test_bad_records_fail_where_they_are_met(
    record: tuple[bytes, bytes], code: str, tmp_path: Path
) -> None:
    h = harness(tmp_path)
    with raises_code(AdapterRecordError, code):
        await h.decoder.handle(routed([record]))


@pytest.mark.parametrize(
    "bad_key", [b"!ddb|item|dA|1|", b"!ddb|item|dA|1", b"!ddb|item|dA|01|", b"!ddb|item|dA=|1|k"]
)
async def test_a_bad_key_after_good_ones_of_its_table_still_fails(
    bad_key: bytes, tmp_path: Path
) -> None:
    h = harness(tmp_path)
    await h.decoder.handle(routed([(_item_key("u", "a"), _item(id="a"))]))
    good = [(f"!ddb|item|dA|1|{k}".encode(), _item(id=k)) for k in "ab"]
    await h.decoder.handle(routed(good))
    if bad_key == b"!ddb|item|dA|01|":
        # A generation with a leading zero is still generation 1: same table, same spill.
        await h.decoder.handle(routed([(bad_key + b"c", _item(id="c"))]))
        assert h.decoder._spill.counts == {(b64("u"), 1): 1, ("dA", 1): 3}
        return
    with raises_code(AdapterRecordError, "ErrDDBMalformedKey"):
        await h.decoder.handle(routed([(bad_key, _item(id="z"))]))


async def test_generation_and_gsi_rows_are_ignored(tmp_path: Path) -> None:
    h = harness(tmp_path)
    scope = await _decode(
        h,
        [
            (b"!ddb|gsi|" + b64("t").encode() + b"|1|garbage", b"not a key"),
            (b"!ddb|meta|gen|" + b64("t").encode(), b"anything"),
        ],
    )
    assert scope == {"tables": []}
    assert h.files() == {}


async def test_empty_hash_segment_lands_where_go_puts_it(tmp_path: Path) -> None:
    h = harness(tmp_path)
    await _decode(
        h,
        [
            (_item_key("t", "x"), _item(h="", r="r1")),
            (b"!ddb|meta|table|" + b64("t").encode(), _schema("t", "h", "r")),
        ],
    )
    # filepath.Join drops the empty hash directory.
    assert sorted(h.files()) == ["dynamodb/t/_schema.json", "dynamodb/t/items/r1.json"]


async def test_items_wait_on_disk_and_come_back_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode, "CHUNK_BYTES", 64)
    h = harness(tmp_path, jobs=2)
    items = [(_item_key("t", f"k{i:04d}"), _item(id=f"k{i:04d}", pad="x" * 50)) for i in range(300)]
    for start in range(0, len(items), 50):
        await h.decoder.handle(routed(items[start : start + 50]))
    spilled = sorted((tmp_path / "scratch").rglob("*.rec"))
    assert len(spilled) == 1 and spilled[0].stat().st_size > 300 * 60
    await h.decoder.handle(routed([(b"!ddb|meta|table|" + b64("t").encode(), _schema("t", "id"))]))
    await h.decoder.finalize()
    files = h.files()
    assert len(files) == 301
    assert json.loads(files["dynamodb/t/items/k0299.json"]) == {
        "id": {"S": "k0299"},
        "pad": {"S": "x" * 50},
    }
    assert h.report.counters["dynamodb.items"] == 300


async def test_same_path_in_one_generation_keeps_the_later_key(tmp_path: Path) -> None:
    """N keys 1 and 1.0 name the same file; the later record (key order) wins, as in Go."""
    h = harness(tmp_path)
    first, second = DynamoItem(), DynamoItem()
    first.attributes["n"].n = "1"
    first.attributes["v"].s = "first"
    second.attributes["n"].n = "1.0"
    second.attributes["v"].s = "second"
    schema = DynamoTableSchema(table_name="t", generation=1)
    schema.primary_key.hash_key = "n"
    await _decode(
        h,
        [
            (_item_key("t", "a"), encode_item(first)),
            (_item_key("t", "b"), encode_item(second)),
            (b"!ddb|meta|table|" + b64("t").encode(), encode_schema(schema)),
        ],
    )
    assert json.loads(h.files()["dynamodb/t/items/1.json"])["v"] == {"S": "second"}


# --- jsonl bundle layout ---------------------------------------------------------------------


def _compact(data: bytes) -> bytes:
    text = json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False)
    assert not set("<>&\u2028\u2029") & set(text), "Go would escape these"
    return text.encode() + b"\n"


@pytest.mark.parametrize("case", ["ddb_composite", "ddb_migrating", "ddb_number_keys"])
async def test_jsonl_layout_holds_the_per_item_documents_in_key_order(
    case: str, tmp_path: Path
) -> None:
    path = golden_case(case)
    records = [(k, v) for k, v in read_fsm(path / "input.fsm") if k.startswith(b"!ddb|")]
    h = harness(tmp_path, layout="jsonl")
    await _decode(h, records)
    expected = _expected_ddb(path)
    files = h.files()
    schemas = {rel: data for rel, data in expected.items() if rel.endswith("/_schema.json")}
    assert {rel: data for rel, data in files.items() if rel.endswith("/_schema.json")} == schemas
    for schema_rel in schemas:
        table_dir = schema_rel.rsplit("/", 1)[0]
        items = sorted(
            (tuple(rel[len(table_dir) + len("/items/") :].removesuffix(".json").split("/")), data)
            for rel, data in expected.items()
            if rel.startswith(table_dir + "/items/")
        )
        assert files[f"{table_dir}/items/data-00000.jsonl"] == b"".join(
            _compact(data) for _, data in items
        )
    assert not [rel for rel in files if rel.endswith(".json") and "/items/" in rel]


# --- worker processes ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["per-item", "jsonl"])
async def test_worker_processes_write_the_same_tree(
    layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks: several render calls per table, in flight beside the writes.
    monkeypatch.setattr(decode, "CHUNK_BYTES", 64)
    trees = {}
    for processes in (0, 2):
        h = harness(tmp_path / str(processes), processes=processes, layout=layout)
        async with h.workers:
            for case in ("ddb_multi_tables", "ddb_migrating"):
                records = read_fsm(golden_case(case) / "input.fsm")
                await h.decoder.handle(routed([r for r in records if r[0].startswith(b"!ddb|")]))
            await h.decoder.finalize()
        trees[processes] = h.files()
    assert trees[0] == trees[2]
    if layout == "per-item":
        expected = _expected_ddb(golden_case("ddb_multi_tables"))
        assert {rel: trees[0][rel] for rel in expected} == expected


async def test_an_item_error_in_a_worker_process_arrives_typed(tmp_path: Path) -> None:
    records = read_fsm(golden_case("ddb_dot_segment") / "input.fsm")
    h = harness(tmp_path, processes=2)
    async with h.workers:
        with raises_code(AdapterRecordError, "ErrDDBInvalidItem", match="dot path"):
            await _decode(h, [r for r in records if r[0].startswith(b"!ddb|")])


def test_cli_reports_an_item_error_from_a_worker_process_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = golden_case("ddb_dot_segment") / "input.fsm"
    out = tmp_path / "out"
    argv = ["decode", "--input", str(source), "--output", str(out), "--workers", "2"]
    assert main([*argv, "--quiet", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (len(err) == 1 and "ErrDDBInvalidItem" in err[0]) or "dot path" in err[0]


async def test_render_chunks_take_their_bytes_from_the_memory_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item bodies come back for rendering in chunks of an eighth of the memory share of the
    tables written at once, with the files of the default share."""
    items = [(_item_key("t", f"k{i:04d}"), _item(id=f"k{i:04d}", pad="x" * 50)) for i in range(300)]
    schema = (b"!ddb|meta|table|" + b64("t").encode(), _schema("t", "id"))
    asked: list[int] = []
    next_bodies = decode._next_bodies

    async def recorded(reader: Any, size: int) -> list[bytes]:
        asked.append(size)
        return await next_bodies(reader, size)

    monkeypatch.setattr(decode, "_next_bodies", recorded)
    trees = []
    for memory in (None, 8 << 10):
        h = harness(tmp_path / str(memory), jobs=2)
        if memory is not None:
            h.decoder._ctx.memory = memory
        await _decode(h, [*items, schema])
        trees.append(h.files())
    assert trees[0] == trees[1] and len(trees[0]) == 301
    assert set(asked) == {decode.CHUNK_BYTES, 1 << 10}


# --- files written behind ----------------------------------------------------------------------


def _two_tables() -> list[tuple[bytes, bytes]]:
    """Items of tables "a" (range keys: a directory per hash key) and "b", then schemas."""
    items = [
        (_item_key(table, f"k{i:04d}"), _item(h=f"h{i // 4:03d}", r=f"r{i % 4}", pad="x" * 40))
        for table in ("a", "b")
        for i in range(120)
    ]
    schemas = [(b"!ddb|meta|table|" + b64(t).encode(), _schema(t, "h", "r")) for t in ("a", "b")]
    return [*items, *schemas]


async def _consume(h: Harness, records: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    entries = routed(records)

    async def stream() -> AsyncIterator[list[Routed]]:
        for start in range(0, len(entries), 7):
            yield entries[start : start + 7]

    return await h.decoder.consume(stream())


@pytest.mark.parametrize("processes", [0, 2])
async def test_files_written_behind_make_the_same_tree(
    processes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """consume() hands each rendered chunk to the writer's background lane; the tree, scope
    and report are those of handle() and finalize() writing each chunk themselves."""
    monkeypatch.setattr(decode, "CHUNK_BYTES", 256)
    records = _two_tables()
    direct = harness(tmp_path / "direct", jobs=2, processes=processes)
    async with direct.workers:
        direct_scope = await _decode(direct, records, batch=7)
    handed: list[int] = []
    write_many = WriteLane.write_many

    async def counted(self: WriteLane, files: Sequence[tuple[str, bytes]]) -> None:
        handed.append(len(files))
        await write_many(self, files)

    monkeypatch.setattr(WriteLane, "write_many", counted)
    behind = harness(tmp_path / "behind", jobs=2, processes=processes)
    async with behind.workers:
        scope = await _consume(behind, records)
    assert sum(handed) == 240 and len(handed) > 4  # every item file, in several chunks
    assert len(direct.files()) == 242
    assert behind.files() == direct.files()
    assert scope == direct_scope == {"tables": ["a", "b"]}
    assert behind.report.counters == direct.report.counters


async def test_a_write_failing_behind_raises_the_same_error_and_leaves_whole_files(
    tmp_path: Path,
) -> None:
    """A chunk the lane cannot write (a regular file planted where table b's hash-key
    directory goes) fails consume() with the error handle() and finalize() give; every file
    left in the tree is whole."""
    records = _two_tables()
    complete = harness(tmp_path / "complete")
    await _decode(complete, records)
    expected = complete.files()
    errors = []
    for name, run in (("direct", _decode), ("behind", _consume)):
        h = harness(tmp_path / name)
        planted = h.root / "dynamodb" / "b" / "items" / "h010"
        planted.parent.mkdir(parents=True)
        planted.write_bytes(b"planted")
        with pytest.raises(OutputError) as caught:
            await run(h, records)
        errors.append(str(caught.value))
        left = h.files()
        assert left.pop("dynamodb/b/items/h010") == b"planted"
        assert left and all(expected[rel] == data for rel, data in left.items())
    assert errors[0] == errors[1]
    assert "dynamodb/b/items/h010" in errors[0]
