"""Scratch files: where a run keeps the data that must wait, in bounded memory.

Two kinds, one module, used by every spill of both directions:

* **record files** hold ``(key, value)`` pairs of byte strings in one framing, each string
  preceded by its length as an 8-byte little-endian integer. They are written in big buffered
  writes (:func:`write_records`, :func:`create_record_file`, :class:`RecordFiles` for
  append-only files per key), read back in big buffered reads, whole or one section
  ``(offset, length)`` at a time (:func:`read_records`, :func:`iter_records`, and
  :class:`RecordReader` for chunks that hold no descriptor between calls), and combined by
  :func:`merge`, the one k-way merge of sorted record streams (the external sort in
  :mod:`~elastickv_async._core.extsort` builds its runs and passes on it);
* **payload files** (:class:`PayloadFiles`) hold raw bytes addressed by
  ``(file, offset, length)``: bodies whose final layout is only known later, copied into
  place by the kernel when it can.

A torn record file (a scratch file is the run's own output) is an
:class:`~elastickv_async._core.errors.OutputError`. Everything here blocks: call it from
worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import heapq
import os
import struct
from collections.abc import Hashable, Iterable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO, Final, Generic, TypeVar

from .errors import OutputError

__all__ = [
    "PayloadFiles",
    "Range",
    "Record",
    "RecordFiles",
    "RecordReader",
    "create_record_file",
    "iter_records",
    "merge",
    "read_records",
    "write_records",
]

#: One scratch record: a key and a value.
Record = tuple[bytes, bytes]
#: ``(file id, offset, length)`` of one payload in the payload files.
Range = tuple[int, int, int]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_LEN: Final = struct.Struct("<Q")
_BUFFER: Final = 256 << 10
_FILE_MODE: Final = 0o600
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_NEW_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
_APPEND_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_APPEND | _CLOEXEC
_READ_FLAGS: Final = os.O_RDONLY | _CLOEXEC
_by_key = itemgetter(0)


# --- record files ------------------------------------------------------------------------------


def write_records(fh: BinaryIO, records: Iterable[Record]) -> None:
    """Append ``records`` to the open (preferably buffered) binary file ``fh``."""
    pack = _LEN.pack
    write = fh.write
    for key, value in records:
        # One write of the joined record costs a third of four small writes.
        write(pack(len(key)) + key + pack(len(value)) + value)


def create_record_file(path: Path, records: Iterable[Record], *, buffering: int = _BUFFER) -> None:
    """Write ``records`` to the new file ``path`` (never an existing file, never a symlink)
    through a write buffer of ``buffering`` bytes."""
    fd = os.open(path, _NEW_FLAGS, _FILE_MODE)
    with open(fd, "wb", buffering=buffering) as fh:
        write_records(fh, records)


def _torn(fh: BinaryIO) -> OutputError:
    return OutputError(f"scratch file {fh.name!r} is truncated")


def read_records(fh: BinaryIO, length: int | None = None) -> Iterator[Record]:
    """The records of ``fh`` from its position: ``length`` bytes of them, or up to the end."""
    # One loop with few calls per record: merges read millions of records through here.
    read = fh.read
    unpack = _LEN.unpack
    bounded = length is not None
    remaining = length or 0
    while not bounded or remaining > 0:
        head = read(8)
        if not head:
            if bounded:
                raise _torn(fh)
            return
        try:
            key_len = unpack(head)[0]
            key = read(key_len)
            value_len = unpack(read(8))[0]
        except struct.error:
            raise _torn(fh) from None
        value = read(value_len)
        if len(key) != key_len or len(value) != value_len:
            raise _torn(fh)
        if bounded:
            remaining -= 16 + key_len + value_len
            if remaining < 0:
                raise _torn(fh)
        yield key, value


def iter_records(
    path: Path, offset: int = 0, length: int | None = None, *, buffering: int = _BUFFER
) -> Iterator[Record]:
    """The records of the file ``path`` (or of its section at ``offset``), streamed through a
    read buffer of ``buffering`` bytes.

    The file stays open until the iterator is exhausted or closed.
    """
    with open(path, "rb", buffering=buffering) as fh:
        fh.seek(offset)
        yield from read_records(fh, length)


def merge(streams: Iterable[Iterable[tuple[bytes, V]]]) -> Iterator[tuple[bytes, V]]:
    """Merge streams each sorted by key into one sorted stream.

    Stable: records with equal keys come out in the order of their streams, and in their
    order within a stream.
    """
    return heapq.merge(*streams, key=_by_key)


class RecordReader:
    """Reads a record file (or its section) back in chunks of about ``chunk_bytes``.

    The file is opened per chunk and no handle is held between calls, so an abandoned reader
    needs no cleanup.
    """

    def __init__(self, path: Path, offset: int = 0, length: int | None = None) -> None:
        self._path = path
        self._offset = offset
        self._end = None if length is None else offset + length

    def next_chunk(self, chunk_bytes: int) -> list[Record]:
        """The next records (at least one unless the file is exhausted, then ``[]``)."""
        chunk: list[Record] = []
        size = 0
        remaining = None if self._end is None else self._end - self._offset
        with open(self._path, "rb", buffering=_BUFFER) as fh:
            fh.seek(self._offset)
            for key, value in read_records(fh, remaining):
                chunk.append((key, value))
                size += len(key) + len(value)
                self._offset += 16 + len(key) + len(value)
                if size >= chunk_bytes:
                    break
        return chunk


class RecordFiles(Generic[K]):
    """Append-only record files, one per hashable key, under ``root`` (created on demand).

    File names are sequence numbers (never derived from data). Each :meth:`append` opens the
    files it needs and closes them again, so nothing stays open between calls (a cancelled
    run leaves no descriptor behind).
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._paths: dict[K, Path] = {}
        self._counts: dict[K, int] = {}

    def append(self, records: Iterable[tuple[K, Record]]) -> None:
        """Append each ``(key, record)`` to the file of ``key``."""
        grouped: dict[K, list[Record]] = {}
        for key, record in records:
            grouped.setdefault(key, []).append(record)
        for key, group in grouped.items():
            path = self._paths.get(key)
            if path is None:
                self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
                path = self._paths[key] = self._root / f"{len(self._paths)}.rec"
            fd = os.open(path, _APPEND_FLAGS | os.O_NOFOLLOW, _FILE_MODE)
            with open(fd, "ab", buffering=_BUFFER) as fh:
                write_records(fh, group)
            self._counts[key] = self._counts.get(key, 0) + len(group)

    @property
    def counts(self) -> dict[K, int]:
        """Records appended per key."""
        return dict(self._counts)

    def reader(self, key: K) -> RecordReader | None:
        """A reader over the records of ``key``; ``None`` if it has none."""
        path = self._paths.get(key)
        return RecordReader(path) if path is not None else None


