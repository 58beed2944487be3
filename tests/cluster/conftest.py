"""The cluster tests build their group files with the snapshot tests' stream builders."""

from __future__ import annotations

import sys
from pathlib import Path

_STREAMS = str(Path(__file__).resolve().parents[1] / "unit" / "snapshot")
if _STREAMS not in sys.path:
    sys.path.append(_STREAMS)
