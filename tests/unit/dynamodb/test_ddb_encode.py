"""The DynamoDB encoder driven directly: golden trees, GSI rows, refusals, jsonl input."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from ddb_support import encode_context, golden_case, harness, read_fsm, routed
from support import raises_code

from elastickv_async._adapters.dynamodb import encode
from elastickv_async._adapters.dynamodb.dynamodb_internal_pb2 import DynamoItem, DynamoTableSchema
from elastickv_async._adapters.dynamodb.encode import DynamoDBEncoder, gsi_rows, item_key
from elastickv_async._core.cli import main
from elastickv_async._core.errors import DumpTreeError, UnsafeDumpEntry
from elastickv_async._core.memory import DEFAULT_ENCODE_ADAPTER_MEMORY
from elastickv_async._core.workers import Workers

pytestmark = pytest.mark.anyio

ENCODE_CASES = [
    "enc_ddb",
    "enc_ddb_binary",
    "enc_ddb_gsi",
    "enc_ddb_hash_only",
    "enc_ddb_kinds_numbers",
    "enc_ddb_long_bin",
    "enc_ddb_migrating",
    "enc_ddb_pct_names",
]


async def _records(root: Path, tmp_path: Path, **decoded_with: Any) -> list[tuple[bytes, bytes]]:
    encoder = DynamoDBEncoder(encode_context(root, tmp_path / "scratch", **decoded_with))
    return sorted([record async for batch in encoder.batches() for record in batch])


@pytest.mark.parametrize("case", ENCODE_CASES)
async def test_golden_tree_encodes_to_the_reference_records(case: str, tmp_path: Path) -> None:
    path = golden_case(case)
    expected = sorted(read_fsm(path / "expected.fsm"))
    assert await _records(path / "input", tmp_path) == expected


async def test_missing_dynamodb_dir_yields_nothing(tmp_path: Path) -> None:
    assert await _records(tmp_path, tmp_path) == []


def _tree(tmp_path: Path, case: str = "enc_ddb_gsi") -> Path:
    root = tmp_path / "tree"
    shutil.copytree(golden_case(case) / "input", root)
    return root


def _users(root: Path) -> Path:
    return root / "dynamodb" / "users"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda t: (t / "items/u9.json").symlink_to(t / "items/u1.json"), "ErrUnsafeDumpEntry"),
        (lambda t: (t / "items/u9.txt").symlink_to("/etc/passwd"), "ErrUnsafeDumpEntry"),
        (lambda t: os.mkfifo(t / "items/u9.json"), "ErrUnsafeDumpEntry"),
        (lambda t: os.link(t / "items/u1.json", t / "items/u9.json"), "ErrUnsafeDumpEntry"),
        (lambda t: os.link(t / "_schema.json", t / "items/notes.txt"), "ErrUnsafeDumpEntry"),
        (lambda t: (t / "items/u1/deeper").mkdir(parents=True), "ErrDDBEncodeInvalidItem"),
        (lambda t: (t / "items/u1.json").write_text("{"), "ErrDDBEncodeInvalidItem"),
        (
            lambda t: (t / "items/u1.json").write_text('{"team": {"S": "x"}}'),
            "ErrDDBEncodeInvalidItem",
        ),
        (lambda t: (t / "_schema.json").unlink(), "ErrDDBEncodeInvalidSchema"),
        (lambda t: (t / "_schema.json").write_text("[]"), "ErrDDBEncodeInvalidSchema"),
    ],
)
async def test_refusals(mutate: Any, code: str, tmp_path: Path) -> None:
    root = _tree(tmp_path)
    mutate(_users(root))
    with raises_code(DumpTreeError, code) as info:
        await _records(root, tmp_path)
    assert isinstance(info.value, DumpTreeError) and info.value.exit_code == 2


async def test_symlinked_directories_are_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / "dynamodb" / "alias").symlink_to(_users(root))
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry"):
        await _records(root, tmp_path)
    (root / "dynamodb" / "alias").unlink()
    items = _users(root) / "items"
    items.rename(tmp_path / "elsewhere")
    items.symlink_to(tmp_path / "elsewhere")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry"):
        await _records(root, tmp_path)


async def test_items_must_be_a_directory_and_other_files_are_ignored(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    baseline = await _records(root, tmp_path)
    (_users(root) / "items" / "README.txt").write_text("not an item")
    (root / "dynamodb" / "notes.txt").write_text("not a table")
    assert await _records(root, tmp_path) == baseline
    shutil.rmtree(_users(root) / "items")
    (_users(root) / "items").write_text("")
    with pytest.raises(DumpTreeError, match="expected a directory"):
        await _records(root, tmp_path)


async def test_item_files_are_read_without_a_stat_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The item files a listing types as regular files are opened and checked as they are
    read: only the other entries (a hash directory, a symlink) are looked up first."""
    from elastickv_async._core.dump.tree import TreeDir

    root = _tree(tmp_path)
    items = _users(root) / "items"
    for number in range(5, 40):
        shutil.copy(items / "u1.json", items / f"u{number}.json")
    baseline = await _records(root, tmp_path)
    looked_up: list[str] = []
    lookup = TreeDir.lookup

    def counting(self: TreeDir, name: str) -> Any:
        looked_up.append(self.path(name))
        return lookup(self, name)

    monkeypatch.setattr(TreeDir, "lookup", counting)
    assert await _records(root, tmp_path) == baseline
    assert not [rel for rel in looked_up if rel.startswith("dynamodb/users/items/")]
    (items / "u7").mkdir()
    shutil.move(items / "u7.json", items / "u7" / "r.json")
    looked_up.clear()
    assert len(await _records(root, tmp_path)) == len(baseline)
    assert [rel for rel in looked_up if rel.startswith("dynamodb/users/items/")] == [
        "dynamodb/users/items/u7"
    ]


