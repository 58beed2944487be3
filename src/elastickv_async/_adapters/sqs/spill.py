"""Bounded-memory holding area for SQS output that must wait for its queue's meta record.

Message keys (``!sqs|msg|``) sort before queue meta (``!sqs|queue|``), so every message is
read before the decoder knows whether its queue exists and which generation is active.
Messages (already rendered as their ``messages.jsonl`` line) and side-record lines are
buffered in memory up to a byte budget shared by all queues; past it, every buffer is
spilled into one scratch record file (:mod:`~elastickv_async._core.scratch`), one section per
queue and kind: messages sorted, side lines in arrival order. At the end each queue is
produced by the scratch module's k-way merge of its sections and what is still in memory, so
memory stays bounded by the budget whatever the queue sizes. Queues are independent: callers
may flush several at once.

What is SQS's own here is the message order (the reference's send time, sequence number,
message id, then arrival) as a byte key, and the generation carried with each line.

The methods that touch files are synchronous: callers run them in a worker thread.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Final

from ..._core.scratch import Record, iter_records, merge, write_records

__all__ = ["DEFAULT_BUDGET", "MessageSpill", "buffered_size", "message_key", "right_sized"]

#: Default byte budget of the in-memory buffers (all queues together).
DEFAULT_BUDGET: Final = 64 << 20

# Sort key: send time (signed, offset to sort unsigned), sequence, then the message id and the
# arrival index (which keeps the sort stable and the keys unique).
_ORDER: Final = struct.Struct(">QQ")
_TAIL: Final = struct.Struct(">QQ")
_GENERATION: Final = struct.Struct(">Q")
_SIGN: Final = 1 << 63
# Rough per-entry cost of the Python objects around the payload (tuple, bytes headers).
_ENTRY_OVERHEAD: Final = 160
_SIDE_OVERHEAD: Final = 96
_WRITE_CHUNK: Final = 1 << 20
#: Messages written at once (some 1-2 MiB of lines).
_WRITE_RECORDS: Final = 4096
#: Sort keys are unique (they end in the arrival number): sorting by them alone is enough.
_BY_KEY: Final = itemgetter(0)


def message_key(
    send_ms: int, sequence: int, message_id: bytes, arrival: int, gen: int = 0
) -> bytes:
    """A byte string that sorts like ``(send_ms, sequence, message_id, arrival)``.

    The id is escaped (NUL as NUL 0xFF) and ends in NUL NUL, so a shorter id sorts first
    whatever follows it, as in a tuple comparison. The generation rides at the end, after the
    unique arrival index, where it cannot change the order.
    """
    return (
        _ORDER.pack(send_ms + _SIGN, sequence)
        + message_id.replace(b"\x00", b"\x00\xff")
        + b"\x00\x00"
        + _TAIL.pack(arrival, gen)
    )


@dataclass(slots=True)
class _Section:
    path: Path
    offset: int
    length: int


@dataclass(slots=True)
class _QueueBuffer:
    #: ``(sort key ending in the generation, line)``.
    messages: list[Record] = field(default_factory=list)
    message_runs: list[_Section] = field(default_factory=list)
    message_count: int = 0
    #: ``(b"", line)`` in arrival order.
    sides: list[Record] = field(default_factory=list)
    side_runs: list[_Section] = field(default_factory=list)
    side_count: int = 0


class MessageSpill:
    """Per-queue message and side-record lines, held in memory up to ``budget`` bytes."""

    def __init__(self, scratch: Path, budget: int = DEFAULT_BUDGET) -> None:
        self._scratch = scratch
        self._budget = budget
        self._used = 0
        self._runs = 0
        self._queues: dict[str, _QueueBuffer] = {}

    def _queue(self, queue: str) -> _QueueBuffer:
        buf = self._queues.get(queue)
        if buf is None:
            buf = self._queues[queue] = _QueueBuffer()
        return buf

    def add_rendered(self, queue: str, records: list[Record], size: int) -> None:
        """Buffer message records ``(message_key(...), line)`` of ``queue``, lines already
        :func:`right_sized`; ``size`` is their :func:`buffered_size`. Keys must be unique
        (the arrival number sees to it): the order of the calls does not matter."""
        buf = self._queue(queue)
        buf.messages += records
        buf.message_count += len(records)
        self._used += size

    def add_side(self, queue: str, line: bytes) -> None:
        """Buffer one rendered side-record line of ``queue`` (kept in arrival order)."""
        buf = self._queue(queue)
        line = right_sized(line)
        buf.sides.append((b"", line))
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
        path = self._scratch / f"sqs-run-{self._runs}.rec"
        self._runs += 1
        with open(path, "xb", buffering=_WRITE_CHUNK) as out:
            for buf in self._queues.values():
                if buf.messages:
                    buf.messages.sort(key=_BY_KEY)
                    start = out.tell()
                    write_records(out, buf.messages)
                    buf.message_runs.append(_Section(path, start, out.tell() - start))
                    buf.messages = []
                if buf.sides:
                    start = out.tell()
                    write_records(out, buf.sides)
                    buf.side_runs.append(_Section(path, start, out.tell() - start))
                    buf.sides = []
        self._used = 0

    def write_messages(self, queue: str, active_gen: int, dest: Path) -> tuple[int, int]:
        """Write ``queue``'s messages to ``dest`` in order, skipping other generations.

        ``active_gen == 0`` keeps every generation. Returns ``(written, dropped)``.
        """
        buf = self._queues[queue]
        buf.messages.sort(key=_BY_KEY)
        keep = None if not active_gen else _GENERATION.pack(active_gen)
        records: Iterator[Record] = (
            merge([*(_section_records(s) for s in buf.message_runs), buf.messages])
            if buf.message_runs
            else iter(buf.messages)
        )
        written = 0
        with open(dest, "xb") as out:
            while part := list(itertools.islice(records, _WRITE_RECORDS)):
                if keep is None:
                    lines = [line for _, line in part]
                else:
                    lines = [line for key, line in part if key.endswith(keep)]
                out.write(b"".join(lines))
                written += len(lines)
        return written, buf.message_count - written

    def write_sides(self, queue: str, dest: Path) -> None:
        """Write ``queue``'s side-record lines to ``dest`` in arrival order."""
        buf = self._queues[queue]
        with open(dest, "xb", buffering=_WRITE_CHUNK) as out:
            for section in buf.side_runs:
                out.writelines(line for _, line in _section_records(section))
            out.writelines(line for _, line in buf.sides)


def buffered_size(records: list[Record]) -> int:
    """What message records count against the budget: their bytes and their objects."""
    return sum(len(key) + len(line) for key, line in records) + _ENTRY_OVERHEAD * len(records)


def right_sized(data: bytes) -> bytes:
    """A copy of ``data`` in an allocation of its own size.

    orjson returns its output in a buffer of at least 4 KiB; kept as is, a buffered 300-byte
    line would cost ten times what the budget accounts for.
    """
    return memoryview(data).tobytes()


def _section_records(section: _Section) -> Iterable[Record]:
    return iter_records(section.path, section.offset, section.length)
