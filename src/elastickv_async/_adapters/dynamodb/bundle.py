"""The ``jsonl`` bundle layout of a table's items (``--dynamodb-bundle-mode jsonl``).

The reference's decoder design documents this layout for tables too big for one file per
item (``items/data-<part-id>.jsonl``, parts of ``--dynamodb-bundle-size``, 64 MiB by
default) but never implemented it. This project's shape:

* ``dynamodb/<table>/items/data-00000.jsonl``, ``data-00001.jsonl``, ... (five or more
  decimal digits, from 0); a table without items has ``_schema.json`` and no part;
* one item per line: the same AWS DynamoDB JSON as a per-item file, compact
  (``json.Marshal`` style, HTML-escaped), ending in ``\\n``;
* lines sorted by primary key, i.e. by (hash segment, range segment) as per-item mode
  names the files, so a dump is deterministic and two dumps diff line by line;
* one line per key: where per-item mode would overwrite a file (an item in both the
  migration source and the active generation, or ``N`` keys such as ``1`` and ``1.0``), the
  line that per-item mode leaves on disk is kept (the later one);
* a part holds at most :data:`PART_BYTES` bytes (a single longer line gets its own part).

Items are sorted with bounded memory: sorted runs of at most :data:`RUN_BYTES` are spilled
to scratch files and merged. Everything here is synchronous (run it in worker threads).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

from .spill import read_records, write_record

__all__ = ["PART_BYTES", "RUN_BYTES", "JsonlTable", "part_name"]

PART_BYTES: Final = 64 << 20
RUN_BYTES: Final = 16 << 20

#: ``(sort key, line)``; the sort key is the hash segment, NUL, the range segment.
Line = tuple[bytes, bytes]


def part_name(index: int) -> str:
    """The file name of part ``index``."""
    return f"data-{index:05d}.jsonl"


def _sort_key(line: Line) -> bytes:
    return line[0]


def _last_per_key(lines: Iterable[Line]) -> Iterator[Line]:
    """Of consecutive lines with the same key keep the last one."""
    pending: Line | None = None
    for line in lines:
        if pending is not None and pending[0] != line[0]:
            yield pending
        pending = line
    if pending is not None:
        yield pending


def _read_run(path: Path) -> Iterator[Line]:
    with open(path, "rb") as fh:
        records = read_records(fh)
        for key in records:
            yield key, next(records)


class JsonlTable:
    """Collects one table's lines in input order and writes the sorted parts."""

    def __init__(
        self, scratch: Path, *, part_bytes: int = PART_BYTES, run_bytes: int = RUN_BYTES
    ) -> None:
        self._scratch = scratch
        self._part_bytes = part_bytes
        self._run_bytes = run_bytes
        self._run: list[Line] = []
        self._run_size = 0
        self._runs: list[Path] = []

    def add(self, lines: Iterable[Line]) -> None:
        """Append lines (later lines win over earlier ones with the same key)."""
        for line in lines:
            self._run.append(line)
            self._run_size += len(line[0]) + len(line[1])
            if self._run_size >= self._run_bytes:
                self._spill_run()

    def _sorted_run(self) -> Iterator[Line]:
        # sort() is stable, so equal keys stay in input order for _last_per_key.
        run, self._run, self._run_size = self._run, [], 0
        run.sort(key=_sort_key)
        return _last_per_key(run)

    def _spill_run(self) -> None:
        self._scratch.mkdir(parents=True, exist_ok=True)
        path = self._scratch / f"run-{len(self._runs)}.rec"
        with open(path, "wb") as fh:
            for key, text in self._sorted_run():
                write_record(fh, key)
                write_record(fh, text)
        self._runs.append(path)

    def finish(self) -> list[Path]:
        """Merge everything into part files under the scratch directory; return them in order."""
        # heapq.merge breaks ties by source order, and runs are in input order.
        sources: list[Iterable[Line]] = [_read_run(path) for path in self._runs]
        sources.append(self._sorted_run())
        parts: list[Path] = []
        out: BinaryIO | None = None
        size = 0
        try:
            for _, text in _last_per_key(heapq.merge(*sources, key=_sort_key)):
                if out is None or (size and size + len(text) > self._part_bytes):
                    if out is not None:
                        out.close()
                    self._scratch.mkdir(parents=True, exist_ok=True)
                    path = self._scratch / part_name(len(parts))
                    out = open(path, "wb")  # noqa: SIM115 - closed when the part is full or below
                    parts.append(path)
                    size = 0
                out.write(text)
                size += len(text)
        finally:
            if out is not None:
                out.close()
        for path in self._runs:
            path.unlink()
        return parts
