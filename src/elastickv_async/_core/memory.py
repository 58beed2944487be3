"""One memory budget for a whole run, and each buffering part's share of it.

Every part of a run that holds data in memory while it waits (the adapter channels, the
adapters' sort and spill buffers, the encoder's external sort, the ledger of written or read
digests) takes its bound from one :class:`MemoryBudget` instead of a constant of its own, so
a single number (``--memory-budget``, ``memory_budget=``) bounds them all together. The
budget counts the data those parts hold; the process also pays for the interpreter, the
imported modules and allocator slack (see the README's Performance section for measured
figures).

The budget is cut in sixteenths: decode gives the channels 3 (the snapshot reader's chunks
among them), the checksum ledger 1 and the adapters 12; encode gives its channel 1 (the
built-in encoders hand over batches they size from their own shares), the ledger of read
digests 1, the CHECKSUMS walk's listing sort 1, the adapters 8 and the external sort 5. Both
directions share the adapters' part evenly among the enabled adapters (so each one's share
shrinks as more run), or among those that have something to do: an encode's adapters whose
subtree the tree holds, a decode's, once its input is read, those that received entries,
which then flush. Each adapter divides its share among its own buffers
(``DecodeContext.memory``, ``EncodeContext.memory``). What runs once the rest is done takes
the whole budget: the self-test's decode, and its comparison's line sorts. Once an encode's
records are collected, its channel's part serves the writing of the snapshot (the files'
write buffers, :meth:`MemoryBudget.output_buffer`, and the slices being framed, written and
hashed, :meth:`MemoryBudget.write_slice`). A reader that only counts (``decode
--dry-run``, ``inspect``) has the whole budget for its chunks and batch.

No buffer is smaller than a page, no merge reads fewer than three runs, and a digest ledger
has a fixed cost: :data:`MIN_MEMORY_BUDGET` is the least budget whose every part has room
for those.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Final, Literal

import msgspec

from .errors import UsageError

__all__ = [
    "DEFAULT_ADAPTER_MEMORY",
    "DEFAULT_ENCODE_ADAPTER_MEMORY",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_WALK_MEMORY",
    "ENTRY_BYTES",
    "LEDGER_ENTRY_BYTES",
    "LEDGER_FIXED_BYTES",
    "MIN_MEMORY_BUDGET",
    "READ_CHUNKS",
    "MemoryBudget",
    "ledger_entries",
    "parse_size",
]

#: The default budget: what the buffering parts may hold together.
DEFAULT_MEMORY_BUDGET: Final = 48 << 20
#: Smaller budgets are refused: below it, the one-page floors of the sorts' buffers and the
#: digest ledger's fixed cost would pass their parts' shares.
MIN_MEMORY_BUDGET: Final = 512 << 10
#: Largest budget accepted (a typo's guard).
_MAX_MEMORY_BUDGET: Final = 1 << 40
#: What one path and its digest cost in a digest ledger (:mod:`~._core.digests`), measured
#: with tracemalloc while recording, spilling and listing: the raw path (33 bytes and its
#: length), the digest (65), their two list slots, and while a spill sorts them their pair
#: (56) and the sort's keys; a merge of spilled runs holds about as many. About 180 bytes and
#: the path's: this covers paths of up to some 70 bytes (the bench's trees average 45).
LEDGER_ENTRY_BYTES: Final = 256
#: What a digest ledger holds whatever its size (its runs open while merging, a run's write
#: buffer, the merge's state: 17-21 KiB measured with a handful of digests), kept out of
#: the digests' room.
LEDGER_FIXED_BYTES: Final = 24 << 10
#: Chunks of the input the snapshot reader holds at once: the one being framed (or its
#: leftover) and the next one, read before the first is let go.
READ_CHUNKS: Final = 2
#: A decode's snapshot reader takes this part of the channels' share (one in this many) for
#: its chunks and the batch it frames from them, whatever the number of channels beside it:
#: chunks of a fixed size, not a batch's (which shrinks as more adapters run), keep the reads
#: (each a thread hop) few per MiB where values are large.
_READER_PART: Final = 3
#: A read chunk at most (the reader's own default).
_MAX_READ_CHUNK: Final = 4 << 20
#: What a snapshot entry costs beside its value: the entry object and a short key.
ENTRY_BYTES: Final = 160
#: Entries a reader that only counts takes at once, at most (its work is per entry: larger
#: batches would save little).
_MAX_SCAN_ENTRIES: Final = 4096
#: A page: no buffer is smaller (the smallest budgets may be passed by that much a buffer).
_MIN_BUFFER: Final = 4 << 10
#: An encode's output file buffers take at most one of this many parts of its output's
#: share, and 1 MiB (larger writes bypass them anyway).
_OUTPUT_PER_BUFFERS: Final = 8
_MAX_OUTPUT_BUFFER: Final = 1 << 20
#: A slice of an encode's snapshot writing at most.
_MAX_WRITE_SLICE: Final = 1 << 20
#: A block of a decode's CHECKSUMS listing at most, and the parts of the channels' share it
#: takes (its lines and their joined block are held at once: twice that).
_MAX_LISTING_BLOCK: Final = 1 << 20
_LISTING_PER_CHANNELS: Final = 4

Direction = Literal["decode", "encode"]

#: Sixteenths of the budget per part, by direction; "adapters" is shared by the adapters.
_SHARES: Final[dict[Direction, dict[str, int]]] = {
    "decode": {"channels": 3, "checksums": 1, "adapters": 12},
    "encode": {"channels": 1, "checksums": 1, "walk": 1, "adapters": 8, "sort": 5},
}
_WHOLE: Final = 16
#: An adapter's share when it runs alone under the default budget (what a decoder or an
#: encoder built outside a run, in a test say, gets).
DEFAULT_ADAPTER_MEMORY: Final = DEFAULT_MEMORY_BUDGET * _SHARES["decode"]["adapters"] // _WHOLE
DEFAULT_ENCODE_ADAPTER_MEMORY: Final = (
    DEFAULT_MEMORY_BUDGET * _SHARES["encode"]["adapters"] // _WHOLE
)
#: The CHECKSUMS walk's share of the default budget (what ``verify``, which takes no
#: budget, sorts a directory's listing in).
DEFAULT_WALK_MEMORY: Final = DEFAULT_MEMORY_BUDGET * _SHARES["encode"]["walk"] // _WHOLE

_SIZE: Final = re.compile(r"([0-9]+)\s*(B|KiB|MiB|GiB)?")
_UNITS: Final = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def parse_size(text: str, flag: str = "--memory-budget") -> int:
    """A memory budget from ``text``: bytes, or a number with ``B``, ``KiB``, ``MiB`` or ``GiB``.

    Raises :class:`~elastickv_async._core.errors.UsageError` (naming ``flag``) for anything
    else and for a size outside what :func:`check_budget` accepts.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"{flag} {text!r} is not a size (e.g. 48MiB, 512KiB, 1GiB, 1048576)")
    return check_budget(int(match[1]) * _UNITS[match[2]], flag)


