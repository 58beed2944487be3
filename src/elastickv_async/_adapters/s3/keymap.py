"""A bucket's ``KEYMAP.jsonl`` as the encoder's rename tracker (the reverse of :mod:`.layout`).

:func:`~elastickv_async._core.dump.keymap.read_keymap` applies the reference's per-line rules; on
top of them, like the reference's strict tracker reader, ``encoded`` must be unique and each
record must be something the decoder could have written, so a hand-edited or corrupt KEYMAP
fails closed instead of silently restoring wrong keys. The checks follow the reference's,
widened to the kinds and keys that only this project writes (see :mod:`.layout`).

The encoder holds a bucket's records by encoded path while they fit its part of the memory
share (:class:`BucketKeymap`); past it they are sorted in the walk's order under scratch and
merge-joined with the walk, so a bucket of millions of renamed keys needs no more memory.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

from ..._core.dump.keymap import KIND_SHA_FALLBACK, KeymapRecord, read_keymap, read_keymap_blocks
from ..._core.errors import DumpTreeError
from ..._core.extsort import ENTRY_OVERHEAD, ExternalSorter
from .layout import (
    BUCKET_FILE,
    DIR_MARKER_NAME,
    INCOMPLETE_DIR,
    KEYMAP_FILE,
    KIND_DIR_MARKER,
    KIND_LEAF_DATA,
    KIND_META_RENAME,
    KIND_RESERVED_NAME,
    LEAF_SUFFIX,
    META_SUFFIX,
    ORPHANS_DIR,
    RESERVED_ROOT,
    USER_DATA_SUFFIX,
)

__all__ = ["BucketKeymap", "parse_keymap", "walk_key"]

#: The kinds the S3 decoder writes.
_KINDS: Final = frozenset(
    {KIND_SHA_FALLBACK, KIND_LEAF_DATA, KIND_META_RENAME, KIND_RESERVED_NAME, KIND_DIR_MARKER}
)


def _plain_key(key: bytes) -> bool:
    """A key the decoder keeps at its natural path: non-empty segments, no dots, no NUL."""
    return b"\x00" not in key and all(s not in (b"", b".", b"..") for s in key.split(b"/"))


def _check_encoded(encoded: str) -> None:
    segs = encoded.split("/")
    if any(s in ("", ".", "..") for s in segs):
        raise DumpTreeError(
            f"KEYMAP encoded path {encoded!r} has an empty or dot segment",
            code="ErrInvalidKeymapRecord",
        )
    if segs[-1].encode("utf-8").endswith(META_SUFFIX):
        raise DumpTreeError(
            f"KEYMAP encoded path {encoded!r} is a sidecar name", code="ErrInvalidKeymapRecord"
        )
    first = segs[0].encode("utf-8")
    if (len(segs) == 1 and first in (BUCKET_FILE, KEYMAP_FILE)) or first in (
        ORPHANS_DIR,
        INCOMPLETE_DIR,
    ):
        raise DumpTreeError(
            f"KEYMAP encoded path {encoded!r} names a dump control file",
            code="ErrInvalidKeymapRecord",
        )


def _check_kind(encoded: str, original: bytes, kind: str) -> None:
    raw = encoded.encode("utf-8")
    if kind == KIND_LEAF_DATA:
        ok = raw.endswith(LEAF_SUFFIX) and _plain_key(original)
    elif kind == KIND_META_RENAME:
        ok = original.endswith(META_SUFFIX) and _plain_key(original)
    elif kind == KIND_RESERVED_NAME:
        first = original.split(b"/", 1)[0]
        ok = first in RESERVED_ROOT and raw.split(b"/", 1)[0] == first + USER_DATA_SUFFIX
        ok = ok and _plain_key(original)
    elif kind == KIND_DIR_MARKER:
        ok = raw.rsplit(b"/", 1)[-1] == DIR_MARKER_NAME and original.endswith(b"/")
        ok = ok and _plain_key(original[:-1])
    else:  # sha-fallback: any key at all
        ok = True
    if not ok:
        raise DumpTreeError(
            f"KEYMAP record {encoded!r} of kind {kind!r} does not fit its original key "
            f"{original[:200]!r}",
            code="ErrInvalidKeymapRecord",
        )


def _twice(where: str, encoded: str) -> DumpTreeError:
    return DumpTreeError(f"{where} records {encoded!r} twice", code="ErrInvalidKeymapRecord")


def _check_record(record: KeymapRecord) -> None:
    """Refuse a record the decoder could not have written."""
    encoded, kind = record.encoded, record.kind
    if kind not in _KINDS:
        raise DumpTreeError(
            f"KEYMAP record {encoded!r} has unknown kind {kind!r}",
            code="ErrInvalidKeymapRecord",
        )
    _check_encoded(encoded)
    _check_kind(encoded, record.original, kind)


def parse_keymap(raw: bytes, where: str) -> dict[str, bytes]:
    """Parse and check a bucket's KEYMAP.jsonl (``where`` names it): ``{encoded path: key}``.

    Raises :class:`~elastickv_async._core.errors.DumpTreeError` (``ErrInvalidKeymapRecord``).
    """
    out: dict[str, bytes] = {}
    for record in read_keymap(raw, where):
        if record.encoded in out:
            raise _twice(where, record.encoded)
        _check_record(record)
        out[record.encoded] = record.original
    return out


#: Sort-key tags: a path the walk can meet, and one it never can (a NUL, or no file name
#: encodes to it), which sorts first and is always missing.
_WALKABLE: Final = b"\x01"
_UNWALKABLE: Final = b"\x00"


def walk_key(parts: Sequence[str]) -> bytes:
    """The sort key of a bucket-relative path given as its names: the walk lists each
    directory in byte order of the names and descends depth first, which is the order of
    the names' bytes joined by NUL (no name holds one)."""
    return _WALKABLE + b"\0".join(map(os.fsencode, parts))


