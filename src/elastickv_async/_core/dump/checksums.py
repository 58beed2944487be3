"""CHECKSUMS: a ``sha256sum``-format listing of every regular file in a dump tree.

``sha256sum -c CHECKSUMS`` run in the root verifies the tree. Paths are sorted bytewise by
their slash-separated relative path; names containing a newline, carriage return or backslash
use GNU's escaped form (a leading ``\\`` on the line).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from binascii import hexlify
from bisect import bisect_left
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

import msgspec

from ..digests import DigestLedger
from ..errors import DumpTreeError
from ..extsort import ENTRY_OVERHEAD, ExternalSorter
from ..memory import DEFAULT_WALK_MEMORY
from .tree import DumpTree, TreeDir

if TYPE_CHECKING:
    import tempfile

__all__ = [
    "CHECKSUMS_NAME",
    "ChecksumLedger",
    "checksum_line",
    "checksum_lines",
    "compute_checksums",
    "hash_tree",
    "sha256_file",
    "walk_digest_batches",
    "walk_digests",
]

CHECKSUMS_NAME: Final = "CHECKSUMS"
_CHECKSUMS_RAW: Final = CHECKSUMS_NAME.encode()
_NAME: Final = itemgetter(0)
_DIGEST: Final = itemgetter(1)
_BLOCK: Final = 1 << 20
#: Names encoded at once while a directory is listed.
_CHUNK: Final = 4096
#: What the listing shows an entry as: a directory, a regular file, anything else.
_DIR: Final = b"/"
_PLAIN: Final = b""
_ODD: Final = b"!"


def sha256_file(path: str | bytes | os.PathLike[str], *, dir_fd: int | None = None) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks without following a final symlink."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    with open(fd, "rb", buffering=0) as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def joined_blocks(lines: Iterable[bytes], block_size: int) -> Iterator[bytes]:
    """``lines`` joined into blocks of about ``block_size`` bytes (whole lines each)."""
    block: list[bytes] = []
    size = 0
    for line in lines:
        block.append(line)
        size += len(line)
        if size >= block_size:
            yield b"".join(block)
            block, size = [], 0
    if block:
        yield b"".join(block)


def checksum_line(hexdigest: str, relpath: bytes) -> bytes:
    """One CHECKSUMS line for ``relpath`` (raw bytes of the slash path), GNU-escaped if needed."""
    if b"\n" in relpath or b"\r" in relpath or b"\\" in relpath:
        escaped = relpath.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
        return b"\\" + hexdigest.encode() + b"  " + escaped + b"\n"
    return hexdigest.encode() + b"  " + relpath + b"\n"


def checksum_lines(entries: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The CHECKSUMS lines of ``(raw path, digest)`` entries, joined (each as
    :func:`checksum_line` gives it)."""
    paths = list(map(_NAME, entries))
    joined = b"\0".join(paths)
    if b"\n" in joined or b"\r" in joined or b"\\" in joined:
        return b"".join([checksum_line(digest.hex(), rel) for rel, digest in entries])
    return _plain_lines(paths, map(_DIGEST, entries))


def _plain_lines(paths: list[bytes], digests: Iterable[bytes]) -> bytes:
    """The CHECKSUMS lines of files whose ``paths`` need no escaping, with their
    ``digests``, joined: built by one format of the whole run, in C."""
    flat: list[bytes] = [b""] * (2 * len(paths))
    flat[0::2] = map(hexlify, digests)
    flat[1::2] = paths
    return (b"%s  %s\n" * len(paths)) % tuple(flat)


class HashTally(msgspec.Struct):
    """What :func:`hash_tree` has read so far (read by a progress display from another thread)."""

    files: int = 0
    bytes: int = 0
    #: Files expected, when the caller knows.
    total: int | None = None


