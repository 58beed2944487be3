"""The atomic, symlink-refusing dump writer."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from elastickv_async._core.dump import writer as writer_module
from elastickv_async._core.dump.roots import TreeRoots
from elastickv_async._core.dump.writer import DumpWriter, split_by_directory
from elastickv_async._core.errors import OutputError
from elastickv_async._core.runfiles import leftover_owner

pytestmark = pytest.mark.anyio


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if leftover_owner(p.name) is not None)


@pytest.fixture(params=["unnamed", "named"])
def scheme(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of writing a file atomically: an O_TMPFILE inode linked under its name, and
    the fallback (a named temp file and rename) used where O_TMPFILE is missing."""
    if request.param == "named":
        monkeypatch.setattr(writer_module, "_O_TMPFILE", None)
    else:
        assert writer_module._O_TMPFILE is not None, "the test machine has O_TMPFILE"
    return str(request.param)


async def test_write_creates_dirs_and_0600_files(tmp_path: Path, scheme: str) -> None:
    """Files land 0600 inside 0755 directories, with their SHA-256 recorded."""
    writer = DumpWriter(tmp_path)
    await writer.write("a/b/c.json", b"{}")
    target = tmp_path / "a" / "b" / "c.json"
    assert target.read_bytes() == b"{}"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755
    assert writer.ledger.get("a/b/c.json") == hashlib.sha256(b"{}").digest()
    assert writer.files_written == 1


async def test_overwrite_replaces_atomically(tmp_path: Path, scheme: str) -> None:
    """A second write of the same path replaces the content; no temp files remain."""
    writer = DumpWriter(tmp_path)
    await writer.write("x.bin", b"old")
    await writer.write("x.bin", b"new")
    assert (tmp_path / "x.bin").read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "rel", ["../escape", "a/../b", "/abs", "a//b", "./a", "a/\x00b", "x" * 256]
)
async def test_unsafe_paths_refused(tmp_path: Path, rel: str) -> None:
    """Traversal, empty or dot segments, NUL and over-long names are refused."""
    with pytest.raises(OutputError):
        await DumpWriter(tmp_path).write(rel, b"x")


@pytest.mark.parametrize("name", ["..", ".", "", "a\x00b", "\u00e9" * 128, "x" * 256])
async def test_unsafe_names_refused_after_a_file_of_the_same_directory(
    tmp_path: Path, name: str
) -> None:
    """In a batch, a file in the directory of the one before it still gets its name checked
    (over-long counts UTF-8 bytes: 128 two-byte characters are too long)."""
    writer = DumpWriter(tmp_path)
    with pytest.raises(OutputError):
        await writer.write_many([("d/a", b"a"), (f"d/{name}", b"x")])
    assert os.listdir(tmp_path / "d") == ["a"]


async def test_symlinked_directory_is_not_followed(tmp_path: Path) -> None:
    """A symlink planted where a directory is expected is refused, not written through."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "sub").symlink_to(outside)
    with pytest.raises(OutputError):
        await DumpWriter(root).write("sub/file", b"x")
    assert list(outside.iterdir()) == []


async def test_symlinked_target_is_not_replaced(tmp_path: Path, scheme: str) -> None:
    """An existing symlink at the target path is refused and left alone."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").symlink_to(victim)
    with pytest.raises(OutputError):
        await DumpWriter(root).write("f", b"x")
    assert victim.read_bytes() == b"keep"
    assert (root / "f").is_symlink()