# --- payload files -----------------------------------------------------------------------------

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


class PayloadFiles:
    """Append-only payload files under ``root``, identified by small integers.

    Offsets are reserved on the caller's side (:meth:`reserve`) before the bytes are appended
    in a worker thread (:meth:`append`), so the event loop knows where every payload will be.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._next = 0
        self._sizes: dict[int, int] = {}

    def new_file(self) -> int:
        """Reserve a new, empty payload file and return its id."""
        fid = self._next
        self._next += 1
        self._sizes[fid] = 0
        return fid

    def path(self, fid: int) -> Path:
        """Where payload file ``fid`` lives."""
        return self.root / f"{fid:08d}.spill"

    def reserve(self, fid: int, length: int) -> int:
        """Account for ``length`` bytes about to be appended to ``fid``; return their offset."""
        offset = self._sizes[fid]
        self._sizes[fid] = offset + length
        return offset

    def size(self, fid: int) -> int:
        """Bytes appended (or reserved) so far in ``fid``."""
        return self._sizes[fid]

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
                    raise OSError(errno.EIO, f"payload file {fid} is shorter than recorded")
                out += data
        finally:
            for fd in fds.values():
                os.close(fd)
        return bytes(out)

    def assemble(self, ranges: Sequence[Range]) -> Path:
        """Copy ``ranges`` into a new scratch file (kernel-side when possible); return its path."""
        target = self.root / f"body-{os.urandom(8).hex()}.tmp"
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
        """Delete payload files that are no longer needed (missing ones are fine)."""
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
            raise OSError(errno.EIO, "payload file is shorter than recorded")
        offset += n
        length -= n
