"""One memory budget for the whole run: its shares, its option, and every part that obeys it."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import REPO_ROOT, run_independent_files

from elastickv_async import DecodeOptions, EncodeOptions, decode_snapshot, encode_snapshot
from elastickv_async._adapters.base import DecodeContext, EncodeContext
from elastickv_async._adapters.redis.decode import RedisDecoder
from elastickv_async._adapters.sqs import spill as sqs_spill
from elastickv_async._core import extsort, pipeline
from elastickv_async._core.dump.checksums import ChecksumLedger, walk_digests
from elastickv_async._core.dump.verify import check_input_tree
from elastickv_async._core.encode import api as encode_api
from elastickv_async._core.encode import publish, selftest, sortframe
from elastickv_async._core.encode.output import SLICE_BYTES, SLICES_HELD, SnapshotStream
from elastickv_async._core.encode.readdigests import ReadDigests
from elastickv_async._core.encode.sortframe import FramedSorter
from elastickv_async._core.errors import UsageError
from elastickv_async._core.inspection import inspect_snapshot
from elastickv_async._core.memory import (
    DEFAULT_ADAPTER_MEMORY,
    DEFAULT_ENCODE_ADAPTER_MEMORY,
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_WALK_MEMORY,
    LEDGER_ENTRY_BYTES,
    LEDGER_FIXED_BYTES,
    MIN_MEMORY_BUDGET,
    READ_CHUNKS,
    MemoryBudget,
    ledger_entries,
    parse_size,
)
from elastickv_async._core.plan import plan_decode
from elastickv_async._core.report import Report, make_logger
from elastickv_async._core.snapshot import reader

sys.path.insert(0, str(REPO_ROOT / "scripts"))

import bench_reference
import benchlib

pytestmark = pytest.mark.anyio
TINY = MIN_MEMORY_BUDGET
ADAPTERS = ("dynamodb", "s3", "redis", "sqs")
#: Every adapter, large enough that the smallest budget makes each buffer spill while the
#: default budget holds it all in memory.
MIX = bench_reference.Mix(
    "test", dynamodb_items=400, redis_strings=300, redis_hashes=60, sqs_messages=600, s3_objects=1
)


# --- the shares -------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["decode", "encode"])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("total", [MIN_MEMORY_BUDGET, DEFAULT_MEMORY_BUDGET, (1 << 30) + 7])
def test_shares_sum_to_the_budget(direction: Any, count: int, total: int) -> None:
    """Every part's bytes together are the budget, but for what rounding down leaves."""
    budget = MemoryBudget(total, direction, ADAPTERS[:count])
    parts = budget.parts()
    assert total - 16 - count <= sum(parts.values()) <= total
    assert all(share > 0 for share in parts.values())
    own = ["channels", "checksums"] if direction == "decode" else ["channels", "checksums", "sort"]
    if direction == "encode":
        own.append("walk")
    adapters = [f"adapter.{name}" for name in ADAPTERS[:count]]
    assert sorted(parts) == sorted([*own, *adapters])


