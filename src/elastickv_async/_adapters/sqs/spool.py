"""Bounded-memory holding area for SQS output that must wait for its queue's meta record.

Message keys (``!sqs|msg|``) sort before queue meta (``!sqs|queue|``), so every message is
read before the decoder knows whether its queue exists and which generation is active.
Messages (already rendered as their ``messages.jsonl`` line) and side-record lines are
buffered in memory up to a byte budget shared by all queues; past it, every buffer is
spilled into one run file (messages sorted, side lines in arrival order). At the end each
queue is produced by a k-way merge of its runs and what is still in memory, so memory stays
bounded by the budget whatever the queue sizes.

The methods that touch files are synchronous: callers run them in a worker thread.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

__all__ = ["DEFAULT_BUDGET", "MessageSpool"]

#: Default byte budget of the in-memory buffers (all queues together).
DEFAULT_BUDGET: Final = 64 << 20

#: One buffered message: the reference's sort key (send time, sequence number, message id),
#: the arrival index that keeps the sort stable, then the queue generation and the line.
_Entry = tuple[int, int, bytes, int, int, bytes]

# send ts (signed), sequence, arrival, generation, len(message id), len(line)
_HEADER: Final = struct.Struct(">qQQQII")
# Rough per-entry cost of the Python objects around the payload (tuple, ints, bytes headers).
_ENTRY_OVERHEAD: Final = 224
_SIDE_OVERHEAD: Final = 48
_READ_BUFFER: Final = 256 << 10
_WRITE_CHUNK: Final = 1 << 20


@dataclass(slots=True)
class _Section:
    path: Path
    offset: int
    length: int


@dataclass(slots=True)
class _QueueBuffer:
    messages: list[_Entry] = field(default_factory=list)
    message_runs: list[_Section] = field(default_factory=list)
    message_count: int = 0
    sides: list[bytes] = field(default_factory=list)
    side_runs: list[_Section] = field(default_factory=list)
    side_count: int = 0


class MessageSpool:
    """Per-queue message and side-record lines, held in memory up to ``budget`` bytes."""

    def __init__(self, scratch: Path, budget: int = DEFAULT_BUDGET) -> None:
        self._scratch = scratch
        self._budget = budget
        self._used = 0
        self._arrivals = 0
        self._runs = 0
        self._queues: dict[str, _QueueBuffer] = {}

    def _queue(self, queue: str) -> _QueueBuffer:
        buf = self._queues.get(queue)
        if buf is None:
            buf = self._queues[queue] = _QueueBuffer()
        return buf

    def add_message(
        self, queue: str, send_ms: int, sequence: int, message_id: bytes, gen: int, line: bytes
    ) -> None:
        """Buffer one rendered message line of ``queue``."""
        buf = self._queue(queue)
        line = _right_sized(line)
        buf.messages.append((send_ms, sequence, message_id, self._arrivals, gen, line))
        buf.message_count += 1
        self._arrivals += 1
        self._used += len(line) + len(message_id) + _ENTRY_OVERHEAD

    def add_side(self, queue: str, line: bytes) -> None:
        """Buffer one rendered side-record line of ``queue`` (kept in arrival order)."""
        buf = self._queue(queue)
        line = _right_sized(line)
        buf.sides.append(line)
        buf.side_count += 1
        self._used += len(line) + _SIDE_OVERHEAD

    @property
    def over_budget(self) -> bool:
        """Whether the buffers should be spilled now."""
        return self._used > self._budget

    def message_count(self, queue: str) -> int:
        """Messages buffered or spilled for ``queue``."""
        buf = self._queues.get(queue)
        return buf.message_count if buf else 0

    def side_count(self, queue: str) -> int:
        """Side records buffered or spilled for ``queue``."""
        buf = self._queues.get(queue)
        return buf.side_count if buf else 0

    # --- synchronous file work (worker threads only) ---------------------------------------------

    def spill(self) -> None:
        """Write every in-memory buffer into a new run file and empty the buffers."""
        path = self._scratch / f"sqs-run-{self._runs}.bin"
        self._runs += 1
        with open(path, "xb") as out:
            for buf in self._queues.values():
                if buf.messages:
                    buf.messages.sort()
                    start = out.tell()
                    for send_ms, seq, msg_id, arrival, gen, line in buf.messages:
                        out.write(_HEADER.pack(send_ms, seq, arrival, gen, len(msg_id), len(line)))
                        out.write(msg_id)
                        out.write(line)
                    buf.message_runs.append(_Section(path, start, out.tell() - start))
                    buf.messages = []
                if buf.sides:
                    start = out.tell()
                    out.writelines(buf.sides)
                    buf.side_runs.append(_Section(path, start, out.tell() - start))
                    buf.sides = []
        self._used = 0

    def write_messages(self, queue: str, active_gen: int, dest: Path) -> tuple[int, int]:
        """Write ``queue``'s messages to ``dest`` in order, skipping other generations.

        ``active_gen == 0`` keeps every generation. Returns ``(written, dropped)``.
        """
        buf = self._queues[queue]
        buf.messages.sort()
        written = dropped = 0
        pending: list[bytes] = []
        pending_size = 0
        with open(dest, "xb") as out:
            sources = [_read_messages(s) for s in buf.message_runs] + [iter(buf.messages)]
            for _, _, _, _, gen, line in heapq.merge(*sources):
                if active_gen and gen != active_gen:
                    dropped += 1
                    continue
                written += 1
                pending.append(line)
                pending_size += len(line)
                if pending_size >= _WRITE_CHUNK:
                    out.write(b"".join(pending))
                    pending, pending_size = [], 0
            out.write(b"".join(pending))
        return written, dropped

    def write_sides(self, queue: str, dest: Path) -> None:
        """Write ``queue``'s side-record lines to ``dest`` in arrival order."""
        buf = self._queues[queue]
        with open(dest, "xb") as out:
            for section in buf.side_runs:
                with open(section.path, "rb") as src:
                    src.seek(section.offset)
                    _copy(src, out, section.length)
            out.writelines(buf.sides)


def _right_sized(data: bytes) -> bytes:
    """A copy of ``data`` in an allocation of its own size.

    orjson returns its output in a buffer of at least 4 KiB; kept as is, a buffered 300-byte
    line would cost ten times what the budget accounts for.
    """
    return memoryview(data).tobytes()


def _copy(src: BinaryIO, out: BinaryIO, length: int) -> None:
    while length:
        block = src.read(min(length, _WRITE_CHUNK))
        if not block:
            raise OSError(f"spill file {src.name} ended early")
        out.write(block)
        length -= len(block)


def _read_messages(section: _Section) -> Iterator[_Entry]:
    with open(section.path, "rb", buffering=_READ_BUFFER) as src:
        src.seek(section.offset)
        remaining = section.length
        while remaining:
            send_ms, seq, arrival, gen, id_len, line_len = _HEADER.unpack(src.read(_HEADER.size))
            msg_id = src.read(id_len)
            line = src.read(line_len)
            remaining -= _HEADER.size + id_len + line_len
            yield send_ms, seq, msg_id, arrival, gen, line
