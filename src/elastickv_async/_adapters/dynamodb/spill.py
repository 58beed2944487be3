"""Scratch files of length-prefixed byte records (synchronous; call from worker threads).

Items reach the decoder before their table's schema (``!ddb|item|`` sorts before
``!ddb|meta|``), so their bodies wait on disk instead of in memory: one append-only file per
(table, generation), read back in bounded chunks when the table is written.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Final, Generic, TypeVar

from ..._core.errors import OutputError

__all__ = ["RecordReader", "SpillFiles", "read_records", "write_record"]

_LENGTH: Final = struct.Struct(">Q")
K = TypeVar("K", bound=Hashable)


def write_record(fh: BinaryIO, record: bytes) -> None:
    """Append one record: an 8-byte big-endian length, then the bytes."""
    fh.write(_LENGTH.pack(len(record)))
    fh.write(record)


def read_records(fh: BinaryIO) -> Iterator[bytes]:
    """Yield every record of ``fh`` from its current position; a torn record is an error."""
    while header := fh.read(_LENGTH.size):
        if len(header) != _LENGTH.size:
            raise OutputError(f"scratch file {fh.name!r} is truncated")
        (size,) = _LENGTH.unpack(header)
        record = fh.read(size)
        if len(record) != size:
            raise OutputError(f"scratch file {fh.name!r} is truncated")
        yield record


class RecordReader:
    """Reads one record file back in chunks of about ``chunk_bytes``.

    The file is opened per chunk and no handle is held between calls, so an abandoned reader
    needs no cleanup.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0

    def next_chunk(self, chunk_bytes: int) -> list[bytes]:
        """The next records (at least one unless the file is exhausted, then ``[]``)."""
        chunk: list[bytes] = []
        size = 0
        with open(self._path, "rb") as fh:
            fh.seek(self._offset)
            for record in read_records(fh):
                chunk.append(record)
                size += len(record)
                if size >= chunk_bytes:
                    break
            self._offset = fh.tell()
        return chunk


class SpillFiles(Generic[K]):
    """Append-only record files keyed by any hashable key, under ``root``.

    File names are sequence numbers (never derived from data). Each :meth:`append` opens the
    files it needs and closes them again, so nothing stays open between calls (a cancelled
    run leaves no descriptor behind).
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._paths: dict[K, Path] = {}
        self._counts: dict[K, int] = {}

    def append(self, records: Iterable[tuple[K, bytes]]) -> None:
        """Append each ``(key, record)`` to the file of ``key``."""
        grouped: dict[K, list[bytes]] = {}
        for key, record in records:
            grouped.setdefault(key, []).append(record)
        for key, group in grouped.items():
            path = self._paths.get(key)
            if path is None:
                self._root.mkdir(parents=True, exist_ok=True)
                path = self._paths[key] = self._root / f"{len(self._paths)}.rec"
            with open(path, "ab") as fh:
                for record in group:
                    write_record(fh, record)
            self._counts[key] = self._counts.get(key, 0) + len(group)

    @property
    def counts(self) -> dict[K, int]:
        """Records appended per key."""
        return dict(self._counts)

    def reader(self, key: K) -> RecordReader | None:
        """A reader over the records of ``key``; None if it has none."""
        path = self._paths.get(key)
        return RecordReader(path) if path is not None else None
