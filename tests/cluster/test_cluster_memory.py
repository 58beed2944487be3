"""The cluster commands under one memory budget: the flag, its errors, and who gets what."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cluster_support import tree_without_manifest, two_group_cluster

from elastickv_async._adapters.base import EncodeContext
from elastickv_async._core import extsort
from elastickv_async._core.cli import main
from elastickv_async._core.cluster import api as cluster_api
from elastickv_async._core.cluster import encode as cluster_encode
from elastickv_async._core.cluster.api import decode_cluster
from elastickv_async._core.cluster.encode import encode_cluster
from elastickv_async._core.cluster.work import decode_partition
from elastickv_async._core.dump import checksums
from elastickv_async._core.encode import api as encode_api
from elastickv_async._core.encode.output import FrameWriter
from elastickv_async._core.errors import UsageError
from elastickv_async._core.memory import DEFAULT_MEMORY_BUDGET, MIN_MEMORY_BUDGET, MemoryBudget
from elastickv_async._core.options import DecodeOptions, EncodeOptions


def _inputs(tmp_path: Path) -> list[str]:
    g1, g2 = two_group_cluster(tmp_path / "src")
    return ["--input", f"1={g1}", "--input", f"2={g2}"]


@pytest.mark.parametrize("size", ["1KiB", "lots", "0", "12MB"])
def test_cluster_commands_refuse_a_bad_budget_like_decode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], size: str
) -> None:
    """decode-cluster and encode-cluster refuse what decode refuses, in decode's words: exit
    1, one line on stderr, nothing written."""
    inputs = _inputs(tmp_path)
    tree = tmp_path / "tree"
    assert main(["decode-cluster", *inputs, "--output", str(tree), "--quiet"]) == 0
    capsys.readouterr()
    one = ["--memory-budget", size]
    groups = str(tmp_path / "g")
    argv = {
        "decode": ["decode", "--input", inputs[1][2:], "--output", str(tmp_path / "d"), *one],
        "decode-cluster": ["decode-cluster", *inputs, "--output", str(tmp_path / "c"), *one],
        "encode-cluster": ["encode-cluster", "--input", str(tree), "--output-dir", groups, *one],
    }
    errors = {}
    for command, args in argv.items():
        assert main(args) == 1, command
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "--memory-budget" in lines[0], lines
        errors[command] = lines[0]
    assert len(set(errors.values())) == 1
    assert not any((tmp_path / name).exists() for name in ("d", "c", "g"))


def test_cluster_commands_accept_a_budget(tmp_path: Path) -> None:
    """The smallest budget gives the tree and the group files of the default one."""
    inputs = _inputs(tmp_path)
    for name, budget in (("default", []), ("tiny", ["--memory-budget", f"{MIN_MEMORY_BUDGET}"])):
        tree, groups = tmp_path / f"tree-{name}", tmp_path / f"groups-{name}"
        assert main(["decode-cluster", *inputs, "--output", str(tree), "--quiet", *budget]) == 0
        encode = ["encode-cluster", "--input", str(tree), "--output-dir", str(groups)]
        assert main([*encode, "--quiet", "--self-test", *budget]) == 0
    trees = [tree_without_manifest(tmp_path / f"tree-{name}") for name in ("default", "tiny")]
    assert trees[0] == trees[1]
    for group in ("group-1.fsm", "group-2.fsm"):
        files = [(tmp_path / f"groups-{name}" / group).read_bytes() for name in ("default", "tiny")]
        assert files[0] == files[1]


@pytest.mark.anyio
async def test_the_library_functions_refuse_a_bad_budget(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)[1::2]
    with pytest.raises(UsageError, match="memory_budget"):
        await decode_cluster(inputs, tmp_path / "out", DecodeOptions(memory_budget=1024))
    assert not (tmp_path / "out").exists()
    await decode_cluster(inputs, tmp_path / "tree")
    with pytest.raises(UsageError, match="memory_budget"):
        await encode_cluster(tmp_path / "tree", tmp_path / "g", EncodeOptions(memory_budget=-1))
    assert not (tmp_path / "g").exists()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("budget", "at_once"),
    [(DEFAULT_MEMORY_BUDGET, 4), (3 * MIN_MEMORY_BUDGET, 3), (MIN_MEMORY_BUDGET, 1)],
)
async def test_partitions_decoded_at_once_share_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int, at_once: int
) -> None:
    """Each partition decoded in this process gets the budget over the partitions decoded
    at once (fewer at once when each would get less than the least budget)."""
    given: list[int] = []

    async def recorded(*args: Any) -> Any:
        given.append(args[-1].memory_budget)
        return await decode_partition(*args)

    monkeypatch.setattr(cluster_api, "decode_partition", recorded)
    await decode_cluster(
        _inputs(tmp_path)[1::2], tmp_path / "tree", DecodeOptions(memory_budget=budget)
    )
    assert given and set(given) == {budget // at_once}


@pytest.mark.anyio
@pytest.mark.parametrize("budget", [MIN_MEMORY_BUDGET, DEFAULT_MEMORY_BUDGET])
async def test_encode_cluster_gives_each_part_its_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """The encoders get their shares as ``ctx.memory``, the sort and the read-digest
    ledger theirs, as in encode: the adapters whose subtree the tree lacks (this cluster
    holds Redis keys only) encode nothing and lend theirs."""
    await decode_cluster(_inputs(tmp_path)[1::2], tmp_path / "tree")
    seen: dict[str, int] = {}

    def recorded(**fields: Any) -> EncodeContext:
        ctx = EncodeContext(**fields)
        seen[fields["scratch"].name] = ctx.memory
        return ctx

    sorts: list[int] = []

    class Sorter(extsort.ExternalSorter):
        def __init__(self, spill_dir: Path, budget: int, **kwargs: Any) -> None:
            sorts.append(budget)
            super().__init__(spill_dir, budget, **kwargs)

    monkeypatch.setattr(encode_api, "EncodeContext", recorded)
    monkeypatch.setattr(cluster_encode, "ExternalSorter", Sorter)
    options = EncodeOptions(workers=0, memory_budget=budget)
    await encode_cluster(tmp_path / "tree", tmp_path / "groups", options)
    selected = ("dynamodb", "s3", "redis", "sqs")
    shares = MemoryBudget(budget, "encode", selected)
    assert seen == {"redis": shares.share("adapters")}
    assert sorts == [shares.share("sort")]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("budget", "at_once"),
    [(DEFAULT_MEMORY_BUDGET, 2), (MIN_MEMORY_BUDGET, 1)],
)
async def test_groups_resolved_at_once_share_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int, at_once: int
) -> None:
    """Each group resolved in this process gets the budget over the groups resolved at
    once; its run writers gather half of it between them (at most 1 MiB each), and it reads
    its file in batches of at most a quarter, and in chunks of an eighth (the reader holds
    two)."""
    from elastickv_async._core.cluster import runs, work
    from elastickv_async._core.snapshot import reader
    from elastickv_async._core.snapshot.reader import Snapshot

    given: list[int] = []
    flushes: list[int] = []
    reads: list[int] = []

    async def recorded(*args: Any) -> Any:
        given.append(args[-1].memory_budget)
        return await work.resolve_group(*args)

    class Writer(runs.RunWriter):
        def __init__(self, path: Path, flush_at: int = runs.FLUSH_AT) -> None:
            flushes.append(flush_at)
            super().__init__(path, flush_at)

    batches = Snapshot.batches

    def reading(self: Any, max_entries: int = 512, max_bytes: int = 8 << 20) -> Any:
        reads.append(max_bytes)
        return batches(self, max_entries, max_bytes)

    monkeypatch.setattr(cluster_api, "resolve_group", recorded)
    monkeypatch.setattr(work, "RunWriter", Writer)
    monkeypatch.setattr(Snapshot, "batches", reading)
    chunks: list[int] = []
    opening = reader.open_snapshot

    def opened(path: Path, *, chunk_size: int) -> Any:
        chunks.append(chunk_size)
        return opening(path, chunk_size=chunk_size)

    monkeypatch.setattr(work, "open_snapshot", opened)
    options = DecodeOptions(memory_budget=budget)
    await decode_cluster(_inputs(tmp_path)[1::2], tmp_path / "tree", options)
    share = budget // at_once
    assert given and set(given) == {share}
    adapters = 4  # "all"
    assert set(flushes) == {min(runs.FLUSH_AT, share // (2 * adapters))}
    assert set(reads) == {min(options.batch_bytes, share // 4)}
    assert set(chunks) == {share // 8}


@pytest.mark.anyio
async def test_checksums_merge_the_partitions_listings_from_files_a_group_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The partitions leave their CHECKSUMS lines in files; the driver merges them (at most
    the fan-in at once, the rest merged into files first), and the CHECKSUMS is the one an
    unbounded merge writes, valid for the tree."""
    from elastickv_async._core.dump.verify import verify_tree

    inputs = _inputs(tmp_path)[1::2]
    await decode_cluster(inputs, tmp_path / "one-round")
    opened: list[int] = []
    merged_lines = cluster_api._merged_lines

    def merging(files: Any, extra: Any = ()) -> Any:
        opened.append(len(files))
        return merged_lines(files, extra)

    monkeypatch.setattr(cluster_api, "_LISTING_FAN_IN", 2)
    monkeypatch.setattr(cluster_api, "_merged_lines", merging)
    await decode_cluster(inputs, tmp_path / "rounds")
    assert len(opened) > 1 and max(opened) <= 2
    checksums = [(tmp_path / t / "CHECKSUMS").read_bytes() for t in ("one-round", "rounds")]
    lines = checksums[0].splitlines()
    manifest = [line for line in lines if line.endswith(b"  MANIFEST.json")]
    rest = [line for line in lines if not line.endswith(b"  MANIFEST.json")]
    others = [line for line in checksums[1].splitlines() if not line.endswith(b"  MANIFEST.json")]
    assert len(manifest) == 1 and rest == others and len(rest) > 3
    await verify_tree(tmp_path / "rounds")


