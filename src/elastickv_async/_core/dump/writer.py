"""The only code that writes into an output root.

Every file is written atomically, is created 0600 inside 0755 directories, and is reached
through directory file descriptors opened with ``O_NOFOLLOW``, so a symlink planted anywhere
under the root is refused instead of followed. One whole file is handed to a worker thread in
a single call; the number of concurrent calls is bounded by a :class:`anyio.CapacityLimiter`.

Atomic, the cheap way: on Linux a file is written as an unnamed inode in its directory
(``O_TMPFILE``) and then linked under its name (``linkat`` of ``/proc/self/fd/N``). Creating a
file is most of a decode's kernel time, and this creates one directory entry per file where
a named temp file and a ``rename`` create one and move it (measured on ext4: about a third less
time per small file). A kill at any point leaves nothing behind: the kernel frees an inode
that was never linked. ``linkat`` never replaces an entry, so it also refuses, with no check
before it, to write over a symlink or a special file planted at the target; an existing
regular file is replaced through a named temp link and ``rename``. Where ``O_TMPFILE`` or
``/proc`` is missing, every file goes through a named temp file (``.<run tag>.<n>.tmp``) and
``rename``, the target checked first.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from ..concurrency import task_group
from ..errors import OutputError, map_os_errors
from ..runfiles import new_tag
from .checksums import ChecksumLedger, sha256_file
from .roots import TreeRoots

__all__ = [
    "AtomicFile",
    "DumpWriter",
    "WriteLane",
    "check_relpath",
    "split_by_directory",
    "write_file_atomic",
]

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o755
_NAME_MAX: Final = 255
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_TMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
_O_TMPFILE: Final[int | None] = getattr(os, "O_TMPFILE", None)
_PROC_FD: Final = "/proc/self/fd"
#: What opening with ``O_TMPFILE`` fails with where the filesystem or kernel lacks it.
_NO_TMPFILE: Final = frozenset({errno.EOPNOTSUPP, errno.EISDIR})


def check_relpath(rel: str) -> tuple[str, ...]:
    """Split a slash-separated path relative to the root and refuse anything unsafe."""
    parts = tuple(rel.split("/"))
    for part in parts:
        _check_name(part, rel)
    return parts


def _check_name(part: str, rel: str) -> None:
    """Refuse ``part`` as one segment of ``rel``: empty, a dot name, a NUL or over-long."""
    if part in ("", ".", "..") or "\x00" in part:
        raise OutputError(f"unsafe output path {rel!r}")
    if len(part) > _NAME_MAX // 4 and len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX:
        raise OutputError(f"output path segment longer than {_NAME_MAX} bytes in {rel!r}")


class DumpWriter:
    """Writes files under ``root`` safely; share one per run between all adapters.

    ``root`` may be :class:`~.roots.TreeRoots`: a path then goes to the root that holds its
    adapter's subtree, under the same rules, while the paths the ledger records stay logical.
    """

    def __init__(
        self,
        root: Path | TreeRoots,
        *,
        jobs: int = 8,
        fsync: bool = False,
        ledger: ChecksumLedger | None = None,
    ) -> None:
        self.roots = TreeRoots.of(root)
        self.root = self.roots.main
        self._fsync = fsync
        self._limiter = anyio.CapacityLimiter(max(1, jobs))
        self._made_dirs: set[tuple[str, ...]] = set()
        # Whether files are born unnamed (see the module docstring): decided by the first
        # write, in its worker thread, and turned off by a filesystem that refuses O_TMPFILE.
        self._anonymous: bool | None = None if _O_TMPFILE is not None else False
        # Temp names: the writer's run tag plus a counter. Random names per file cost a lot on
        # ext4 (hashed directory inserts); O_EXCL still guards against any collision.
        self._tmp_prefix = f".{new_tag()}."
        self._tmp_counter = itertools.count()
        self.files_written = 0
        self.bytes_written = 0
        #: SHA-256 of every file written, by relative path: CHECKSUMS without re-reading the tree.
        self.ledger = ledger if ledger is not None else ChecksumLedger()

    # --- synchronous primitives (worker threads only) ---------------------------------------

    def _open_dir(self, parts: Sequence[str], *, create: bool) -> int:
        """Open the directory ``root/parts`` without following symlinks, creating it if asked."""
        root = self.roots.root_for(parts)
        with map_os_errors(OutputError, f"cannot open output root {root}", path=root):
            fd = os.open(root, _DIR_FLAGS)
        make = create and tuple(parts) not in self._made_dirs
        try:
            for i in range(len(parts)):
                child = self._enter(fd, parts, i, make=make)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        if create:
            self._made_dirs.add(tuple(parts))
        return fd

    def _enter(self, fd: int, parts: Sequence[str], i: int, *, make: bool) -> int:
        """Open the directory ``parts[i]`` in ``fd`` (the directory ``parts[:i]``) without
        following a symlink, making it first if ``make``."""
        if make:
            with contextlib.suppress(FileExistsError):
                os.mkdir(parts[i], DIR_MODE, dir_fd=fd)
        try:
            return os.open(parts[i], _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            where = "/".join(parts[: i + 1])
            raise OutputError(
                f"refusing output directory {where!r}: not a plain directory ({exc.strerror})"
            ) from None

    def _open_sibling(self, parent_fd: int, parts: Sequence[str]) -> int:
        """Open (creating it) the directory ``parts``, whose parent is open as ``parent_fd``."""
        made = tuple(parts)
        fd = self._enter(parent_fd, parts, len(parts) - 1, make=made not in self._made_dirs)
        self._made_dirs.add(made)
        return fd

    def _check_target(self, dir_fd: int, name: str, rel: str) -> None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"refusing to replace {rel!r}: not a regular file")

    def _tmp_name(self) -> str:
        return f"{self._tmp_prefix}{next(self._tmp_counter)}.tmp"

    def _create(self, dir_fd: int, name: str, rel: str) -> tuple[int, str | None]:
        """Open a new file for ``name`` in ``dir_fd``: unnamed, or under a temp name.

        Returns the descriptor and the temp name (``None`` for an unnamed file); hand both to
        :meth:`_place` once the content is written.
        """
        if self._anonymous is None:
            self._anonymous = os.path.isdir(_PROC_FD)
        if self._anonymous and _O_TMPFILE is not None:
            try:
                fd = os.open(".", os.O_WRONLY | _O_TMPFILE | _CLOEXEC, FILE_MODE, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
                self._anonymous = False
            else:
                return fd, None
        self._check_target(dir_fd, name, rel)
        tmp = self._tmp_name()
        return os.open(tmp, _TMP_FLAGS, FILE_MODE, dir_fd=dir_fd), tmp

    def _place(self, fd: int, tmp: str | None, dir_fd: int, name: str, rel: str) -> None:
        """Give the written file ``fd`` (from :meth:`_create`) its name ``name``.

        On an error the file is not at ``name``, and a temp name given to it is removed.
        """
        if tmp is None:
            source = f"{_PROC_FD}/{fd}"
            try:
                os.link(source, name, dst_dir_fd=dir_fd, follow_symlinks=True)
                return
            except FileExistsError:
                pass
            # Only an earlier regular file of the run may be replaced: a temp link, then rename.
            self._check_target(dir_fd, name, rel)
            tmp = self._tmp_name()
            os.link(source, tmp, dst_dir_fd=dir_fd, follow_symlinks=True)
        try:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise

    def _write_at(
        self, dir_fd: int, name: str, rel: str, chunks: Iterable[bytes]
    ) -> tuple[bytes, int]:
        """Write ``name`` in the open directory ``dir_fd`` atomically.

        Returns the file's SHA-256 (the caller records it) and size.
        """
        size = 0
        digest = hashlib.sha256()
        fd, tmp = self._create(dir_fd, name, rel)
        try:
            for chunk in chunks:
                done = os.write(fd, chunk)
                if done < len(chunk):
                    view = memoryview(chunk)[done:]
                    while view:
                        view = view[os.write(fd, view) :]
                digest.update(chunk)
                size += len(chunk)
            if self._fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
            raise
        try:
            self._place(fd, tmp, dir_fd, name, rel)
        finally:
            os.close(fd)
        return digest.digest(), size

    def _write_sync(self, rel: str, chunks: Iterable[bytes]) -> int:
        parts = check_relpath(rel)
        dir_fd = self._open_dir(parts[:-1], create=True)
        try:
            digest, size = self._write_at(dir_fd, parts[-1], rel, chunks)
        finally:
            os.close(dir_fd)
        self.ledger.record(rel, digest)
        return size

    def _write_many_sync(self, files: Sequence[tuple[str, bytes]]) -> int:
        # Consecutive files in one directory share one directory descriptor, and the batch
        # takes the ledger's lock once. The parent of that directory stays open too: a run
        # of sibling directories (say a table's directory per hash key) costs one mkdir and
        # one open each, not one per segment of the path.
        total = 0
        dir_rel: str | None = None
        dir_fd = parent_fd = -1
        parent_rel: str | None = None
        digests: list[tuple[str, bytes]] = []
        try:
            for rel, data in files:
                head, _, name = rel.rpartition("/")
                if head != dir_rel:
                    parts = check_relpath(rel)[:-1]
                    if dir_fd >= 0:
                        os.close(dir_fd)
                        dir_fd = -1
                    dir_rel = None
                    if len(parts) < 2:  # the root, or an adapter's (each may have its own)
                        dir_fd = self._open_dir(parts, create=True)
                    else:
                        up = head.rpartition("/")[0]
                        if up != parent_rel:
                            if parent_fd >= 0:
                                os.close(parent_fd)
                                parent_fd = -1
                            parent_rel = None
                            parent_fd = self._open_dir(parts[:-1], create=True)
                            parent_rel = up
                        dir_fd = self._open_sibling(parent_fd, parts)
                    dir_rel = head
                else:
                    _check_name(name, rel)  # the directory's segments were checked
                digest, size = self._write_at(dir_fd, name, rel, (data,))
                digests.append((rel, digest))
                total += size
        finally:
            for fd in (dir_fd, parent_fd):
                if fd >= 0:
                    os.close(fd)
            self.ledger.record_many(digests)
        return total

    def _install_sync(self, rel: str, src: Path, known: bytes | None = None) -> int:
        """Move a finished scratch file into place, copying when it is on another filesystem.

        ``known`` is the file's SHA-256, when the caller took it as it wrote the file.
        """
        return self._install_many_sync([(rel, src, known)])

    def _install_many_sync(self, files: Sequence[tuple[str, Path, bytes | None]]) -> int:
        # Consecutive files in one directory share its descriptor, and the batch takes the
        # ledger's lock once.
        total = 0
        dir_rel: str | None = None
        dir_fd = -1
        digests: list[tuple[str, bytes]] = []
        try:
            for rel, src, known in files:
                head, _, name = rel.rpartition("/")
                if head != dir_rel or dir_fd < 0:
                    parts = check_relpath(rel)
                    if dir_fd >= 0:
                        os.close(dir_fd)
                        dir_fd = -1
                    dir_fd = self._open_dir(parts[:-1], create=True)
                    dir_rel = head
                else:
                    _check_name(name, rel)
                moved = self._move_in(dir_fd, name, rel, src, known)
                if moved is None:  # another filesystem: copied, and recorded by the copy
                    total += self._copy_in(rel, src)
                else:
                    digests.append((rel, moved[0]))
                    total += moved[1]
        finally:
            if dir_fd >= 0:
                os.close(dir_fd)
            self.ledger.record_many(digests)
        return total

    def _move_in(
        self, dir_fd: int, name: str, rel: str, src: Path, known: bytes | None
    ) -> tuple[bytes, int] | None:
        """Rename ``src`` to ``name`` in ``dir_fd``; its digest and size, or ``None`` when
        ``src`` is on another filesystem (nothing moved)."""
        self._check_target(dir_fd, name, rel)
        st = os.stat(src, follow_symlinks=False)
        try:
            digest = known if known is not None else bytes.fromhex(sha256_file(src))
            if stat.S_IMODE(st.st_mode) != FILE_MODE:  # scratch files are mostly 0600
                os.chmod(src, FILE_MODE)
            if self._fsync:
                fd = os.open(src, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.rename(src, name, dst_dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            return None
        return digest, st.st_size

    def _copy_in(self, rel: str, src: Path) -> int:
        """Write a copy of ``src`` at ``rel``, then delete ``src``."""

        def chunks() -> Iterable[bytes]:
            with open(src, "rb") as fh:
                while block := fh.read(4 << 20):
                    yield block

        written = self._write_sync(rel, chunks())
        os.unlink(src)
        return written

    # --- async API -------------------------------------------------------------------------

    async def _call(self, func: Callable[..., int], *args: object) -> int:
        with map_os_errors(OutputError, "cannot write output"):
            return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    async def _run(self, files: int, func: Callable[..., int], *args: object) -> None:
        """Run ``func`` (which writes ``files`` files and returns their bytes) in a worker."""
        written = await self._call(func, *args)
        # Added only after the await: ``x += await ...`` reads ``x`` before suspending and
        # loses the updates of every write that finishes meanwhile.
        self.bytes_written += written
        self.files_written += files

    async def write(self, rel: str, data: bytes) -> None:
        """Write one whole file at ``rel`` (slash-separated, relative to the root) atomically."""
        await self._run(1, self._write_sync, rel, (data,))

    async def write_chunks(self, rel: str, chunks: Iterable[bytes]) -> None:
        """Write one file from ``chunks``, which are produced in the worker thread.

        For content generated by a blocking iterator (e.g. merged from spill files).
        """
        await self._run(1, self._write_sync, rel, chunks)

    async def write_many(self, files: Sequence[tuple[str, bytes]]) -> None:
        """Write several small files in one worker-thread call (each still atomic)."""
        if files:
            await self._run(len(files), self._write_many_sync, files)

    async def install(self, rel: str, src: Path, *, sha256: bytes | None = None) -> None:
        """Move the finished file ``src`` (e.g. built in scratch) to ``rel`` atomically.

        ``sha256``: the file's digest (32 raw bytes), when the caller hashed what it wrote
        there; it is then not read again.
        """
        await self._run(1, self._install_sync, rel, src, sha256)

    async def install_many(self, files: Sequence[tuple[str, Path, bytes | None]]) -> None:
        """:meth:`install` several ``(rel, src, sha256)`` in one worker-thread call (each
        file still moved atomically; list those of one directory together)."""
        if files:
            await self._run(len(files), self._install_many_sync, files)

    @contextlib.asynccontextmanager
    async def behind(self) -> AsyncIterator[WriteLane]:
        """A lane that writes batches of files in the background (see :class:`WriteLane`).

        Leaving the block waits until every batch handed over is written; a failed write
        cancels the block and its error propagates.
        """
        send, receive = anyio.create_memory_object_stream[Sequence[tuple[str, bytes]]]()
        async with task_group() as tg, send:
            tg.start_soon(self._drain, receive)
            yield WriteLane(send)

    async def _drain(self, batches: ObjectReceiveStream[Sequence[tuple[str, bytes]]]) -> None:
        async with batches:
            async for files in batches:
                halves = split_by_directory(files)
                if len(halves) == 1:
                    await self.write_many(files)
                    continue
                async with task_group() as tg:
                    for half in halves:
                        tg.start_soon(self.write_many, half)

    @contextlib.asynccontextmanager
    async def open(self, rel: str) -> AsyncIterator[AtomicFile]:
        """Stream a large file: chunks go to a temp file that is renamed into place on success.

        On an exception or cancellation the temp file is removed and nothing appears at ``rel``.
        """
        atomic = AtomicFile(self, rel)
        await atomic._open()
        try:
            yield atomic
        except BaseException:
            with anyio.CancelScope(shield=True):
                await atomic._abort()
            raise
        with anyio.CancelScope(shield=True):
            await atomic._commit()


def split_by_directory(
    files: Sequence[tuple[str, bytes]],
) -> tuple[Sequence[tuple[str, bytes]], ...]:
    """Split a batch into two halves of about equal counts that share no directory.

    Each directory's files stay in one half, in their order, so a path written twice in a
    batch is written in order. A batch of one directory comes back whole (one element).
    """
    half = len(files) // 2
    first: list[tuple[str, bytes]] = []
    second: list[tuple[str, bytes]] = []
    where: dict[str, list[tuple[str, bytes]]] = {}
    for item in files:
        head = item[0].rpartition("/")[0]
        part = where.get(head)
        if part is None:
            part = where[head] = first if len(first) < half else second
        part.append(item)
    return (first, second) if first and second else (files,)


class WriteLane:
    """Hands batches of files to :meth:`DumpWriter.behind`'s background task.

    One batch is written at a time and none is queued: :meth:`write_many` returns once the
    lane takes the batch, that is once the previous one is written. So the caller holds at
    most one batch while another is being written, and the kernel's work of creating files
    overlaps with the caller's work of producing the next ones (a file's creation is most of
    a small file's cost, and the caller otherwise waits for it). A batch that spans several
    directories is written by two threads at once, each with its own directories
    (:func:`split_by_directory`): creating a file is mostly the kernel's inode allocation,
    which two cores do side by side, while two threads in one directory were slower than one
    (measured on ext4), since the kernel adds the entries of a directory one at a time.
    """

    def __init__(self, send: ObjectSendStream[Sequence[tuple[str, bytes]]]) -> None:
        self._send = send

    async def write_many(self, files: Sequence[tuple[str, bytes]]) -> None:
        """Hand ``files`` over to be written like :meth:`DumpWriter.write_many` writes them."""
        if files:
            await self._send.send(files)


class AtomicFile:
    """A file being streamed by :meth:`DumpWriter.open`; call :meth:`write` with big chunks."""

    def __init__(self, writer: DumpWriter, rel: str) -> None:
        self._writer = writer
        self._rel = rel
        self._parts = check_relpath(rel)
        self._dir_fd = -1
        self._fd = -1
        self._tmp: str | None = None
        self._digest = hashlib.sha256()
        self.size = 0

    def _open_sync(self) -> int:
        self._dir_fd = self._writer._open_dir(self._parts[:-1], create=True)
        self._fd, self._tmp = self._writer._create(self._dir_fd, self._parts[-1], self._rel)
        return 0

    async def _open(self) -> None:
        await self._writer._call(self._open_sync)

    def _write_sync(self, data: bytes) -> int:
        self._digest.update(data)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        return len(data)

    async def write(self, data: bytes) -> None:
        """Append ``data`` (prefer MiB-sized chunks: each call is one worker-thread hop)."""
        written = await self._writer._call(self._write_sync, data)
        self.size += written

    def _commit_sync(self) -> int:
        try:
            if self._writer._fsync:
                os.fsync(self._fd)
            tmp, self._tmp = self._tmp, None  # _place removes it on an error
            self._writer._place(self._fd, tmp, self._dir_fd, self._parts[-1], self._rel)
            os.close(self._fd)
            self._fd = -1
            self._writer.ledger.record(self._rel, self._digest.digest())
        except BaseException:
            self._abort_sync()
            raise
        os.close(self._dir_fd)
        self._dir_fd = -1
        return self.size

    async def _commit(self) -> None:
        await self._writer._run(1, self._commit_sync)

    def _abort_sync(self) -> int:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._dir_fd >= 0:
            if self._tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._tmp, dir_fd=self._dir_fd)
            os.close(self._dir_fd)
            self._dir_fd = -1
        return 0

    async def _abort(self) -> None:
        await anyio.to_thread.run_sync(self._abort_sync)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` whole and atomically, outside any dump tree (blocking).

    ``data`` goes to a fresh temp file beside ``path`` (named by a run tag, created with
    ``O_EXCL`` and never through a symlink), is fsync'd and renamed over ``path``; the
    directory is then fsync'd. Anything at ``path`` but a regular file is refused with
    :class:`OutputError`, and no temp file survives a failure.
    """
    with map_os_errors(OutputError, f"cannot open directory {path.parent}", path=path.parent):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    tmp = f".{path.name}.{new_tag()}.tmp"
    try:
        with map_os_errors(OutputError, f"cannot write {path}", path=path):
            try:
                st = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                if not stat.S_ISREG(st.st_mode):
                    raise OutputError(f"refusing to replace {path}: not a regular file")
            fd = os.open(tmp, _TMP_FLAGS, FILE_MODE, dir_fd=dir_fd)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
