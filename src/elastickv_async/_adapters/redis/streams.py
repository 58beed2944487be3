"""The encoder's per-directory inputs in bounded memory, in byte order of the file names.

A type directory may hold millions of value files and its TTL sidecar as many lines: both
are sorted through :class:`~elastickv_async._core.extsort.ExternalSorter` runs under the
run's scratch directory instead of being held whole, each within the bytes the caller gives
it (its part of the encoder's memory share), and the TTLs are then merge-joined with the
names (:class:`SortedLookup`) as the slices are made. KEYMAP's records are held by name
while they fit their part; past it, each directory joins them the same way
(:func:`sorted_keymap`). Everything here blocks: call it from a worker thread.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, cast

from ..._core.dump.keymap import KEYMAP_FILE, read_keymap_blocks
from ..._core.dump.listing import name_of, raw_name
from ..._core.dump.tree import TreeDir
from ..._core.extsort import ENTRY_OVERHEAD, ExternalSorter
from . import layout
from .values import shifted_ttl

__all__ = [
    "SortedLookup",
    "bounded_keymap",
    "sorted_keymap",
    "sorted_ttls",
]

#: The decoder's own sidecar line. Only the characters of an encoded name, so the key needs
#: no JSON unescaping; a number without a leading zero and at most 20 digits.
_TTL_LINE: Final = re.compile(
    rb'\{"key":"([A-Za-z0-9._%-]+)","expire_at_ms":(0|[1-9][0-9]{0,19})\}'
)
_U64_MAX: Final = (1 << 64) - 1
#: Decimal digits of the largest ``uint64``: only that long a number can exceed it.
_U64_DIGITS: Final = len(str(_U64_MAX))


class SortedLookup:
    """Values by key from records sorted by key (of equal keys the last one counts), looked
    up in ascending key order: a merge-join, holding one run of keys at a time."""

    def __init__(self, records: Iterator[tuple[bytes, bytes]]) -> None:
        self._records = records
        self._head = next(records, None)

    def take_through(self, last: bytes) -> dict[str, bytes]:
        """The values of every key up to and including ``last``, by file name (the keys are
        file names' bytes); every key asked later must be greater than ``last``."""
        head, records = self._head, self._records
        found: dict[str, bytes] = {}
        while head is not None and head[0] <= last:
            found[name_of(head[0])] = head[1]
            head = next(records, None)
        self._head = head
        return found


def sorted_ttls(
    db: TreeDir, name: str, ext: str, shift_ms: int, scratch: Path, memory: int
) -> ExternalSorter | None:
    """The TTL sidecar ``name`` of ``db`` as a sorter of ``(value file name, shifted TTL as
    decimal text)`` records in line order (the last line of a name wins, as in
    :func:`~.layout.parse_ttl_sidecar`), holding at most ``memory`` bytes of them (the rest
    spilled under ``scratch``); ``None`` when there is no sidecar.

    The file is read whole before anything is encoded, so a bad line fails the run before
    any value file is read, as it always has. Lines the decoder writes are matched in
    blocks; a sidecar with any other line (written by hand) is parsed whole by
    :func:`~.layout.parse_ttl_sidecar`, which also gives its errors.
    """
    file = db.open_name(name)
    if file is None:
        return None
    sorter = ExternalSorter(scratch, memory)
    try:
        with file:
            canonical = _add_canonical(sorter, file.blocks(), ext, shift_ms)
        if not canonical:
            sorter.close()
            sorter = ExternalSorter(scratch, memory)
            raw = db.read(name, limit=None)
            ttls = {} if raw is None else layout.parse_ttl_sidecar(raw, name)
            for segment, ttl in ttls.items():
                try:
                    key = os.fsencode(segment + ext)
                except UnicodeEncodeError:
                    continue  # no file name decodes to it, so no value file can match
                sorter.add(key, b"%d" % (shifted_ttl(ttl, shift_ms) or 0))
                if sorter.over_budget:
                    sorter.spill()
    except BaseException:
        sorter.close()
        raise
    return sorter


def _add_canonical(
    sorter: ExternalSorter, blocks: Iterator[bytes], ext: str, shift_ms: int
) -> bool:
    """Add every line of ``blocks`` to ``sorter``; ``False`` at the first line that is not
    the decoder's own (the caller starts over with the full parser)."""
    suffix = ext.encode()
    match = _TTL_LINE.fullmatch
    rest = b""
    for block in blocks:
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        if not _add_lines(sorter, lines, match, suffix, shift_ms):
            return False
        if sorter.over_budget:
            sorter.spill()
    return not rest or _add_lines(sorter, [rest], match, suffix, shift_ms)


def _add_lines(
    sorter: ExternalSorter,
    lines: list[bytes],
    match: Callable[[bytes], re.Match[bytes] | None],
    suffix: bytes,
    shift_ms: int,
) -> bool:
    """Add the decoder's own TTL lines ``lines``; ``False`` (nothing added) if any is not."""
    found = list(map(match, lines))
    if None in found:
        return False
    ttls = [m[2] for m in cast(list[re.Match[bytes]], found)]
    if ttls and max(map(len, ttls)) >= _U64_DIGITS and max(map(int, ttls)) > _U64_MAX:
        return False
    if shift_ms:
        ttls = [b"%d" % (shifted_ttl(int(t), shift_ms) or 0) for t in ttls]
    # Unshifted, the decimal text is already the value: the pattern allows no leading zero.
    keys = [m[1] + suffix for m in cast(list[re.Match[bytes]], found)]
    sorter.add_many(list(zip(keys, ttls, strict=True)))
    return True


def bounded_keymap(db: TreeDir, memory: int) -> dict[str, bytes] | None:
    """KEYMAP.jsonl of ``db``: encoded name -> original key (the last record winning, as
    :func:`~elastickv_async._core.dump.keymap.load_keymap`); ``{}`` without the file.

    Every line is checked, a block of the file at a time. ``None`` when the records take more
    than ``memory`` bytes: each type directory then joins them with :func:`sorted_keymap`.
    """
    file = db.open_name(KEYMAP_FILE)
    if file is None:
        return {}
    found: dict[str, bytes] | None = {}
    size = 0
    with file:
        for record in read_keymap_blocks(file.blocks(), db.path(KEYMAP_FILE)):
            if found is None:
                continue  # past the budget: only checked
            found[record.encoded] = record.original
            size += len(record.encoded) + len(record.original) + ENTRY_OVERHEAD
            if size > memory:
                found = None
    return found


def sorted_keymap(db: TreeDir, ext: str, scratch: Path, memory: int) -> ExternalSorter:
    """KEYMAP.jsonl of ``db`` as a sorter of ``(value file name with suffix ext, original
    key)`` records in line order (with :class:`SortedLookup`, the last record of a name
    wins), holding at most ``memory`` bytes of them (the rest spilled under ``scratch``).
    :func:`bounded_keymap` checked every line; a file removed since gives no record.
    """
    sorter = ExternalSorter(scratch, memory)
    try:
        file = db.open_name(KEYMAP_FILE)
        if file is None:
            return sorter
        suffix = ext.encode()
        with file:
            for record in read_keymap_blocks(file.blocks(), db.path(KEYMAP_FILE)):
                try:
                    name = raw_name(record.encoded) + suffix
                except UnicodeEncodeError:
                    continue  # no file name decodes to it, so no value file can match
                sorter.add(name, record.original)
                if sorter.over_budget:
                    sorter.spill()
    except BaseException:
        sorter.close()
        raise
    return sorter