async def test_symlinked_target_in_an_existing_subdirectory_is_not_replaced(
    tmp_path: Path,
) -> None:
    """A directory the writer did not create is checked like the root: a symlink at the target
    is refused and left alone, also in a batch."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").symlink_to(victim)
    with pytest.raises(OutputError, match="not a regular file"):
        await DumpWriter(root).write_many([("sub/e", b"e"), ("sub/f", b"x")])
    assert victim.read_bytes() == b"keep"
    assert (root / "sub" / "f").is_symlink()
    assert (root / "sub" / "e").read_bytes() == b"e"


async def test_symlink_planted_in_a_directory_the_writer_made_is_never_followed(
    tmp_path: Path, scheme: str
) -> None:
    """A symlink planted meanwhile in a directory the writer created is refused there too,
    never written through, and the batch's other files are written."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    root = tmp_path / "root"
    root.mkdir()
    writer = DumpWriter(root)
    await writer.write_many([("made/a", b"a")])
    (root / "made" / "b").symlink_to(victim)
    with pytest.raises(OutputError, match="made/b"):
        await writer.write_many([("made/b", b"new")])
    await writer.write("made/c", b"c")
    assert victim.read_bytes() == b"keep"
    assert (root / "made" / "b").is_symlink()
    assert (root / "made" / "c").read_bytes() == b"c"
    assert writer.ledger.get("made/b") is None
    assert _leftovers(root) == []


async def test_no_name_exists_while_a_file_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With O_TMPFILE the content is written to an inode with no name, so a kill at any
    point leaves nothing in the directory; the file's only name is given once it is whole."""
    seen: list[list[str]] = []
    real_write = os.write

    def write(fd: int, data: bytes | memoryview) -> int:
        seen.append(sorted(os.listdir(tmp_path / "d")))
        return real_write(fd, data)

    writer = DumpWriter(tmp_path)
    await writer.write("d/first", b"1")
    monkeypatch.setattr(os, "write", write)
    await writer.write_many([("d/a", b"aa"), ("d/b", b"bb")])
    async with writer.open("d/c") as out:
        await out.write(b"cc")
    assert seen == [["first"], ["a", "first"], ["a", "b", "first"]]
    assert sorted(os.listdir(tmp_path / "d")) == ["a", "b", "c", "first"]


async def test_a_failing_link_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error when the written file gets its name leaves neither the file nor any temp."""

    def link(*args: object, **kwargs: object) -> None:
        raise OSError(5, "injected EIO")

    writer = DumpWriter(tmp_path)
    await writer.write("d/first", b"1")
    monkeypatch.setattr(os, "link", link)
    with pytest.raises(OutputError):
        await writer.write_many([("d/a", b"aa")])
    with pytest.raises(OutputError):
        async with writer.open("d/b") as out:
            await out.write(b"bb")
    assert os.listdir(tmp_path / "d") == ["first"]
    assert writer.ledger.get("d/a") is None


async def test_a_filesystem_without_o_tmpfile_gets_named_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When O_TMPFILE is refused (EOPNOTSUPP), that file and the following ones are written
    through named temp files and rename, with the same result."""
    real_open = os.open
    tmpfile = writer_module._O_TMPFILE
    assert tmpfile is not None
    refused: list[int] = []

    def open_(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if flags & tmpfile == tmpfile:
            refused.append(flags)
            raise OSError(95, "injected EOPNOTSUPP")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_)
    writer = DumpWriter(tmp_path)
    await writer.write_many([("d/a", b"aa"), ("d/b", b"bb")])
    await writer.write("d/a", b"new")
    assert len(refused) == 1
    assert (tmp_path / "d" / "a").read_bytes() == b"new"
    assert (tmp_path / "d" / "b").read_bytes() == b"bb"
    assert stat.S_IMODE((tmp_path / "d" / "b").stat().st_mode) == 0o600
    assert _leftovers(tmp_path) == []


async def test_file_over_a_directory_the_writer_made_is_refused(
    tmp_path: Path, scheme: str
) -> None:
    """A file whose path is a directory written earlier in the run fails with OutputError,
    leaves the directory and its content alone and no temp file behind."""
    writer = DumpWriter(tmp_path)
    await writer.write_many([("d/sub/x", b"x")])
    with pytest.raises(OutputError):
        await writer.write_many([("d/sub", b"file")])
    with pytest.raises(OutputError):
        await writer.write("d/sub", b"file")
    assert (tmp_path / "d" / "sub" / "x").read_bytes() == b"x"
    assert _leftovers(tmp_path) == []


