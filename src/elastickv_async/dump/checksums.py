"""CHECKSUMS: a ``sha256sum``-format listing of every regular file in a dump tree.

``sha256sum -c CHECKSUMS`` run in the root verifies the tree. Paths are sorted bytewise by
their slash-separated relative path; names containing a newline, carriage return or backslash
use GNU's escaped form (a leading ``\\`` on the line).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

__all__ = [
    "CHECKSUMS_NAME",
    "checksum_line",
    "compute_checksums",
    "format_checksums",
    "sha256_file",
]

CHECKSUMS_NAME: Final = "CHECKSUMS"
_BLOCK: Final = 1 << 20


def sha256_file(path: str | bytes | os.PathLike[str], *, dir_fd: int | None = None) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks without following a final symlink."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    with open(fd, "rb", buffering=0) as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def checksum_line(hexdigest: str, relpath: bytes) -> bytes:
    """One CHECKSUMS line for ``relpath`` (raw bytes of the slash path), GNU-escaped if needed."""
    if any(c in relpath for c in b"\n\r\\"):
        escaped = relpath.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
        return b"\\" + hexdigest.encode() + b"  " + escaped + b"\n"
    return hexdigest.encode() + b"  " + relpath + b"\n"


def _walk(root: bytes, rel: bytes, out: list[bytes]) -> None:
    with os.scandir(os.path.join(root, rel) if rel else root) as it:
        entries = list(it)
    for entry in entries:
        child = rel + b"/" + entry.name if rel else entry.name
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            _walk(root, child, out)
        elif stat.S_ISREG(mode):
            out.append(child)


def compute_checksums(root: Path) -> bytes:
    """Hash every regular file under ``root`` except CHECKSUMS itself; return the file's bytes.

    Symlinks and special files are skipped, never followed.
    """
    raw_root = os.fsencode(root)
    files: list[bytes] = []
    _walk(raw_root, b"", files)
    files.sort()
    lines = [
        checksum_line(sha256_file(os.path.join(raw_root, rel)), rel)
        for rel in files
        if rel != CHECKSUMS_NAME.encode()
    ]
    return b"".join(lines)


def format_checksums(digests: Mapping[str, bytes]) -> bytes:
    """CHECKSUMS content for ``{relative slash path: raw sha256}``, sorted bytewise by path."""
    rows = sorted(
        (rel.encode("utf-8", "surrogateescape"), digest.hex()) for rel, digest in digests.items()
    )
    return b"".join(
        checksum_line(digest, rel) for rel, digest in rows if rel != CHECKSUMS_NAME.encode()
    )