def _record_key(encoded: str) -> bytes:
    if "\0" not in encoded:
        try:
            return walk_key(encoded.split("/"))
        except UnicodeEncodeError:
            pass
    return _UNWALKABLE + encoded.encode("utf-8", "surrogatepass")


def _encoded_of(key: bytes) -> str:
    if key[:1] == _WALKABLE:
        return os.fsdecode(key[1:].replace(b"\0", b"/"))
    return key[1:].decode("utf-8", "surrogatepass")


class BucketKeymap:
    """A bucket's checked KEYMAP records, met by the walk one object path at a time.

    While the records fit ``memory`` bytes they are a dict by encoded path; past it, they go
    to an :class:`~elastickv_async._core.extsort.ExternalSorter` under ``scratch`` and
    :meth:`original` must be called in walk order (:func:`walk_key`). Either way each record
    must name an object the walk met (:meth:`missing`) and no path may be recorded twice
    (refused when the file is read, or, once sorted, when the join reaches it). Blocking:
    use it from a worker thread; :meth:`close` removes the spilled runs.
    """

    def __init__(self, where: str, scratch: Path, memory: int) -> None:
        self._where = where
        self._scratch = scratch
        self._memory = max(1, memory)
        self._held: dict[str, bytes] = {}
        self._sorter: ExternalSorter | None = None
        self._sorted: Iterator[tuple[bytes, bytes]] | None = None
        #: The sorted record the join looks at next.
        self._next: tuple[bytes, bytes] | None = None
        #: The smallest encoded path of the sorted records the walk passed without meeting.
        self._missed: str | None = None
        #: Whether the bucket has a tracker with records (they may all be met by now).
        self.present = False

    @property
    def spills(self) -> int:
        """Runs the sorted records were spilled in (0 while they are held by path)."""
        return 0 if self._sorter is None else self._sorter.spills

    def load(self, blocks: Iterable[bytes]) -> None:
        """Read and check every record of the file given in ``blocks``."""
        size = 0
        for record in read_keymap_blocks(blocks, self._where):
            self.present = True
            encoded = record.encoded
            if self._sorter is None:
                if encoded in self._held:
                    raise _twice(self._where, encoded)
                _check_record(record)
                self._held[encoded] = record.original
                size += len(encoded) + len(record.original) + ENTRY_OVERHEAD
                if size > self._memory:
                    self._sort_held()
            else:
                _check_record(record)
                self._sorter.add(_record_key(encoded), record.original)
                if self._sorter.over_budget:
                    self._sorter.spill()

    def _sort_held(self) -> None:
        sorter = self._sorter = ExternalSorter(self._scratch, self._memory)
        held, self._held = self._held, {}
        sorter.add_many([(_record_key(encoded), original) for encoded, original in held.items()])
        sorter.spill()

    def original(self, parts: Sequence[str], rel: str) -> bytes | None:
        """The original key of the object at ``rel`` (names ``parts``) if a record renames it."""
        if self._sorter is None:
            return self._held.pop(rel, None) if self._held else None
        return self._join(walk_key(parts))

    def _join(self, key: bytes) -> bytes | None:
        while (record := self._peek()) is not None and record[0] < key:
            self._miss(self._take()[0])
        if record is None or record[0] != key:
            return None
        return self._take()[1]

    def _peek(self) -> tuple[bytes, bytes] | None:
        """The next sorted record, left in place (``None`` after the last)."""
        if self._next is None:
            if self._sorted is None:
                assert self._sorter is not None
                self._sorted = self._sorter.merged()
            self._next = next(self._sorted, None)
        return self._next

    def _take(self) -> tuple[bytes, bytes]:
        """Consume the record :meth:`_peek` gave, refused if the next records its path too."""
        record = self._next
        assert record is not None
        self._next = None
        following = self._peek()
        if following is not None and following[0] == record[0]:
            raise _twice(self._where, _encoded_of(record[0]))
        return record

    def _miss(self, key: bytes) -> None:
        encoded = _encoded_of(key)
        if self._missed is None or encoded < self._missed:
            self._missed = encoded

    def missing(self) -> str | None:
        """After the walk: the first encoded path (in path order) no object was met at."""
        if self._sorter is None:
            return min(self._held) if self._held else None
        while self._peek() is not None:
            self._miss(self._take()[0])
        return self._missed

    def close(self) -> None:
        """Drop the records and remove any spilled runs."""
        self._held = {}
        if isinstance(self._sorted, Generator):
            self._sorted.close()  # its run files' descriptors
        if self._sorter is not None:
            self._sorter.close()