async def test_items_go_to_the_worker_processes_as_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of items is one object of lists (pickled a list at a time), not an object per
    item."""
    from elastickv_async._adapters.dynamodb.items import ItemBatch

    sent: list[Any] = []
    run = Workers.run

    async def recording(self: Workers, func: Any, *args: Any) -> Any:
        sent.append(args)
        return await run(self, func, *args)

    monkeypatch.setattr(Workers, "run", recording)
    records = await _records_in_order(golden_case("enc_ddb_gsi") / "input", tmp_path, 1)
    assert sorted(records) == sorted(read_fsm(golden_case("enc_ddb_gsi") / "expected.fsm"))
    assert sent and all(len(args) == 1 and type(args[0]) is ItemBatch for args in sent)
    batch = sent[0][0]
    assert type(batch.wheres) is list and type(batch.raws) is list
    assert len(batch.wheres) == len(batch.raws) == 4
    assert {type(raw) for raw in batch.raws} == {bytes}


def _write_schema(root: Path, directory: str, **changes: Any) -> None:
    doc: dict[str, Any] = {
        "format_version": 1,
        "table_name": "t",
        "primary_key": {"hash_key": {"name": "id", "type": "S"}, "range_key": {}},
        "attribute_definitions": [{"name": "id", "type": "S"}],
    }
    doc.update(changes)
    (root / "dynamodb" / directory).mkdir(parents=True)
    (root / "dynamodb" / directory / "_schema.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("directory", "changes"),
    [
        ("other", {}),  # table_name "t" belongs in directory "t"
        ("t", {"table_name": ""}),
        ("t", {"primary_key": {"hash_key": {}, "range_key": {}}}),
        ("t", {"format_version": 2}),
    ],
)
async def test_schema_consistency_checks(
    directory: str, changes: dict[str, Any], tmp_path: Path
) -> None:
    _write_schema(tmp_path, directory, **changes)
    with raises_code(DumpTreeError, "ErrDDBEncodeInvalidSchema"):
        await _records(tmp_path, tmp_path)


async def test_schema_only_table(tmp_path: Path) -> None:
    _write_schema(tmp_path, "t")
    records = await _records(tmp_path, tmp_path)
    # base64url("t") = "dA"; generation counter "1"; schema with generation 1, key encoding 2.
    assert [key for key, _ in records] == [b"!ddb|meta|gen|dA", b"!ddb|meta|table|dA"]
    assert records[0][1] == b"1"
    assert records[1][1] == (
        b"\x00DS\x01\x0a\x01t\x12\x07\x0a\x02id\x12\x01S\x1a\x04\x0a\x02id\x28\x02\x38\x01"
    )


def _gsi_schema() -> DynamoTableSchema:
    schema = DynamoTableSchema(table_name="t", generation=1)
    schema.primary_key.hash_key = "pk"
    schema.primary_key.range_key = "sk"
    by_a = schema.global_secondary_indexes["by_a"].key_schema
    by_a.hash_key = "a"
    by_ab = schema.global_secondary_indexes["by_ab"].key_schema
    by_ab.hash_key = "a"
    by_ab.range_key = "b"
    return schema


def _item(**attrs: Any) -> DynamoItem:
    item = DynamoItem()
    for name, value in attrs.items():
        av = item.attributes[name]
        if isinstance(value, bytes):
            av.b = value
        elif isinstance(value, bool):
            av.bool_value = value
        elif isinstance(value, int):
            av.n = str(value)
        else:
            av.s = value
    return item


def test_item_key_and_gsi_rows_by_hand() -> None:
    schema = _gsi_schema()
    item = _item(pk="p\x00", sk=b"\x01", a="x", b=-0)
    key = item_key(schema, item, "i")
    # "dA" = base64url("t"); S bytes with 00 escaped; B raw; segments end in 00 01.
    assert key == b"!ddb|item|dA|1|p\x00\xff\x00\x01\x01\x00\x01"
    rows = gsi_rows(schema, item, key, "i")
    # by_a: only the index hash; by_ab: index hash + range (N zero = 01), then the primary key.
    assert rows == [
        (b"!ddb|gsi|dA|1|YnlfYQ|x\x00\x01p\x00\xff\x00\x01\x01\x00\x01", key),
        (b"!ddb|gsi|dA|1|YnlfYWI|x\x00\x01\x01\x00\x01p\x00\xff\x00\x01\x01\x00\x01", key),
    ]


def test_gsi_rows_are_sparse() -> None:
    schema = _gsi_schema()
    item = _item(pk="p", sk="s", a="x")  # no "b": not in by_ab
    assert [row[0].split(b"|")[4] for row in gsi_rows(schema, item, b"k", "i")] == [b"YnlfYQ"]
    assert gsi_rows(schema, _item(pk="p", sk="s"), b"k", "i") == []


@pytest.mark.parametrize(
    "item",
    [
        _item(sk="s"),  # no hash key
        _item(pk="p"),  # no range key
        _item(pk=True, sk="s"),  # BOOL key
    ],
)
def test_item_key_rejects(item: DynamoItem) -> None:
    with raises_code(DumpTreeError, "ErrDDBEncodeInvalidItem"):
        item_key(_gsi_schema(), item, "i")


def test_gsi_index_attribute_of_wrong_kind_is_rejected() -> None:
    with raises_code(DumpTreeError, "ErrDDBEncodeInvalidItem"):
        gsi_rows(_gsi_schema(), _item(pk="p", sk="s", a=True), b"k", "i")


async def test_jsonl_tree_encodes_like_the_per_item_tree(tmp_path: Path) -> None:
    """Decoding golden ddb_composite in jsonl layout and encoding it back gives the records
    the reference encoder wrote for the same table (golden enc_ddb)."""
    decoded = golden_case("ddb_composite")
    records = [(k, v) for k, v in read_fsm(decoded / "input.fsm") if k.startswith(b"!ddb|")]
    h = harness(tmp_path, layout="jsonl")
    await h.decoder.handle(routed(records))
    await h.decoder.finalize()
    assert (h.root / "dynamodb/orders/items/data-00000.jsonl").is_file()
    encoded = await _records(h.root, tmp_path, layout="jsonl")
    assert encoded == sorted(read_fsm(golden_case("enc_ddb") / "expected.fsm"))


async def test_jsonl_tree_rejects_bad_lines_and_directories(tmp_path: Path) -> None:
    _write_schema(tmp_path, "t")
    items = tmp_path / "dynamodb/t/items"
    items.mkdir()
    (items / "data-00000.jsonl").write_text('{"id": {"S": "a"}}\n\n')
    with raises_code(DumpTreeError, "ErrDDBEncodeInvalidItem"):
        await _records(tmp_path, tmp_path, layout="jsonl")
    (items / "data-00000.jsonl").write_text('{"id": {"S": "a"}}\n')
    (items / "sub").mkdir()
    with raises_code(DumpTreeError, "ErrDDBEncodeInvalidItem"):
        await _records(tmp_path, tmp_path, layout="jsonl")
    (items / "sub").rmdir()
    assert len(await _records(tmp_path, tmp_path, layout="jsonl")) == 3


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_small_chunks_give_the_same_records_and_leak_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = golden_case("enc_ddb") / "input"
    baseline = await _records(root, tmp_path)
    monkeypatch.setattr(encode, "CHUNK_UNITS", 2)
    before = _open_fds()
    assert await _records(root, tmp_path) == baseline
    assert _open_fds() == before
    # Stopping early closes the walk and every opened item file.
    stream = DynamoDBEncoder(encode_context(root, tmp_path / "scratch")).batches()
    await stream.__anext__()
    await stream.aclose()
    assert _open_fds() == before


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_errors_in_later_chunks_leak_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path, "enc_ddb")
    (root / "dynamodb/orders/items/customer-1/zzz.json").write_text("[")
    monkeypatch.setattr(encode, "CHUNK_UNITS", 2)
    before = _open_fds()
    with raises_code(DumpTreeError, "ErrDDBEncodeInvalidItem"):
        await _records(root, tmp_path)
    assert _open_fds() == before


async def _records_in_order(root: Path, tmp_path: Path, workers: int) -> list[tuple[bytes, bytes]]:
    ctx = encode_context(root, tmp_path / f"scratch-{workers}")
    async with Workers(workers) as pool:
        encoder = DynamoDBEncoder(dataclasses.replace(ctx, workers=pool))
        return [record async for batch in encoder.batches() for record in batch]


@pytest.mark.parametrize("case", ["enc_ddb_gsi", "enc_ddb_binary", "enc_ddb_migrating"])
async def test_worker_processes_give_the_same_records_in_the_same_order(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = golden_case(case) / "input"
    # Small chunks: tables' schema records fall between items of one chunk.
    monkeypatch.setattr(encode, "CHUNK_UNITS", 3)
    in_thread = await _records_in_order(root, tmp_path, 0)
    assert await _records_in_order(root, tmp_path, 2) == in_thread
    assert sorted(in_thread) == sorted(read_fsm(golden_case(case) / "expected.fsm"))


async def test_an_item_error_in_a_worker_process_arrives_typed(tmp_path: Path) -> None:
    root = _tree(tmp_path, "enc_ddb")
    (root / "dynamodb/orders/items/customer-1/zzz.json").write_text('{"x": {"Q": "1"}}')
    with raises_code(DumpTreeError, "ErrDDBEncodeInvalidItem") as caught:
        await _records_in_order(root, tmp_path, 2)
    assert "customer-1/zzz.json" in str(caught.value)


def test_cli_reports_an_item_error_from_a_worker_process_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _tree(tmp_path, "enc_ddb")
    (root / "dynamodb/orders/items/customer-1/zzz.json").write_text('{"x": {"Q": "1"}}')
    out = tmp_path / "out.fsm"
    argv = ["encode", "--input", str(root), "--output", str(out), "--workers", "2"]
    assert main([*argv, "--no-verify-checksums", "--quiet", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "customer-1/zzz.json" in err[0] and "unknown attribute type" in err[0]
    assert not out.exists()


def _steps(ctx: Any) -> list[int]:
    """How many units each step of a walk of ``ctx``'s tree reads."""
    walker = encode._Walker(ctx)
    try:
        return [len(chunk) for chunk in iter(walker.next_chunk, [])]
    finally:
        walker.close()


async def test_walk_steps_take_their_bytes_from_the_memory_share(tmp_path: Path) -> None:
    """A walk step reads at most a quarter of the encoder's share, past it by one unit: the
    smallest share reads one unit per step, with the records of the default share."""
    root = golden_case("enc_ddb_gsi") / "input"
    steps: dict[int, list[int]] = {}
    found = {}
    for memory in (DEFAULT_ENCODE_ADAPTER_MEMORY, 4):
        ctx = dataclasses.replace(encode_context(root, tmp_path / "scratch"), memory=memory)
        steps[memory] = await anyio.to_thread.run_sync(_steps, ctx)
        encoder = DynamoDBEncoder(ctx)
        found[memory] = [record async for batch in encoder.batches() for record in batch]
    units = steps[DEFAULT_ENCODE_ADAPTER_MEMORY]
    assert len(units) == 1 and units[0] > 3
    assert steps[4] == [1] * units[0]
    assert found[4] == found[DEFAULT_ENCODE_ADAPTER_MEMORY]
