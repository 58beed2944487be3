"""One small exception hierarchy for the whole package, in the style of httpcore.

Every error raised on purpose is an :class:`ElasticKVError`. The class says what kind of
problem it is (and so the exit code: usage and output problems exit 1, bad data exits 2);
the stable :attr:`~ElasticKVError.code` says which fault it is. Codes are the reference's
sentinel names (``ErrSQSMalformedKey``, ``ErrSnapshotTruncated``...) where it has one, and
names in the same style where it has none::

    ElasticKVError
    ├── UsageError              exit 1: bad flags, options or inputs
    ├── OutputError             exit 1: the output cannot be written safely
    ├── ExecutionError          exit 1: a worker running part of the run failed
    └── DataError               exit 2: the data is malformed or inconsistent
        ├── SnapshotFormatError     the .fsm stream
        ├── AdapterRecordError      one adapter's key or value in a snapshot
        ├── DumpTreeError           a dump tree read by the encoder or verify
        │   ├── UnsafeDumpEntry         an entry it must not read (symlink, FIFO, hard link)
        │   └── ManifestError           its MANIFEST.json
        ├── ChecksumMismatch        a tree disagrees with its CHECKSUMS
        └── SelfTestMismatch        the encoder's output does not decode to its input

:func:`map_os_errors` turns the ``OSError`` of a block into one of these.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import ClassVar

__all__ = [
    "AdapterRecordError",
    "ChecksumMismatch",
    "DataError",
    "DumpTreeError",
    "ElasticKVError",
    "ExecutionError",
    "ManifestError",
    "OutputError",
    "SelfTestMismatch",
    "SnapshotFormatError",
    "UnsafeDumpEntry",
    "UsageError",
    "escape_key",
    "map_os_errors",
]


def escape_key(key: bytes) -> str:
    """``key`` as printable ASCII: Python's bytes escapes without the ``b''`` wrapper."""
    return repr(key)[2:-1]


class ElasticKVError(Exception):
    """Base class of every error raised on purpose by elastickv-async.

    ``code`` names the fault (stable across releases, safe to match on); ``adapter``,
    ``key`` (the snapshot key, raw bytes) and ``path`` (a dump-tree or output path) say
    where it happened when that is known. ``str()`` is the message, prefixed with the
    adapter's name when there is one.
    """

    exit_code: ClassVar[int] = 2

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        adapter: str | None = None,
        key: bytes | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.adapter = adapter
        self.key = key
        self.path = None if path is None else os.fspath(path)

    def __str__(self) -> str:
        return f"{self.adapter}: {self.message}" if self.adapter else self.message

    def fields(self) -> dict[str, str]:
        """The error as flat string fields for a structured log event (absent ones left out)."""
        found = {
            "error": type(self).__name__,
            "code": self.code,
            "adapter": self.adapter,
            "key": None if self.key is None else escape_key(self.key),
            "path": self.path,
        }
        return {name: value for name, value in found.items() if value is not None}


class UsageError(ElasticKVError):
    """Bad flags, bad options or a missing input: the caller must change the call."""

    exit_code = 1


class OutputError(ElasticKVError):
    """The output location cannot be written safely (symlink, escape, I/O failure)."""

    exit_code = 1


class ExecutionError(ElasticKVError):
    """The run could not be carried out where it was sent (a Dask worker or a worker
    process died or failed)."""

    exit_code = 1


class DataError(ElasticKVError):
    """The input data (snapshot or dump tree) is malformed or inconsistent."""

    exit_code = 2


class SnapshotFormatError(DataError):
    """The .fsm stream violates the framing rules (magic, lengths, value headers, footer)."""


class AdapterRecordError(DataError):
    """An adapter met a malformed key or value in the snapshot."""


class DumpTreeError(DataError):
    """A dump tree (encoder input) is malformed: a file, a name, a KEYMAP record."""


class UnsafeDumpEntry(DumpTreeError):
    """A dump tree entry that must not be read: a symlink, a special file, a hard link, or
    a file replaced while the tree was read. The message names its path."""


class ManifestError(DumpTreeError):
    """MANIFEST.json is missing fields, malformed or of an unsupported version."""


class ChecksumMismatch(DataError):
    """A dump tree does not match its CHECKSUMS (or lacks it, or its MANIFEST.json)."""


class SelfTestMismatch(DataError):
    """The encoder's self-test decoded its own output to a different tree."""


@contextlib.contextmanager
def map_os_errors(
    error: type[ElasticKVError],
    doing: str,
    *,
    code: str | None = None,
    adapter: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Iterator[None]:
    """Raise ``error("<doing>: <strerror>")`` for any ``OSError`` escaping the block.

    The one place where the operating system's errors become ours: the original stays
    reachable as ``__cause__`` for library callers, while the CLI prints one line. Without
    a ``path``, the file the OS names (if any) becomes the error's path and ends the message.
    """
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        if path is None and exc.filename is not None:
            path = os.fsdecode(exc.filename)
            reason = f"{reason}: {path}"
        raise error(f"{doing}: {reason}", code=code, adapter=adapter, path=path) from exc
