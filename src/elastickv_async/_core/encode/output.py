"""Writing the sorted records as a snapshot stream, hashing as it goes.

The work is synchronous and done in slices (:meth:`SnapshotStream.write_some`), so the async
caller can run each slice in a worker thread and stay cancellable between slices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import BinaryIO, Final

from ..errors import DumpTreeError
from ..snapshot.framing import TS_SIZE
from .framing import frame_entry, header

__all__ = ["SnapshotStream"]

#: Small pieces are gathered into blocks of this size before one write + hash update.
_BLOCK: Final = 1 << 20


class SnapshotStream:
    """Frames ``(encoded_key, body)`` records, sorted by key, into ``out``; refuses duplicates."""

    def __init__(self, out: BinaryIO, records: Iterator[tuple[bytes, bytes]], last_commit_ts: int):
        self._out = out
        self._records = records
        self._digest = hashlib.sha256()
        self._pending = bytearray(header(last_commit_ts))
        self._previous: bytes | None = None
        self.bytes_written = 0
        self.entries = 0

    def _emit(self, data: bytes | bytearray) -> None:
        self._out.write(data)
        self._digest.update(data)
        self.bytes_written += len(data)

    def _put(self, data: bytes) -> None:
        if len(data) >= _BLOCK // 4:
            self._flush()
            self._emit(data)
            return
        self._pending += data
        if len(self._pending) >= _BLOCK:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = bytearray()

    def write_some(self, budget: int = 16 << 20) -> bool:
        """Write records until about ``budget`` bytes went out; return True once all are written."""
        start = self.bytes_written + len(self._pending)
        for key, body in self._records:
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
            if self.bytes_written + len(self._pending) - start >= budget:
                return False
        self._flush()
        return True

    @property
    def sha256(self) -> str:
        """Lowercase hex SHA-256 of the stream (final once :meth:`write_some` returned True)."""
        return self._digest.hexdigest()
