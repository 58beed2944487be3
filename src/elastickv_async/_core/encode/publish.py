"""Putting the encoder's outputs on disk safely (blocking helpers: call them in worker threads).

The .fsm is written to ``<output>.tmp-<16 hex>`` (0600, ``O_EXCL``, fsync'd) and renamed over
``<output>`` only once it is complete (and, with ``--self-test``, verified); the directory is
then fsync'd so the rename is durable. The small sidecar files next to it are opened without
following symlinks and are refused when they are hard-linked or not regular files, so a
planted entry is never written through or clobbered. Every output ends up mode 0600.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Final

from ..errors import OutputError

__all__ = [
    "FILE_MODE",
    "close_quietly",
    "create_temp",
    "finish_temp",
    "fsync_dir",
    "mismatch_path",
    "open_sidecar",
    "publish",
    "remove_path",
    "remove_stale_mismatch",
    "remove_stale_output",
    "sidecar_path",
    "temp_path",
    "write_fd",
]

FILE_MODE: Final = 0o600
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_TEMP_BUFFER: Final = 1 << 20
_TEMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
# No O_TRUNC: the file is truncated only after the link count and type were checked.
# O_NONBLOCK keeps the open from hanging on a FIFO without a reader.
_SIDECAR_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC


def sidecar_path(output: Path) -> Path:
    """``<output>.encode_info.json``."""
    return output.with_name(output.name + ".encode_info.json")


def mismatch_path(output: Path) -> Path:
    """``<output>.mismatch.txt``: the self-test's list of differing paths."""
    return output.with_name(output.name + ".mismatch.txt")


def temp_path(output: Path) -> Path:
    """A fresh ``<output>.tmp-<16 hex>`` name in the output's directory."""
    return output.with_name(f"{output.name}.tmp-{secrets.token_hex(8)}")


def create_temp(path: Path) -> BinaryIO:
    """Create ``path`` exclusively, mode 0600, and return it open for buffered writing."""
    try:
        fd = os.open(path, _TEMP_FLAGS, FILE_MODE)
    except OSError as exc:
        raise OutputError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have narrowed it
    except OSError as exc:
        os.close(fd)
        raise OutputError(f"cannot chmod {path}: {exc.strerror}") from None
    return os.fdopen(fd, "wb", buffering=_TEMP_BUFFER)


def finish_temp(fh: BinaryIO) -> None:
    """Flush, fsync and close the temp file (closed even when the fsync fails)."""
    try:
        fh.flush()
        os.fsync(fh.fileno())
    finally:
        fh.close()


def close_quietly(fh: BinaryIO) -> None:
    """Close an abandoned temp file; its buffered bytes no longer matter."""
    with contextlib.suppress(OSError):
        fh.close()


def open_sidecar(path: Path) -> int:
    """Open ``path`` for writing from scratch, refusing symlinks, hard links and non-files.

    On success the file is empty, mode 0600, and owned by this run (the caller may remove
    it on a later failure); on refusal nothing at ``path`` was touched.
    """
    try:
        fd = os.open(path, _SIDECAR_FLAGS, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputError(f"refusing to overwrite symlink at {path}") from None
        if exc.errno == errno.ENXIO:
            raise OutputError(f"refusing to write to FIFO at {path}") from None
        raise OutputError(f"cannot open {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"refusing to write to non-regular file at {path}")
        if st.st_nlink > 1:
            raise OutputError(
                f"refusing to overwrite hard-linked file at {path} (nlink={st.st_nlink})"
            )
        os.ftruncate(fd, 0)
        os.fchmod(fd, FILE_MODE)
    except OSError as exc:
        os.close(fd)
        raise OutputError(f"cannot prepare {path}: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_fd(fd: int, data: bytes, *, sync: bool) -> None:
    """Write all of ``data`` to ``fd``, optionally fsync, and close it (always)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename or a new entry in it is durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp: Path, output: Path) -> None:
    """Rename ``temp`` over ``output`` and make it durable; leave no ``output`` on failure."""
    try:
        os.rename(temp, output)
    except OSError as exc:
        raise OutputError(f"cannot rename {temp} to {output}: {exc.strerror}") from None
    try:
        fsync_dir(output.parent)
    except OSError as exc:
        # A published but not durable .fsm would look like a success: roll it back.
        remove_path(output)
        raise OutputError(f"cannot fsync {output.parent}: {exc.strerror}") from None


def remove_path(path: Path) -> bool:
    """Unlink ``path`` if it exists; return False when removal failed for another reason."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def remove_stale_output(output: Path) -> bool:
    """Remove an old ``<output>`` after a self-test mismatch, if it is a file or a symlink.

    Directories, devices and other special files are left alone (they were never valid
    outputs). Returns False when something was there that could not or must not be removed.
    """
    try:
        mode = os.lstat(output).st_mode
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        return False
    return remove_path(output)


def remove_stale_mismatch(path: Path) -> None:
    """Drop a ``<output>.mismatch.txt`` left by an earlier run (never a directory)."""
    with contextlib.suppress(OSError):
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
