"""Which files make up a cluster backup, and which Raft group each one is.

A ``.fsm`` file carries no group id; a node keeps each group's snapshots in
``<raftDataDir>/<raftId>/group-<g>/fsm-snap/<index %016x>.fsm``, so the id comes from an
explicit ``GROUP=PATH``, else from that directory layout, else from the file's position.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..errors import UsageError
from ..snapshot.source import snapshots_in

__all__ = ["GroupInput", "discover_groups", "parse_group_inputs"]

_GROUP_DIR: Final = re.compile(r"group-([0-9]+)")
_EXPLICIT: Final = re.compile(r"([0-9]+)=(.+)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class GroupInput:
    """One group's snapshot file; ``worker`` names the Dask worker that can read it."""

    group: int
    path: Path
    worker: str | None = None


def _group_from_layout(path: Path) -> int | None:
    parent = path.parent
    if parent.name == "fsm-snap":
        match = _GROUP_DIR.fullmatch(parent.parent.name)
        if match:
            return int(match.group(1))
    return None


def parse_group_inputs(
    specs: Sequence[str | os.PathLike[str] | GroupInput],
    workers: dict[int, str] | None = None,
) -> list[GroupInput]:
    """Turn ``--input`` values (``PATH`` or ``GROUP=PATH``) into groups, sorted by id.

    ``workers`` pins groups to Dask workers (``--pin GROUP=WORKER``). Raises
    :class:`UsageError` for a group given twice, or a pin naming no group.
    """
    groups: dict[int, GroupInput] = {}
    for position, spec in enumerate(specs, start=1):
        if isinstance(spec, GroupInput):
            item = spec
        else:
            text = os.fspath(spec)
            match = _EXPLICIT.fullmatch(text)
            path = Path(match.group(2) if match else text)
            group = int(match.group(1)) if match else _group_from_layout(path) or position
            item = GroupInput(group, path)
        if item.group < 1:
            raise UsageError(f"group id must be positive, not {item.group}")
        if item.group in groups:
            raise UsageError(
                f"group {item.group} given twice ({groups[item.group].path}, {item.path})"
            )
        groups[item.group] = item
    for group, worker in (workers or {}).items():
        if group not in groups:
            raise UsageError(f"--pin names group {group}, which has no input")
        item = groups[group]
        groups[group] = GroupInput(item.group, item.path, worker)
    if not groups:
        raise UsageError("no group snapshots given")
    return [groups[g] for g in sorted(groups)]


def _newest(snap_dir: Path) -> Path | None:
    found = snapshots_in(snap_dir)
    return found[-1][1] if found else None


def discover_groups(node_dir: Path) -> list[GroupInput]:
    """Every ``group-<g>/fsm-snap/`` under ``node_dir`` with its newest snapshot (blocking).

    Raises :class:`UsageError` when the directory holds no group with a snapshot.
    """
    if not node_dir.is_dir():
        raise UsageError(f"--input-data-dir {node_dir} is not a directory")
    found: list[GroupInput] = []
    for child in sorted(node_dir.iterdir()):
        match = _GROUP_DIR.fullmatch(child.name)
        if match is None or not (child / "fsm-snap").is_dir():
            continue
        newest = _newest(child / "fsm-snap")
        if newest is not None:
            found.append(GroupInput(int(match.group(1)), newest))
    if not found:
        raise UsageError(f"no group-<g>/fsm-snap/*.fsm under {node_dir}")
    return sorted(found, key=lambda g: g.group)