class _Known:
    """Digests already taken of some files, sorted by raw path, consumed in that order.

    They are pulled from the source a batch's worth at a time and held as two columns, so
    a batch of paths that are exactly the next known ones (a directory whose files the
    caller read, the common case) is matched by one list comparison.
    """

    def __init__(self, items: Iterator[tuple[bytes, bytes]]) -> None:
        self._items = items
        self._paths: list[bytes] = []
        self._digests: list[bytes] = []
        #: Where the paths not yet passed start.
        self._at = 0

    def _pull(self, count: int) -> bool:
        """Hold at least ``count`` paths not yet passed, if the source has them; whether
        any was added."""
        held = len(self._paths) - self._at
        if held >= count:
            return False
        pulled = list(itertools.islice(self._items, count - held))
        if not pulled:
            return False
        at = self._at
        self._paths = [*self._paths[at:], *map(_NAME, pulled)]
        self._digests = [*self._digests[at:], *map(_DIGEST, pulled)]
        self._at = 0
        return True

    def take(self, rel: bytes) -> bytes | None:
        """The digest of ``rel`` if it is known (paths must be asked in ascending order)."""
        return self.take_many([rel])[0]

    def take_many(self, rels: list[bytes]) -> Sequence[bytes | None]:
        """:meth:`take` of each of ``rels`` (ascending, and above any path asked before)."""
        count = len(rels)
        self._pull(count)
        at = self._at
        if self._paths[at : at + count] == rels:
            self._at = at + count
            return self._digests[at : at + count]
        found: list[bytes | None] = []
        for rel in rels:
            # Known paths below ``rel`` belong to no file the walk lists: passed over.
            at = bisect_left(self._paths, rel, self._at)
            while at == len(self._paths):
                self._at = at
                if not self._pull(count):
                    break
                at = bisect_left(self._paths, rel, self._at)
            if at < len(self._paths) and self._paths[at] == rel:
                found.append(self._digests[at])
                at += 1
            else:
                found.append(None)
            self._at = at
        return found


#: A listing's entries at once: ``(raw names, flags)``, sorted by name.
Listed = tuple[Sequence[bytes], Sequence[bytes]]


class _SpillRoot:
    """A private temporary directory for the walk's spilled listings, made when a listing
    first spills (most trees' listings fit the walk's memory: they make none)."""

    def __init__(self) -> None:
        self._made: tempfile.TemporaryDirectory[str] | None = None

    def path(self, name: str) -> Path:
        """``name`` inside the directory (made now if it is not yet)."""
        if self._made is None:
            # Loaded here: a walk that never spills (and a decode, which never walks) does not.
            import tempfile

            self._made = tempfile.TemporaryDirectory(prefix="elastickv-walk-")
        return Path(self._made.name, name)

    def cleanup(self) -> None:
        """Remove the directory, if it was made."""
        if self._made is not None:
            self._made.cleanup()


def _path_order(
    directory: TreeDir, extra_dirs: frozenset[str], spill: Callable[[], Path], memory: int
) -> Iterator[Listed]:
    """The entries of ``directory`` and ``extra_dirs`` as raw names, a directory's with a
    trailing slash, sorted (the byte order of their full paths), :data:`_BATCH` at a time.
    Each comes with :data:`_DIR` (a directory), :data:`_PLAIN` (a regular file) or
    :data:`_ODD` (anything else: it gets the full check where it is reached). A listed
    name in ``extra_dirs`` is left out.

    A listing larger than ``memory`` bytes is sorted through runs under ``spill()``.
    """
    # The names are sorted alone (a directory holds each once); the flags of the few
    # entries that are not regular files wait in ``flagged``.
    names: list[bytes] = [os.fsencode(name) + b"/" for name in extra_dirs]
    flagged: dict[bytes, bytes] = dict.fromkeys(names, _DIR)
    size = 0
    sorter: ExternalSorter | None = None
    try:
        with os.scandir(directory.fd) as listing:
            while chunk := list(itertools.islice(listing, _CHUNK)):
                if extra_dirs:
                    chunk = [entry for entry in chunk if entry.name not in extra_dirs]
                if not chunk:
                    continue
                kinds = [
                    _PLAIN
                    if entry.is_file(follow_symlinks=False)
                    else _DIR
                    if entry.is_dir(follow_symlinks=False)
                    else _ODD
                    for entry in chunk
                ]
                # One encode for the chunk (no name holds a NUL byte), not one call per name.
                keys = os.fsencode("\0".join(entry.name for entry in chunk)).split(b"\0")
                if _DIR in kinds or _ODD in kinds:
                    keys = [k + b"/" if f == _DIR else k for k, f in zip(keys, kinds, strict=True)]
                    flagged.update((k, f) for k, f in zip(keys, kinds, strict=True) if f != _PLAIN)
                names += keys
                size += sum(map(len, keys)) + ENTRY_OVERHEAD * len(keys)
                if size >= memory:
                    sorter = sorter or ExternalSorter(spill(), memory)
                    sorter.add_many(_flagged(names, flagged))
                    sorter.spill()
                    names, flagged, size = [], {}, 0
        if sorter is None:
            names.sort()
            for start in range(0, len(names), _BATCH):
                keys = names[start : start + _BATCH]
                flags = (
                    [flagged.get(key, _PLAIN) for key in keys] if flagged else [_PLAIN] * len(keys)
                )
                yield keys, flags
            return
        sorter.add_many(_flagged(names, flagged))
        names, flagged = [], {}
        merged = sorter.merged()
        while pairs := list(itertools.islice(merged, _BATCH)):
            yield _unzipped(pairs)
    finally:
        if sorter is not None:
            sorter.close()


