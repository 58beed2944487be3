"""The FIFO dedup rows of one queue, chosen among every message's claim in bounded memory.

Each message of a FIFO queue with a dedup id claims the dedup row of its dedup tuple; the
row goes to the latest send, ties to the lowest ``(sequence, message id)`` on a partitioned
queue and to the earliest line on a classic one (the reference's order). Holding one winner
per tuple would grow with the number of distinct ids, so every claim goes to an external
sort instead, keyed so that each row's claims come out together, its winner first.

Everything here is synchronous (it may spill to disk): callers run it in a worker thread.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from ..._core import gojson
from ..._core.extsort import ExternalSorter

__all__ = ["DEDUP_WINDOW_MS", "DedupClaims"]

#: The live FIFO dedup window.
DEDUP_WINDOW_MS: Final = 300_000

_I64_MAX: Final = (1 << 63) - 1
_U64: Final = struct.Struct(">Q")
#: A claim as the sorter holds it: send time, sequence number, length of the row key; then
#: the row key and the message id.
_CLAIM: Final = struct.Struct(">qQI")


def _escaped(raw: bytes) -> bytes:
    """``raw`` with NUL as NUL 0xFF, ended by NUL NUL: shorter strings sort first whatever
    follows them, as in a tuple comparison."""
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00\x00"


def _wrap_int64(value: int) -> int:
    """Go's int64 addition wraps around."""
    return ((value + (1 << 63)) % (1 << 64)) - (1 << 63)


class DedupClaims:
    """Every dedup claim of one queue; :meth:`rows` yields each row once, from its winner.

    ``partitioned`` selects the tie-break (see the module docstring). Claims past ``budget``
    bytes spill as sorted runs under ``scratch`` (created on the first spill); :meth:`close`
    removes them.
    """

    def __init__(self, scratch: Path, *, partitioned: bool, budget: int) -> None:
        self._sorter = ExternalSorter(scratch, budget)
        self._partitioned = partitioned
        self._arrival = 0

    def claim(self, row_key: bytes, send_ms: int, sequence: int, message_id: bytes) -> None:
        """Record the claim of the message ``message_id`` on the dedup row ``row_key``."""
        self._arrival += 1
        # The latest send sorts first; the arrival number makes every sort key unique, so
        # equal keys never depend on the sort's stability across runs.
        order = _escaped(row_key) + _U64.pack(_I64_MAX - send_ms)
        if self._partitioned:
            order += _U64.pack(sequence) + _escaped(message_id)
        order += _U64.pack(self._arrival)
        value = _CLAIM.pack(send_ms, sequence, len(row_key)) + row_key + message_id
        sorter = self._sorter
        sorter.add(order, value)
        if sorter.over_budget:
            sorter.spill()

    def rows(self) -> Iterator[tuple[bytes, bytes]]:
        """The dedup row of every claimed key, owned by its winning message."""
        previous = None
        for _, claim in self._sorter.merged():
            send_ms, sequence, key_length = _CLAIM.unpack_from(claim)
            start = _CLAIM.size
            row_key = claim[start : start + key_length]
            if row_key == previous:
                continue
            previous = row_key
            value: dict[str, Any] = {
                "message_id": claim[start + key_length :].decode(),
                "send_timestamp_ms": send_ms,
                "expires_at_millis": _wrap_int64(send_ms + DEDUP_WINDOW_MS),
            }
            if sequence:
                value["original_sequence"] = sequence
            yield row_key, gojson.marshal(value)

    def close(self) -> None:
        """Drop what is held and remove the spilled runs."""
        self._sorter.close()
