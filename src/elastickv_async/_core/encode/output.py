"""Writing the sorted records as a snapshot stream, hashing as it goes.

:class:`FrameWriter` frames records pushed to it one at a time (the cluster encoder keeps one
per group); :class:`SnapshotStream` drives one over a sorted iterator. The work is
synchronous and done in slices (:meth:`SnapshotStream.write_some`), so the async caller can
run each slice in a worker thread and stay cancellable between slices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import BinaryIO, Final

from ..errors import DumpTreeError
from ..snapshot.framing import TS_SIZE
from .framing import frame_entry, header

__all__ = ["FrameWriter", "SnapshotStream"]

#: Small pieces are gathered into blocks of this size before one write + hash update.
_BLOCK: Final = 1 << 20


class FrameWriter:
    """Frames ``(encoded_key, body)`` records, pushed sorted by key, into ``out``.

    Refuses a key equal to the previous one. :meth:`finish` writes what is still buffered.
    """

    def __init__(self, out: BinaryIO, last_commit_ts: int) -> None:
        self._out = out
        self._digest = hashlib.sha256()
        self._pending = bytearray(header(last_commit_ts))
        self._previous: bytes | None = None
        self.bytes_written = 0
        self.entries = 0

    @property
    def position(self) -> int:
        """Bytes written or buffered so far."""
        return self.bytes_written + len(self._pending)

    def _emit(self, data: bytes | bytearray) -> None:
        self._out.write(data)
        self._digest.update(data)
        self.bytes_written += len(data)

    def _put(self, data: bytes) -> None:
        if len(data) >= _BLOCK // 4:
            self.finish()
            self._emit(data)
            return
        self._pending += data
        if len(self._pending) >= _BLOCK:
            self.finish()

    def add(self, key: bytes, body: bytes) -> None:
        """Frame one record (its key must sort after the previous record's)."""
        if key == self._previous:
            raise DumpTreeError(
                f"duplicate key in the dump tree: {key[:-TS_SIZE][:64]!r}",
                code="ErrEncodeDuplicateKey",
            )
        self._previous = key
        key_part, value_head = frame_entry(key, body)
        self._put(key_part)
        self._put(value_head)
        self._put(body)
        self.entries += 1

    def finish(self) -> None:
        """Write the buffered bytes out (the stream is complete once the records are)."""
        if self._pending:
            self._emit(self._pending)
            self._pending = bytearray()

    @property
    def sha256(self) -> str:
        """Lowercase hex SHA-256 of the bytes written so far."""
        return self._digest.hexdigest()


class SnapshotStream:
    """Frames ``(encoded_key, body)`` records, sorted by key, into ``out``; refuses duplicates."""

    def __init__(self, out: BinaryIO, records: Iterator[tuple[bytes, bytes]], last_commit_ts: int):
        self._writer = FrameWriter(out, last_commit_ts)
        self._records = records

    @property
    def bytes_written(self) -> int:
        """Bytes written to ``out`` so far."""
        return self._writer.bytes_written

    @property
    def entries(self) -> int:
        """Records framed so far."""
        return self._writer.entries

    def write_some(self, budget: int = 16 << 20) -> bool:
        """Write records until about ``budget`` bytes went out; return True once all are written."""
        writer = self._writer
        start = writer.position
        for key, body in self._records:
            writer.add(key, body)
            if writer.position - start >= budget:
                return False
        writer.finish()
        return True

    @property
    def sha256(self) -> str:
        """Lowercase hex SHA-256 of the stream (final once :meth:`write_some` returned True)."""
        return self._writer.sha256
