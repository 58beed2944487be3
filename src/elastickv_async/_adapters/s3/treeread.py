"""Reading the ``s3/`` subtree of a dump without ever following a symlink.

Every path is opened one component at a time relative to the subtree's directory
descriptor with ``O_NOFOLLOW``, so a symlink anywhere (directory or file) is refused rather
than followed out of the tree, and files must be regular with a single link (a hard link
could name an inode outside the tree), as in the reference encoder. Synchronous: call from a
worker thread.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from .errors import S3EncodeNotRegular

__all__ = ["FileIdentity", "TreeReader"]

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: a FIFO planted in the tree must fail the regular-file check, not hang the open.
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

#: ``(st_dev, st_ino)``: a file re-opened later must still be the file that was checked.
FileIdentity = tuple[int, int]


def _shown(parts: Sequence[str]) -> str:
    return "s3/" + "/".join(parts)


class TreeReader:
    """Safe, descriptor-relative access to the files under ``root`` (the dump's ``s3/``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def directory(self, parts: Sequence[str]) -> Iterator[int]:
        """A descriptor of the directory ``root/parts``; no component may be a symlink."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for i, part in enumerate(parts):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise S3EncodeNotRegular(
                        f"{_shown(parts[: i + 1])} is not a plain directory ({exc.strerror})"
                    ) from None
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def names(dir_fd: int) -> list[str]:
        """The entries of a directory, in byte order of their names."""
        return sorted(os.listdir(dir_fd), key=os.fsencode)

    @staticmethod
    def lstat(dir_fd: int, name: str) -> os.stat_result | None:
        """``lstat`` of ``name`` in the directory, or ``None`` when it does not exist."""
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    @staticmethod
    def check_regular(st: os.stat_result, parts: Sequence[str]) -> FileIdentity:
        """Refuse anything but a regular file with one link; return its identity."""
        if not stat.S_ISREG(st.st_mode):
            raise S3EncodeNotRegular(
                f"{_shown(parts)} is not a regular file (mode {stat.filemode(st.st_mode)})"
            )
        if st.st_nlink > 1:
            raise S3EncodeNotRegular(f"{_shown(parts)} is a hard link (nlink={st.st_nlink})")
        return st.st_dev, st.st_ino

    def _open_file(self, dir_fd: int, parts: Sequence[str], identity: FileIdentity | None) -> int:
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise S3EncodeNotRegular(
                f"{_shown(parts)} cannot be opened as a regular file ({exc.strerror})"
            ) from None
        try:
            found = self.check_regular(os.fstat(fd), parts)
            if identity is not None and found != identity:
                raise S3EncodeNotRegular(f"{_shown(parts)} was replaced while the tree was read")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read_file(self, dir_fd: int, parts: Sequence[str]) -> bytes:
        """The whole content of the regular file ``parts[-1]`` in ``dir_fd`` (small files only)."""
        fd = self._open_file(dir_fd, parts, None)
        try:
            chunks = []
            while block := os.read(fd, 1 << 20):
                chunks.append(block)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def read_block(
        self, parts: Sequence[str], identity: FileIdentity, offset: int, length: int
    ) -> bytes:
        """Up to ``length`` bytes at ``offset`` of ``root/parts``, re-opened and re-checked."""
        with self.directory(parts[:-1]) as dir_fd:
            fd = self._open_file(dir_fd, parts, identity)
        try:
            out = bytearray()
            while len(out) < length:
                block = os.pread(fd, length - len(out), offset + len(out))
                if not block:
                    break
                out += block
            return bytes(out)
        finally:
            os.close(fd)
