"""Progress samples of long runs, taken on a clock rather than per entry.

An engine names its current stage and how to measure it (:meth:`ProgressMeter.stage`); its
hot paths only bump the counters they keep anyway. A ticker task samples those counters every
``interval`` seconds and hands a :class:`Progress` to the caller's callback, so the cost of
progress does not grow with the number of entries or files. Every stage also ends with one
``finished`` sample, whatever the clock did, so a caller always sees each stage it ran.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final

import anyio

from .concurrency import task_group

__all__ = ["Progress", "ProgressCallback", "ProgressMeter"]

DEFAULT_INTERVAL_S: Final = 0.25
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


def _zero() -> int:
    return 0


def _unknown() -> int | None:
    return None


class ProgressMeter:
    """Samples a run's counters for a :data:`ProgressCallback` (a no-op without one)."""

    def __init__(
        self, callback: ProgressCallback | None, *, interval: float = DEFAULT_INTERVAL_S
    ) -> None:
        self._callback = callback
        self._interval = interval
        self._stage: str | None = None
        self._unit = ""
        self._total: Callable[[], int | None] = _unknown
        self._done: Callable[[], int] = _zero
        self._started = time.monotonic()
        self._files: Callable[[], int] = _zero
        self._bytes: Callable[[], int] = _zero
        self._entries: Callable[[], int] = _zero

    @property
    def enabled(self) -> bool:
        """Whether anybody listens."""
        return self._callback is not None

    def output(
        self,
        *,
        files: Callable[[], int] | None = None,
        bytes_: Callable[[], int] | None = None,
        entries: Callable[[], int] | None = None,
    ) -> None:
        """Say where the run's output and input counters are read from."""
        self._files = files or self._files
        self._bytes = bytes_ or self._bytes
        self._entries = entries or self._entries

    def stage(
        self,
        name: str,
        *,
        unit: str,
        done: Callable[[], int] = _zero,
        total: int | Callable[[], int | None] | None = None,
    ) -> None:
        """End the current stage (its ``finished`` sample) and begin ``name``.

        ``done`` and ``total`` (when it is only known once the stage is under way) are read
        at each sample.
        """
        self.finish()
        self._stage, self._unit, self._done = name, unit, done
        self._total = total if callable(total) else (lambda: total)
        self._started = time.monotonic()
        self._emit(finished=False)

    def finish(self) -> None:
        """Send the current stage's ``finished`` sample, if a stage is running."""
        if self._stage is not None:
            self._emit(finished=True)
            self._stage = None

    def _emit(self, *, finished: bool) -> None:
        if self._callback is None or self._stage is None:
            return
        done, total = self._done(), self._total()
        self._callback(
            Progress(
                stage=self._stage,
                unit=self._unit,
                done=total if finished and total is not None else done,
                total=total,
                files_written=self._files(),
                bytes_written=self._bytes(),
                entries=self._entries(),
                elapsed=time.monotonic() - self._started,
                finished=finished,
            )
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ProgressMeter]:
        """Sample every ``interval`` seconds while the block runs; finish its last stage."""
        if self._callback is None:
            yield self
            return
        async with task_group() as tg:
            tg.start_soon(self._tick)
            try:
                yield self
                self.finish()
            finally:
                tg.cancel_scope.cancel()

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(self._interval)
            self._emit(finished=False)
