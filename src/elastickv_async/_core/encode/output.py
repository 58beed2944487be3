"""Writing the sorted records as a snapshot stream, hashing as it goes.

:class:`FrameWriter` frames records pushed to it one at a time (the cluster encoder keeps one
per group); :class:`SnapshotStream` drives one over a sorted iterator. The work is
synchronous and done in slices: :meth:`SnapshotStream.write` runs them in one worker thread,
which hands each written slice to a second one that hashes it, and the jobs queued with it
by :func:`hash_beside` to a third, with no trip through the event loop between slices; the
writing thread checks for cancellation between slices.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import BinaryIO, Final, Generic, TypeVar

import anyio.from_thread
import anyio.to_thread
import msgspec

from ..concurrency import task_group
from ..errors import DumpTreeError
from ..snapshot.framing import TS_SIZE, VALUE_HEADER_SIZE
from .framing import KEY_LEN as _KEY_LEN
from .framing import VALUE_HEAD as _VALUE_HEAD
from .framing import header

__all__ = [
    "HANDOFF_DEPTH",
    "SLICES_HELD",
    "SLICE_BYTES",
    "FrameWriter",
    "FramedBlocks",
    "SnapshotStream",
    "hash_beside",
]

#: Small pieces are gathered into blocks of this size (unless the caller names a size)
#: before one write + hash update.
BLOCK_BYTES: Final = 1 << 20
#: A value at least this part of a block is written on its own instead of being copied
#: into one.
_LARGE_PART: Final = 4
#: Bytes framed per slice of :meth:`SnapshotStream.write` when the caller names no size
#: (a run sizes its slices from its memory budget: see
#: :meth:`~elastickv_async._core.memory.MemoryBudget.write_slice`).
SLICE_BYTES: Final = 512 << 10
#: Slices waiting for each hashing thread at most: the writing thread runs that far ahead
#: before it waits, so a hashing thread that is late to wake does not stall it at once.
#: Written blocks are held until hashed: the slice being written, and per hashing thread
#: the ones waiting and the one it works on (a slice holds at least one record, so a record
#: of 1 MiB is a slice of its own).
HANDOFF_DEPTH: Final = 2
#: Slices alive at once (see :data:`HANDOFF_DEPTH`): the one being written, and for each of
#: the two hashing threads (the stream's, and the one running :func:`hash_beside` jobs,
#: which hold values read for their slice) the ones waiting and the one being hashed.
SLICES_HELD: Final = 1 + 2 * (HANDOFF_DEPTH + 1)


#: The jobs queued by :func:`hash_beside` during the slice being written (in the writing
#: thread only).
_BESIDE: ContextVar[list[Callable[[], None]] | None] = ContextVar("hash_beside", default=None)


def hash_beside(job: Callable[[], None]) -> bool:
    """Queue ``job`` (hashing that a value read for the stream needs, say) to run once the
    slice being written is written, in a thread of its own beside the one that hashes the
    stream (two hashes of the same bytes then take two cores); jobs run in the order queued.

    False, and nothing queued, when the calling thread is not writing a
    :class:`SnapshotStream`: the caller then does the work itself.
    """
    jobs = _BESIDE.get()
    if jobs is None:
        return False
    jobs.append(job)
    return True


def _duplicate(key: bytes) -> DumpTreeError:
    return DumpTreeError(
        f"duplicate key in the dump tree: {key[:-TS_SIZE][:64]!r}",
        code="ErrEncodeDuplicateKey",
    )


class FrameWriter:
    """Frames ``(encoded_key, body)`` records, pushed sorted by key, into ``out``.

    Refuses a key equal to the previous one. :meth:`finish` writes what is still buffered:
    small records are gathered into blocks of about ``block_size`` bytes. With
    ``defer_hashing``, written blocks are kept for :meth:`take_written` and
    :meth:`hash_blocks` instead of being hashed as they are written.
    """

    def __init__(
        self,
        out: BinaryIO,
        last_commit_ts: int,
        *,
        defer_hashing: bool = False,
        block_size: int = BLOCK_BYTES,
    ) -> None:
        self._out = out
        self._block = block_size
        self._large = max(1, block_size // _LARGE_PART)
        self._digest = hashlib.sha256()
        self._written: list[bytes] | None = [] if defer_hashing else None
        self._pending: list[bytes] = [header(last_commit_ts)]
        self._pending_size = len(self._pending[0])
        self._previous: bytes | None = None
        self.bytes_written = 0
        self.entries = 0

    @property
    def position(self) -> int:
        """Bytes written or buffered so far."""
        return self.bytes_written + self._pending_size

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        if self._written is None:
            self._digest.update(data)
        else:
            self._written.append(data)
        self.bytes_written += len(data)

    def take_written(self) -> list[bytes]:
        """The blocks written since the last call, not yet hashed (``defer_hashing``)."""
        blocks, self._written = self._written or [], []
        return blocks

    def hash_blocks(self, blocks: list[bytes]) -> None:
        """Add ``blocks``, taken in order from :meth:`take_written`, to the stream's hash."""
        for block in blocks:
            self._digest.update(block)

    def add(self, key: bytes, body: bytes) -> None:
        """Frame one record (its key must sort after the previous record's)."""
        if key == self._previous:
            raise _duplicate(key)
        self._previous = key
        self._frame(key, body)
        self.entries += 1

    def _frame(self, key: bytes, body: bytes) -> None:
        key_len = _KEY_LEN.pack(len(key))
        value_head = _VALUE_HEAD.pack(len(body) + VALUE_HEADER_SIZE)
        if len(body) >= self._large:
            self._pending += (key_len, key, value_head)
            self.finish()
            self._emit(body)
            return
        self._pending += (key_len, key, value_head, body)
        self._pending_size += len(key) + len(body) + 8 + _VALUE_HEAD.size
        if self._pending_size >= self._block:
            self.finish()

    def add_some(self, records: Iterator[tuple[bytes, bytes]], budget: int) -> bool:
        """:meth:`add` records from ``records`` until about ``budget`` more bytes are framed;
        True once ``records`` is exhausted (then :meth:`finish` has been called)."""
        # The per-record path of an encode: the common small record is framed inline.
        stop = self.position + budget
        pending = self._pending
        size = self._pending_size
        previous = self._previous
        entries = self.entries
        key_len = _KEY_LEN.pack
        value_head = _VALUE_HEAD.pack
        head_size = _VALUE_HEAD.size + 8
        block, large = self._block, self._large
        try:
            for key, body in records:
                if key == previous:
                    raise _duplicate(key)
                previous = key
                entries += 1
                if len(body) >= large:
                    self._pending_size = size
                    self._frame(key, body)
                    pending = self._pending
                    size = self._pending_size
                else:
                    pending += (
                        key_len(len(key)),
                        key,
                        value_head(len(body) + VALUE_HEADER_SIZE),
                        body,
                    )
                    size += len(key) + len(body) + head_size
                    if size >= block:
                        self._pending_size = size
                        self.finish()
                        pending = self._pending
                        size = 0
                if self.bytes_written + size >= stop:
                    return False
        finally:
            self._pending_size = size
            self._previous = previous
            self.entries = entries
        self.finish()
        return True

    def add_framed(self, block: bytes, entries: int) -> None:
        """Write ``block``: ``entries`` records already framed, sorted after the ones before
        and free of duplicate keys (the caller's sort checked)."""
        self.finish()
        self._emit(block)
        self.entries += entries

    def finish(self) -> None:
        """Write the buffered bytes out (the stream is complete once the records are)."""
        if self._pending:
            self._emit(b"".join(self._pending))
            self._pending = []
            self._pending_size = 0

    @property
    def sha256(self) -> str:
        """Lowercase hex SHA-256 of the bytes written so far."""
        return self._digest.hexdigest()