async def test_streamed_file_commits_on_success(tmp_path: Path, scheme: str) -> None:
    """Chunks streamed through open() become one file, hashed incrementally."""
    writer = DumpWriter(tmp_path)
    async with writer.open("big/body") as f:
        for _ in range(3):
            await f.write(b"abc" * 1000)
    assert (tmp_path / "big" / "body").read_bytes() == b"abc" * 3000
    assert writer.ledger.get("big/body") == hashlib.sha256(b"abc" * 3000).digest()


async def test_streamed_file_aborts_on_error(tmp_path: Path, scheme: str) -> None:
    """An exception inside open() leaves neither the file nor its temp file."""
    writer = DumpWriter(tmp_path)
    with pytest.raises(RuntimeError):
        async with writer.open("d/body") as f:
            await f.write(b"partial")
            raise RuntimeError("boom")
    assert not (tmp_path / "d" / "body").exists()
    assert _leftovers(tmp_path) == []


async def test_streamed_file_aborts_on_cancellation(tmp_path: Path, scheme: str) -> None:
    """Cancelling a streaming write removes its temp file."""
    writer = DumpWriter(tmp_path)
    started = anyio.Event()

    async def stream_forever() -> None:
        async with writer.open("c/body") as f:
            await f.write(b"x")
            started.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stream_forever)
        await started.wait()
        tg.cancel_scope.cancel()
    assert not (tmp_path / "c" / "body").exists()
    assert _leftovers(tmp_path) == []


async def test_install_moves_scratch_file(tmp_path: Path) -> None:
    """install() moves a finished scratch file into place with mode 0600."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    src = scratch / "obj"
    src.write_bytes(b"body")
    os.chmod(src, 0o644)
    root = tmp_path / "root"
    root.mkdir()
    writer = DumpWriter(root)
    await writer.install("bucket/obj", src)
    assert (root / "bucket" / "obj").read_bytes() == b"body"
    assert stat.S_IMODE((root / "bucket" / "obj").stat().st_mode) == 0o600
    assert not src.exists()
    assert writer.ledger.get("bucket/obj") == hashlib.sha256(b"body").digest()


async def test_install_of_a_0600_file_changes_no_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scratch file already 0600 is moved as it is: no chmod per installed file."""
    src = tmp_path / "obj"
    src.write_bytes(b"body")
    os.chmod(src, 0o600)
    chmods: list[object] = []
    monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: chmods.append(args))
    root = tmp_path / "root"
    root.mkdir()
    await DumpWriter(root).install("bucket/obj", src)
    assert chmods == []
    assert stat.S_IMODE((root / "bucket" / "obj").stat().st_mode) == 0o600
    assert (root / "bucket" / "obj").read_bytes() == b"body"


async def test_install_many_moves_each_file_and_opens_a_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of scratch files is moved in one call: each lands with its digest (given, or
    hashed from the file), and consecutive files of one directory share its descriptor."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    bodies = {f"bucket/a/{n}": b"a%d" % n for n in range(5)} | {"bucket/b/x": b"bx"}
    files = []
    for n, (rel, body) in enumerate(bodies.items()):
        src = scratch / str(n)
        src.write_bytes(body)
        # The first file's digest is left to the writer to take.
        files.append((rel, src, hashlib.sha256(body).digest() if n else None))
    root = tmp_path / "root"
    root.mkdir()
    writer = DumpWriter(root)
    opened: list[tuple[str, ...]] = []
    open_dir = writer._open_dir

    def counting_open_dir(parts: Any, *, create: bool) -> int:
        opened.append(tuple(parts))
        return open_dir(parts, create=create)

    monkeypatch.setattr(writer, "_open_dir", counting_open_dir)
    await writer.install_many(files)
    assert opened == [("bucket", "a"), ("bucket", "b")]
    for rel, body in bodies.items():
        assert (root / rel).read_bytes() == body
        assert stat.S_IMODE((root / rel).stat().st_mode) == 0o600
        assert writer.ledger.get(rel) == hashlib.sha256(body).digest()
    assert list(scratch.iterdir()) == []
    assert (writer.files_written, writer.bytes_written) == (6, sum(map(len, bodies.values())))


