"""The Raft snapshot index a ``.fsm`` file name carries (REFERENCE_NOTES §5.4)."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePath
from typing import Final

from ..errors import UsageError

__all__ = ["snapshot_index_from_path", "snapshots_in"]

_SUFFIX: Final = ".fsm"
#: A node names its snapshots ``fsm-snap/%016x.fsm`` (internal/raftengine/etcd).
_NODE_STEM: Final = re.compile(r"[0-9a-fA-F]{16}")
_DECIMAL_STEM: Final = re.compile(r"[0-9]+")
_U64_MAX: Final = (1 << 64) - 1


def snapshot_index_from_path(path: str | PurePath) -> int | None:
    """Return the applied index encoded in a snapshot file name, or ``None``.

    The rule: the base name must end in ``.fsm``; a stem of exactly 16 hex digits is the node's
    own name for the file (it writes ``%016x``, and parses its names as hex) and is read as
    hexadecimal (so ``0000000000000065.fsm`` is
    index 101, where the reference, reading decimal, says 65); any other all-decimal stem is read
    as decimal like the reference (``42.fsm`` is 42). Values over 2**64-1 and every other name
    (e.g. ``input.fsm`` or renamed copies) give ``None``; the caller then falls back to the
    store's ``_meta_applied_index``.
    """
    name = PurePath(path).name
    if not name.endswith(_SUFFIX):
        return None
    stem = name[: -len(_SUFFIX)]
    if _NODE_STEM.fullmatch(stem):
        return int(stem, 16)
    if _DECIMAL_STEM.fullmatch(stem):
        value = int(stem)
        return value if value <= _U64_MAX else None
    return None


def snapshots_in(snap_dir: Path) -> list[tuple[int, Path]]:
    """The snapshots of a node's ``fsm-snap/`` directory as ``(index, path)``, oldest first.

    Only regular files whose name carries an index count (a node's temp files do not). Raises
    :class:`~elastickv_async._core.errors.UsageError` when ``snap_dir`` is not a directory.
    Blocking: call from a worker thread.
    """
    try:
        names = os.listdir(snap_dir)
    except OSError as exc:
        raise UsageError(f"{snap_dir} is not a readable directory: {exc.strerror}") from None
    found = []
    for name in names:
        index = snapshot_index_from_path(name)
        path = snap_dir / name
        if index is not None and path.is_file():
            found.append((index, path))
    return sorted(found)