def _descriptor(out: BinaryIO) -> int | None:
    """The file descriptor behind ``out``, if it has one (an in-memory sink has none)."""
    try:
        return out.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return None


class FramedBlocks(msgspec.Struct, frozen=True):
    """Records already framed, sorted and checked for duplicates, as ``(bytes, records in
    them)`` blocks (see :meth:`~.sortframe.FramedSorter.blocks`)."""

    blocks: Iterator[tuple[bytes, int]]


_T = TypeVar("_T")


class _Handoff(Generic[_T]):
    """Work handed from the writing thread to another one, in order, :data:`HANDOFF_DEPTH`
    pieces waiting at most (a written slice's blocks, or the jobs queued while it was
    written).

    Either side closes it when it stops: :meth:`get` then returns what is still held, then
    ``None``; :meth:`put` returns False (nothing more will be taken).
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._held: deque[_T] = deque()
        self._closed = False

    def put(self, written: _T) -> bool:
        """Hand ``written`` over once fewer than :data:`HANDOFF_DEPTH` pieces wait; False if
        closed."""
        with self._changed:
            while len(self._held) >= HANDOFF_DEPTH and not self._closed:
                self._changed.wait()
            if self._closed:
                return False
            self._held.append(written)
            self._changed.notify()
            return True

    def get(self) -> _T | None:
        """The next piece handed over, or ``None`` once closed and emptied."""
        with self._changed:
            while not self._held and not self._closed:
                self._changed.wait()
            if not self._held:
                return None
            written = self._held.popleft()
            self._changed.notify()
            return written

    def close(self) -> None:
        """Stop the hand-over (idempotent) and wake a waiting side."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class SnapshotStream:
    """Frames ``(encoded_key, body)`` records, sorted by key, into ``out``; refuses duplicates.

    ``records`` may also be :class:`FramedBlocks`, written as they are.
    """

    def __init__(
        self,
        out: BinaryIO,
        records: Iterator[tuple[bytes, bytes]] | FramedBlocks,
        last_commit_ts: int,
    ):
        self._writer = FrameWriter(out, last_commit_ts, defer_hashing=True)
        self._records = records
        self._fd = _descriptor(out) if hasattr(os, "posix_fadvise") else None
        self._released = 0

    @property
    def bytes_written(self) -> int:
        """Bytes written to ``out`` so far."""
        return self._writer.bytes_written

    @property
    def entries(self) -> int:
        """Records framed so far."""
        return self._writer.entries

    async def write(self, slice_bytes: int = SLICE_BYTES) -> None:
        """Write every record, in slices of about ``slice_bytes``, in a worker thread; each
        written slice is hashed in another worker thread while the next is written, and the
        jobs queued by :func:`hash_beside` run in a third."""
        blocks: _Handoff[list[bytes]] = _Handoff()
        jobs: _Handoff[list[Callable[[], None]]] = _Handoff()
        async with task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, self._hash_slices, blocks)
            tg.start_soon(anyio.to_thread.run_sync, self._run_jobs, jobs)
            await anyio.to_thread.run_sync(self._write_slices, blocks, jobs, slice_bytes)

    def _write_slices(
        self,
        blocks: _Handoff[list[bytes]],
        jobs: _Handoff[list[Callable[[], None]]],
        slice_bytes: int,
    ) -> None:
        try:
            done = False
            while not done:
                anyio.from_thread.check_cancelled()
                queued: list[Callable[[], None]] = []
                _BESIDE.set(queued)  # this worker thread's own context
                done = self._write_slice(slice_bytes)
                if not blocks.put(self._writer.take_written()) or (queued and not jobs.put(queued)):
                    return  # a hashing thread failed: its error ends the write
        finally:
            _BESIDE.set(None)
            blocks.close()
            jobs.close()

    def _hash_slices(self, handoff: _Handoff[list[bytes]]) -> None:
        try:
            while (written := handoff.get()) is not None:
                self._writer.hash_blocks(written)
        finally:
            handoff.close()

    @staticmethod
    def _run_jobs(handoff: _Handoff[list[Callable[[], None]]]) -> None:
        try:
            while (queued := handoff.get()) is not None:
                for job in queued:
                    job()
        finally:
            handoff.close()

    def _write_slice(self, slice_bytes: int) -> bool:
        records = self._records
        if isinstance(records, FramedBlocks):
            done = self._add_blocks(records.blocks, slice_bytes)
        else:
            done = self._writer.add_some(records, slice_bytes)
        if self._fd is not None:
            # Start writing the slice back to disk now, and drop it from the page cache once it
            # is (nothing reads the output again but the optional self-test), so the fsync
            # that ends the run finds little left to write.
            end = self._writer.bytes_written
            try:
                os.posix_fadvise(
                    self._fd, self._released, end - self._released, os.POSIX_FADV_DONTNEED
                )
            except OSError:
                self._fd = None  # not a regular file: the hint does not apply
            self._released = end
        return done

    def _add_blocks(self, blocks: Iterator[tuple[bytes, int]], slice_bytes: int) -> bool:
        writer = self._writer
        stop = writer.position + slice_bytes
        for block, entries in blocks:
            writer.add_framed(block, entries)
            if writer.bytes_written >= stop:
                return False
        writer.finish()
        return True

    @property
    def sha256(self) -> str:
        """Lowercase hex SHA-256 of the stream (final once :meth:`write` returned)."""
        return self._writer.sha256
