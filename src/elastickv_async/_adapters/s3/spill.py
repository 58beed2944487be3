"""Scratch files that hold S3 payloads between their arrival and the end of the decode.

Blob chunks arrive before the manifests that say how to assemble them (``!s3|blob|`` sorts
before ``!s3|obj|``), so every payload is appended to a scratch file as it arrives and only
its ``(file, offset, length)`` is kept in memory. All methods here are synchronous and meant
to run in a worker thread; each call opens and closes its own descriptors, so nothing stays
open across an ``await`` and a cancelled run leaves only files for the scratch cleanup.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Final

__all__ = ["Range", "SpillStore"]

#: ``(file id, offset, length)`` of one payload in the spill files.
Range = tuple[int, int, int]

_FILE_MODE: Final = 0o600
_APPEND_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS: Final = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_NEW_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
#: One ``writev`` call takes at most this many buffers / bytes.
_IOV_MAX: Final = 512
_WRITEV_BYTES: Final = 256 << 20
#: Copy granularity when the kernel cannot copy between the files itself.
_COPY_BLOCK: Final = 8 << 20
_NO_KERNEL_COPY: Final = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})


def _write_all(fd: int, buffers: Sequence[bytes]) -> None:
    """Write ``buffers`` in order with as few ``writev`` calls as possible."""
    pending = [memoryview(b) for b in buffers if b]
    while pending:
        batch: list[memoryview] = []
        size = 0
        for view in pending:
            if len(batch) == _IOV_MAX or (batch and size + len(view) > _WRITEV_BYTES):
                break
            batch.append(view)
            size += len(view)
        written = os.writev(fd, batch)
        while written:
            head = pending[0]
            if written >= len(head):
                written -= len(head)
                pending.pop(0)
            else:
                pending[0] = head[written:]
                written = 0


class SpillStore:
    """Append-only spill files under ``root``, identified by small integers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._next = 0
        self._sizes: dict[int, int] = {}

    def new_file(self) -> int:
        """Reserve a new, empty spill file and return its id."""
        fid = self._next
        self._next += 1
        self._sizes[fid] = 0
        return fid

    def path(self, fid: int) -> Path:
        """Where spill file ``fid`` lives."""
        return self.root / f"{fid:08d}.spill"

    def reserve(self, fid: int, length: int) -> int:
        """Account for ``length`` bytes about to be appended to ``fid``; return their offset."""
        offset = self._sizes[fid]
        self._sizes[fid] = offset + length
        return offset

    def size(self, fid: int) -> int:
        """Bytes appended (or reserved) so far in ``fid``."""
        return self._sizes[fid]

    # --- worker-thread operations -----------------------------------------------------------

    def append(self, writes: Sequence[tuple[int, bytes]]) -> None:
        """Append each ``(fid, data)`` in order; consecutive writes to one file share a writev."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        i = 0
        while i < len(writes):
            fid = writes[i][0]
            j = i
            while j < len(writes) and writes[j][0] == fid:
                j += 1
            fd = os.open(self.path(fid), _APPEND_FLAGS, _FILE_MODE)
            try:
                _write_all(fd, [data for _, data in writes[i:j]])
            finally:
                os.close(fd)
            i = j

    @staticmethod
    def first_digest_mismatch(
        payloads: Sequence[tuple[bytes, bytes]],
    ) -> tuple[bytes, bytes] | None:
        """The first ``(expected, actual)`` SHA-256 pair that differs, if any."""
        for expected, data in payloads:
            actual = hashlib.sha256(data).digest()
            if actual != expected:
                return expected, actual
        return None

    def read(self, ranges: Sequence[Range]) -> bytes:
        """The concatenation of ``ranges`` (for small bodies only)."""
        out = bytearray()
        fds: dict[int, int] = {}
        try:
            for fid, offset, length in ranges:
                if fid not in fds:
                    fds[fid] = os.open(self.path(fid), _READ_FLAGS)
                data = os.pread(fds[fid], length, offset)
                if len(data) != length:
                    raise OSError(errno.EIO, f"spill file {fid} is shorter than recorded")
                out += data
        finally:
            for fd in fds.values():
                os.close(fd)
        return bytes(out)

    def assemble(self, ranges: Sequence[Range]) -> Path:
        """Copy ``ranges`` into a new scratch file (kernel-side when possible); return its path."""
        target = self.root / f"body-{secrets.token_hex(8)}.tmp"
        out = os.open(target, _NEW_FLAGS, _FILE_MODE)
        fds: dict[int, int] = {}
        try:
            for fid, offset, length in _coalesce(ranges):
                if fid not in fds:
                    fds[fid] = os.open(self.path(fid), _READ_FLAGS)
                _copy_range(fds[fid], out, offset, length)
        except BaseException:
            os.close(out)
            out = -1
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise
        finally:
            for fd in fds.values():
                os.close(fd)
            if out >= 0:
                os.close(out)
        return target

    def discard(self, fids: Sequence[int]) -> None:
        """Delete spill files that are no longer needed (missing ones are fine)."""
        for fid in fids:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(fid))


def _coalesce(ranges: Sequence[Range]) -> list[Range]:
    """Merge ranges that continue each other in the same file into one copy."""
    merged: list[Range] = []
    for fid, offset, length in ranges:
        if merged and merged[-1][0] == fid and merged[-1][1] + merged[-1][2] == offset:
            last = merged[-1]
            merged[-1] = (fid, last[1], last[2] + length)
        else:
            merged.append((fid, offset, length))
    return merged


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    """Append ``length`` bytes of ``src`` at ``offset`` to ``dst``."""
    copy_file_range = getattr(os, "copy_file_range", None)
    while length > 0:
        if copy_file_range is not None:
            try:
                n = copy_file_range(src, dst, length, offset)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
                copy_file_range = None
                continue
        else:
            block = os.pread(src, min(length, _COPY_BLOCK), offset)
            n = len(block)
            if n:
                _write_all(dst, [block])
        if n == 0:
            raise OSError(errno.EIO, "spill file is shorter than recorded")
        offset += n
        length -= n
