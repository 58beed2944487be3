"""The digests of the tree files an encode read, sorted by path in bounded memory.

The CHECKSUMS check of an encode's input compares the tree with its CHECKSUMS walking both
in path order, and takes a file's digest from this ledger when an encoder read the file (see
:func:`~elastickv_async._core.dump.tree.recording_reads`). The mechanics (held as pairs,
spilled as sorted runs, merged a round at a time) are the decode's ledger's:
:class:`~elastickv_async._core.digests.DigestLedger`.
"""

from __future__ import annotations

from pathlib import Path

from ..digests import DigestLedger

__all__ = ["ReadDigests"]


class ReadDigests(DigestLedger):
    """The SHA-256 of every tree file read (a
    :class:`~elastickv_async._core.dump.tree.DigestRecorder`), given back sorted by raw path
    by :meth:`items`, the last digest recorded for a path winning.

    At most ``limit`` digests are held in memory; beyond that they are spilled as sorted runs
    under ``spill_dir``. Thread-safe: the encoders record from worker threads.
    """

    def __init__(self, spill_dir: Path, *, limit: int) -> None:
        super().__init__(spill_dir, limit=limit)
