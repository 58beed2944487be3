"""Which root holds a path of a split dump tree, and how the writer and reader use it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import anyio.to_thread
import pytest

from elastickv_async._core.dump.checksums import hash_tree
from elastickv_async._core.dump.manifest import read_output_roots
from elastickv_async._core.dump.roots import (
    TreeRoots,
    checked_output_roots,
    parse_root_flags,
    recorded_tree_roots,
)
from elastickv_async._core.dump.tree import DumpTree
from elastickv_async._core.dump.writer import DumpWriter
from elastickv_async._core.errors import ManifestError, OutputError, UsageError

KNOWN = ("dynamodb", "s3", "redis", "sqs")


def test_root_for_is_decided_by_the_first_segment(tmp_path: Path) -> None:
    """A redirected adapter's paths go to its root; everything else, top files included,
    stays in the main root."""
    roots = TreeRoots(tmp_path / "main", {"redis": tmp_path / "r"})
    assert roots.root_for(("redis", "db_0")) == tmp_path / "r"
    assert roots.root_for(("sqs", "q")) == tmp_path / "main"
    assert roots.root_for(()) == tmp_path / "main"
    assert roots.root_of("redis") == tmp_path / "r"
    assert roots.recorded() == {"redis": str(tmp_path / "r")}
    assert TreeRoots.of(tmp_path).redirected == {}
    assert TreeRoots.of(roots) is roots


def test_parse_root_flags() -> None:
    """ADAPTER=DIR values; a value without both halves or a repeated adapter is refused."""
    assert parse_root_flags(["redis=/a", "sqs=b=c"], "--output-root") == {
        "redis": Path("/a"),
        "sqs": Path("b=c"),
    }
    for bad in ("redis", "=x", "redis="):
        with pytest.raises(UsageError, match="wants ADAPTER=DIR"):
            parse_root_flags([bad], "--output-root")
    with pytest.raises(UsageError, match="--tree-root names adapter 'redis' twice"):
        parse_root_flags(["redis=/a", "redis=/b"], "--tree-root")


def test_checked_output_roots_are_absolute_and_disjoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative roots are made absolute; a root reached through a symlinked parent that
    lands inside the output is caught."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    roots = checked_output_roots(out, {"sqs": "q"}, known=KNOWN, selected=KNOWN)
    assert roots.redirected == {"sqs": tmp_path / "q"}
    assert checked_output_roots(out, None, known=KNOWN, selected=KNOWN) == TreeRoots(out)
    out.mkdir()
    (tmp_path / "alias").symlink_to(out)
    with pytest.raises(UsageError, match="must not be inside the output"):
        checked_output_roots(out, {"sqs": "alias/q"}, known=KNOWN, selected=KNOWN)


def test_recorded_roots_are_overridden_and_must_exist(tmp_path: Path) -> None:
    """An override wins over the recorded root; a root that is not a directory is refused."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    roots = recorded_tree_roots(tmp_path, {"s3": str(a)}, {"s3": b}, known=KNOWN)
    assert roots.redirected == {"s3": b}
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=r"s3's subtree root .* is not an existing directory"):
        recorded_tree_roots(tmp_path, {"s3": str(tmp_path / "file")}, None, known=KNOWN)


def test_read_output_roots_wants_absolute_strings() -> None:
    """MANIFEST.json's output_roots: absent is none; a relative path is an invalid manifest."""
    assert read_output_roots({}) == {}
    assert read_output_roots({"output_roots": {"s3": "/x"}}) == {"s3": "/x"}
    with pytest.raises(ManifestError, match="not an absolute path"):
        read_output_roots({"output_roots": {"s3": "x"}})


@pytest.mark.anyio
async def test_writer_routes_each_path_to_its_root(tmp_path: Path) -> None:
    """One writer, two roots: files land by their adapter, the ledger keeps logical paths,
    and the tree reader hashes the split tree as one."""
    main, other = tmp_path / "main", tmp_path / "other"
    main.mkdir()
    other.mkdir()
    roots = TreeRoots(main, {"redis": other})
    writer = DumpWriter(roots)
    await writer.write("redis/db_0/strings/k", b"v")
    await writer.write("sqs/q/_queue.json", b"{}")
    await writer.write("TOP", b"t")
    assert (other / "redis/db_0/strings/k").read_bytes() == b"v"
    assert not (main / "redis").exists()
    assert (main / "sqs/q/_queue.json").read_bytes() == b"{}"
    assert (main / "TOP").read_bytes() == b"t"
    assert writer.ledger.get("redis/db_0/strings/k") == hashlib.sha256(b"v").digest()
    digests = await anyio.to_thread.run_sync(hash_tree, DumpTree(roots))
    assert sorted(digests) == [b"TOP", b"redis/db_0/strings/k", b"sqs/q/_queue.json"]


@pytest.mark.anyio
async def test_writer_refuses_a_redirected_root_swapped_for_a_symlink(tmp_path: Path) -> None:
    """The redirected root is opened without following a symlink, like the main one."""
    main, other, victim = tmp_path / "main", tmp_path / "other", tmp_path / "victim"
    for path in (main, other, victim):
        path.mkdir()
    writer = DumpWriter(TreeRoots(main, {"redis": other}))
    other.rmdir()
    other.symlink_to(victim)
    with pytest.raises(OutputError, match="cannot open output root"):
        await writer.write("redis/k", b"v")
    assert os.listdir(victim) == []


def test_a_root_that_is_not_utf8_cannot_be_recorded(tmp_path: Path) -> None:
    """MANIFEST.json is JSON text: a root whose path is not UTF-8 is refused up front."""
    odd = os.fsdecode(os.fsencode(tmp_path) + b"/\xff")
    with pytest.raises(UsageError, match=r"--output-root sqs=.* is not valid UTF-8"):
        checked_output_roots(tmp_path / "out", {"sqs": odd}, known=KNOWN, selected=KNOWN)
