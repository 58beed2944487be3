"""One memory budget for the whole run: its shares, its option, and every part that obeys it."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import REPO_ROOT, run_independent_files

from elastickv_async import DecodeOptions, EncodeOptions, decode_snapshot, encode_snapshot
from elastickv_async._adapters.base import DecodeContext
from elastickv_async._adapters.redis.decode import RedisDecoder
from elastickv_async._adapters.sqs import spill as sqs_spill
from elastickv_async._core import extsort, pipeline
from elastickv_async._core.dump.checksums import ChecksumLedger
from elastickv_async._core.encode.sortframe import FramedSorter
from elastickv_async._core.errors import UsageError
from elastickv_async._core.memory import (
    DEFAULT_MEMORY_BUDGET,
    LEDGER_ENTRY_BYTES,
    MIN_MEMORY_BUDGET,
    MemoryBudget,
    parse_size,
)

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
    if direction == "decode":
        assert sorted(parts) == sorted(
            ["channels", "checksums", *(f"adapter.{name}" for name in ADAPTERS[:count])]
        )
    else:
        assert sorted(parts) == ["channels", "checksums", "sort"]


def test_an_adapter_share_shrinks_as_more_adapters_run() -> None:
    """The adapters' part is shared evenly: four adapters get a quarter each of what one gets."""
    alone = MemoryBudget(DEFAULT_MEMORY_BUDGET, "decode", ("redis",)).adapter("redis")
    shared = MemoryBudget(DEFAULT_MEMORY_BUDGET, "decode", ADAPTERS)
    assert {shared.adapter(name) for name in ADAPTERS} == {alone // 4}
    with pytest.raises(ValueError, match="not part of this run"):
        MemoryBudget(DEFAULT_MEMORY_BUDGET, "decode", ("redis",)).adapter("sqs")


def test_batches_and_ledger_follow_the_budget() -> None:
    """The channels' batches and the ledger's in-memory digests fit in their shares."""
    budget = MemoryBudget(DEFAULT_MEMORY_BUDGET, "decode", ADAPTERS)
    per_batch = budget.batch_bytes(4, streams=4)
    assert (4 * (4 + 2) + 2) * per_batch <= budget.share("channels")
    assert budget.ledger_entries() * LEDGER_ENTRY_BYTES <= budget.share("checksums")
    assert MemoryBudget(TINY, "decode", ADAPTERS).batch_bytes(4, streams=4) >= 1


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("48MiB", 48 << 20),
        ("64KiB", 64 << 10),
        ("1GiB", 1 << 30),
        ("70000", 70_000),
        ("1 MiB", 1 << 20),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "12MB", "-1MiB", "1.5MiB", "0", "1KiB", "2000GiB"])
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
        self._wrap(monkeypatch, extsort.ExternalSorter, "spill", lambda s: s._dir.name)
        self._wrap(monkeypatch, FramedSorter, "spill", lambda s: s._dir.name)
        self._wrap(monkeypatch, sqs_spill.MessageSpill, "spill", lambda s: "sqs")
        self._wrap(monkeypatch, ChecksumLedger, "_spill", lambda s: "ledger")

    def _wrap(
        self, monkeypatch: pytest.MonkeyPatch, cls: type, name: str, part: Callable[[Any], str]
    ) -> None:
        original = getattr(cls, name)

        def counted(obj: Any, *args: Any) -> Any:
            self.counts[part(obj)] += 1
            return original(obj, *args)

        monkeypatch.setattr(cls, name, counted)


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


async def test_a_tiny_budget_makes_the_encode_parts_spill_and_changes_nothing(
    tmp_path: Path, snapshot: Path, spills: Spills
) -> None:
    """Encode under the smallest budget spills its sort and its ledger of read digests and
    writes the very bytes of the default budget's snapshot."""
    tree = tmp_path / "tree"
    await _decode(snapshot, tree, DEFAULT_MEMORY_BUDGET)
    spills.counts.clear()
    await encode_snapshot(tree, tmp_path / "default.fsm", EncodeOptions(workers=0))
    assert spills.counts["sort"] == spills.counts["read"] == 0
    tiny = EncodeOptions(workers=0, memory_budget=TINY)
    await encode_snapshot(tree, tmp_path / "tiny.fsm", tiny)
    assert spills.counts["sort"] > 0 and spills.counts["read"] > 0
    assert (tmp_path / "tiny.fsm").read_bytes() == (tmp_path / "default.fsm").read_bytes()


async def test_the_self_test_decodes_within_the_budget(
    tmp_path: Path, snapshot: Path, spills: Spills
) -> None:
    """The self-test's decode takes the encode's budget: its parts spill under a tiny one."""
    tree = tmp_path / "tree"
    await _decode(snapshot, tree, DEFAULT_MEMORY_BUDGET)
    spills.counts.clear()
    options = EncodeOptions(workers=0, memory_budget=TINY, self_test=True, scratch_root=tmp_path)
    await encode_snapshot(tree, tmp_path / "out.fsm", options)
    assert spills.counts["sqs"] > 0
