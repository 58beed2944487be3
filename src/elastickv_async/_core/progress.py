"""Progress samples of long runs: what a caller's progress callback receives.

They are taken by :class:`~elastickv_async._core.meter.ProgressMeter`, on a clock rather than
per entry, and only when a caller listens: a run without a callback never loads this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["Progress", "ProgressCallback"]

#: Below this a stage has not run long enough for its rate to mean anything.
_MIN_RATE_ELAPSED_S: Final = 0.01


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress sample of a run's current stage.

    ``stage`` is ``read``, ``flush`` or ``checksums`` for a decode; ``collect``, ``write`` or
    ``self_test`` for an encode; ``verify`` for a verify. ``done`` counts the stage's own
    work in ``unit`` (``bytes``, ``files``, ``records`` or ``entries``) out of ``total``
    (``None`` when the stage cannot know it in advance). ``files_written`` and
    ``bytes_written`` are the run's output so far, ``entries`` the snapshot entries read,
    ``elapsed`` the seconds since the stage began. ``finished`` marks a stage's last sample.
    """

    stage: str
    unit: str
    done: int
    total: int | None = None
    files_written: int = 0
    bytes_written: int = 0
    entries: int = 0
    elapsed: float = 0.0
    finished: bool = False

    @property
    def fraction(self) -> float | None:
        """``done / total`` (0..1), or ``None`` when the total is unknown."""
        if self.total is None:
            return None
        return min(self.done / self.total, 1.0) if self.total else 1.0

    @property
    def rate(self) -> float:
        """Units per second over the stage so far."""
        return self.done / self.elapsed if self.elapsed >= _MIN_RATE_ELAPSED_S else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, or ``None`` when it cannot be estimated."""
        if self.total is None or self.finished:
            return None
        rate = self.rate
        return max(self.total - self.done, 0) / rate if rate > 0 else None


ProgressCallback = Callable[[Progress], None]
