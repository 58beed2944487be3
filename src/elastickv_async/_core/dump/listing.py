"""Directory listings in byte order of the names, in bounded memory.

A directory of an input tree may hold millions of files: its names are listed with their
``d_type`` (no ``stat`` call per name: each entry is checked where it is read, see
:meth:`~elastickv_async._core.dump.tree.TreeDir.read_listed`) and sorted in memory while
they fit the caller's bytes, through :class:`~elastickv_async._core.extsort.ExternalSorter`
runs beyond that. Blocking: call from a worker thread.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Final

from ..extsort import ExternalSorter
from .tree import TreeDir

__all__ = ["Listed", "name_of", "raw_name", "sorted_listing"]

_REGULAR: Final = b""
_IRREGULAR: Final = b"!"

#: A run of consecutive names of a listing, and those of them whose ``d_type`` is not a
#: regular file.
Listed = tuple[list[str], frozenset[str]]
#: Rough bytes a listed name holds in memory beside its characters (the str, its list slot).
_NAME_OVERHEAD: Final = 80
#: Directory entries taken from ``scandir`` at once.
_LIST_BATCH: Final = 4096
#: The file names' encoding, as ``os.fsencode`` applies it.
_FS_ENCODING: Final = sys.getfilesystemencoding()
_FS_ERRORS: Final = sys.getfilesystemencodeerrors()


def raw_name(name: str) -> bytes:
    """The bytes of the file name ``name`` (``os.fsencode`` without its type checks)."""
    return name.encode(_FS_ENCODING, _FS_ERRORS)


def name_of(raw: bytes) -> str:
    """The file name whose bytes are ``raw`` (``os.fsdecode`` without its type checks)."""
    return raw.decode(_FS_ENCODING, _FS_ERRORS)


def sorted_listing(
    directory: TreeDir, scratch: Path, chunk: int, memory: int
) -> Generator[Listed, None, None]:
    """Every entry of ``directory`` in byte order of the names, ``chunk`` names at a time,
    with those whose ``d_type`` is not a regular file (no ``stat`` call: entries are checked
    where they are read).

    A directory whose names fit in ``memory`` bytes is sorted in memory; a larger one
    through runs under ``scratch``, removed when the iterator is exhausted or closed.
    """
    names: list[str] = []
    irregular: set[str] = set()
    size = 0
    sorter: ExternalSorter | None = None
    try:
        with os.scandir(directory.fd) as listing:
            while entries := list(itertools.islice(listing, _LIST_BATCH)):
                part = [entry.name for entry in entries]
                names += part
                irregular.update(e.name for e in entries if not e.is_file(follow_symlinks=False))
                size += sum(map(len, part)) + _NAME_OVERHEAD * len(part)
                if size >= memory:
                    sorter = sorter or ExternalSorter(scratch, memory)
                    _spill_names(sorter, names, irregular)
                    names, irregular, size = [], set(), 0
        if sorter is None:
            # Code point order is the UTF-8 byte order, except for the surrogates that stand
            # for undecodable bytes: only ASCII names are sorted as they are.
            names.sort(key=None if "".join(names).isascii() else raw_name)
            for start in range(0, len(names), chunk):
                part = names[start : start + chunk]
                yield part, frozenset(irregular.intersection(part)) if irregular else _NONE
            return
        _spill_names(sorter, names, irregular)
        merged = sorter.merged()
        while batch := list(itertools.islice(merged, chunk)):
            part = [os.fsdecode(raw) for raw, _flag in batch]
            odd = frozenset(n for n, (_raw, flag) in zip(part, batch, strict=True) if flag)
            yield part, odd
    finally:
        if sorter is not None:
            sorter.close()


_NONE: Final[frozenset[str]] = frozenset()


def _spill_names(sorter: ExternalSorter, names: list[str], irregular: set[str]) -> None:
    sorter.add_many([(raw_name(n), _IRREGULAR if n in irregular else _REGULAR) for n in names])
    sorter.spill()
