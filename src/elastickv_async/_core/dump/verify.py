"""``verify``: check that a dump tree is complete and unchanged.

A tree is good when MANIFEST.json and CHECKSUMS exist, every CHECKSUMS line names a regular
file whose SHA-256 matches, and no regular file is left out of CHECKSUMS. A tree decoded with
``--checksums none`` (its MANIFEST.json says ``checksum_algorithm: none``) has no CHECKSUMS:
only its completeness can be checked (MANIFEST.json present, every entry readable). The tree
is read under the encoder's rules (:mod:`~elastickv_async._core.dump.tree`): a tree holding a
symlink, a FIFO, a device, a socket or a hard-linked file anywhere fails, since ``encode``
would refuse it.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio.to_thread

from ..._adapters.registry import REGISTRY
from ..errors import ChecksumMismatch, ManifestError, UsageError
from ..gojson_read import GoJSONError, get_str, loads
from ..memory import DEFAULT_WALK_MEMORY, ledger_entries
from ..meter import ProgressMeter
from ..report import Report
from .checksums import (
    CHECKSUMS_NAME,
    ChecksumLedger,
    HashTally,
    checksum_lines,
    walk_digest_batches,
    walk_digests,
)
from .manifest import (
    CHECKSUM_ALGORITHM,
    CHECKSUMS_NONE,
    MANIFEST_NAME,
    read_output_roots,
    read_scope,
)
from .roots import TreeRoots, recorded_tree_roots
from .tree import DumpTree, TreeDir, TreeFile

if TYPE_CHECKING:
    from ..progress import ProgressCallback

__all__ = ["check_input_tree", "check_tree", "open_split_tree", "verify_tree"]

_LINE: Final = re.compile(rb"(\\?)([0-9a-f]{64}) [ *](.+)")
#: Differences named in the error; the rest are counted.
_SHOWN: Final = 5


def _unescape(path: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(path):
        if path[i : i + 1] == b"\\" and i + 1 < len(path):
            out += {b"n": b"\n", b"r": b"\r", b"\\": b"\\"}.get(path[i + 1 : i + 2], b"?")
            i += 2
        else:
            out.append(path[i])
            i += 1
    return bytes(out)


class _Unsorted(Exception):
    """CHECKSUMS is not sorted by path (a hand-made listing): it must be sorted first."""


def _lines(
    blocks: Iterable[bytes], number: int = 0, rest: bytes = b""
) -> Iterator[tuple[bytes, bytes]]:
    """``(raw path, digest)`` of every line of CHECKSUMS (read in ``blocks``), in file order;
    ``number`` lines come before, and ``rest`` is the start of the first line."""
    for block in blocks:
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            number += 1
            if line:
                yield _parse_line(line, number)
    if rest:
        yield _parse_line(rest, number + 1)


def _parse_line(line: bytes, number: int) -> tuple[bytes, bytes]:
    match = _LINE.fullmatch(line)
    if match is None:
        raise ChecksumMismatch(
            f"CHECKSUMS line {number} is malformed", code="ErrChecksumsMalformedLine"
        )
    path = _unescape(match[3]) if match[1] else match[3]
    return path, bytes.fromhex(match[2].decode())


def _in_order(
    listed: Iterator[tuple[bytes, bytes]], previous: bytes | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """``listed`` as it is, raising :class:`_Unsorted` at the first path not above the last
    (``previous``, when given, is the path before the first)."""
    for path, digest in listed:
        if previous is not None and path <= previous:
            raise _Unsorted
        previous = path
        yield path, digest


def _agreeing(
    blocks: Iterator[bytes], batches: Iterator[list[tuple[bytes, bytes]]]
) -> tuple[int, int, list[str]]:
    """:func:`_differences` of CHECKSUMS (read in ``blocks``) and the walk's ``batches``,
    each batch's lines first built as :func:`.checksums.checksum_lines` writes them and
    compared whole with the bytes of CHECKSUMS at that place: a tree that matches costs a
    line built per file, and no parsing.

    From the first batch that differs in any way (another spelling, a blank line, a file
    missing or not listed, another digest), the lines are compared one by one by
    :func:`_agreeing_lines`.
    """
    blocks = iter(blocks)
    count = 0
    previous: bytes | None = None
    # CHECKSUMS read so far, compared up to ``at``: a batch moves ``at`` on; only reading
    # more copies what is left of a block.
    data = b""
    at = 0
    for batch in batches:
        expected = checksum_lines(batch)
        if len(data) - at < len(expected):
            pieces = [data[at:]]
            held = len(pieces[0])
            while held < len(expected) and (block := next(blocks, None)) is not None:
                pieces.append(block)
                held += len(block)
            data = b"".join(pieces)
            at = 0
        if data.startswith(expected, at):
            at += len(expected)
            count += len(batch)
            previous = batch[-1][0]
            continue
        actual = itertools.chain(batch, itertools.chain.from_iterable(batches))
        more, differing, shown = _agreeing_lines(
            itertools.chain([data[at:]], blocks), actual, count, previous
        )
        return count + more, differing, shown
    more, differing, shown = _agreeing_lines(
        itertools.chain([data[at:]], blocks), iter(()), count, previous
    )
    return count + more, differing, shown


def _agreeing_lines(
    blocks: Iterator[bytes],
    actual: Iterator[tuple[bytes, bytes]],
    number: int,
    previous: bytes | None,
) -> tuple[int, int, list[str]]:
    """:func:`_differences` of CHECKSUMS (read in ``blocks``, ``number`` lines in, the last
    of them ``previous``'s) and ``actual``, each line first compared whole with the line
    ``actual`` gives.

    At the first line that differs in any way, the lines from there on are parsed and
    compared path by path, as :func:`_differences` does.
    """
    count = 0
    rest = b""
    for block in blocks:
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for index, line in enumerate(lines):
            if not line:
                continue
            item = next(actual, None)
            if item is not None and line == item[1].hex().encode() + b"  " + item[0]:
                count += 1
                previous = item[0]
                continue
            listed = itertools.chain(
                _numbered(lines[index:], number + index), _lines(blocks, number + len(lines), rest)
            )
            found = itertools.chain([item], actual) if item is not None else actual
            more, differing, shown = _differences(_in_order(listed, previous), found)
            return count + more, differing, shown
        number += len(lines)
    # Every complete line agreed: the last line may lack its newline, the walk may go on.
    last = _numbered([rest], number)
    more, differing, shown = _differences(_in_order(last, previous), actual)
    return count + more, differing, shown


def _numbered(lines: list[bytes], start: int) -> Iterator[tuple[bytes, bytes]]:
    """The parsed non-blank ``lines``, the first being line ``start + 1``."""
    for offset, line in enumerate(lines, start + 1):
        if line:
            yield _parse_line(line, offset)


def _count_lines(blocks: Iterable[bytes]) -> int:
    """The lines of CHECKSUMS, blank ones included: the files it lists, for progress."""
    count = 0
    last = b"\n"
    for block in blocks:
        count += block.count(b"\n")
        last = block[-1:]
    return count + (last != b"\n")


def _differences(
    listed: Iterator[tuple[bytes, bytes]], actual: Iterator[tuple[bytes, bytes]]
) -> tuple[int, int, list[str]]:
    """Walk both sorted listings together: ``(paths listed, paths differing, the first five
    differences)``; memory stays flat whatever their length."""
    listed_count = differing = 0
    shown: list[str] = []

    def differ(path: bytes, problem: str) -> None:
        nonlocal differing
        differing += 1
        if len(shown) < _SHOWN:
            shown.append(f"{os.fsdecode(path)}: {problem}")

    left, right = next(listed, None), next(actual, None)
    while left is not None or right is not None:
        if right is None or (left is not None and left[0] < right[0]):
            assert left is not None
            listed_count += 1
            differ(left[0], "missing")
            left = next(listed, None)
        elif left is None or right[0] < left[0]:
            differ(right[0], "not listed")
            right = next(actual, None)
        else:
            listed_count += 1
            if left[1] != right[1]:
                differ(left[0], "sha256 differs")
            left, right = next(listed, None), next(actual, None)
    return listed_count, differing, shown


def _checksum_algorithm(manifest: bytes) -> str:
    try:
        top = loads(manifest)
        if not isinstance(top, dict):
            raise GoJSONError("not a JSON object")
        return get_str(top, "checksum_algorithm")
    except GoJSONError as exc:
        raise ManifestError(f"MANIFEST.json: {exc}", code="ErrInvalidManifest") from None


def _manifest_top(tree: DumpTree) -> dict[str, Any] | None:
    """The tree's parsed MANIFEST.json (``None`` when absent)."""
    with tree.open_root() as root:
        payload = root.read(MANIFEST_NAME)
    if payload is None:
        return None
    try:
        top = loads(payload)
    except GoJSONError as exc:
        raise ManifestError(f"MANIFEST.json: {exc}", code="ErrInvalidManifest") from None
    if not isinstance(top, dict):
        raise ManifestError("MANIFEST.json: not a JSON object", code="ErrInvalidManifest")
    return top


def _tree_scope(tree: DumpTree) -> dict[str, tuple[str, ...]]:
    """The ``--scope`` the tree's MANIFEST.json records (empty: a full backup)."""
    top = _manifest_top(tree)
    try:
        return {} if top is None else read_scope(top)
    except GoJSONError as exc:
        raise ManifestError(f"MANIFEST.json: {exc}", code="ErrInvalidManifest") from None


def open_split_tree(
    root: Path,
    overrides: Mapping[str, str | os.PathLike[str]] | None,
    *,
    known: Sequence[str],
    jobs: int = 8,
) -> DumpTree:
    """The tree at ``root`` with the adapter roots its MANIFEST.json records, as overridden
    by ``overrides`` (see :func:`~.roots.recorded_tree_roots`). A tree without MANIFEST.json
    is read whole (checking it then reports it incomplete). Blocking.
    """
    top = _manifest_top(DumpTree(root)) if root.is_dir() else None
    try:
        recorded = {} if top is None else read_output_roots(top)
    except GoJSONError as exc:
        raise ManifestError(f"MANIFEST.json: {exc}", code="ErrInvalidManifest") from None
    return DumpTree(recorded_tree_roots(root, recorded, overrides, known=known), jobs=jobs)


def _check_redirected(tree: DumpTree, root: TreeDir) -> None:
    """A redirected adapter's subtree must not also be in the main root."""
    for name, place in tree.roots.redirected.items():
        if root.lookup(name) is not None:
            raise ChecksumMismatch(
                f"{tree.root} holds {name}/, but the tree's {name} subtree is in {place}",
                code="ErrChecksumMismatch",
            )


def _count_tree(tree: DumpTree, root: TreeDir) -> int:
    count = _count_files(root)
    for name in tree.roots.redirected:
        subtree = tree.open_dir((name,))
        if subtree is not None:
            with subtree:
                count += _count_files(subtree)
    return count


def _count_files(directory: TreeDir) -> int:
    count = 0
    for entry in directory.entries():
        if not entry.is_dir:
            count += 1
            continue
        sub = directory.subdir(entry.name)
        if sub is not None:
            with sub:
                count += _count_files(sub)
    return count


def _compare(
    tree: DumpTree,
    checksums: TreeFile,
    tally: HashTally,
    known: Iterator[tuple[bytes, bytes]] | None,
    memory: int,
) -> tuple[int, int, list[str]]:
    """Compare the tree with CHECKSUMS: both are walked sorted by path, side by side, so a
    tree of millions of files is checked in flat memory (the walk's in ``memory`` bytes). A
    CHECKSUMS whose lines are not sorted (written by hand) is sorted first through spilled
    runs, its ledger and the walk then sharing ``memory``."""
    checksums.rewind()
    if next(_lines(checksums.blocks()), None) is None:
        return 0, 0, []  # only blank lines: refused before anything is hashed
    checksums.rewind()
    batches = walk_digest_batches(tree, tally, known=known, memory=memory)
    try:
        return _agreeing(checksums.blocks(), batches)
    except _Unsorted:
        pass
    finally:
        batches.close()
    tally.files = tally.bytes = 0
    # Loaded here: a CHECKSUMS written by this tool (sorted) never needs it.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="elastickv-verify-") as spill:
        ledger = ChecksumLedger(Path(spill), limit=ledger_entries(memory // 2))
        try:
            checksums.rewind()
            ledger.record_many(
                (os.fsdecode(path), digest) for path, digest in _lines(checksums.blocks())
            )
            walk = walk_digests(tree, tally, memory=memory // 2)
            try:
                return _differences(ledger.items(keep_checksums=True), walk)
            finally:
                walk.close()
        finally:
            ledger.close()


class ReadDigests(Protocol):
    """The digests of the tree files an encoder read, by raw path."""

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(raw path, digest)``, sorted bytewise by path, one per path."""


def check_input_tree(
    root: Path | TreeRoots, read: ReadDigests | None, memory: int = DEFAULT_WALK_MEMORY
) -> tuple[int, str]:
    """:func:`check_tree` of an encoder's input at ``root``: a missing CHECKSUMS is allowed
    (the caller warns), and the digests ``read`` took of the files the encoders read stand
    for those files; the walk buffers at most ``memory`` bytes of listings (blocking)."""
    known = read.items() if read is not None else None
    return check_tree(DumpTree(root), missing_ok=True, known=known, memory=memory)


def check_tree(
    tree: DumpTree,
    tally: HashTally | None = None,
    *,
    missing_ok: bool = False,
    known: Iterator[tuple[bytes, bytes]] | None = None,
    memory: int = DEFAULT_WALK_MEMORY,
) -> tuple[int, str]:
    """Check the tree at ``tree.root``; return ``(files, what was checked)``.

    What was checked is ``"sha256"`` (every file against CHECKSUMS), ``"none"`` (a tree
    decoded without checksums: completeness only) or, with ``missing_ok``, ``"missing"`` (a
    tree whose MANIFEST.json promises a CHECKSUMS file that is absent).

    Raises :class:`~elastickv_async._core.errors.ChecksumMismatch` naming the
    files that differ from CHECKSUMS (at most five). ``tally`` follows the hashing; ``known``
    gives the digests of files the caller has read already (see :func:`.checksums.walk_digests`).
    The walk buffers at most ``memory`` bytes of listings. Blocking: call from a worker thread.
    """
    if not tree.root.is_dir():
        raise UsageError(f"{tree.root} is not a directory")
    with tree.open_root() as root:
        manifest = root.lookup(MANIFEST_NAME)
        if manifest is None or manifest.is_dir:
            raise ChecksumMismatch(
                f"{tree.root} has no {MANIFEST_NAME}: the dump is incomplete",
                code="ErrChecksumsMissing",
            )
        payload = root.read(MANIFEST_NAME)
        _check_redirected(tree, root)
        if payload is not None and _checksum_algorithm(payload) == CHECKSUMS_NONE:
            return _count_tree(tree, root), CHECKSUMS_NONE
        checksums = root.lookup(CHECKSUMS_NAME)
        if checksums is None and missing_ok:
            return _count_tree(tree, root), "missing"
        if checksums is None or checksums.is_dir:
            raise ChecksumMismatch(
                f"{tree.root} has no {CHECKSUMS_NAME}", code="ErrChecksumsMissing"
            )
        tally = tally if tally is not None else HashTally()
        with root.open_file(checksums) as file:
            tally.total = _count_lines(file.blocks())
            # CHECKSUMS lists every file but itself, and the walk skips it too.
            count, differing, shown = (
                _compare(tree, file, tally, known, memory) if tally.total else (0, 0, [])
            )
    if not count:
        raise ChecksumMismatch("CHECKSUMS lists no file", code="ErrChecksumsEmpty")
    if differing:
        more = f"; and {differing - _SHOWN} more" if differing > _SHOWN else ""
        raise ChecksumMismatch(
            f"{differing} file(s) differ from CHECKSUMS: {'; '.join(shown)}{more}",
            code="ErrChecksumMismatch",
        )
    return count, CHECKSUM_ALGORITHM


async def verify_tree(
    root: str | os.PathLike[str],
    report: Report | None = None,
    *,
    progress: ProgressCallback | None = None,
    tree_roots: Mapping[str, str | os.PathLike[str]] | None = None,
) -> Report:
    """Verify the dump tree at ``root``; raise :class:`ChecksumMismatch` when it is not intact,
    :class:`~elastickv_async._core.errors.UnsafeDumpEntry` when it holds an entry that
    ``encode`` would refuse.

    ``progress`` receives :class:`~elastickv_async.Progress` samples of the one stage
    ``verify`` (files hashed, out of those CHECKSUMS lists). The report's
    ``snapshot["checksums"]`` says what was checked: ``"sha256"`` (every file against
    CHECKSUMS) or ``"none"`` (a tree decoded without checksums: completeness only);
    ``snapshot["scope"]``, present only for a tree decoded with ``--scope``, its scope.

    A tree decoded with ``output_roots`` is checked in every root its MANIFEST.json records;
    ``tree_roots`` (adapter to directory) overrides a recorded root, e.g. one mounted
    elsewhere now. A root that is not an existing directory raises
    :class:`~elastickv_async._core.errors.UsageError`.
    """
    report = report if report is not None else Report()
    tree = await anyio.to_thread.run_sync(
        lambda: open_split_tree(Path(root), tree_roots, known=REGISTRY.names())
    )
    tally = HashTally()
    meter = ProgressMeter(progress)
    async with meter.running():
        meter.stage("verify", unit="files", done=lambda: tally.files, total=lambda: tally.total)
        files, checked = await tree.run(check_tree, tree, tally)
    report.count("verify.files", files)
    report.count("verify.bytes", tally.bytes)
    report.snapshot["checksums"] = checked
    scope = await tree.run(_tree_scope, tree)
    if scope:
        report.snapshot["scope"] = {name: list(names) for name, names in scope.items()}
    return report