def _flagged(names: list[bytes], flagged: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(name, flagged.get(name, _PLAIN)) for name in names]


def _unzipped(entries: list[tuple[bytes, bytes]]) -> Listed:
    keys, flags = zip(*entries, strict=True)
    return keys, flags


#: Files yielded at once by :func:`_walk`.
_BATCH: Final = 4096


def _walk(
    tree: DumpTree,
    directory: TreeDir,
    tally: HashTally,
    known: _Known | None,
    spill: _SpillRoot,
    spills: Iterator[int],
    memory: int,
    pending: list[tuple[bytes, bytes]],
    redirected: frozenset[str] = frozenset(),
) -> Iterator[list[tuple[bytes, bytes]]]:
    """The files of ``directory`` and below in path order, gathered in ``pending`` and
    yielded :data:`_BATCH` at a time (the caller yields what is left at the end): a file
    costs one level of generators however deep it is, and a tree of many small directories
    gives as few batches as one directory. A directory's listing past ``memory`` bytes is
    sorted under ``spill``, in a directory numbered by ``spills``."""
    # Paths stay raw bytes: a known file costs no name decoding.
    prefix = os.fsencode(directory.rel) + b"/" if directory.rel else b""
    spill_dir = partial(spill.path, str(next(spills)))
    for keys, flags in _path_order(directory, redirected, spill_dir, memory):
        if _DIR in flags or (not prefix and _CHECKSUMS_RAW in keys):
            for key, flag in zip(keys, flags, strict=True):
                if flag == _DIR:
                    name = os.fsdecode(key[:-1])
                    # A redirected subtree is read from the adapter's own root.
                    sub = tree.open_dir((name,)) if name in redirected else directory.subdir(name)
                    if sub is not None:
                        with sub:
                            yield from _walk(
                                tree, sub, tally, known, spill, spills, memory, pending
                            )
                elif prefix + key != _CHECKSUMS_RAW:
                    pending += _files(directory, prefix, (key,), (flag,), known, tally)
        else:
            # A run of files only: their known digests are taken together.
            pending += _files(directory, prefix, keys, flags, known, tally)
        if len(pending) >= _BATCH:
            yield _taken(pending, tally)


def _taken(pending: list[tuple[bytes, bytes]], tally: HashTally) -> list[tuple[bytes, bytes]]:
    """What ``pending`` holds, counted; ``pending`` is emptied (it is shared by the walk's
    levels)."""
    batch = pending[:]
    pending.clear()
    tally.files += len(batch)
    return batch


def _files(
    directory: TreeDir,
    prefix: bytes,
    keys: Sequence[bytes],
    flags: Sequence[bytes],
    known: _Known | None,
    tally: HashTally,
) -> list[tuple[bytes, bytes]]:
    """``(raw path, digest)`` of the files ``keys`` of ``directory`` (listed with ``flags``):
    the known digest of a file the listing shows as regular, else the file hashed now."""
    raws = list(map(prefix.__add__, keys)) if prefix else list(keys)
    digests = known.take_many(raws) if known is not None else [None] * len(raws)
    if None not in digests and _ODD not in flags:
        return list(zip(raws, cast(list[bytes], digests), strict=True))
    out = []
    for raw, key, flag, digest in zip(raws, keys, flags, digests, strict=True):
        if digest is None or flag == _ODD:
            digest = _hash_unread(directory, os.fsdecode(key), tally)
            if digest is None:
                continue  # removed since the listing
        out.append((raw, digest))
    return out


def _hash_unread(directory: TreeDir, name: str, tally: HashTally) -> bytes | None:
    """The digest of a file the caller has not read, read now under the tree's rules."""
    rel = directory.path(name)
    entry = directory.lookup(name)
    if entry is None:
        return None
    if entry.is_dir:  # replaced by a directory since the listing
        raise DumpTreeError(
            f"{rel!r} changed while the tree was read", code="ErrDumpTreeChanged", path=rel
        )
    hashed = hashlib.sha256()
    with directory.open_file(entry) as file:
        for block in file.blocks():
            hashed.update(block)
            tally.bytes += len(block)
    return hashed.digest()


