"""The encoder's per-directory inputs in bounded memory, in byte order of the file names.

A type directory may hold millions of value files and its TTL sidecar as many lines: both
are sorted through :class:`~elastickv_async._core.extsort.ExternalSorter` runs under the
run's scratch directory instead of being held whole, and the TTLs are then merge-joined with
the names (:class:`SortedLookup`) as the slices are made. Everything here blocks: call it
from a worker thread.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Final

from ..._core.dump.tree import TreeDir
from ..._core.extsort import ExternalSorter
from . import layout
from .values import shifted_ttl

__all__ = ["Listed", "SortedLookup", "sorted_listing", "sorted_ttls"]

#: Memory for buffered names or TTL lines before a sorted run is spilled: some 130k names,
#: so that a directory of 100k files is sorted in memory.
SORT_BUDGET: Final = 24 << 20

#: The decoder's own sidecar line. Only the characters of an encoded name, so the key needs
#: no JSON unescaping; a number without a leading zero and at most 20 digits.
_TTL_LINE: Final = re.compile(
    rb'\{"key":"([A-Za-z0-9._%-]+)","expire_at_ms":(0|[1-9][0-9]{0,19})\}'
)
_U64_MAX: Final = (1 << 64) - 1
_REGULAR: Final = b""
_IRREGULAR: Final = b"!"

#: ``(raw name, name, whether the listing saw a regular file)``.
Listed = tuple[bytes, str, bool]


def sorted_listing(directory: TreeDir, scratch: Path) -> Generator[Listed, None, None]:
    """Every entry of ``directory`` in byte order of the names, with whether its ``d_type``
    is a regular file (no ``stat`` call: entries are checked where they are read).

    A large directory is sorted through runs under ``scratch``, removed when the iterator is
    exhausted or closed.
    """
    sorter = ExternalSorter(scratch, SORT_BUDGET)
    try:
        with os.scandir(directory.fd) as entries:
            for entry in entries:
                flag = _REGULAR if entry.is_file(follow_symlinks=False) else _IRREGULAR
                sorter.add(os.fsencode(entry.name), flag)
                if sorter.over_budget:
                    sorter.spill()
        for raw, flag in sorter.merged():
            yield raw, os.fsdecode(raw), flag == _REGULAR
    finally:
        sorter.close()


class SortedLookup:
    """Values by key from records sorted by key (of equal keys the last one counts), looked
    up in ascending key order: a merge-join, holding one record at a time."""

    def __init__(self, records: Iterator[tuple[bytes, bytes]]) -> None:
        self._records = records
        self._head = next(records, None)

    def take(self, key: bytes) -> bytes | None:
        """The value of ``key``, if any; every key asked later must be greater."""
        head, records = self._head, self._records
        while head is not None and head[0] < key:
            head = next(records, None)
        found = None
        while head is not None and head[0] == key:
            found = head[1]
            head = next(records, None)
        self._head = head
        return found


def sorted_ttls(
    db: TreeDir, name: str, ext: str, shift_ms: int, scratch: Path
) -> ExternalSorter | None:
    """The TTL sidecar ``name`` of ``db`` as a sorter of ``(value file name, shifted TTL as
    decimal text)`` records in line order (the last line of a name wins, as in
    :func:`~.layout.parse_ttl_sidecar`); ``None`` when there is no sidecar.

    The file is read whole before anything is encoded, so a bad line fails the run before
    any value file is read, as it always has. Lines the decoder writes are matched in
    blocks; a sidecar with any other line (written by hand) is parsed whole by
    :func:`~.layout.parse_ttl_sidecar`, which also gives its errors.
    """
    file = db.open_name(name)
    if file is None:
        return None
    sorter = ExternalSorter(scratch, SORT_BUDGET)
    try:
        with file:
            canonical = _add_canonical(sorter, file.blocks(), ext, shift_ms)
        if not canonical:
            sorter.close()
            sorter = ExternalSorter(scratch, SORT_BUDGET)
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
        for line in lines:
            found = match(line)
            if found is None:
                return False
            ttl = int(found[2])
            if ttl > _U64_MAX:
                return False
            sorter.add(found[1] + suffix, b"%d" % (shifted_ttl(ttl, shift_ms) or 0))
        if sorter.over_budget:
            sorter.spill()
    if rest:
        found = match(rest)
        if found is None or int(found[2]) > _U64_MAX:
            return False
        sorter.add(found[1] + suffix, b"%d" % (shifted_ttl(int(found[2]), shift_ms) or 0))
    return True
