"""Sorted runs of ``(key, value)`` pairs on disk, merged a round at a time.

A run is a scratch file of marshal'd chunks, each a sorted list of pairs, every key of a
chunk at or below every key of the next. Runs are merged a round at a time instead of a
pair at a time through a heap: a round takes, from every source's current chunk, the pairs up
to the smallest of the chunks' last keys (no later chunk can hold a smaller one) and sorts
them together, which timsort does by merging the sorted pieces. The encoder's sort
(:mod:`~elastickv_async._core.encode.sortframe`) and the digest ledgers
(:mod:`~elastickv_async._core.digests`) keep their runs this way.

Everything here blocks: call it from worker threads.
"""

from __future__ import annotations

import marshal
import os
import struct
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Final

from .errors import OutputError

__all__ = ["Entry", "merge_rounds", "read_run", "write_run"]

#: A pair of a run: ``(sort key, value)``.
Entry = tuple[bytes, bytes]
_KEY: Final = itemgetter(0)
_LEN: Final = struct.Struct("<Q")
#: marshal's format 2 shares no objects between entries, and writes and reads them fastest.
_MARSHAL_VERSION: Final = 2
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_NEW_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
#: A run's write buffer: a page. Each chunk is written whole past it; it only gathers the
#: chunks' length prefixes, so a larger one would hold memory outside the owner's budget.
_BUFFER: Final = 4 << 10


def merge_rounds(sources: list[Iterator[list[Entry]]]) -> Iterator[list[Entry]]:
    """Merge ``sources``, each yielding sorted chunks of a sorted stream, into sorted lists.

    Every key of a round sorts at or below every key of the next one. Within a round, equal
    keys keep the order of their sources (pieces are taken in source order, sorted stably):
    so where no source holds a key twice, every copy of a key meets in one round, oldest
    source first.
    """
    heads: list[tuple[list[Entry], int, Iterator[list[Entry]]]] = []
    for source in sources:
        chunk = next(source, None)
        while chunk is not None and not chunk:
            chunk = next(source, None)
        if chunk:
            heads.append((chunk, 0, source))
    while len(heads) > 1:
        bound = min(chunk[-1][0] for chunk, _start, _source in heads)
        pieces: list[Entry] = []
        kept = []
        for chunk, start, source in heads:
            cut = bisect_right(chunk, bound, lo=start, key=_KEY)
            pieces += chunk[start:cut] if start or cut < len(chunk) else chunk
            if cut < len(chunk):
                kept.append((chunk, cut, source))
                continue
            following = next(source, None)
            while following is not None and not following:
                following = next(source, None)
            if following:
                kept.append((following, 0, source))
        heads = kept
        # Sorted pieces: timsort merges them.
        pieces.sort(key=_KEY)
        yield pieces
    if heads:
        chunk, start, source = heads[0]
        yield chunk[start:] if start else chunk
        for chunk in source:
            if chunk:
                yield chunk


def write_run(path: Path, chunks: Iterable[list[Entry]]) -> None:
    """Write ``chunks`` as a new run: each a length and its marshal'd entries."""
    fd = os.open(path, _NEW_FLAGS, 0o600)
    with open(fd, "wb", buffering=_BUFFER) as fh:
        for chunk in chunks:
            data = marshal.dumps(chunk, _MARSHAL_VERSION)
            fh.write(_LEN.pack(len(data)))
            fh.write(data)


def read_run(path: Path) -> Iterator[list[Entry]]:
    """The chunks of a run written by :func:`write_run`, one at a time."""
    with open(path, "rb", buffering=0) as fh:
        while head := fh.read(_LEN.size):
            if len(head) != _LEN.size:
                raise OutputError(f"scratch file {str(path)!r} is truncated")
            size = _LEN.unpack(head)[0]
            data = fh.read(size)
            if len(data) != size:
                raise OutputError(f"scratch file {str(path)!r} is truncated")
            try:
                chunk = marshal.loads(data)
            except (EOFError, ValueError, TypeError):
                raise OutputError(f"scratch file {str(path)!r} is damaged") from None
            # Not kept while the chunk is out: a merge holds every source's chunk at once.
            del data
            yield chunk