@pytest.mark.parametrize("direction", ["decode", "encode"])
def test_an_adapter_share_shrinks_as_more_adapters_run(direction: Any) -> None:
    """The adapters' part is shared evenly: four adapters get a quarter each of what one gets."""
    alone = MemoryBudget(DEFAULT_MEMORY_BUDGET, direction, ("redis",)).adapter("redis")
    shared = MemoryBudget(DEFAULT_MEMORY_BUDGET, direction, ADAPTERS)
    assert {shared.adapter(name) for name in ADAPTERS} == {alone // 4}
    assert alone == (
        DEFAULT_ADAPTER_MEMORY if direction == "decode" else DEFAULT_ENCODE_ADAPTER_MEMORY
    )
    with pytest.raises(ValueError, match="not part of this run"):
        MemoryBudget(DEFAULT_MEMORY_BUDGET, direction, ("redis",)).adapter("sqs")


def test_the_defaults_are_the_default_budgets_shares() -> None:
    """What a context built outside a run, and ``verify``, get: the default budget's parts."""
    encode = MemoryBudget(DEFAULT_MEMORY_BUDGET, "encode", ("redis",))
    assert EncodeContext(Path("."), make_logger(Report()), Report(), Path(".")).memory == (
        encode.adapter("redis")
    )
    assert encode.share("walk") == DEFAULT_WALK_MEMORY
    assert inspect.signature(walk_digests).parameters["memory"].default == DEFAULT_WALK_MEMORY


def test_adapters_holding_data_share_what_the_others_do_not_use() -> None:
    """Once the input is read, the adapters' part is shared by the adapters that hold data;
    one that holds nothing keeps its own share."""
    budget = MemoryBudget(DEFAULT_MEMORY_BUDGET, "decode", ADAPTERS)
    part = budget.share("adapters")
    assert budget.adapter("sqs", holding={"sqs"}) == part
    assert budget.adapter("sqs", holding={"sqs", "redis"}) == part // 2
    assert budget.adapter("sqs", holding=ADAPTERS) == budget.adapter("sqs") == part // 4
    assert budget.adapter("s3", holding={"sqs"}) == part // 4


def test_batches_and_ledger_follow_the_budget() -> None:
    """The channels' batches and the ledger's in-memory digests fit in their shares."""
    budget = MemoryBudget(DEFAULT_MEMORY_BUDGET, "decode", ADAPTERS)
    per_batch = budget.batch_bytes(4, streams=4)
    assert (4 * (4 + 2) + 2) * per_batch <= budget.share("channels")
    assert budget.ledger_entries() * LEDGER_ENTRY_BYTES <= budget.share("checksums")
    assert MemoryBudget(TINY, "decode", ADAPTERS).batch_bytes(4, streams=4) >= 1


@pytest.mark.parametrize("streams", [1, 4])
def test_the_reader_chunks_take_places_beside_the_batches(streams: int) -> None:
    """With the reader's chunks, the batches, the chunks and the batch framed from them (a
    chunk's worth) together fit the channels' share; the chunks take a third of it whatever
    the number of channels (within a page and 4 MiB), so they stay large when many run."""
    budget = MemoryBudget(DEFAULT_MEMORY_BUDGET, "decode", ADAPTERS[:streams])
    per_batch = budget.batch_bytes(4, streams=streams, reader=True)
    chunk = budget.read_chunk()
    assert per_batch < budget.batch_bytes(4, streams=streams)
    held = (streams * (4 + 2) + 2) * per_batch + (READ_CHUNKS + 1) * chunk
    assert held <= budget.share("channels")
    assert chunk == budget.share("channels") // 3 // (READ_CHUNKS + 1) == 1 << 20
    assert chunk > per_batch
    tiny = MemoryBudget(TINY, "decode", ADAPTERS)
    assert 4 << 10 < tiny.read_chunk() == tiny.share("channels") // 3 // (READ_CHUNKS + 1)
    assert MemoryBudget(1 << 30, "decode", ("s3",)).read_chunk() == 4 << 20


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("48MiB", 48 << 20),
        ("512KiB", 512 << 10),
        ("1GiB", 1 << 30),
        ("700000", 700_000),
        ("1 MiB", 1 << 20),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["", "abc", "12MB", "-1MiB", "1.5MiB", "0", "1KiB", "64KiB", "2000GiB"]
)
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError, match="--memory-budget"):
        parse_size(text)


@pytest.mark.parametrize("command", ["decode", "encode"])
@pytest.mark.parametrize("size", ["1KiB", "lots", "0"])
def test_cli_refuses_a_bad_budget_with_one_line(tmp_path: Path, command: str, size: str) -> None:
    """A bad --memory-budget is a usage error: exit 1, one line on stderr, nothing written."""
    target = tmp_path / "out"
    source = REPO_ROOT / "examples" / "sample.fsm" if command == "decode" else tmp_path
    argv = [command, "--input", str(source), "--output", str(target), "--memory-budget", size]
    done = subprocess.run(
        [sys.executable, "-m", "elastickv_async", *argv], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "--memory-budget" in done.stderr
    assert not target.exists()


async def test_library_refuses_a_bad_budget(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="memory_budget"):
        await decode_snapshot(
            REPO_ROOT / "examples" / "sample.fsm",
            tmp_path / "out",
            DecodeOptions(memory_budget=1024),
        )
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="memory_budget"):
        await encode_snapshot(tmp_path, tmp_path / "x.fsm", EncodeOptions(memory_budget=-1))


