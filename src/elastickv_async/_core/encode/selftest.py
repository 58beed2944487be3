"""``--self-test``: decode the produced .fsm into scratch and compare it with the input tree.

The comparison follows the reference (REFERENCE_NOTES §6.2 step 4): for every enabled
adapter subdirectory, regular files only, a path is reported ``(missing in input)``,
``(bytes differ)`` or ``(missing in scratch)``; each subdirectory's lines are sorted, and the
list stops at 64 lines plus a truncation note. Directories are walked one level at a time and
files are compared in bounded blocks, so memory does not grow with file sizes; only the 64
smallest lines are kept.

Each adapter decides how its files compare (``AdapterSpec.compare``): byte for byte, which
is the reference's rule, or where the reference reports false mismatches, as a set of lines
(records keyed by name, whose order follows the order the decoder met them) or line by line
with an equivalence (a field the restore legitimately rewrites). Line sets are compared
sorted, through an external sort, so memory stays bounded: the comparison runs once the
encode is done, so the sorts of the files compared at once share the run's whole budget.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio
import anyio.to_thread
from anyio.abc import ObjectReceiveStream

from ..._adapters.base import FileComparison
from ..concurrency import task_group
from ..dump.roots import TreeRoots
from ..errors import DataError, DumpTreeError
from ..extsort import ExternalSorter
from ..memory import DEFAULT_MEMORY_BUDGET
from ..options import DecodeOptions
from ..pipeline import decode_snapshot
from ..report import Report
from ..runfiles import make_locked_dir, new_tag

if TYPE_CHECKING:
    from ..progress import ProgressCallback

__all__ = ["MAX_MISMATCH_LINES", "SelfTestOutcome", "diff_trees", "run_self_test"]

MAX_MISMATCH_LINES: Final = 64
_CMP_BLOCK: Final = 1 << 20
#: Files compared per worker-thread call (small files are many; one hop each would dominate).
_FILES_PER_CALL: Final = 64
_BYTES_PER_CALL: Final = 64 << 20

#: How an adapter compares a file, given its slash path inside the adapter's subtree.
Comparer = Callable[[str], FileComparison]


@dataclass(slots=True)
class SelfTestOutcome:
    """The verdict: ``mismatch`` is the text of ``<output>.mismatch.txt`` (empty when matched)."""

    matched: bool
    mismatch: bytes = b""
    decode_report: Report = field(default_factory=Report)


# --- file comparison (worker threads) --------------------------------------------------------


def _streams_equal(a_path: str, b_path: str) -> bool:
    # Buffered reads return whole blocks until EOF, so the two sides stay aligned.
    with open(a_path, "rb") as fa, open(b_path, "rb") as fb:
        if os.fstat(fa.fileno()).st_size != os.fstat(fb.fileno()).st_size:
            return False
        while True:
            block_a = fa.read(_CMP_BLOCK)
            if block_a != fb.read(_CMP_BLOCK):
                return False
            if not block_a:
                return True


def _lines_equal(a_path: str, b_path: str, match: Callable[[bytes, bytes], bool]) -> bool:
    with open(a_path, "rb") as fa, open(b_path, "rb") as fb:
        for line_a in fa:
            line_b = fb.readline()
            if line_a != line_b and not match(line_a, line_b):
                return False
        return not fb.readline()


def _sorted_lines(path: str, spill: Path, memory: int) -> ExternalSorter:
    lines = ExternalSorter(spill, memory)
    with open(path, "rb") as fh:
        for line in fh:
            lines.add(line, b"")
            if lines.over_budget:
                lines.spill()
    return lines


def _line_sets_equal(a_path: str, b_path: str, spill_dir: Path, memory: int) -> bool:
    """Whether the files hold the same lines, each side sorted in ``memory`` bytes."""
    if _streams_equal(a_path, b_path):
        return True
    if os.stat(a_path).st_size != os.stat(b_path).st_size:
        return False  # the same lines in another order have the same size
    spill = Path(tempfile.mkdtemp(prefix="lines-", dir=spill_dir))
    sorters: list[ExternalSorter] = []
    try:
        for side, path in (("a", a_path), ("b", b_path)):
            (spill / side).mkdir()
            sorters.append(_sorted_lines(path, spill / side, memory))
        end = object()
        pairs = itertools.zip_longest(sorters[0].merged(), sorters[1].merged(), fillvalue=end)
        return all(x == y for x, y in pairs)
    finally:
        for sorter in sorters:
            sorter.close()
        shutil.rmtree(spill, ignore_errors=True)


def _compare_batch(
    pairs: Sequence[tuple[str, str, str]],
    compare: Comparer,
    skip: int,
    spill_dir: Path,
    memory: int,
) -> list[str]:
    """The relative paths (first item) of the pairs whose files differ.

    ``compare`` is given each path without its first ``skip`` characters (the subtree name);
    a line set's two sides are sorted in ``memory`` bytes each.
    """
    differ = []
    for rel, a_path, b_path in pairs:
        how = compare(rel[skip:])
        if how.lines_match is not None:
            same = _lines_equal(a_path, b_path, how.lines_match)
        elif how.line_set:
            same = _line_sets_equal(a_path, b_path, spill_dir, memory)
        else:
            same = _streams_equal(a_path, b_path)
        if not same:
            differ.append(rel)
    return differ


# --- tree walk ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Listing:
    # Names only (paths are rebuilt when needed): a directory of a million item files is the
    # largest thing the comparison holds.
    files: dict[str, int] = field(default_factory=dict)
    dirs: dict[str, str] = field(default_factory=dict)


def _list_dir(path: str | None) -> _Listing:
    listing = _Listing()
    if path is None:
        return listing
    try:
        with os.scandir(path) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    listing.dirs[entry.name] = entry.path
                elif stat.S_ISREG(st.st_mode):
                    listing.files[entry.name] = st.st_size
    except FileNotFoundError:
        pass
    return listing


def _root_dir(path: Path) -> str | None:
    """An adapter subtree root to walk, or None when there is nothing to walk."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return None  # a directory walk does not enter a symlinked root
    if not stat.S_ISDIR(mode):
        raise DumpTreeError(f"self-test: {path} is not a directory", code="errSelfTestMismatch")
    return str(path)


