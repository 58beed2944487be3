"""``verify``: check that a dump tree is complete and unchanged.

A tree is good when MANIFEST.json and CHECKSUMS exist, every CHECKSUMS line names a regular
file whose SHA-256 matches, and no regular file is left out of CHECKSUMS. The tree is read
under the encoder's rules (:mod:`~elastickv_async._core.dump.tree`): a tree holding a symlink,
a FIFO, a device, a socket or a hard-linked file anywhere fails, since ``encode`` would refuse it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

from ..errors import ChecksumMismatch, UsageError
from ..progress import ProgressCallback, ProgressMeter
from ..report import Report
from .checksums import CHECKSUMS_NAME, HashTally, hash_tree
from .manifest import MANIFEST_NAME
from .tree import DumpTree

__all__ = ["verify_tree"]

_LINE: Final = re.compile(rb"(\\?)([0-9a-f]{64}) [ *](.+)")


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
            raise ChecksumMismatch(
                f"CHECKSUMS line {number} is malformed", code="ErrChecksumsMalformedLine"
            )
        path = _unescape(match[3]) if match[1] else match[3]
        rows[path] = match[2].decode()
    if not rows:
        raise ChecksumMismatch("CHECKSUMS lists no file", code="ErrChecksumsEmpty")
    return rows


def _problem(path: bytes, listed: dict[bytes, str], actual: dict[bytes, str]) -> str:
    if path not in actual:
        return "missing"
    if path not in listed:
        return "not listed"
    return "sha256 differs"


def _verify_sync(tree: DumpTree, tally: HashTally) -> int:
    if not tree.root.is_dir():
        raise UsageError(f"{tree.root} is not a directory")
    with tree.open_root() as root:
        manifest = root.lookup(MANIFEST_NAME)
        if manifest is None or manifest.is_dir:
            raise ChecksumMismatch(
                f"{tree.root} has no {MANIFEST_NAME}: the dump is incomplete",
                code="ErrChecksumsMissing",
            )
        # CHECKSUMS lists every file of the tree: no per-file cap.
        listing = root.read(CHECKSUMS_NAME, limit=None)
        if listing is None:
            raise ChecksumMismatch(
                f"{tree.root} has no {CHECKSUMS_NAME}", code="ErrChecksumsMissing"
            )
        listed = _parse(listing)
    # CHECKSUMS lists every file but itself, and hash_tree skips it too.
    tally.total = len(listed)
    actual = hash_tree(tree, tally)
    problems = [
        f"{os.fsdecode(p)}: {_problem(p, listed, actual)}"
        for p in sorted(listed.keys() | actual.keys())
        if listed.get(p) != actual.get(p)
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise ChecksumMismatch(
            f"{len(problems)} file(s) differ from CHECKSUMS: {shown}", code="ErrChecksumMismatch"
        )
    return len(listed)


async def verify_tree(
    root: str | os.PathLike[str],
    report: Report | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> Report:
    """Verify the dump tree at ``root``; raise :class:`ChecksumMismatch` when it is not intact,
    :class:`~elastickv_async._core.errors.UnsafeDumpEntry` when it holds an entry that
    ``encode`` would refuse.

    ``progress`` receives :class:`~elastickv_async.Progress` samples of the one stage
    ``verify`` (files hashed, out of those CHECKSUMS lists).
    """
    report = report if report is not None else Report()
    tree = DumpTree(Path(root))
    tally = HashTally()
    meter = ProgressMeter(progress)
    async with meter.running():
        meter.stage("verify", unit="files", done=lambda: tally.files, total=lambda: tally.total)
        report.count("verify.files", await tree.run(_verify_sync, tree, tally))
    report.count("verify.bytes", tally.bytes)
    return report
