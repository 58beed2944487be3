"""CPU-bound work in worker processes, so that a run uses every core.

The event loop and its worker threads share one GIL, and the per-record work of the
adapters (parsing JSON, building protobuf, rendering files) is pure Python that holds it:
threads add no speed there, and small syscalls between such work queue up behind the GIL.
:class:`Workers` hands that work to worker processes instead, one batch per call, through
:func:`anyio.to_process.run_sync` (the same on asyncio and trio; the processes are started
on first use and reused until the event loop ends).

What is sent must be a module-level function with picklable arguments and result. It
computes and returns; it never writes to the output (the run's
:class:`~elastickv_async._core.dump.writer.DumpWriter` owns that) and never logs. A call
is not interrupted once it has a process (a process cancelled while it starts would be
left behind, unreaped): keep each one to a bounded batch so that cancellation stays
prompt. With no worker processes the same call runs in a worker thread, so results never
depend on the setting. A call made inside
:func:`~elastickv_async._core.dump.tree.recording_reads` records the digests of the tree files
it reads in the caller's recorder, wherever it runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Final, TypeVar, TypeVarTuple

import anyio
import anyio.lowlevel
import anyio.to_process
import anyio.to_thread

from .dump.tree import active_recorder, recording_reads
from .errors import ExecutionError, UsageError

__all__ = ["AUTO_MIN_BYTES", "AUTO_MIN_LISTING", "Workers", "auto_processes", "available_cpus"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: ``auto`` starts worker processes for a snapshot at least this large, or a tree whose
#: CHECKSUMS is at least this long (some 2,500 files): below that, starting them costs
#: more than they save.
AUTO_MIN_BYTES: Final = 16 << 20
AUTO_MIN_LISTING: Final = 256 << 10


def available_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_processes(*, large: bool) -> int:
    """How many worker processes ``workers=None`` means: for a ``large`` input, one per CPU
    but one, since the run's own process keeps reading and writing on a core of its own;
    none for a small input or on a single CPU. Each worker costs its start-up (some 0.3 s of
    imports) and some 35-50 MiB of memory, which a third process on two cores would not earn.
    """
    cpus = available_cpus()
    return cpus - 1 if large and cpus > 1 else 0


class _Digests:
    """A worker process's recorder: the digests of one call, returned with its result."""

    def __init__(self) -> None:
        self.digests: list[tuple[str, bytes]] = []

    def record(self, rel: str, digest: bytes) -> None:
        self.digests.append((rel, digest))

    def record_many(self, digests: Iterable[tuple[str, bytes]]) -> None:
        self.digests.extend(digests)


def _recording(func: Callable[[*Ts], T], args: tuple[*Ts]) -> tuple[T, list[tuple[str, bytes]]]:
    """``func(*args)`` in a worker process, with the digests of the tree files it read."""
    recorder = _Digests()
    with recording_reads(recorder):
        result = func(*args)
    return result, recorder.digests


class Workers:
    """Runs CPU-bound calls for one run: in up to ``processes`` worker processes, or in a
    worker thread when ``processes`` is 0."""

    def __init__(self, processes: int) -> None:
        if processes < 0:
            raise UsageError("workers must be 0 or more")
        self.processes = processes
        self._limiter = anyio.CapacityLimiter(processes) if processes else None
        # Never waited on: a call holds one of the slots above before it asks for a process.
        self._processes = anyio.CapacityLimiter(processes) if processes else None

    async def run(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
        """``func(*args)`` in a worker process (or thread); its exception is raised here.

        A worker process that dies midway (killed, out of memory) raises
        :class:`~elastickv_async._core.errors.ExecutionError` ``errWorkerProcessDied``.
        """
        if self._limiter is None:
            # A worker thread runs in a copy of this context: reads record where they should.
            return await anyio.to_thread.run_sync(func, *args)
        recorder = active_recorder()
        try:
            async with self._limiter:
                with anyio.CancelScope(shield=True):
                    if recorder is None:
                        result = await anyio.to_process.run_sync(
                            func, *args, limiter=self._processes
                        )
                        digests: list[tuple[str, bytes]] = []
                    else:
                        result, digests = await anyio.to_process.run_sync(
                            _recording, func, args, limiter=self._processes
                        )
        except anyio.BrokenWorkerProcess as exc:
            cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
            raise ExecutionError(
                f"a worker process died while running {func.__qualname__}{cause}",
                code="errWorkerProcessDied",
            ) from None
        await anyio.lowlevel.checkpoint_if_cancelled()
        if recorder is not None and digests:
            # A recorder may spill to disk: not on the event loop.
            await anyio.to_thread.run_sync(recorder.record_many, digests)
        return result
