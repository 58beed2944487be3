"""The dump-tree reader's rules: what a listing, an open and a whole-file read refuse."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from support import DigestLog, raises_code

from elastickv_async._core.dump.tree import (
    MAX_RECORD_FILE,
    DumpTree,
    active_recorder,
    recording_reads,
)
from elastickv_async._core.errors import DumpTreeError, UnsafeDumpEntry, UsageError


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "a.json").write_bytes(b"{}")
    (root / "d" / "e" / "b.json").write_bytes(b"[]")
    return root


def _names(tree: DumpTree, parts: tuple[str, ...]) -> list[str]:
    directory = tree.open_dir(parts)
    assert directory is not None
    with directory:
        return [entry.name for entry in directory.entries()]


def test_listing_is_sorted_and_missing_parts_are_none(tmp_path: Path) -> None:
    """Entries come in byte order of their names; a missing directory is ``None``."""
    root = _tree(tmp_path)
    (root / "d" / "B").write_bytes(b"")
    tree = DumpTree(root)
    assert _names(tree, ("d",)) == ["B", "a.json", "e"]
    assert tree.open_dir(("d", "nope")) is None
    with tree.open_root() as top:
        assert top.read("absent.json") is None


def _symlink(d: Path) -> None:
    (d / "link.json").symlink_to(d / "a.json")


def _dangling(d: Path) -> None:
    (d / "link.json").symlink_to("/nonexistent")


def _fifo(d: Path) -> None:
    os.mkfifo(d / "pipe.json")


def _socket(d: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(d / "sock.json"))


def _hard_link(d: Path) -> None:
    os.link(d / "a.json", d.parent.parent / "outside")


@pytest.mark.parametrize(
    ("plant", "words"),
    [
        (_symlink, "'d/link.json': a symlink"),
        (_dangling, "'d/link.json': a symlink"),
        (_fifo, "'d/pipe.json': a FIFO"),
        (_socket, "'d/sock.json': a socket"),
        (_hard_link, "'d/a.json': a hard link"),
    ],
)
def test_listing_refuses_what_is_not_a_plain_file(
    tmp_path: Path, plant: Callable[[Path], None], words: str
) -> None:
    """Symlinks (even dangling), FIFOs, sockets and hard links fail the listing, by path."""
    root = _tree(tmp_path)
    plant(root / "d")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match=words):
        _names(DumpTree(root), ("d",))


def test_symlinked_directory_is_refused_not_followed(tmp_path: Path) -> None:
    """Opening a directory through a symlink fails, wherever the symlink is on the path."""
    root = _tree(tmp_path)
    (root / "alias").symlink_to(root / "d")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="'alias': a symlink"):
        DumpTree(root).open_dir(("alias", "e"))


def test_a_file_where_a_directory_belongs(tmp_path: Path) -> None:
    """A regular file opened as a directory is a tree-shape error naming it."""
    root = _tree(tmp_path)
    with pytest.raises(DumpTreeError, match=r"'d/a\.json' is a file, expected a directory"):
        DumpTree(root).open_dir(("d", "a.json"))


def test_a_file_replaced_after_the_listing_is_refused(tmp_path: Path) -> None:
    """The inode listed is the inode opened: a rename over it in between is caught."""
    root = _tree(tmp_path)
    with DumpTree(root).open_root() as top:
        d = top.subdir("d")
        assert d is not None
        with d:
            entry = d.lookup("a.json")
            assert entry is not None
            (root / "d" / "new").write_bytes(b"{}")
            os.replace(root / "d" / "new", root / "d" / "a.json")
            with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match=r"'d/a\.json': replaced"):
                d.open_file(entry)


def test_a_fifo_swapped_in_after_the_listing_does_not_block(tmp_path: Path) -> None:
    """The open does not wait for a FIFO's writer; the check after it refuses the FIFO."""
    root = _tree(tmp_path)
    with DumpTree(root).open_root() as top:
        d = top.subdir("d")
        assert d is not None
        with d:
            entry = d.lookup("a.json")
            assert entry is not None
            os.unlink(root / "d" / "a.json")
            os.mkfifo(root / "d" / "a.json")
            with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match=r"'d/a\.json': a FIFO"):
                d.open_file(entry)


