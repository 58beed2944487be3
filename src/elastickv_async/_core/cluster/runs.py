"""Sorted runs: one group's visible entries of one partition, framed like a bare ``.fsm``.

A run is an ``EKVPBBL1`` stream holding exactly one (the visible) version per key, in the
group's stream order, so the snapshot framing decoder reads it back unchanged and the merge
can order runs of different groups by encoded key ``key ‖ BE(^commit_ts)``. A run lives in a
scratch file (one machine) or in memory (returned to Dask, which moves it between workers).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Final

import anyio
import anyio.to_thread

from ..snapshot.entry import Entry
from ..snapshot.framing import STREAM_MAGIC, TOMBSTONE_FLAG, FrameDecoder

__all__ = ["RunReader", "RunWriter"]

_LEN: Final = struct.Struct("<Q").pack
_TS: Final = struct.Struct(">Q").pack
_VALUE_HEAD: Final = struct.Struct("<BQ").pack
_TS_MASK: Final = (1 << 64) - 1
_FLUSH_AT: Final = 4 << 20
_READ_CHUNK: Final = 4 << 20


class RunWriter:
    """Frames entries into a run: to ``path`` (written by worker threads), else in memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries = 0
        self._file: BinaryIO | None = None
        self._buf = bytearray(STREAM_MAGIC + _LEN(0))
        self._chunks: list[bytes] = []

    async def add(self, entry: Entry) -> None:
        """Append one visible entry (callers add in stream order)."""
        key = entry.key + _TS(entry.commit_ts ^ _TS_MASK)
        flags = TOMBSTONE_FLAG if entry.tombstone else 0
        value = _VALUE_HEAD(flags, entry.expire_at)
        buf = self._buf
        buf += _LEN(len(key))
        buf += key
        buf += _LEN(len(value) + len(entry.value))
        buf += value
        buf += entry.value
        self.entries += 1
        if len(buf) >= _FLUSH_AT:
            await self._flush()

    async def _flush(self) -> None:
        data, self._buf = bytes(self._buf), bytearray()
        if self.path is None:
            self._chunks.append(data)
            return
        if self._file is None:
            self._file = await anyio.to_thread.run_sync(_open_new, self.path)
        await anyio.to_thread.run_sync(self._file.write, data)

    async def finish(self) -> bytes | Path:
        """Flush and close; the run's bytes (in memory) or its path."""
        await self._flush()
        if self.path is None:
            return b"".join(self._chunks)
        assert self._file is not None
        await anyio.to_thread.run_sync(self._file.close)
        return self.path

    async def aclose(self) -> None:
        """Close the file without finishing (after a failure)."""
        if self._file is not None:
            await anyio.to_thread.run_sync(self._file.close)


def _open_new(path: Path) -> BinaryIO:
    return open(path, "xb")


class RunReader:
    """Reads a run back batch by batch; ``await next_batch()`` returns ``[]`` at the end."""

    def __init__(self, source: bytes | Path, batch_size: int = 512) -> None:
        self._source = source
        self._batch = batch_size
        self._decoder = FrameDecoder()
        self._file: BinaryIO | None = None
        self._at_eof = False
        if isinstance(source, bytes):
            self._decoder.feed(source)
            self._at_eof = True

    async def _fill(self) -> None:
        assert isinstance(self._source, Path)
        if self._file is None:
            self._file = await anyio.to_thread.run_sync(open, self._source, "rb")
        size = max(_READ_CHUNK, self._decoder.need)
        data = await anyio.to_thread.run_sync(self._file.read, size)
        self._at_eof = len(data) < size
        self._decoder.feed(data)

    async def next_batch(self) -> list[Entry]:
        """The next entries of the run (at most the batch size); ``[]`` once exhausted."""
        decoder = self._decoder
        while decoder.header is None:
            if decoder.read_header(at_eof=self._at_eof) is None:
                await self._fill()
        batch: list[Entry] = []
        while not batch and not decoder.done:
            batch = decoder.decode(self._batch, at_eof=self._at_eof)
            if not batch and not decoder.done:
                await self._fill()
        return batch

    async def aclose(self) -> None:
        """Close the run file, if one was opened."""
        if self._file is not None:
            file, self._file = self._file, None
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(file.close)
