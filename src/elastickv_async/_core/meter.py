"""Progress sampling of long runs, on a clock rather than per entry.

An engine names its current stage and how to measure it (:meth:`ProgressMeter.stage`); its
hot paths only bump the counters they keep anyway. A ticker task samples those counters every
``interval`` seconds and hands a :class:`~elastickv_async.Progress` to the caller's callback,
so the cost of progress does not grow with the number of entries or files. Every stage also
ends with one ``finished`` sample, whatever the clock did, so a caller always sees each stage
it ran. Without a callback nothing is sampled, and the samples' module is never loaded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Final

import anyio

from .concurrency import task_group

if TYPE_CHECKING:
    from .progress import ProgressCallback

__all__ = ["ProgressMeter"]

DEFAULT_INTERVAL_S: Final = 0.25


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
        from .progress import Progress

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
