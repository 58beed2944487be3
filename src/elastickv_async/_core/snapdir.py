"""``decode --input-snap-dir``: decode a node's ``fsm-snap/`` without knowing which file is
current (the reference decoder's design doc documents the flag; its binary never shipped it).

The newest snapshot (by the index in its ``<index>.fsm`` name) is decoded into the output
root; with ``every`` each snapshot is decoded, oldest first, into its own subdirectory named
like the file (``<output>/<16 hex digits>/``), each a complete tree with its own MANIFEST.json.
Every file's index is checked against the ``_meta_applied_index`` it carries. The first
failure stops the run and names the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import anyio.to_thread

from .errors import ElasticKVError, UsageError
from .options import DecodeOptions
from .pipeline import decode_snapshot
from .report import Report
from .snapshot.source import snapshots_in

if TYPE_CHECKING:
    from .progress import ProgressCallback

__all__ = ["SnapDirRun", "decode_snap_dir", "merge_reports"]

#: One decoded snapshot: its index, its file and the tree it was decoded into.
SnapDirRun = tuple[int, Path, Path]


async def decode_snap_dir(
    snap_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: DecodeOptions | None = None,
    *,
    every: bool = False,
    log_format: str | None = None,
    log_stream: TextIO | None = None,
    progress: ProgressCallback | None = None,
    force: bool = False,
    output_roots: Mapping[str, str | os.PathLike[str]] | None = None,
) -> list[tuple[SnapDirRun, Report]]:
    """Decode the newest snapshot of the ``fsm-snap/`` directory ``snap_dir`` into ``output``,
    or, with ``every``, each of them (oldest first) into ``output/<index as 16 hex>/``.

    Returns one ``((index, file, tree), report)`` per decoded snapshot. Raises
    :class:`~elastickv_async._core.errors.UsageError` when ``snap_dir`` holds no snapshot, and
    an error of the failing decode's class, its message prefixed with the file, otherwise
    (:class:`~elastickv_async._core.errors.SnapshotFormatError` when a file's name and its
    ``_meta_applied_index`` disagree); the snapshots before it keep their complete trees.
    ``force`` and ``output_roots`` are passed to the decode (see
    :func:`~elastickv_async.decode_snapshot`); ``output_roots`` does not go with ``every``.
    """
    if every and output_roots:
        raise UsageError("output roots take one tree, not one per snapshot")
    base = Path(snap_dir)
    found = await anyio.to_thread.run_sync(snapshots_in, base)
    if not found:
        raise UsageError(f"no <index>.fsm snapshot in {base}")
    root = Path(output)
    runs: list[SnapDirRun] = (
        [(index, path, root / path.stem) for index, path in found]
        if every
        else [(found[-1][0], found[-1][1], root)]
    )
    done: list[tuple[SnapDirRun, Report]] = []
    for run in runs:
        index, path, tree = run
        report = Report()
        try:
            await decode_snapshot(
                path,
                tree,
                options,
                log_format=log_format,
                log_stream=log_stream,
                progress=progress,
                report=report,
                force=force,
                expected_index=index,
                output_roots=output_roots,
            )
        except ElasticKVError as exc:
            raise _naming(exc, path) from exc
        done.append((run, report))
    return done


def _naming(exc: ElasticKVError, path: Path) -> ElasticKVError:
    """``exc`` again, its message starting with the snapshot file that failed."""
    if str(path) in exc.message:
        return exc
    return type(exc)(
        f"{path}: {exc.message}",
        code=exc.code,
        adapter=exc.adapter,
        key=exc.key,
        path=exc.path,
    )


def merge_reports(into: Report, runs: Sequence[tuple[SnapDirRun, Report]]) -> None:
    """Add every run's counters and warnings to ``into``; its ``snapshot`` facts go under
    ``snapshots``, one entry per decoded file."""
    facts = []
    for (index, path, tree), report in runs:
        for name, value in report.counters.items():
            into.count(name, value)
        for event, summary in report.warnings.items():
            merged = into.warnings.setdefault(event, type(summary)(event))
            merged.count += summary.count
            room = into.max_examples - len(merged.examples)
            merged.examples.extend(summary.examples[: max(room, 0)])
        facts.append({"index": index, "input": str(path), "output": str(tree)} | report.snapshot)
    into.snapshot["snapshots"] = facts
