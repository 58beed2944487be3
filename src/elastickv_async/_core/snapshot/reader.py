"""Async reader of ``.fsm`` snapshot files.

Usage::

    async with open_snapshot(path) as snap:
        print(snap.header.last_commit_ts)
        async for batch in snap.batches(max_entries=512):
            ...  # raw entries: every version, tombstones included, in stream order
    print(snap.stats.footer, snap.stats.payload_crc32c)

The file is read in chunks by worker threads (the CRC32C is computed in the same
thread call, so it overlaps with the event loop); framing runs in the calling task between
reads, as it is CPU work on bytes already in memory. Memory holds two chunks at most (the
one being framed and the next, read before the first is let go), and the entry being read (a
value larger than a chunk is read in one piece); the decode sizes its chunks from its memory
budget (:meth:`~elastickv_async._core.memory.MemoryBudget.read_chunk`). The input is read
once, front to back, so it need not be seekable: the path ``-`` is standard input (a pipe
from ``ssh`` or ``zstdcat``), whose size is known only at its end.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO, Final, Literal

import anyio
import msgspec

from ..errors import UsageError, map_os_errors
from .entry import Entry, SnapshotHeader
from .footer import RunningCrc32c
from .framing import FrameDecoder

__all__ = ["DEFAULT_CHUNK_SIZE", "STDIN", "Snapshot", "SnapshotStats", "open_snapshot"]

#: The bytes read at once when the caller gives no size (decodes give their budget's).
DEFAULT_CHUNK_SIZE: Final = 4 << 20
#: The input path that means standard input.
STDIN = "-"


class SnapshotStats(msgspec.Struct):
    """What the reader saw; complete once :meth:`Snapshot.batches` has run to its end.

    ``payload_crc32c`` is the CRC32C (Castagnoli) of the whole file content excluding a
    verified footer: the kv-FSM header and the store stream, i.e. exactly the bytes a node's
    footer covers. For a file without footer it is the CRC32C of the entire file.
    ``entries`` counts raw MVCC entries (all versions, tombstones included); raw meta keys
    are in ``meta`` (name -> value) and writer-registry rows in ``encryption_writer_rows``.
    ``total_bytes`` of a stream that is not a regular file (standard input) is 0 until its end.
    """

    total_bytes: int
    bytes_read: int = 0
    entries: int = 0
    footer: Literal["valid", "absent"] = "absent"
    payload_crc32c: int = 0
    meta: dict[str, int] = msgspec.field(default_factory=dict)
    encryption_writer_rows: int = 0


class _ChunkSource:
    """Blocking side of the reader: file reads and the running CRC32C (worker threads only)."""

    def __init__(self, path: Path) -> None:
        if os.fspath(path) == STDIN:
            # A duplicate, so closing the snapshot leaves the process's stdin alone.
            fd = os.dup(sys.stdin.fileno())
            self._file: BinaryIO = open(fd, "rb")  # noqa: SIM115 - closed by close()
        else:
            self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        info = os.fstat(self._file.fileno())
        #: The size when known up front (a regular file), else 0.
        self.size = info.st_size if stat.S_ISREG(info.st_mode) else 0
        self.crc = RunningCrc32c()

    def read(self, size: int) -> bytes:
        """Read ``size`` bytes (fewer only at the end of the file) and checksum them."""
        data = self._file.read(size)
        self.crc.update(data)
        return data

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class Snapshot:
    """An open snapshot file: its header, its entries (once) and what was seen so far."""

    def __init__(self, source: _ChunkSource, chunk_size: int) -> None:
        self._source = source
        self._chunk_size = chunk_size
        self._decoder = FrameDecoder()
        self._at_eof = False
        self._iterated = False
        self._header: SnapshotHeader | None = None
        self.stats = SnapshotStats(total_bytes=source.size)

    @property
    def header(self) -> SnapshotHeader:
        """The stream header (``last_commit_ts`` and the kv-FSM header fields, if any)."""
        if self._header is None:
            raise RuntimeError("the header is read when open_snapshot() is entered")
        return self._header

    async def _fill(self) -> None:
        if self._at_eof:
            raise RuntimeError("snapshot decoder wants data after the end of the file")
        size = max(self._chunk_size, self._decoder.need)
        data = await anyio.to_thread.run_sync(self._source.read, size)
        self._at_eof = len(data) < size
        self.stats.bytes_read += len(data)
        self._decoder.feed(data)

    async def _read_header(self) -> None:
        while (header := self._decoder.read_header(at_eof=self._at_eof)) is None:
            await self._fill()
        self._header = header

    async def batches(
        self, max_entries: int = 512, max_bytes: int = 8 << 20
    ) -> AsyncIterator[list[Entry]]:
        """Yield the raw entries in stream order, in lists of at most ``max_entries``.

        A batch also stops growing once about ``max_bytes`` of the file were read for it, so
        batches of large values stay small in memory.

        Every MVCC version is yielded (tombstones too); raw meta keys and writer-registry rows
        are not. At the end, the footer (if any) is verified and :attr:`stats` completed.
        Framing errors raise the typed :class:`~elastickv_async._core.errors.SnapshotFormatError`
        subclasses. Can be iterated only once.
        """
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        if self._iterated:
            raise RuntimeError("Snapshot.batches() can be iterated only once")
        self._iterated = True
        decoder = self._decoder
        while not decoder.done:
            batch = decoder.decode(max_entries, at_eof=self._at_eof)
            stop_at = self.stats.bytes_read + max_bytes
            while len(batch) < max_entries and not decoder.done and self.stats.bytes_read < stop_at:
                await self._fill()
                batch += decoder.decode(max_entries - len(batch), at_eof=self._at_eof)
            self.stats.entries = decoder.entries
            if decoder.done:
                self._finish()
            if batch:
                yield batch

    def _finish(self) -> None:
        decoder, stats, crc = self._decoder, self.stats, self._source.crc
        if decoder.footer is not None:
            crc.verify_footer(decoder.footer)
            stats.footer = "valid"
        stats.payload_crc32c = crc.payload_crc32c()
        stats.total_bytes = max(stats.total_bytes, stats.bytes_read)
        stats.meta = dict(decoder.meta)
        stats.encryption_writer_rows = decoder.writer_registry_rows


@asynccontextmanager
async def open_snapshot(
    path: str | os.PathLike[str], *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> AsyncIterator[Snapshot]:
    """Open ``path`` (:data:`STDIN`: standard input) and read its header; the file is
    closed when the block exits.

    Raises :class:`UsageError` when the file cannot be opened, and the typed snapshot format
    errors when the header is malformed.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    with map_os_errors(UsageError, f"cannot open snapshot {str(path)!r}", path=path):
        source = await anyio.to_thread.run_sync(_ChunkSource, Path(path))
    try:
        snap = Snapshot(source, chunk_size)
        await snap._read_header()
        yield snap
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(source.close)