async def test_install_many_copies_across_filesystems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where rename fails with EXDEV, the file is copied into place and the source removed."""
    src = tmp_path / "obj"
    src.write_bytes(b"body")
    root = tmp_path / "root"
    root.mkdir()

    def cross_device(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(os, "rename", cross_device)
    writer = DumpWriter(root)
    await writer.install_many([("bucket/obj", src, None)])
    assert (root / "bucket" / "obj").read_bytes() == b"body"
    assert not src.exists()
    assert writer.ledger.get("bucket/obj") == hashlib.sha256(b"body").digest()


async def test_write_many_writes_each_file(tmp_path: Path, scheme: str) -> None:
    """A batch of small files is written in one call, each one atomically."""
    writer = DumpWriter(tmp_path)
    await writer.write_many([(f"items/{i}.json", str(i).encode()) for i in range(50)])
    assert sorted(p.name for p in (tmp_path / "items").iterdir()) == sorted(
        f"{i}.json" for i in range(50)
    )
    assert writer.files_written == 50


async def test_sibling_directories_open_their_parent_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of files in sibling directories (a table's hash keys) opens the directories'
    parent once, not once per directory; files at the top, in an adapter's directory and in
    an adapter redirected to its own root land where single writes put them."""
    opened: list[tuple[str, ...]] = []
    open_dir = DumpWriter._open_dir

    def counted(self: DumpWriter, parts: Any, *, create: bool) -> int:
        opened.append(tuple(parts))
        return open_dir(self, parts, create=create)

    monkeypatch.setattr(DumpWriter, "_open_dir", counted)
    files = [(f"t/items/h{i:02d}/r{j}.json", b"%d-%d" % (i, j)) for i in range(30) for j in (0, 1)]
    files += [("top", b"top"), ("t/one", b"one"), ("r/x/y/z", b"z"), ("t/items/h31/r0.json", b"x")]
    for name in ("main", "r-root", "single", "r-single"):
        (tmp_path / name).mkdir()
    roots = TreeRoots(tmp_path / "main", {"r": tmp_path / "r-root"})
    writer = DumpWriter(roots)
    await writer.write_many(files)
    assert opened.count(("t", "items")) == 2  # once per run of siblings
    assert len(opened) == 5
    single = DumpWriter(TreeRoots(tmp_path / "single", {"r": tmp_path / "r-single"}))
    for rel, data in files:
        await single.write(rel, data)
    for main, redirected in (("main", "r-root"), ("single", "r-single")):
        assert (tmp_path / redirected / "r" / "x" / "y" / "z").read_bytes() == b"z"
        assert not (tmp_path / main / "r").exists()
    assert _tree_files(tmp_path / "main") == _tree_files(tmp_path / "single")
    assert len(_tree_files(tmp_path / "main")) == len(files) - 1


