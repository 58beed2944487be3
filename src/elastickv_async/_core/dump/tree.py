"""Reading a dump tree safely: the read-side twin of :class:`~.writer.DumpWriter`.

One rule set for every encoder and for ``verify``:

* directories are opened one component at a time, relative to their parent's descriptor,
  with ``O_DIRECTORY | O_NOFOLLOW``: a symlinked directory is refused, never followed (the
  root itself is the caller's choice and may be reached through a symlink);
* a tree holds directories and regular files only: a listing refuses symlinks, FIFOs,
  sockets, devices and hard-linked files (a second link may name an inode outside the tree);
* a file is opened with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO swapped in after the listing
  fails the checks instead of blocking the open), then checked again with ``fstat``: still a
  regular file with one link, and the same ``(st_dev, st_ino)`` as the listing saw;
* a file read whole is capped, so one hostile file cannot take the memory of the run:
  :data:`MAX_RECORD_FILE` for a JSON document that becomes one key's records,
  :data:`MAX_BODY_FILE` for a raw value body (the largest value a snapshot can hold).
  Larger data (message logs, object bodies, bundled item parts) is streamed.

A violation of the first three raises :class:`~elastickv_async._core.errors.UnsafeDumpEntry`
naming the path relative to the root.

Inside :func:`recording_reads`, every file read to its end (:meth:`TreeFile.read_all`,
:meth:`TreeFile.blocks`, :meth:`TreeFile.stream`) records its SHA-256 as it is read, so that
``encode`` checks the tree against CHECKSUMS without reading each file a second time. A
context variable carries the recorder into the tasks and worker threads started within
(:class:`~elastickv_async._core.workers.Workers` carries it into worker processes).

Everything but :meth:`DumpTree.run` is synchronous: hand a whole directory's or a whole
file's work to :meth:`DumpTree.run`, which runs it in a worker thread under the tree's
:class:`anyio.CapacityLimiter`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, NoReturn, Protocol, TypeVar, TypeVarTuple

import msgspec

from ..errors import DumpTreeError, UnsafeDumpEntry, UsageError, map_os_errors
from .roots import TreeRoots

if TYPE_CHECKING:
    import anyio
    from _typeshed import WriteableBuffer

__all__ = [
    "MAX_BODY_FILE",
    "MAX_RECORD_FILE",
    "DigestRecorder",
    "DumpTree",
    "TreeDir",
    "TreeEntry",
    "TreeFile",
    "active_recorder",
    "recording_reads",
]

#: Largest JSON document read whole (one item, one collection, a sidecar...).
#: Parsing costs about 25 times the file's size in Python objects, so this bounds one
#: file's share of the run's memory to about 1.6 GiB.
MAX_RECORD_FILE: Final = 64 << 20
#: Largest raw value body read whole: the reference's 256 MiB snapshot value limit.
MAX_BODY_FILE: Final = 256 << 20

_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_ROOT_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_READ_BLOCK: Final = 1 << 20

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: ``(st_dev, st_ino)``: what an open file must still be after the listing saw it.
FileId = tuple[int, int]


class DigestRecorder(Protocol):
    """Receives the SHA-256 (32 raw bytes) of each tree file read to its end, by slash path."""

    def record(self, rel: str, digest: bytes) -> None:
        """Remember ``digest`` as the content of ``rel``."""

    def record_many(self, digests: Iterable[tuple[str, bytes]]) -> None:
        """:meth:`record` each pair."""


_RECORDER: Final[ContextVar[DigestRecorder | None]] = ContextVar(
    "elastickv_async_read_digests", default=None
)


@contextlib.contextmanager
def recording_reads(recorder: DigestRecorder) -> Iterator[None]:
    """Record into ``recorder`` the digest of every tree file read to its end in this block."""
    token = _RECORDER.set(recorder)
    try:
        yield
    finally:
        _RECORDER.reset(token)


def active_recorder() -> DigestRecorder | None:
    """The recorder of the enclosing :func:`recording_reads` block, if any."""
    return _RECORDER.get()


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return f"not a regular file (mode {stat.filemode(mode)})"


def _check(st: os.stat_result, rel: str) -> None:
    """Refuse anything but a directory or a singly linked regular file."""
    if stat.S_ISDIR(st.st_mode):
        return
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeDumpEntry(
            f"unsafe dump entry {rel!r}: {_kind(st.st_mode)}", code="ErrUnsafeDumpEntry", path=rel
        )
    if st.st_nlink > 1:
        raise UnsafeDumpEntry(
            f"unsafe dump entry {rel!r}: a hard link (nlink={st.st_nlink})",
            code="ErrUnsafeDumpEntry",
            path=rel,
        )


class TreeEntry(msgspec.Struct, frozen=True):
    """A checked entry of a listing: a directory or a singly linked regular file."""

    name: str
    is_dir: bool
    size: int
    #: ``(st_dev, st_ino)``: what the file must still be when it is opened.
    identity: FileId


class TreeFile:
    """An open, checked regular file of the tree; close it (or use ``with``)."""

    def __init__(self, fd: int, rel: str, size: int) -> None:
        self.fd = fd
        self.rel = rel
        #: Size when it was opened.
        self.size = size

    def close(self) -> None:
        """Release the descriptor (idempotent)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> TreeFile:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def read_all(self, limit: int | None = MAX_RECORD_FILE) -> bytes:
        """The whole content; a file over ``limit`` bytes (``None``: no limit) is refused."""
        if limit is not None and self.size > limit:
            self._too_big(limit)
        chunks = []
        total = 0
        for block in self.blocks():
            chunks.append(block)
            total += len(block)
            if limit is not None and total > limit:  # it grew since it was opened
                self._too_big(limit)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def blocks(self) -> Iterator[bytes]:
        """The content from the start, in blocks of up to 1 MiB."""
        recorder = _RECORDER.get()
        digest = hashlib.sha256() if recorder is not None else None
        # os.read allocates the whole requested size first: ask for what the file should
        # still hold (plus one byte to see its end), not 1 MiB per small file.
        expected = self.size
        while True:
            want = min(expected + 1, _READ_BLOCK) if expected >= 0 else _READ_BLOCK
            block = os.read(self.fd, want)
            if not block:
                break
            expected -= len(block)
            if digest is not None:
                digest.update(block)
            yield block
            if expected == 0 and len(block) < want:
                break  # a short read that reached the size fstat gave: the end, one read early
        if recorder is not None and digest is not None:
            recorder.record(self.rel, digest.digest())

    def _too_big(self, limit: int) -> NoReturn:
        _too_big(self.rel, limit)

    def rewind(self) -> None:
        """Go back to the start, for :meth:`blocks` to read the file again."""
        os.lseek(self.fd, 0, os.SEEK_SET)

    def pread(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file)."""
        out = bytearray()
        while len(out) < length:
            block = os.pread(self.fd, length - len(out), offset + len(out))
            if not block:
                break
            out += block
        return bytes(out)

    def stream(self) -> io.BufferedReader:
        """A buffered binary reader that takes over the descriptor (close the reader)."""
        fd, self.fd = self.fd, -1
        recorder = _RECORDER.get()
        if recorder is None:
            return open(fd, "rb", closefd=True)
        return io.BufferedReader(_RecordingReader(fd, self.rel, recorder), _READ_BLOCK)


class _RecordingReader(io.RawIOBase):
    """A file read from the start that records its digest once it has been read to the end.

    Not seekable, so nothing can skip or reread a part of what is hashed.
    """

    def __init__(self, fd: int, rel: str, recorder: DigestRecorder) -> None:
        super().__init__()
        self._fd = fd
        self._rel = rel
        self._recorder: DigestRecorder | None = recorder
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer: WriteableBuffer) -> int:
        count = os.readv(self._fd, [buffer])
        if count:
            with memoryview(buffer) as view:
                self._digest.update(view[:count])
        elif self._recorder is not None:
            self._recorder.record(self._rel, self._digest.digest())
            self._recorder = None
        return count

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def _too_big(rel: str, limit: int) -> NoReturn:
    raise DumpTreeError(
        f"{rel!r} is larger than the {limit:,}-byte limit of a file read whole",
        code="ErrDumpFileTooLarge",
        path=rel,
    )


def _read_rest(fd: int, head: bytes, rel: str, limit: int | None) -> bytes:
    """``head`` and the rest of ``fd`` to its end: a file whose size changed since ``fstat``."""
    parts = [head]
    total = len(head)
    while True:
        if limit is not None and total > limit:
            _too_big(rel, limit)
        block = os.read(fd, _READ_BLOCK)
        if not block:
            return b"".join(parts)
        parts.append(block)
        total += len(block)


class TreeDir:
    """An open directory of the tree; close it (or use ``with``)."""

    def __init__(self, fd: int, rel: str) -> None:
        self.fd = fd
        #: Slash path relative to the tree root ("" for the root).
        self.rel = rel

    def close(self) -> None:
        """Release the descriptor (idempotent)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> TreeDir:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def path(self, name: str) -> str:
        """The slash path of ``name`` in this directory, relative to the root."""
        return _join(self.rel, name)

    def entries(self) -> Iterator[TreeEntry]:
        """Every entry, checked, in byte order of the names.

        The names are listed at once; each is ``lstat``-ed as it is reached, so a huge
        directory costs its names only.
        """
        for name in sorted(os.listdir(self.fd), key=os.fsencode):
            entry = self.lookup(name)
            if entry is not None:  # else removed since the listing
                yield entry

    def lookup(self, name: str) -> TreeEntry | None:
        """The checked entry ``name``, or ``None`` when it does not exist."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        _check(st, self.path(name))
        return TreeEntry(name, stat.S_ISDIR(st.st_mode), st.st_size, (st.st_dev, st.st_ino))

    def subdir(self, name: str) -> TreeDir | None:
        """Open the subdirectory ``name``; ``None`` when it does not exist."""
        rel = self.path(name)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            entry = self.lookup(name)  # a symlink or a special file: refused by the check
            if entry is None:
                return None
            if not entry.is_dir:
                raise DumpTreeError(
                    f"{rel!r} is a file, expected a directory", code="ErrDumpEntryType", path=rel
                ) from None
            raise DumpTreeError(
                f"cannot open directory {rel!r}: {exc.strerror}",
                code="ErrDumpTreeUnreadable",
                path=rel,
            ) from exc
        return TreeDir(fd, rel)

    def open_file(self, entry: TreeEntry) -> TreeFile:
        """Open the listed regular file ``entry``; it must not have changed since."""
        rel = self.path(entry.name)
        if entry.is_dir:
            raise DumpTreeError(
                f"{rel!r} is a directory, expected a file", code="ErrDumpEntryType", path=rel
            )
        try:
            fd = os.open(entry.name, _FILE_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            raise DumpTreeError(
                f"{rel!r} was removed while the tree was read", code="ErrDumpTreeChanged", path=rel
            ) from None
        except OSError as exc:
            raise UnsafeDumpEntry(
                f"unsafe dump entry {rel!r}: cannot be opened as a regular file ({exc.strerror})",
                code="ErrUnsafeDumpEntry",
                path=rel,
            ) from exc
        try:
            st = os.fstat(fd)
            _check(st, rel)
            if stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != entry.identity:
                raise UnsafeDumpEntry(
                    f"unsafe dump entry {rel!r}: replaced while the tree was read",
                    code="ErrUnsafeDumpEntry",
                    path=rel,
                )
        except BaseException:
            os.close(fd)
            raise
        return TreeFile(fd, rel, st.st_size)

    def open_name(self, name: str) -> TreeFile | None:
        """Look ``name`` up and open it as a regular file; ``None`` when it does not exist."""
        entry = self.lookup(name)
        return None if entry is None else self.open_file(entry)

    def read_listed(self, name: str, limit: int | None = MAX_RECORD_FILE) -> bytes | None:
        """The whole file ``name``, which a listing showed as a regular file (``d_type``);
        ``None`` when it no longer exists.

        The fast way to read many small files: no ``lstat`` before the open, one ``fstat``
        after it (a regular file with one link, as :meth:`lookup` requires) and one read of
        the size it gives. An entry that cannot be opened as a file gets :meth:`lookup`'s
        checks, which name what it is. Only for names the listing typed as regular files: a
        device is never opened on purpose.
        """
        data = self._read_listed(name, limit)
        recorder = _RECORDER.get()
        if data is not None and recorder is not None:
            recorder.record(self.path(name), hashlib.sha256(data).digest())
        return data

    def read_listed_many(
        self, names: Iterable[str], limit: int | None = MAX_RECORD_FILE
    ) -> Generator[tuple[str, bytes | None], None, None]:
        """``(name, data)`` of each of ``names`` in turn, read as :meth:`read_listed` does.

        The digests of the files read are recorded together when the iterator ends or is
        closed (only what was read before an error or an early close).
        """
        recorder = _RECORDER.get()
        digests: list[tuple[str, bytes]] = []
        prefix = f"{self.rel}/" if self.rel else ""
        sha256 = hashlib.sha256
        read = self._read_listed
        try:
            for name in names:
                data = read(name, limit)
                if data is not None and recorder is not None:
                    digests.append((prefix + name, sha256(data).digest()))
                yield name, data
        finally:
            if recorder is not None and digests:
                recorder.record_many(digests)

    def _read_listed(self, name: str, limit: int | None) -> bytes | None:
        """:meth:`read_listed` without recording the digest."""
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError:
            # A symlink (ELOOP) or an entry swapped since the listing: the full checks name it.
            entry = self.lookup(name)
            if entry is None:
                return None
            # Opened and read with the digest left to the caller.
            token = _RECORDER.set(None)
            try:
                with self.open_file(entry) as file:
                    return file.read_all(limit)
            finally:
                _RECORDER.reset(token)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                rel = self.path(name)
                _check(st, rel)
                raise DumpTreeError(
                    f"{rel!r} is a directory, expected a file", code="ErrDumpEntryType", path=rel
                )
            size = st.st_size
            if limit is not None and size > limit:
                _too_big(self.path(name), limit)
            data = os.read(fd, size + 1)
            if len(data) != size:
                data = _read_rest(fd, data, self.path(name), limit)
        finally:
            os.close(fd)
        return data

    def read(self, name: str, *, limit: int | None = MAX_RECORD_FILE) -> bytes | None:
        """The whole regular file ``name`` (at most ``limit`` bytes); ``None`` when absent."""
        file = self.open_name(name)
        if file is None:
            return None
        with file:
            return file.read_all(limit)


class DumpTree:
    """Safe read access to the dump tree at ``root`` (one per reader: an encoder, ``verify``).

    ``root`` may be :class:`~.roots.TreeRoots` (a tree whose adapter subtrees were written to
    roots of their own): :meth:`open_dir` then starts from the root holding its path, while
    :meth:`open_root` is always the main root. ``jobs`` bounds the worker threads of :meth:`run`.
    """

    def __init__(self, root: Path | TreeRoots, *, jobs: int = 8) -> None:
        self.roots = TreeRoots.of(root)
        self.root = self.roots.main
        self._jobs = max(1, jobs)
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
        """Run ``func(*args)`` (a whole directory's or file's work) in a worker thread."""
        # Imported here: worker processes use DumpTree's synchronous reads only, and start
        # faster without anyio.
        import anyio.to_thread

        if self._limiter is None:
            # Created on first use: a limiter belongs to the running event loop.
            self._limiter = anyio.CapacityLimiter(self._jobs)
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    def open_root(self) -> TreeDir:
        """Open the (main) root directory itself."""
        return self._open_top(self.root)

    def _open_top(self, path: Path) -> TreeDir:
        with map_os_errors(UsageError, f"cannot open dump tree {path}", path=path):
            fd = os.open(path, _ROOT_FLAGS)
        return TreeDir(fd, "")

    def open_dir(self, parts: Sequence[str]) -> TreeDir | None:
        """Open ``root/parts`` one component at a time; ``None`` when a component is missing."""
        current = self._open_top(self.roots.root_for(parts))
        try:
            for part in parts:
                child = current.subdir(part)
                current.close()
                if child is None:
                    return None
                current = child
        except BaseException:
            current.close()
            raise
        return current

    @contextlib.contextmanager
    def directory(self, parts: Sequence[str]) -> Iterator[TreeDir]:
        """``root/parts`` as a context manager; a missing directory is an error."""
        opened = self.open_dir(parts)
        if opened is None:
            rel = "/".join(parts)
            raise DumpTreeError(
                f"{rel!r} was removed while the tree was read", code="ErrDumpTreeChanged", path=rel
            )
        with opened:
            yield opened