def check_budget(size: int, name: str = "memory_budget") -> int:
    """``size`` if it is a usable budget, else :class:`~elastickv_async._core.errors.UsageError`."""
    if not MIN_MEMORY_BUDGET <= size <= _MAX_MEMORY_BUDGET:
        raise UsageError(
            f"{name} must be between {MIN_MEMORY_BUDGET >> 10}KiB and "
            f"{_MAX_MEMORY_BUDGET >> 30}GiB, not {size} bytes"
        )
    return size


def ledger_entries(memory: int) -> int:
    """How many digests a ledger given ``memory`` bytes keeps before it spills them: what
    :data:`LEDGER_FIXED_BYTES` leaves, at :data:`LEDGER_ENTRY_BYTES` each (at least one)."""
    return max(1, (memory - LEDGER_FIXED_BYTES) // LEDGER_ENTRY_BYTES)


class MemoryBudget(msgspec.Struct, frozen=True):
    """A run's memory budget of ``total`` bytes, shared by its parts and ``adapters``."""

    total: int
    direction: Direction
    #: The enabled adapters (they share the adapters' part evenly).
    adapters: Sequence[str] = ()

    def __post_init__(self) -> None:
        check_budget(self.total)

    def share(self, part: str) -> int:
        """The bytes of ``part``: ``"channels"``, ``"checksums"``, ``"adapters"`` (all
        adapters together), and ``"walk"`` and ``"sort"`` (encode)."""
        try:
            sixteenths = _SHARES[self.direction][part]
        except KeyError:
            raise ValueError(f"{self.direction} has no memory part {part!r}") from None
        return self.total * sixteenths // _WHOLE

    def adapter(self, name: str, *, holding: Collection[str] | None = None) -> int:
        """The bytes adapter ``name`` may buffer (its sorts and spills together).

        ``holding`` names the adapters that have data to buffer (a decode's, once its input
        is read; an encode's whose subtree the tree holds): the others' shares go to these
        (an adapter outside ``holding`` keeps its own). ``None`` (while a decode's input is
        read) shares the part among every enabled adapter.
        """
        if name not in self.adapters:
            raise ValueError(f"adapter {name!r} is not part of this run")
        sharing = len(self.adapters)
        if holding is not None and name in holding:
            sharing = len(set(holding) & set(self.adapters))
        return self.share("adapters") // sharing

    def parts(self) -> dict[str, int]:
        """Every part's bytes, each adapter on its own (``adapter.<name>``); the shares sum
        to at most :attr:`total` (rounding down leaves a few bytes unassigned)."""
        found = {}
        for part in _SHARES[self.direction]:
            if part == "adapters":
                for name in self.adapters:
                    found[f"adapter.{name}"] = self.adapter(name)
            else:
                found[part] = self.share(part)
        return found

    def batch_bytes(self, buffered: int, *, streams: int = 1, reader: bool = False) -> int:
        """The bytes of one batch when ``streams`` channels each hold ``buffered`` batches
        (plus the one being filled and the one being consumed) and two more batches are on
        their way in (the reader's and the one being routed): the channels' share over all
        of them. With ``reader``, the snapshot reader's part (:meth:`read_chunk`) is set
        aside first. At least 1."""
        held = streams * (buffered + 2) + 2
        return max(1, (self.share("channels") - (self._reader_part() if reader else 0)) // held)

    def read_chunk(self) -> int:
        """The bytes a decode's snapshot reader reads at once beside the channels of
        :meth:`batch_bytes` (``reader=True``): a third of the channels' share holds its
        :data:`READ_CHUNKS` chunks and the batch framed from them (about a chunk's worth),
        within a page and 4 MiB each."""
        size = self._reader_part() // (READ_CHUNKS + 1)
        return min(_MAX_READ_CHUNK, max(_MIN_BUFFER, size))

    def _reader_part(self) -> int:
        return self.share("channels") // _READER_PART

    def output(self) -> int:
        """encode: the bytes writing the snapshot may hold (the files' write buffers, see
        :meth:`output_buffer`, and the slices being framed, written and hashed): the
        channel's part, which the collect no longer uses once the writing starts."""
        if self.direction != "encode":
            raise ValueError("only an encode writes a snapshot")
        return self.share("channels")

    def output_buffer(self, files: int = 1) -> int:
        """encode: the write buffer of each of ``files`` output files written at once (the
        snapshot, or ``encode-cluster``'s groups): an eighth of :meth:`output` among them,
        within a page and 1 MiB. Framed blocks larger than the buffer bypass it; it only
        gathers the small writes."""
        size = self.output() // (_OUTPUT_PER_BUFFERS * max(1, files))
        return min(_MAX_OUTPUT_BUFFER, max(_MIN_BUFFER, size))

    def frame_block(self, files: int) -> int:
        """encode: the framed records each of ``files`` output files written at once
        (``encode-cluster``'s groups) gathers before one write: what their write buffers
        (:meth:`output_buffer`) leave of :meth:`output`, shared among them, half of it for
        the gathered pieces and half for their joined copy; within a page and 1 MiB."""
        files = max(1, files)
        size = (self.output() - files * self.output_buffer(files)) // (2 * files)
        return min(_MAX_WRITE_SLICE, max(_MIN_BUFFER, size))

    def write_slice(self, held: int) -> int:
        """encode: the bytes framed per slice of the snapshot's writing when ``held`` slices
        are alive at once: what :meth:`output_buffer` leaves of :meth:`output` over them,
        within a page and 1 MiB."""
        size = (self.output() - self.output_buffer()) // max(1, held)
        return min(_MAX_WRITE_SLICE, max(_MIN_BUFFER, size))

    def listing_block(self) -> int:
        """decode: the bytes of CHECKSUMS lines joined into one write as the run ends. The
        input is read and the adapters are done by then, so the block takes its room from
        the channels' part, idle from then on: a quarter of it, within a page and 1 MiB."""
        if self.direction != "decode":
            raise ValueError("only a decode lists its checksums")
        size = self.share("channels") // _LISTING_PER_CHANNELS
        return min(_MAX_LISTING_BLOCK, max(_MIN_BUFFER, size))

    def scan_chunk(self) -> int:
        """The bytes a reader that only counts (``decode --dry-run``, ``inspect``) reads at
        once: its :data:`READ_CHUNKS` chunks and the batch of entries being counted (what
        was left of one chunk and the next one read for it: two chunks' worth) share the
        whole budget, nothing else holding data beside them; within a page and 4 MiB."""
        size = self.total // (READ_CHUNKS + 2)
        return min(_MAX_READ_CHUNK, max(_MIN_BUFFER, size))

    def scan_entries(self) -> int:
        """The entries of a batch that :meth:`scan_chunk`'s reader counts at once: as many
        as a chunk's worth at :data:`ENTRY_BYTES` each (the entry object and a short key),
        4096 at most."""
        return max(1, min(_MAX_SCAN_ENTRIES, self.scan_chunk() // ENTRY_BYTES))

    def ledger_entries(self) -> int:
        """How many digests a checksum ledger keeps in memory before it spills them: what
        the checksums' share leaves beside the ledger's fixed cost, at
        :data:`LEDGER_ENTRY_BYTES` each."""
        return ledger_entries(self.share("checksums"))