async def test_a_symlinked_sibling_directory_is_refused(tmp_path: Path) -> None:
    """A symlink planted among sibling directories is refused like any other, and nothing is
    written through it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "t" / "items").mkdir(parents=True)
    (root / "t" / "items" / "h1").symlink_to(outside)
    writer = DumpWriter(root)
    with pytest.raises(OutputError, match="t/items/h1"):
        await writer.write_many([("t/items/h0/a", b"a"), ("t/items/h1/b", b"b")])
    assert list(outside.iterdir()) == []
    assert (root / "t" / "items" / "h0" / "a").read_bytes() == b"a"
    assert _leftovers(root) == []


def _tree_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_concurrent_writes_count_every_byte_and_file(tmp_path: Path) -> None:
    """Counters add up exactly when many writes are in flight at once (no lost updates)."""
    writer = DumpWriter(tmp_path, jobs=4)
    bodies = [bytes([i]) * (i + 1) for i in range(40)]
    async with anyio.create_task_group() as tg:
        for i, body in enumerate(bodies):
            tg.start_soon(writer.write, f"f/{i}", body)
        tg.start_soon(writer.write_many, [("g/a", b"xy"), ("g/b", b"z")])
        async with writer.open("h/big") as out:
            await out.write(b"12345")
    assert writer.files_written == len(bodies) + 3
    assert writer.bytes_written == sum(map(len, bodies)) + 3 + 5


async def test_a_lane_takes_a_batch_while_the_previous_one_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """behind(): handing a batch over returns while the lane writes it, so the caller works
    on the next one meanwhile; leaving the block waits for every batch to be written."""
    handed = threading.Event()
    waited: list[bool] = []
    real = DumpWriter._write_many_sync

    def write_many_sync(self: DumpWriter, files: list[tuple[str, bytes]]) -> int:
        if not waited:
            # The first batch is written only once the caller has moved on (the wait is a
            # guard against a hang, not a measurement).
            waited.append(handed.wait(timeout=60))
        return real(self, files)

    monkeypatch.setattr(DumpWriter, "_write_many_sync", write_many_sync)
    writer = DumpWriter(tmp_path)
    async with writer.behind() as lane:
        await lane.write_many([("d/a", b"aa"), ("d/b", b"bb")])
        handed.set()
        await lane.write_many([("e/c", b"c")])
        await lane.write_many([])
    assert waited == [True]
    assert writer.files_written == 3
    assert writer.bytes_written == 5
    assert (tmp_path / "e" / "c").read_bytes() == b"c"
    assert writer.ledger.get("d/b") == hashlib.sha256(b"bb").digest()


def test_split_by_directory_keeps_each_directory_whole_and_in_order() -> None:
    files = [
        ("t/a/1", b"1"),
        ("t/a/2", b"2"),
        ("t/b/1", b"3"),
        ("t/c/1", b"4"),
        ("t/a/3", b"5"),
        ("t/d/1", b"6"),
        ("t/c/2", b"7"),
        ("t/e/1", b"8"),
    ]
    first, second = split_by_directory(files)
    # New directories go to the first half until it holds half the files.
    assert {rel.rpartition("/")[0] for rel, _ in first} == {"t/a", "t/b", "t/c"}
    assert {rel.rpartition("/")[0] for rel, _ in second} == {"t/d", "t/e"}
    # Each half keeps the batch's order.
    assert list(first) == [f for f in files if f in first]
    assert list(second) == [f for f in files if f in second]
    assert sorted([*first, *second]) == sorted(files)
    one_dir = [("s/x", b"1"), ("s/y", b"2"), ("s/x", b"3")]
    assert split_by_directory(one_dir) == (one_dir,)
    assert split_by_directory([("s/x", b"1")]) == ([("s/x", b"1")],)


async def test_a_lane_writes_the_halves_of_a_batch_at_once_and_batches_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch over several directories is written by two threads at the same time; the
    next batch waits for both, so a path written by two batches ends with the later one."""
    both = threading.Barrier(2, timeout=60)  # a guard against a hang, not a measurement
    met: list[int] = []
    real = DumpWriter._write_many_sync

    def write_many_sync(self: DumpWriter, files: list[tuple[str, bytes]]) -> int:
        if len(met) < 2:
            met.append(both.wait())  # raises BrokenBarrierError unless both halves run
        return real(self, files)

    monkeypatch.setattr(DumpWriter, "_write_many_sync", write_many_sync)
    writer = DumpWriter(tmp_path)
    async with writer.behind() as lane:
        await lane.write_many([("a/1", b"old"), ("a/2", b"x"), ("b/1", b"y"), ("b/2", b"z")])
        await lane.write_many([("a/1", b"new"), ("b/3", b"w")])
    assert sorted(met) == [0, 1]
    assert writer.files_written == 6
    assert (tmp_path / "a" / "1").read_bytes() == b"new"
    assert writer.ledger.get("a/1") == hashlib.sha256(b"new").digest()
    assert (tmp_path / "b" / "3").read_bytes() == b"w"


async def test_a_failed_write_in_the_lane_stops_the_block(tmp_path: Path) -> None:
    """A batch the lane cannot write raises its error out of behind()'s block."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").mkdir()
    writer = DumpWriter(tmp_path)
    reached_end = False
    with pytest.raises(OutputError, match="d/x"):
        async with writer.behind() as lane:
            await lane.write_many([("d/x", b"file over a directory")])
            await anyio.sleep_forever()
            reached_end = True
    assert not reached_end
