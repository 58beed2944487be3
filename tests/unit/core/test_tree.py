"""The dump-tree reader's rules: what a listing, an open and a whole-file read refuse."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from support import raises_code

from elastickv_async._core.dump.tree import MAX_RECORD_FILE, DumpTree
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