def test_a_file_read_whole_is_capped(tmp_path: Path) -> None:
    """A file over the cap is refused before it is read; ``None`` lifts the cap."""
    root = _tree(tmp_path)
    with open(root / "d" / "big.json", "wb") as fh:
        fh.truncate(MAX_RECORD_FILE + 1)
    with DumpTree(root).open_root() as top:
        d = top.subdir("d")
        assert d is not None
        with d:
            with pytest.raises(DumpTreeError, match=r"'d/big\.json' is larger than the 67,108,864"):
                d.read("big.json")
            assert d.read("a.json", limit=2) == b"{}"
            with pytest.raises(DumpTreeError, match="limit"):
                d.read("a.json", limit=1)


def test_a_missing_root_is_a_usage_error(tmp_path: Path) -> None:
    """The root is the caller's argument: not being able to open it is a usage error."""
    with pytest.raises(UsageError):
        DumpTree(tmp_path / "nope").open_root()


def test_whole_reads_follow_the_file_past_its_opened_size(tmp_path: Path) -> None:
    """Reads are sized from the size seen at the open, yet a file that grew is read to its
    end (and still checked against the cap)."""
    root = _tree(tmp_path)
    with DumpTree(root).open_root() as top:
        d = top.subdir("d")
        assert d is not None
        with d:
            file = d.open_name("a.json")
            assert file is not None
            with file:
                with open(root / "d" / "a.json", "ab") as fh:
                    fh.write(b"x" * (3 << 20))
                assert file.read_all() == b"{}" + b"x" * (3 << 20)
            file = d.open_name("a.json")
            assert file is not None
            with file:
                with open(root / "d" / "a.json", "ab") as fh:
                    fh.write(b"y" * 10)
                with pytest.raises(DumpTreeError, match="limit"):
                    file.read_all(limit=(3 << 20) + 5)


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_files_read_to_their_end_record_their_digest(tmp_path: Path) -> None:
    """Inside ``recording_reads``, a whole read, a full pass over the blocks and a stream read
    to its end each record the SHA-256 of what was read, under the file's tree path; a read
    that stops early, and any read outside the block, records nothing."""
    root = _tree(tmp_path)
    big = b"".join(b"%08d\n" % i for i in range(300_000))  # several read blocks
    (root / "d" / "big.jsonl").write_bytes(big)
    tree = DumpTree(root)
    recorder = DigestLog()
    with recording_reads(recorder), tree.directory(("d",)) as d:
        assert d.read("a.json") == b"{}"
        file = d.open_name("big.jsonl")
        assert file is not None
        with file:
            assert b"".join(file.blocks()) == big
        file = d.open_name("big.jsonl")
        assert file is not None
        with file.stream() as fh:
            assert fh.readline() == b"00000000\n"
            assert recorder.digests.pop("d/big.jsonl") == _sha(big)
            assert fh.read() == big[9:]
            assert fh.read() == b""
            with pytest.raises(OSError):
                fh.seek(0)  # nothing may skip or reread a part of what is hashed
        assert recorder.digests == {"d/a.json": _sha(b"{}"), "d/big.jsonl": _sha(big)}
        recorder.digests.clear()
        file = d.open_name("big.jsonl")
        assert file is not None
        with file:
            next(file.blocks())  # stops after the first block
        with d.open_name("big.jsonl") as file, file.stream() as fh:  # type: ignore[union-attr]
            fh.readline()
    assert recorder.digests == {}
    assert active_recorder() is None
    with tree.directory(("d",)) as d:
        d.read("a.json")
    assert recorder.digests == {}


@pytest.mark.anyio
async def test_recording_follows_tasks_and_worker_threads(tmp_path: Path) -> None:
    """The recorder is a context variable: tasks and worker threads started inside the block
    record into it, on every backend."""
    root = _tree(tmp_path)
    tree = DumpTree(root)
    recorder = DigestLog()

    def read(parts: tuple[str, ...], name: str) -> None:
        with tree.directory(parts) as d:
            d.read(name)

    with recording_reads(recorder):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tree.run, read, ("d",), "a.json")
            tg.start_soon(tree.run, read, ("d", "e"), "b.json")
    assert recorder.digests == {"d/a.json": _sha(b"{}"), "d/e/b.json": _sha(b"[]")}


