"""Helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path | None:
    """The shared corpus (``$ELASTICKV_SHARED`` or ``../shared``), or ``None`` when absent."""
    override = os.environ.get("ELASTICKV_SHARED")
    candidate = Path(override) if override else REPO_ROOT.parent / "shared"
    return candidate if candidate.is_dir() else None