def walk_digests(
    tree: DumpTree,
    tally: HashTally | None = None,
    *,
    known: Iterator[tuple[bytes, bytes]] | None = None,
    memory: int = DEFAULT_WALK_MEMORY,
) -> Generator[tuple[bytes, bytes], None, None]:
    """``(raw slash path, SHA-256)`` of every regular file of ``tree`` but CHECKSUMS, sorted
    bytewise by path.

    The tree is read under its rules: a symlink, special file or hard link anywhere raises
    :class:`~elastickv_async._core.errors.UnsafeDumpEntry`. A redirected adapter's subtree
    is read from its own root only (see :mod:`.roots`). ``known`` gives, sorted the same way,
    the digests of files the caller has read already (see :func:`~.tree.recording_reads`):
    such a file, if the listing still shows it as a regular file, is not read again.
    Blocking: iterate in a worker thread. ``tally`` counts the files and bytes as it goes;
    a directory's listing is sorted in ``memory`` bytes (beyond them, through spilled runs).
    """
    batches = walk_digest_batches(tree, tally, known=known, memory=memory)
    try:
        for batch in batches:
            yield from batch
    finally:
        batches.close()


def walk_digest_batches(
    tree: DumpTree,
    tally: HashTally | None = None,
    *,
    known: Iterator[tuple[bytes, bytes]] | None = None,
    memory: int = DEFAULT_WALK_MEMORY,
) -> Generator[list[tuple[bytes, bytes]], None, None]:
    """:func:`walk_digests` in lists of consecutive files (none empty)."""
    tally = tally if tally is not None else HashTally()
    spill = _SpillRoot()
    pending: list[tuple[bytes, bytes]] = []
    try:
        with tree.open_root() as root:
            yield from _walk(
                tree,
                root,
                tally,
                _Known(known) if known is not None else None,
                spill,
                itertools.count(),
                memory,
                pending,
                frozenset(tree.roots.redirected),
            )
        if pending:
            yield _taken(pending, tally)
    finally:
        spill.cleanup()


def hash_tree(tree: DumpTree, tally: HashTally | None = None) -> dict[bytes, str]:
    """Hex SHA-256 of every regular file of ``tree`` except CHECKSUMS, by raw slash path
    (in memory: :func:`walk_digests` streams them)."""
    return {rel: digest.hex() for rel, digest in walk_digests(tree, tally)}


def compute_checksums(root: Path) -> bytes:
    """The CHECKSUMS content for the tree at ``root`` as it is now (see :func:`hash_tree`)."""
    digests = hash_tree(DumpTree(root))
    return b"".join(checksum_line(digests[rel], rel) for rel in sorted(digests))


class ChecksumLedger(DigestLedger):
    """The SHA-256 of every file a run wrote, by relative path, in bounded memory: a
    :class:`~elastickv_async._core.digests.DigestLedger` (the last digest of a path wins,
    past ``limit`` digests they are spilled as sorted runs under ``spill_dir``, recorded from
    the writer's worker threads) that gives its digests back as ``CHECKSUMS`` content.
    """

    def __init__(self, spill_dir: Path | None = None, *, limit: int = 100_000) -> None:
        super().__init__(spill_dir, limit=limit)

    def listing(self, extra: Mapping[str, bytes], *, block_size: int) -> Iterator[bytes]:
        """CHECKSUMS content for every recorded path plus ``extra``, in blocks of about
        ``block_size`` bytes (whole lines each).

        Lines are sorted bytewise by path. Blocking: iterate in a worker thread.
        """
        return joined_blocks(self._lines(extra), block_size)

    def _lines(self, extra: Mapping[str, bytes]) -> Iterator[bytes]:
        for chunk in self._listed_chunks(extra, keep_checksums=False):
            yield checksum_lines(chunk)

    def items(
        self, extra: Mapping[str, bytes] | None = None, *, keep_checksums: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Every recorded ``(raw path, digest)`` plus ``extra`` (recorded last), sorted
        bytewise by path; CHECKSUMS itself is left out unless ``keep_checksums``. Consumes
        what is in memory: call once, at the end. Blocking: iterate in a worker thread.
        """
        return itertools.chain.from_iterable(
            self._listed_chunks(extra, keep_checksums=keep_checksums)
        )

    def _listed_chunks(
        self, extra: Mapping[str, bytes] | None, *, keep_checksums: bool
    ) -> Iterator[list[tuple[bytes, bytes]]]:
        if extra:
            self.record_many(extra.items())
        for chunk in self.chunks():
            if not keep_checksums and chunk[0][0] <= _CHECKSUMS_RAW <= chunk[-1][0]:
                chunk = [entry for entry in chunk if entry[0] != _CHECKSUMS_RAW]
                if not chunk:
                    continue
            yield chunk