# --- every buffering part obeys it ------------------------------------------------------------


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("memory") / "mix.fsm"
    benchlib.write_fsm(path, bench_reference.records(MIX, seed=7))
    return path


class Spills:
    """Counts the spills of every buffering part while it is installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: Counter[str] = Counter()
        self._wrap(monkeypatch, extsort.ExternalSorter, "spill", _sorter_part)
        self._wrap(monkeypatch, FramedSorter, "spill", _sorter_part)
        self._wrap(monkeypatch, sqs_spill.MessageSpill, "spill", lambda s: "sqs")
        self._wrap(monkeypatch, ChecksumLedger, "_spill", lambda s: "ledger")
        self._wrap(monkeypatch, ReadDigests, "_spill", lambda s: "read")

    def _wrap(
        self, monkeypatch: pytest.MonkeyPatch, cls: type, name: str, part: Callable[[Any], str]
    ) -> None:
        original = getattr(cls, name)

        def counted(obj: Any, *args: Any) -> Any:
            self.counts[part(obj)] += 1
            return original(obj, *args)

        monkeypatch.setattr(cls, name, counted)


def _sorter_part(sorter: extsort.ExternalSorter) -> str:
    """The part a sorter serves, by its spill directory: the CHECKSUMS walk numbers its
    listings under a temporary directory, the SQS encoder its queues' dedup claims."""
    where = sorter._dir
    if where.parent.name.startswith("elastickv-walk-"):
        return "walk"
    return where.name.partition("-")[0] if where.name.startswith("dedup-") else where.name


@pytest.fixture
def spills(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spills]:
    yield Spills(monkeypatch)


async def _decode(snapshot: Path, out: Path, budget: int, **adapters: Any) -> None:
    options = DecodeOptions(memory_budget=budget, adapter_options=adapters, workers=0)
    await decode_snapshot(snapshot, out, options)


@pytest.mark.parametrize(
    ("part", "layout"),
    [
        ("sqs", "per-item"),  # SQS: rendered messages
        ("ledger", "per-item"),  # the CHECKSUMS ledger
        ("0", "jsonl"),  # DynamoDB jsonl: the first table's sort
    ],
)
async def test_a_tiny_budget_makes_each_decode_part_spill_and_changes_nothing(
    tmp_path: Path, snapshot: Path, spills: Spills, part: str, layout: str
) -> None:
    """Under the smallest budget each buffering part spills; under the default none does;
    both trees are byte for byte the same. (The Redis sorts hold only what this mix does not
    have, keys cut across batches: ``test_redis_decode`` spills them through ``ctx.memory``.)"""
    ddb = {"layout": layout}
    await _decode(snapshot, tmp_path / "default", DEFAULT_MEMORY_BUDGET, dynamodb=ddb)
    assert spills.counts[part] == 0
    await _decode(snapshot, tmp_path / "tiny", TINY, dynamodb=ddb)
    assert spills.counts[part] > 0
    assert run_independent_files(tmp_path / "tiny") == run_independent_files(tmp_path / "default")


