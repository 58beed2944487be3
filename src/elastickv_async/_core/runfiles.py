"""What a run owns on disk: locks on its outputs, recognisable temporary names, and the
removal of the leftovers of runs that were killed (blocking helpers: call them in worker
threads).

Every temporary file or directory a run creates carries the run's tag,
``elastickv-async-<pid>-<8 hex>``, followed by a kind suffix (``.scratch``, ``.work``,
``.selftest``, ``.tmp``, ``.prev``). A run keeps an exclusive ``flock`` on each temporary
directory it creates, for as long as it uses it. A later run removes such an entry only when
the pid in its name is not a live process and, for a directory, nobody holds its lock; entries
of its own process are never touched, so concurrent runs in one process stay safe.

Locks are ``flock`` locks on open descriptors: the kernel releases them when the holder exits,
however it exits, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Final

import msgspec

from .errors import OutputError, UsageError

__all__ = [
    "LEFTOVER_KINDS",
    "LockedDir",
    "PathLock",
    "clear_directory",
    "leftover_owner",
    "lock_directory",
    "make_locked_dir",
    "new_tag",
    "remove_leftovers",
]

_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_LOCK_FLAGS: Final = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
#: Suffixes of the temporary entries a run creates (see the module docstring).
LEFTOVER_KINDS: Final = ("scratch", "work", "selftest", "tmp", "prev")
_LEFTOVER: Final = re.compile(
    r"(?:.*\.)?elastickv-async-(?P<pid>[0-9]{1,10})-[0-9a-f]{8}"
    r"(?:\.[0-9]+)?\.(?:" + "|".join(LEFTOVER_KINDS) + r")"
)


def new_tag() -> str:
    """A fresh run tag: ``elastickv-async-<pid>-<8 hex>``."""
    return f"elastickv-async-{os.getpid()}-{os.urandom(4).hex()}"


def leftover_owner(name: str) -> int | None:
    """The pid recorded in a temporary entry's name, or None when ``name`` is not one."""
    match = _LEFTOVER.fullmatch(name.lstrip("."))
    return int(match["pid"]) if match else None


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another run of this very process may be using it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    except OSError:
        return True  # cannot tell: keep the entry
    return True


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def clear_directory(dir_fd: int, keep: frozenset[str] = frozenset()) -> None:
    """Remove every entry of the open directory ``dir_fd`` except the names in ``keep``.

    Works through descriptors only: a symlink met anywhere is unlinked, never followed.
    """
    for name in os.listdir(dir_fd):
        if name in keep:
            continue
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)


def remove_leftovers(directory: Path) -> list[str]:
    """Remove the temporary entries of dead runs directly inside ``directory``.

    Returns the names removed. Entries whose owner may still run (live pid, or a directory
    whose lock is held) and anything that cannot be removed are left alone.
    """
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    except OSError:
        return []
    removed: list[str] = []
    try:
        for name in os.listdir(dir_fd):
            pid = leftover_owner(name)
            if pid is None or _process_alive(pid):
                continue
            with contextlib.suppress(OSError):
                if _remove_entry(dir_fd, name):
                    removed.append(name)
    finally:
        os.close(dir_fd)
    return sorted(removed)


def _remove_entry(dir_fd: int, name: str) -> bool:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISREG(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return True
    if not stat.S_ISDIR(st.st_mode):
        return False  # never made by a run: not ours to judge
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        if not _try_lock(fd):
            return False
        shutil.rmtree(name, dir_fd=dir_fd)
    finally:
        os.close(fd)
    return True


class LockedDir(msgspec.Struct):
    """A directory opened without following symlinks, exclusively ``flock``-ed by this run."""

    path: Path
    fd: int
    #: Entries of a complete or foreign tree are never removed; this one was made by the run.
    created: bool = msgspec.field(default=False)

    def still_here(self) -> bool:
        """Whether ``path`` still names the directory this run opened (not a swapped symlink)."""
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        then = os.fstat(self.fd)
        return stat.S_ISDIR(now.st_mode) and (now.st_dev, now.st_ino) == (then.st_dev, then.st_ino)

    def close(self) -> None:
        """Release the lock (closing the descriptor releases it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def lock_directory(path: Path, what: str) -> LockedDir:
    """Open the existing directory ``path`` (no symlink) and lock it, or fail at once.

    A lock held by another run raises :class:`UsageError` naming ``what``.
    """
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{what} {path} is a symlink; refusing to write through it") from None
        if exc.errno == errno.ENOTDIR:
            raise UsageError(f"{what} {path} exists and is not a directory") from None
        raise OutputError(f"cannot open {what} {path}: {exc.strerror}") from None
    if not _try_lock(fd):
        os.close(fd)
        raise UsageError(f"{what} {path} is in use by another run (it is locked)")
    return LockedDir(path, fd)


def make_locked_dir(parent: Path, name: str) -> LockedDir:
    """Create ``parent/name`` (mode 0700, must not exist) and lock it for this run."""
    path = parent / name
    os.mkdir(path, 0o700)
    try:
        held = lock_directory(path, "temporary directory")
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        raise
    held.created = True
    return held


class PathLock:
    """An exclusive lock on an output file's path, through the lock file ``<path>.lock``.

    The lock file is removed on release; a waiter that opened the old file notices that the
    path no longer names it and tries again, so two holders never coexist.
    """

    def __init__(self, path: Path) -> None:
        self.target = path
        self.path = path.with_name(path.name + ".lock")
        self._fd = -1

    def acquire(self) -> None:
        """Take the lock now or raise :class:`UsageError`; refuses a non-regular lock path."""
        for _ in range(8):
            try:
                fd = os.open(self.path, _LOCK_FLAGS, 0o600)
            except OSError as exc:
                raise OutputError(f"cannot create lock file {self.path}: {exc.strerror}") from None
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
                os.close(fd)
                raise OutputError(f"refusing lock file {self.path}: not a plain file")
            if not _try_lock(fd):
                os.close(fd)
                raise UsageError(f"output {self.target} is in use by another run (it is locked)")
            try:
                now = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                os.close(fd)
                continue
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)
                continue
            self._fd = fd
            return
        raise UsageError(f"output {self.target} is in use by another run (lock keeps changing)")

    def release(self) -> None:
        """Remove the lock file and release the lock."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = -1