@pytest.mark.anyio
@pytest.mark.parametrize("budget", [MIN_MEMORY_BUDGET, DEFAULT_MEMORY_BUDGET])
async def test_the_write_blocks_of_both_cluster_commands_follow_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """decode-cluster joins the merged CHECKSUMS into the budget's listing blocks, and
    encode-cluster's group files gather their records into the budget's frame blocks."""
    listed: list[int] = []
    joined = checksums.joined_blocks

    def joining(lines: Any, block_size: int) -> Any:
        listed.append(block_size)
        return joined(lines, block_size)

    monkeypatch.setattr(cluster_api, "joined_blocks", joining)
    selected = ("dynamodb", "s3", "redis", "sqs")
    options = DecodeOptions(memory_budget=budget)
    await decode_cluster(_inputs(tmp_path)[1::2], tmp_path / "tree", options)
    assert listed == [MemoryBudget(budget, "decode", selected).listing_block()]

    framed: list[int] = []

    class Writer(FrameWriter):
        def __init__(self, *args: Any, block_size: int, **kwargs: Any) -> None:
            framed.append(block_size)
            super().__init__(*args, block_size=block_size, **kwargs)

    monkeypatch.setattr(cluster_encode, "FrameWriter", Writer)
    encode = EncodeOptions(workers=0, memory_budget=budget)
    await encode_cluster(tmp_path / "tree", tmp_path / "groups", encode)
    shares = MemoryBudget(budget, "encode", selected)
    assert framed == [shares.frame_block(2)] * 2
    # Each group's write buffer, gathered pieces and their joined copy: within the output's.
    assert 2 * (shares.output_buffer(2) + 2 * shares.frame_block(2)) <= shares.output()