@pytest.mark.parametrize("budget", [TINY, DEFAULT_MEMORY_BUDGET])
async def test_each_decoder_gets_its_share(
    tmp_path: Path, snapshot: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """Every adapter's decoder is given its share of the run's budget as ``ctx.memory``."""
    seen: dict[str, int] = {}

    def context(**fields: Any) -> DecodeContext:
        ctx = DecodeContext(**fields)
        seen[fields["scratch"].name] = ctx.memory
        return ctx

    monkeypatch.setattr(pipeline, "DecodeContext", context)
    await _decode(snapshot, tmp_path / "out", budget)
    shares = MemoryBudget(budget, "decode", ADAPTERS)
    assert seen == {name: shares.adapter(name) for name in ADAPTERS}


#: SQS alone, queues of some 260-310 KB once unpacked: more than SQS's share of a 512 KiB
#: budget while the input is read (96 KiB), less than the adapters' whole part (384 KiB).
SQS_ONLY = bench_reference.Mix("sqs", sqs_messages=2000)
LENT_BUDGET = 512 << 10


@pytest.fixture(scope="module")
def sqs_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("memory") / "sqs.fsm"
    benchlib.write_fsm(path, bench_reference.records(SQS_ONLY, seed=7))
    return path


@pytest.mark.parametrize(("which", "holding"), [("sqs", {"sqs"}), ("mix", set(ADAPTERS))])
async def test_adapters_that_received_entries_flush_with_the_idle_ones_shares(
    tmp_path: Path,
    snapshot: Path,
    sqs_snapshot: Path,
    monkeypatch: pytest.MonkeyPatch,
    which: str,
    holding: set[str],
) -> None:
    """Every enabled adapter reads with an even share; once the input is read, the adapters
    that received entries share the whole adapters' part."""
    contexts: dict[str, DecodeContext] = {}

    def context(**fields: Any) -> DecodeContext:
        ctx = contexts[fields["scratch"].name] = DecodeContext(**fields)
        return ctx

    monkeypatch.setattr(pipeline, "DecodeContext", context)
    source = sqs_snapshot if which == "sqs" else snapshot
    await _decode(source, tmp_path / "out", LENT_BUDGET)
    part = MemoryBudget(LENT_BUDGET, "decode", ADAPTERS).share("adapters")
    # An adapter that receives no entries gets no decoder, hence no context.
    assert set(contexts) == holding
    assert {ctx.memory for ctx in contexts.values()} == {part // 4}
    lent = {name: ctx.flush_memory() for name, ctx in contexts.items()}
    assert lent == dict.fromkeys(holding, part // len(holding))


async def test_sqs_sorts_a_queue_in_one_pass_with_the_lent_memory(
    tmp_path: Path, sqs_snapshot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue larger than SQS's reading share but within what the idle adapters lend is
    sorted in one pass, with the same tree as the merge of sorted groups gives."""
    merges: list[str] = []
    original = sqs_spill.MessageSpill._merge

    def merge(self: sqs_spill.MessageSpill, reader: Any, runs: Any) -> Any:
        merges.append("merge")
        return original(self, reader, runs)

    monkeypatch.setattr(sqs_spill.MessageSpill, "_merge", merge)
    await _decode(sqs_snapshot, tmp_path / "lent", LENT_BUDGET)
    assert merges == []
    monkeypatch.setattr(DecodeContext, "flush_memory", lambda self: self.memory)
    await _decode(sqs_snapshot, tmp_path / "own", LENT_BUDGET)
    assert len(merges) == 4  # every queue
    assert run_independent_files(tmp_path / "lent") == run_independent_files(tmp_path / "own")


async def test_dynamodb_sorts_its_tables_with_the_lent_memory(
    tmp_path: Path, spills: Spills, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB alone (jsonl): tables of some 150 KB, more than a flush lane's part of its
    reading share under a 2 MiB budget, are sorted without spilling once the idle adapters
    lend theirs; the tree is the same as the spilled sort's."""
    source = tmp_path / "ddb.fsm"
    mix = bench_reference.Mix("ddb", dynamodb_items=2000)
    benchlib.write_fsm(source, bench_reference.records(mix, seed=7))
    ddb = {"layout": "jsonl"}
    await _decode(source, tmp_path / "lent", 2 << 20, dynamodb=ddb)
    assert spills.counts["0"] == 0
    monkeypatch.setattr(DecodeContext, "flush_memory", lambda self: self.memory)
    await _decode(source, tmp_path / "own", 2 << 20, dynamodb=ddb)
    assert spills.counts["0"] > 0
    assert run_independent_files(tmp_path / "lent") == run_independent_files(tmp_path / "own")


async def test_the_channels_carry_batches_of_the_budget(
    tmp_path: Path, snapshot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter receives batches of at most the channels' per-batch share (plus the one
    value that crosses it)."""
    largest: dict[int, int] = {}
    original = RedisDecoder.handle

    async def handle(self: RedisDecoder, batch: Any) -> None:
        size = sum(len(entry.value) for _, entry in batch)
        widest = max(len(entry.value) for _, entry in batch)
        largest[self._ctx.memory] = max(largest.get(self._ctx.memory, 0), size - widest)
        await original(self, batch)

    monkeypatch.setattr(RedisDecoder, "handle", handle)
    for budget in (DEFAULT_MEMORY_BUDGET, TINY):
        await _decode(snapshot, tmp_path / str(budget), budget)
    tiny = MemoryBudget(TINY, "decode", ADAPTERS)
    assert largest[tiny.adapter("redis")] < tiny.batch_bytes(4, streams=4)
    default = MemoryBudget(DEFAULT_MEMORY_BUDGET, "decode", ADAPTERS)
    assert largest[default.adapter("redis")] >= tiny.batch_bytes(4, streams=4)


@pytest.mark.parametrize("budget", [TINY, DEFAULT_MEMORY_BUDGET])
async def test_the_snapshot_is_read_in_chunks_of_the_channels_share(
    tmp_path: Path, snapshot: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """The decode reads its input in chunks of the size the channels' share gives the
    reader (more only for an entry larger than a chunk)."""
    sizes: list[int] = []
    read = reader._ChunkSource.read

    def counted(self: reader._ChunkSource, size: int) -> bytes:
        sizes.append(size)
        return read(self, size)

    monkeypatch.setattr(reader._ChunkSource, "read", counted)
    await _decode(snapshot, tmp_path / "out", budget)
    chunk = MemoryBudget(budget, "decode", ADAPTERS).read_chunk()
    assert chunk < reader.DEFAULT_CHUNK_SIZE
    assert min(sizes) == chunk
    # The file's S3 chunks are larger than a TINY chunk: each is read in one piece.
    assert Counter(size == chunk for size in sizes)[True] > len(sizes) // 2


@pytest.mark.parametrize("budget", [TINY, DEFAULT_MEMORY_BUDGET, 1 << 30])
def test_the_checksums_listing_takes_the_idle_channels_part(budget: int) -> None:
    """The CHECKSUMS listing's block, with the lines joined into it, fits the channels'
    share, idle once the input is read (never less than a page, never more than 1 MiB)."""
    shares = MemoryBudget(budget, "decode", ADAPTERS)
    block = shares.listing_block()
    assert 4 << 10 <= block <= 1 << 20
    assert 2 * block <= shares.share("channels")
    with pytest.raises(ValueError, match="decode"):
        MemoryBudget(budget, "encode", ADAPTERS).listing_block()


@pytest.mark.parametrize("budget", [TINY, DEFAULT_MEMORY_BUDGET])
async def test_the_checksums_are_written_in_blocks_of_the_budget(
    tmp_path: Path, snapshot: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """The decode joins its CHECKSUMS lines into blocks of the budget's listing block (one
    line past it at most), and the file is the same whatever the block."""
    blocks: list[int] = []
    listing = ChecksumLedger.listing

    def measured(self: ChecksumLedger, extra: Any, *, block_size: int) -> Iterator[bytes]:
        assert block_size == MemoryBudget(budget, "decode", ADAPTERS).listing_block()
        for block in listing(self, extra, block_size=block_size):
            blocks.append(len(block))
            yield block

    monkeypatch.setattr(ChecksumLedger, "listing", measured)
    await _decode(snapshot, tmp_path / "out", budget)
    block = MemoryBudget(budget, "decode", ADAPTERS).listing_block()
    assert max(blocks) < block + 4096
    if budget == TINY:
        assert len(blocks) > 1
    assert (tmp_path / "out" / "CHECKSUMS").stat().st_size == sum(blocks)


#: What spills in an encode: the sort, the ledger of read digests, the CHECKSUMS walk's
#: listings, the Redis encoder's names and TTL sidecar, the SQS encoder's FIFO dedup claims.
ENCODE_PARTS = ("sort", "read", "walk", "names-strings", "ttl-strings", "dedup")


#: :data:`MIX` with a Redis strings directory larger than the CHECKSUMS walk's share (the
#: walk's and the adapters' parts) of the smallest budget, and than the Redis encoder's.
LARGE_MIX = dataclasses.replace(MIX, summary="large", redis_strings=3000)


async def test_a_tiny_budget_makes_the_encode_parts_spill_and_changes_nothing(
    tmp_path: Path, spills: Spills
) -> None:
    """Encode under the smallest budget spills every buffering part (none does under the
    default budget) and writes the very bytes of the default budget's snapshot."""
    snapshot = tmp_path / "large.fsm"
    benchlib.write_fsm(snapshot, bench_reference.records(LARGE_MIX, seed=7))
    tree = tmp_path / "tree"
    await _decode(snapshot, tree, DEFAULT_MEMORY_BUDGET)
    spills.counts.clear()
    await encode_snapshot(tree, tmp_path / "default.fsm", EncodeOptions(workers=0))
    assert {part: spills.counts[part] for part in ENCODE_PARTS} == dict.fromkeys(ENCODE_PARTS, 0)
    tiny = EncodeOptions(workers=0, memory_budget=TINY)
    await encode_snapshot(tree, tmp_path / "tiny.fsm", tiny)
    assert all(spills.counts[part] > 0 for part in ENCODE_PARTS), spills.counts
    assert (tmp_path / "tiny.fsm").read_bytes() == (tmp_path / "default.fsm").read_bytes()


@pytest.mark.parametrize("budget", [TINY, DEFAULT_MEMORY_BUDGET])
async def test_each_encoder_gets_its_share(
    tmp_path: Path, snapshot: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """Every adapter's encoder is given its share of the run's budget as ``ctx.memory``, and
    the sort and the CHECKSUMS walk theirs."""
    tree = tmp_path / "tree"
    await _decode(snapshot, tree, DEFAULT_MEMORY_BUDGET)
    seen: dict[str, int] = {}

    def context(**fields: Any) -> EncodeContext:
        ctx = EncodeContext(**fields)
        seen[fields["scratch"].name] = ctx.memory
        return ctx

    walks: list[int] = []

    def checked(root: Any, read: Any, memory: int) -> Any:
        walks.append(memory)
        return check_input_tree(root, read, memory)

    sorts: list[int] = []

    class Sorter(FramedSorter):
        def __init__(self, spill_dir: Path, budget: int, **kwargs: Any) -> None:
            sorts.append(budget)
            super().__init__(spill_dir, budget, **kwargs)

    slices: list[int] = []

    class Stream(SnapshotStream):
        async def write(self, slice_bytes: int = SLICE_BYTES) -> None:
            slices.append(slice_bytes)
            await super().write(slice_bytes)

    monkeypatch.setattr(encode_api, "EncodeContext", context)
    monkeypatch.setattr(encode_api, "check_input_tree", checked)
    monkeypatch.setattr(encode_api, "FramedSorter", Sorter)
    monkeypatch.setattr(encode_api, "SnapshotStream", Stream)
    await encode_snapshot(
        tree, tmp_path / "out.fsm", EncodeOptions(workers=0, memory_budget=budget)
    )
    shares = MemoryBudget(budget, "encode", ADAPTERS)
    assert seen == {name: shares.adapter(name) for name in ADAPTERS}
    # The CHECKSUMS check runs once the encoders are done, its walk with their part too.
    assert walks == [shares.share("walk") + shares.share("adapters")]
    assert sorts == [shares.share("sort")]
    # The snapshot is written once the channels are idle: its slices take their share.
    assert slices == [shares.write_slice(SLICES_HELD)]


async def test_an_encoder_alone_in_the_tree_takes_the_adapters_whole_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adapters whose subtree the tree lacks encode nothing and lend their shares: the Redis
    encoder of a Redis-only tree, all adapters selected, is given the adapters' whole part."""
    source = tmp_path / "redis.fsm"
    mix = bench_reference.Mix("redis", redis_strings=50, redis_hashes=5)
    benchlib.write_fsm(source, bench_reference.records(mix, seed=7))
    await _decode(source, tmp_path / "tree", DEFAULT_MEMORY_BUDGET)
    seen: dict[str, int] = {}

    def context(**fields: Any) -> EncodeContext:
        ctx = EncodeContext(**fields)
        seen[fields["scratch"].name] = ctx.memory
        return ctx

    monkeypatch.setattr(encode_api, "EncodeContext", context)
    options = EncodeOptions(workers=0, memory_budget=TINY)
    await encode_snapshot(tmp_path / "tree", tmp_path / "out.fsm", options)
    assert seen == {"redis": MemoryBudget(TINY, "encode", ADAPTERS).share("adapters")}


async def test_the_self_test_decodes_within_the_budget(
    tmp_path: Path, snapshot: Path, spills: Spills, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The self-test's decode and comparison take the encode's budget: the decode's parts
    spill under a tiny one."""
    tree = tmp_path / "tree"
    await _decode(snapshot, tree, DEFAULT_MEMORY_BUDGET)
    spills.counts.clear()
    compared: list[int] = []
    diff_trees = selftest.diff_trees

    async def diffed(*args: Any, memory: int, **kwargs: Any) -> list[str]:
        compared.append(memory)
        return await diff_trees(*args, memory=memory, **kwargs)

    monkeypatch.setattr(selftest, "diff_trees", diffed)
    options = EncodeOptions(workers=0, memory_budget=TINY, self_test=True, scratch_root=tmp_path)
    await encode_snapshot(tree, tmp_path / "out.fsm", options)
    assert spills.counts["sqs"] > 0
    # The comparison runs alone, after the decode: its line sorts share the whole budget.
    assert compared == [TINY]


# --- what a part needs whatever its share -----------------------------------------------------


def _sorter_floor() -> int:
    """The smallest budget an external sort keeps to: half of it for the read buffers of the
    fewest runs it merges (a page each) and a page to write a run."""
    return 2 * (extsort.fan_in(0, 1) + 1) * extsort._MIN_RUN_BUFFER


def _framed_sort_floor() -> int:
    """The smallest budget the encoder's sort keeps to: a quarter of it for the fewest
    sources it merges, two pages each."""
    return 4 * extsort.fan_in(0, 1) * 2 * sortframe._MIN_CHUNK


@pytest.mark.parametrize("count", [1, 4])
def test_the_smallest_budget_holds_every_parts_floor(count: int) -> None:
    """Buffers never go below a page, sorts never merge fewer than three runs and a digest
    ledger has a fixed cost: the smallest accepted budget gives every part at least that."""
    adapters = ADAPTERS[:count]
    decode = MemoryBudget(MIN_MEMORY_BUDGET, "decode", adapters)
    encode = MemoryBudget(MIN_MEMORY_BUDGET, "encode", adapters)
    for budget in (decode, encode):
        assert budget.share("checksums") >= LEDGER_FIXED_BYTES + LEDGER_ENTRY_BYTES
        assert ledger_entries(budget.share("checksums")) > 1
        assert all(budget.adapter(name) >= 2 * _sorter_floor() for name in adapters)
        assert (READ_CHUNKS + 2) * budget.scan_chunk() <= budget.total
    assert (READ_CHUNKS + 1) * decode.read_chunk() <= decode.share("channels") // 2
    assert 8 * encode.output_buffer() <= encode.output()
    assert encode.share("walk") >= _sorter_floor()
    assert encode.share("sort") >= _framed_sort_floor()
    with pytest.raises(UsageError):
        MemoryBudget(MIN_MEMORY_BUDGET - 1, "decode", adapters)


def test_the_output_buffers_follow_the_budget() -> None:
    """An encode's output files share an eighth of the channel's part (free once the
    records are collected), within a page and 1 MiB."""
    default = MemoryBudget(DEFAULT_MEMORY_BUDGET, "encode", ADAPTERS)
    assert default.output() == default.share("channels")
    assert default.output_buffer() == default.share("channels") // 8 < 1 << 20
    assert default.output_buffer(3) == default.share("channels") // 24
    assert MemoryBudget(1 << 30, "encode", ADAPTERS).output_buffer() == 1 << 20
    assert MemoryBudget(TINY, "encode", ADAPTERS).output_buffer(64) == 4 << 10
    with pytest.raises(ValueError, match="only an encode"):
        MemoryBudget(DEFAULT_MEMORY_BUDGET, "decode", ADAPTERS).output()


@pytest.mark.parametrize("held", [1, 7])
def test_write_slices_take_what_the_output_buffer_leaves(held: int) -> None:
    """The slices of an encode's writing alive at once and its file's buffer fit the
    output's share together, within a page (the smallest budget) and 1 MiB a slice."""
    for total in (MIN_MEMORY_BUDGET, DEFAULT_MEMORY_BUDGET):
        budget = MemoryBudget(total, "encode", ADAPTERS)
        per_slice = budget.write_slice(held)
        assert budget.output_buffer() + held * per_slice <= budget.output()
        assert per_slice >= 4 << 10
    assert MemoryBudget(1 << 30, "encode", ADAPTERS).write_slice(held) == 1 << 20
    with pytest.raises(ValueError, match="only an encode"):
        MemoryBudget(DEFAULT_MEMORY_BUDGET, "decode", ADAPTERS).write_slice(held)


def test_an_output_file_allocates_the_buffer_it_is_given(tmp_path: Path) -> None:
    """``create_temp`` allocates the buffer asked for, not a fixed one (tracemalloc)."""
    peaks = {}
    for size in (4 << 10, 1 << 20):
        tracemalloc.start()
        try:
            fh = publish.create_temp(tmp_path / f"{size}.tmp", size)
            peaks[size] = tracemalloc.get_traced_memory()[1]
            fh.write(b"x")
            publish.finish_temp(fh)
        finally:
            tracemalloc.stop()
    assert peaks[4 << 10] < 64 << 10 <= 1 << 20 <= peaks[1 << 20]


@pytest.mark.parametrize("budget", [TINY, DEFAULT_MEMORY_BUDGET])
async def test_the_encode_writes_through_a_buffer_of_its_budget(
    tmp_path: Path, snapshot: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """The snapshot file's write buffer is the budget's, and the bytes do not change."""
    tree = tmp_path / "tree"
    await _decode(snapshot, tree, DEFAULT_MEMORY_BUDGET)
    asked: list[int] = []
    create = publish.create_temp

    def created(path: Path, buffer: int) -> Any:
        asked.append(buffer)
        return create(path, buffer)

    monkeypatch.setattr(publish, "create_temp", created)
    await encode_snapshot(
        tree, tmp_path / "out.fsm", EncodeOptions(workers=0, memory_budget=budget)
    )
    monkeypatch.undo()
    assert asked == [MemoryBudget(budget, "encode", ADAPTERS).output_buffer()]
    if budget == TINY:
        await encode_snapshot(tree, tmp_path / "default.fsm", EncodeOptions(workers=0))
        assert (tmp_path / "out.fsm").read_bytes() == (tmp_path / "default.fsm").read_bytes()


@pytest.mark.parametrize("budget", [TINY, 4 << 20])
async def test_dry_run_and_inspect_read_within_the_budget(
    tmp_path: Path, snapshot: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """``decode --dry-run`` and ``inspect`` read in chunks, and count batches, of the budget
    (a chunk's worth of entries), and find the same as under the default budget."""
    sizes: list[int] = []
    batches: list[tuple[int, int]] = []
    read = reader._ChunkSource.read
    batched = reader.Snapshot.batches

    def counted(self: reader._ChunkSource, size: int) -> bytes:
        sizes.append(size)
        return read(self, size)

    def counted_batches(self: reader.Snapshot, max_entries: int, max_bytes: int) -> Any:
        batches.append((max_entries, max_bytes))
        return batched(self, max_entries, max_bytes)

    found = {}
    for size in (budget, DEFAULT_MEMORY_BUDGET):
        monkeypatch.setattr(reader._ChunkSource, "read", counted)
        monkeypatch.setattr(reader.Snapshot, "batches", counted_batches)
        sizes.clear()
        batches.clear()
        options = DecodeOptions(memory_budget=size)
        planned = await plan_decode(snapshot, options, output=tmp_path / "never")
        inspected = await inspect_snapshot(snapshot, memory_budget=size)
        monkeypatch.undo()
        memory = MemoryBudget(size, "decode", ADAPTERS)
        assert min(sizes) == memory.scan_chunk()
        assert batches == [(memory.scan_entries(), memory.scan_chunk())] * 2
        found[size] = (planned.to_dict(), inspected.to_dict())
    assert MemoryBudget(budget, "decode", ADAPTERS).scan_chunk() < reader.DEFAULT_CHUNK_SIZE
    assert found[budget] == found[DEFAULT_MEMORY_BUDGET]
    assert not (tmp_path / "never").exists()