def _sort_key(line: str) -> bytes:
    return line.encode("utf-8", "surrogateescape")


class _Smallest:
    """The ``limit`` smallest mismatch lines (Go byte order) and how many there were in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: list[str] = []
        self.total = 0

    def add(self, line: str) -> None:
        self.total += 1
        if self.limit <= 0:
            return
        bisect.insort(self.lines, line, key=_sort_key)
        if len(self.lines) > self.limit:
            self.lines.pop()


@dataclass(slots=True)
class _Walk:
    """What every directory of one comparison shares."""

    sub: str
    compare: Comparer
    out: _Smallest
    limiter: anyio.CapacityLimiter
    spill_dir: Path
    #: Bytes one side of a line-set comparison sorts in.
    lines_memory: int


def _batches(
    prefix: str, a_dir: str, b_dir: str, names: Iterable[str], sizes: dict[str, int]
) -> Iterator[list[tuple[str, str, str]]]:
    batch: list[tuple[str, str, str]] = []
    batch_bytes = 0
    for name in names:
        batch.append((f"{prefix}/{name}", os.path.join(a_dir, name), os.path.join(b_dir, name)))
        batch_bytes += sizes[name]
        if len(batch) >= _FILES_PER_CALL or batch_bytes >= _BYTES_PER_CALL:
            yield batch
            batch, batch_bytes = [], 0
    if batch:
        yield batch


async def _compare_common(
    walk: _Walk, prefix: str, a_dir: str, b_dir: str, names: set[str], a: _Listing
) -> None:
    """Compare the files both directories hold, a batch per thread call, batches made lazily."""
    workers = max(1, int(walk.limiter.total_tokens))
    send, receive = anyio.create_memory_object_stream[list[tuple[str, str, str]]](workers)

    async def compare(batches: ObjectReceiveStream[list[tuple[str, str, str]]]) -> None:
        async with batches:
            async for batch in batches:
                differ = await anyio.to_thread.run_sync(
                    _compare_batch,
                    batch,
                    walk.compare,
                    len(walk.sub) + 1,
                    walk.spill_dir,
                    walk.lines_memory,
                    limiter=walk.limiter,
                )
                for path in differ:
                    walk.out.add(f"{path} (bytes differ)")

    async with task_group() as tg:
        for _ in range(workers):
            tg.start_soon(compare, receive.clone())
        receive.close()
        async with send:
            for batch in _batches(prefix, a_dir, b_dir, names, a.files):
                await send.send(batch)


async def _diff_dir(walk: _Walk, rel: str, a_dir: str | None, b_dir: str | None) -> None:
    a = await anyio.to_thread.run_sync(_list_dir, a_dir, limiter=walk.limiter)
    b = await anyio.to_thread.run_sync(_list_dir, b_dir, limiter=walk.limiter)
    prefix = f"{walk.sub}/{rel}" if rel else walk.sub
    for name in b.files.keys() - a.files.keys():
        walk.out.add(f"{prefix}/{name} (missing in input)")
    for name in a.files.keys() - b.files.keys():
        walk.out.add(f"{prefix}/{name} (missing in scratch)")
    if a_dir is not None and b_dir is not None:
        await _compare_common(walk, prefix, a_dir, b_dir, a.files.keys() & b.files.keys(), a)
    for name in sorted(a.dirs.keys() | b.dirs.keys()):
        child = f"{rel}/{name}" if rel else name
        await _diff_dir(walk, child, a.dirs.get(name), b.dirs.get(name))


async def diff_trees(
    input_root: Path | TreeRoots,
    scratch_root: Path,
    subdirs: Mapping[str, Comparer],
    spill_dir: Path,
    *,
    jobs: int = 8,
    memory: int = DEFAULT_MEMORY_BUDGET,
) -> list[str]:
    """The self-test's mismatch lines for ``subdirs`` (in that order), capped like the reference.

    ``subdirs`` maps each adapter subtree to compare to how that adapter compares its files.
    ``spill_dir`` is an existing directory for sorting the lines of line-set files; the two
    sorts of each of the ``jobs`` files compared at once share ``memory`` bytes. A split
    input tree (:class:`~elastickv_async._core.dump.roots.TreeRoots`) is read from each
    subtree's root.
    """
    roots = TreeRoots.of(input_root)
    jobs = max(1, jobs)
    limiter = anyio.CapacityLimiter(jobs)
    lines_memory = max(1, memory // (2 * jobs))
    lines: list[str] = []
    for sub, compare in subdirs.items():
        a_root = await anyio.to_thread.run_sync(_root_dir, roots.root_of(sub) / sub)
        b_root = await anyio.to_thread.run_sync(_root_dir, scratch_root / sub)
        found = _Smallest(MAX_MISMATCH_LINES - len(lines))
        walk = _Walk(sub, compare, found, limiter, spill_dir, lines_memory)
        await _diff_dir(walk, "", a_root, b_root)
        lines.extend(found.lines)
        if len(lines) + found.total - len(found.lines) >= MAX_MISMATCH_LINES:
            del lines[MAX_MISMATCH_LINES:]
            lines.append(f"... (truncated; first {MAX_MISMATCH_LINES} paths shown)")
            break
    return lines


# --- the whole self-test -----------------------------------------------------------------------


async def run_self_test(
    fsm: Path,
    input_root: Path | TreeRoots,
    subdirs: Mapping[str, Comparer],
    decode_options: DecodeOptions,
    last_commit_ts: int,
    scratch_base: Path | None,
    *,
    progress: ProgressCallback | None = None,
) -> SelfTestOutcome:
    """Decode ``fsm`` into a fresh directory under ``scratch_base`` and compare with the input.

    ``subdirs`` are the adapter subdirectories to compare, in the reference's order, each
    with its adapter's comparison rule (see :func:`diff_trees`). A
    produced .fsm that the decoder rejects as data is a mismatch, as in the reference; usage
    and I/O problems of the scratch area propagate. The scratch is always removed.
    """
    base = Path(tempfile.gettempdir()) if scratch_base is None else scratch_base
    held = await anyio.to_thread.run_sync(make_locked_dir, base, f"{new_tag()}.selftest")
    scratch = held.path
    try:
        tree = scratch / "tree"
        report = Report()
        options = dataclasses.replace(decode_options, scratch_root=scratch)
        try:
            await decode_snapshot(fsm, tree, options, report=report, progress=progress)
        except DataError as exc:
            text = f"self-test failed: DecodeSnapshot rejected the produced .fsm: {exc}"
            return SelfTestOutcome(False, text.encode(), report)
        got = report.snapshot.get("last_commit_ts")
        if got != last_commit_ts:
            text = (
                "self-test failed: header.LastCommitTS mismatch "
                f"(want {last_commit_ts}, got {got})\n"
            )
            return SelfTestOutcome(False, text.encode(), report)
        spill = scratch / "compare"
        await anyio.to_thread.run_sync(spill.mkdir)
        lines = await diff_trees(
            input_root,
            tree,
            subdirs,
            spill,
            jobs=decode_options.jobs,
            memory=decode_options.memory_budget,
        )
        if lines:
            text = "\n".join(lines) + "\n"
            return SelfTestOutcome(False, text.encode("utf-8", "surrogateescape"), report)
        return SelfTestOutcome(True, b"", report)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shutil.rmtree, scratch, True)
            await anyio.to_thread.run_sync(held.close)
