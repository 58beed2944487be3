"""``verify``: check that a dump tree is complete and unchanged.

A tree is good when MANIFEST.json and CHECKSUMS exist, every CHECKSUMS line names a regular
file (reached without following symlinks) whose SHA-256 matches, and no regular file is left
out of CHECKSUMS.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

import anyio.to_thread

from ..errors import DataError, UsageError
from ..report import Report
from .checksums import CHECKSUMS_NAME, compute_checksums
from .manifest import MANIFEST_NAME

__all__ = ["ChecksumMismatch", "verify_tree"]

_LINE: Final = re.compile(rb"(\\?)([0-9a-f]{64}) [ *](.+)")


class ChecksumMismatch(DataError):
    """The tree does not match its CHECKSUMS file."""


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


def _parse(listing: bytes) -> dict[bytes, str]:
    rows: dict[bytes, str] = {}
    for number, line in enumerate(listing.split(b"\n"), start=1):
        if not line:
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise ChecksumMismatch(f"CHECKSUMS line {number} is malformed")
        path = _unescape(match[3]) if match[1] else match[3]
        rows[path] = match[2].decode()
    if not rows:
        raise ChecksumMismatch("CHECKSUMS lists no file")
    return rows


def _problem(path: bytes, listed: dict[bytes, str], actual: dict[bytes, str]) -> str:
    if path not in actual:
        return "missing"
    if path not in listed:
        return "not listed"
    return "sha256 differs"


def _verify_sync(root: Path) -> int:
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    if not (root / MANIFEST_NAME).is_file():
        raise ChecksumMismatch(f"{root} has no {MANIFEST_NAME}: the dump is incomplete")
    try:
        listed = _parse((root / CHECKSUMS_NAME).read_bytes())
    except FileNotFoundError:
        raise ChecksumMismatch(f"{root} has no {CHECKSUMS_NAME}") from None
    actual = _parse(compute_checksums(root))
    problems = [
        f"{os.fsdecode(p)}: {_problem(p, listed, actual)}"
        for p in sorted(listed.keys() | actual.keys())
        if listed.get(p) != actual.get(p)
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise ChecksumMismatch(f"{len(problems)} file(s) differ from CHECKSUMS: {shown}")
    return len(listed)


async def verify_tree(root: Path, report: Report | None = None) -> Report:
    """Verify the dump tree at ``root``; raise :class:`ChecksumMismatch` when it is not intact."""
    report = report if report is not None else Report()
    report.count("files_verified", await anyio.to_thread.run_sync(_verify_sync, root))
    return report