@pytest.mark.parametrize(
    ("plant", "name", "words"),
    [
        (_symlink, "link.json", "'d/link.json': a symlink"),
        (_dangling, "link.json", "'d/link.json': a symlink"),
        (_fifo, "pipe.json", "'d/pipe.json': a FIFO"),
        (_socket, "sock.json", "'d/sock.json': a socket"),
        (_hard_link, "a.json", "'d/a.json': a hard link"),
    ],
)
def test_read_listed_refuses_what_lookup_refuses(
    tmp_path: Path, plant: Callable[[Path], None], name: str, words: str
) -> None:
    """A name read without a listing's stat is refused as the listing would refuse it, with
    the same words, whether the open fails (symlink, socket) or the open file's fstat does
    (FIFO, hard link); a FIFO never blocks the read."""
    root = _tree(tmp_path)
    plant(root / "d")
    with (
        DumpTree(root).directory(("d",)) as d,
        raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match=words),
    ):
        d.read_listed(name)


def test_read_listed_reads_whole_files_under_the_cap(tmp_path: Path) -> None:
    """read_listed gives the whole content and records its digest; a missing name is
    ``None``, a directory is not a file, and the cap of a whole read holds."""
    root = _tree(tmp_path)
    big = b"".join(b"%08d\n" % i for i in range(300_000))  # several read blocks
    (root / "d" / "big.jsonl").write_bytes(big)
    (root / "d" / "empty").write_bytes(b"")
    recorder = DigestLog()
    with recording_reads(recorder), DumpTree(root).directory(("d",)) as d:
        assert d.read_listed("a.json") == b"{}"
        assert d.read_listed("big.jsonl", None) == big
        assert d.read_listed("empty") == b""
        assert d.read_listed("gone.json") is None
        with raises_code(DumpTreeError, "ErrDumpEntryType", match="'d/e' is a directory"):
            d.read_listed("e")
        with raises_code(DumpTreeError, "ErrDumpFileTooLarge", match="'d/big.jsonl'"):
            d.read_listed("big.jsonl", 1000)
    assert recorder.digests == {
        "d/a.json": _sha(b"{}"),
        "d/big.jsonl": _sha(big),
        "d/empty": _sha(b""),
    }


@pytest.mark.parametrize("change", [3 << 20, -1])
def test_read_listed_follows_a_file_whose_size_changed_since_fstat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: int
) -> None:
    """A file that grew or shrank between the fstat and the read is read to its end, and a
    growth past the cap is refused."""
    root = _tree(tmp_path)
    content = b"z" * (3 << 20)
    (root / "d" / "f").write_bytes(content)
    real_fstat = os.fstat

    def moved(fd: int) -> os.stat_result:
        st = list(real_fstat(fd))
        st[6] -= change  # st_size as the fstat saw it
        return os.stat_result(st)

    with DumpTree(root).directory(("d",)) as d:
        monkeypatch.setattr(os, "fstat", moved)
        assert d.read_listed("f") == content
        if change > 0:
            with raises_code(DumpTreeError, "ErrDumpFileTooLarge"):
                d.read_listed("f", len(content) - 1)


def test_read_listed_many_reads_as_read_listed_and_records_what_it_read(
    tmp_path: Path,
) -> None:
    """read_listed_many gives each name's content as read_listed would (``None`` for a
    missing name, a symlink refused with the same words) and records the digests of the
    files read so far when it ends, is closed early or fails."""
    root = _tree(tmp_path)
    (root / "d" / "b.json").write_bytes(b"[1]")
    _symlink(root / "d")
    recorder = DigestLog()
    with recording_reads(recorder), DumpTree(root).directory(("d",)) as d:
        got = list(d.read_listed_many(["a.json", "gone.json", "b.json"]))
        assert got == [("a.json", b"{}"), ("gone.json", None), ("b.json", b"[1]")]
    assert recorder.digests == {"d/a.json": _sha(b"{}"), "d/b.json": _sha(b"[1]")}

    early = DigestLog()
    with recording_reads(early), DumpTree(root).directory(("d",)) as d:
        reads = d.read_listed_many(["b.json", "a.json"])
        assert next(reads) == ("b.json", b"[1]")
        reads.close()
    assert early.digests == {"d/b.json": _sha(b"[1]")}

    failed = DigestLog()
    with (
        recording_reads(failed),
        DumpTree(root).directory(("d",)) as d,
        raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="'d/link.json': a symlink"),
    ):
        list(d.read_listed_many(["a.json", "link.json", "b.json"]))
    assert failed.digests == {"d/a.json": _sha(b"{}")}
