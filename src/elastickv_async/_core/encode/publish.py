"""Putting the encoder's outputs on disk safely (blocking helpers: call them in worker threads).

The .fsm is written to ``<output>.<run tag>.tmp`` and its sidecar to
``<output>.encode_info.json.<run tag>.tmp`` (both 0600, ``O_EXCL``, never through a symlink,
fsync'd). :func:`publish_pair` then renames the .fsm, then the sidecar, into place and fsyncs
the directory. Until that is done the previous pair is kept under ``<name>.<run tag>.prev``
hard links and is put back if any step fails, so a failure never leaves neither file; a kill
between the two renames leaves the new .fsm beside the previous sidecar, whose
``output_fsm_sha256`` then names another file (readers such as ``prepare-restore`` check it).
Entries at the sidecar paths that are not plain files of ours (symlinks, hard links, FIFOs,
directories) are refused before anything is renamed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Final

from ..errors import OutputError, map_os_errors

__all__ = [
    "FILE_MODE",
    "check_replaceable",
    "close_quietly",
    "create_temp",
    "finish_temp",
    "fsync_dir",
    "mismatch_path",
    "publish_pair",
    "remove_path",
    "remove_stale_mismatch",
    "remove_stale_output",
    "replace_small",
    "sidecar_path",
    "temp_path",
    "write_temp_file",
]

FILE_MODE: Final = 0o600
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_TEMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC


def sidecar_path(output: Path) -> Path:
    """``<output>.encode_info.json``."""
    return output.with_name(output.name + ".encode_info.json")


def mismatch_path(output: Path) -> Path:
    """``<output>.mismatch.txt``: the self-test's list of differing paths."""
    return output.with_name(output.name + ".mismatch.txt")


def temp_path(path: Path, tag: str) -> Path:
    """``<path>.<tag>.tmp``: the run's temporary twin of ``path``, in the same directory."""
    return path.with_name(f"{path.name}.{tag}.tmp")


def _prev_path(path: Path, tag: str) -> Path:
    return path.with_name(f"{path.name}.{tag}.prev")


def _create(path: Path) -> int:
    with map_os_errors(OutputError, f"cannot create {path}", path=path):
        fd = os.open(path, _TEMP_FLAGS, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have narrowed it
    except OSError as exc:
        os.close(fd)
        remove_path(path)
        raise OutputError(f"cannot chmod {path}: {exc.strerror}") from None
    return fd


def create_temp(path: Path, buffer: int) -> BinaryIO:
    """Create ``path`` exclusively, mode 0600, and return it open for writing through a
    ``buffer``-byte buffer (the run's budget sizes it:
    :meth:`~elastickv_async._core.memory.MemoryBudget.output_buffer`)."""
    return os.fdopen(_create(path), "wb", buffering=buffer)


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


def write_temp_file(path: Path, data: bytes) -> None:
    """Create ``path`` exclusively (0600), write ``data``, fsync; remove it on any failure."""
    fd = _create(path)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException as exc:
        remove_path(path)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror}") from None
        raise


def check_replaceable(path: Path) -> None:
    """Refuse to replace anything at ``path`` but a plain, singly linked regular file.

    Only ``lstat`` is used: a FIFO is never opened, a symlink never followed.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot inspect {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"refusing to overwrite symlink at {path}")
    if stat.S_ISFIFO(st.st_mode):
        raise OutputError(f"refusing to write to FIFO at {path}")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"refusing to write to non-regular file at {path}")
    if st.st_nlink > 1:
        raise OutputError(f"refusing to overwrite hard-linked file at {path} (nlink={st.st_nlink})")


def replace_small(path: Path, data: bytes, tag: str) -> None:
    """Atomically replace the small file ``path`` (refusals as :func:`check_replaceable`)."""
    check_replaceable(path)
    temp = temp_path(path, tag)
    write_temp_file(temp, data)
    try:
        os.rename(temp, path)
    except OSError as exc:
        remove_path(temp)
        raise OutputError(f"cannot rename {temp} to {path}: {exc.strerror}") from None


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename or a new entry in it is durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_previous(path: Path, tag: str) -> Path | None:
    """Hard-link the current ``path`` (if any) to its ``.prev`` name; return that name."""
    prev = _prev_path(path, tag)
    try:
        os.link(path, prev, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.EISDIR or os.path.isdir(path):
            raise OutputError(f"output {path} is a directory") from None
        raise OutputError(
            f"cannot keep the previous {path} while publishing (hard link: {exc.strerror})"
        ) from None
    return prev


def publish_pair(fsm_temp: Path, output: Path, sidecar_temp: Path, tag: str) -> None:
    """Rename both temp files into place, keeping the previous pair until both are durable.

    On failure the previous ``output`` and sidecar are put back (or the new ones removed
    when there were none) and :class:`OutputError` is raised; the temp files are the
    caller's to remove.
    """
    sidecar = sidecar_path(output)
    check_replaceable(sidecar)
    kept: dict[Path, Path | None] = {}
    try:
        for path in (output, sidecar):
            kept[path] = _keep_previous(path, tag)
    except OutputError:
        _drop_kept(kept)
        raise
    renamed: list[Path] = []
    try:
        os.rename(fsm_temp, output)
        renamed.append(output)
        os.rename(sidecar_temp, sidecar)
        renamed.append(sidecar)
        fsync_dir(output.parent)
    except OSError as exc:
        _roll_back(renamed, kept)
        raise OutputError(f"cannot publish {output}: {exc.strerror}") from None
    _drop_kept(kept)
    with contextlib.suppress(OSError):
        fsync_dir(output.parent)


def _roll_back(renamed: list[Path], kept: dict[Path, Path | None]) -> None:
    for path in reversed(renamed):
        prev = kept.pop(path, None)
        with contextlib.suppress(OSError):
            if prev is None:
                os.unlink(path)
            else:
                os.rename(prev, path)
    _drop_kept(kept)
    with contextlib.suppress(OSError):
        fsync_dir(next(iter(renamed), Path(".")).parent)


def _drop_kept(kept: dict[Path, Path | None]) -> None:
    for prev in kept.values():
        if prev is not None:
            remove_path(prev)


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
