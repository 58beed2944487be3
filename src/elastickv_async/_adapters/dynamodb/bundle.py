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

Items are sorted with bounded memory by the shared external sort (runs of about
:data:`RUN_BYTES`), which is stable, so of two lines with one key the later one comes last.
Everything here is synchronous (run it in worker threads).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

from ..._core.extsort import ExternalSorter

__all__ = ["PART_BYTES", "RUN_BYTES", "JsonlTable", "part_name"]

PART_BYTES: Final = 64 << 20
RUN_BYTES: Final = 16 << 20

#: ``(sort key, line)``; the sort key is the hash segment, NUL, the range segment.
Line = tuple[bytes, bytes]


def part_name(index: int) -> str:
    """The file name of part ``index``."""
    return f"data-{index:05d}.jsonl"


def _last_per_key(lines: Iterable[Line]) -> Iterator[Line]:
    """Of consecutive lines with the same key keep the last one."""
    pending: Line | None = None
    for line in lines:
        if pending is not None and pending[0] != line[0]:
            yield pending
        pending = line
    if pending is not None:
        yield pending


class JsonlTable:
    """Collects one table's lines in input order and writes the sorted parts."""

    def __init__(
        self, scratch: Path, *, part_bytes: int = PART_BYTES, run_bytes: int = RUN_BYTES
    ) -> None:
        self._scratch = scratch
        self._part_bytes = part_bytes
        self._sorter = ExternalSorter(scratch, run_bytes)

    def add(self, lines: Iterable[Line]) -> None:
        """Append lines (later lines win over earlier ones with the same key)."""
        for key, text in lines:
            self._sorter.add(key, text)
            if self._sorter.over_budget:
                self._sorter.spill()

    def finish(self) -> list[Path]:
        """Merge everything into part files under the scratch directory; return them in order."""
        parts: list[Path] = []
        out: BinaryIO | None = None
        size = 0
        try:
            for _, text in _last_per_key(self._sorter.merged()):
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
            self._sorter.close()
        return parts
