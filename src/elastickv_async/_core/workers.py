"""CPU-bound work in worker processes, so that a run uses every core.

The event loop and its worker threads share one GIL, and the per-record work of the
adapters (parsing JSON, building protobuf, rendering files) is pure Python that holds it:
threads add no speed there, and small syscalls between such work queue up behind the GIL.
:class:`Workers` hands that work to worker processes instead, one batch per call (the same
on asyncio and trio). A process is started by the first call that needs it, so a run whose
input holds nothing for the adapters that use them (object bodies only, say) starts
none, and they are ended when the run leaves its ``async with Workers(...)`` block. The
first call waits for its process's start-up, but the adapters make it as soon as their
first records arrive, so little of the run's own work could have overlapped it.

What is sent must be a module-level function with picklable arguments and result. It
computes and returns; it never writes to the output (the run's
:class:`~elastickv_async._core.dump.writer.DumpWriter` owns that) and never logs. A call
is not interrupted once it has a process (a process stopped mid-call would have to be
killed and replaced): keep each one to a bounded batch so that cancellation stays prompt.
With no worker processes the same call runs in a worker thread, so results never depend on
the setting. A call made inside :func:`~elastickv_async._core.dump.tree.recording_reads`
records the digests of the tree files it reads in the caller's recorder, wherever it runs.

The processes run :mod:`~elastickv_async._core.worker_process` rather than
``anyio.to_process``: a worker of the latter that is stopped and continued while it writes
a large result (Ctrl-Z then ``fg``, ``kill -STOP``/``-CONT``) loses the rest of the reply
and leaves the run waiting forever, and its start-up imports anyio into every worker.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar, TypeVarTuple

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from . import worker_process
from .dump.tree import active_recorder
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


#: How long a worker process may take to exit once its input is closed, before it is killed.
_EXIT_GRACE: Final = 10.0


class _Process:
    """One worker process and this process's ends of its pipes.

    The pipes are written and read in a worker thread, a whole call in one thread hop: read
    on the event loop, a large reply arrives in pieces of the stream's buffer, each waiting
    for the loop's other work (the reading, the routing), and the worker process waits with
    it. The thread holds no GIL while it waits.
    """

    def __init__(self, process: anyio.abc.Process, requests: int, replies: int) -> None:
        self.process = process
        self._requests = requests
        self._replies = replies
        self._closed = False

    def _send_sync(self, frame: bytes) -> None:
        try:
            _write_all(self._requests, worker_process.HEADER.pack(len(frame)), frame)
        except BrokenPipeError:
            raise anyio.BrokenResourceError from None

    def _call_sync(self, request: bytes) -> tuple[bytes, bytes]:
        self._send_sync(request)
        head = _read_exactly(self._replies, 1 + worker_process.HEADER.size)
        (size,) = worker_process.HEADER.unpack_from(head, 1)
        return head[:1], _read_exactly(self._replies, size)

    async def send(self, frame: bytes) -> None:
        """Send one frame (the first, ``sys.path``)."""
        await anyio.to_thread.run_sync(self._send_sync, frame)

    async def call(self, request: bytes) -> tuple[bytes, bytes]:
        """The reply to ``request``: its status and its pickle."""
        return await anyio.to_thread.run_sync(self._call_sync, request)

    async def aclose(self) -> None:
        """End the process: close its input, let it exit, kill it if it does not."""
        with anyio.CancelScope(shield=True):
            if not self._closed:
                self._closed = True
                os.close(self._requests)
            with anyio.move_on_after(_EXIT_GRACE):
                await self.process.aclose()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.aclose()
            if self._replies >= 0:
                os.close(self._replies)
                self._replies = -1


def _write_all(fd: int, *parts: bytes) -> None:
    """Write ``parts`` whole (a write cut short by a stop and continue goes on)."""
    views = [memoryview(part) for part in parts if part]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]


def _read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``; :class:`anyio.IncompleteRead` at an end before them."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = os.readv(fd, [view[got:]])
        if count == 0:
            raise anyio.IncompleteRead
        got += count
    return bytes(buffer)


#: Where this package was imported from: a worker process imports it from there too,
#: whatever put it on ``sys.path``.
_IMPORTED_FROM: Final = str(Path(__file__).parents[2])


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (_IMPORTED_FROM, env.get("PYTHONPATH"))))
    return env


class Workers:
    """Runs CPU-bound calls for one run: in up to ``processes`` worker processes, or in a
    worker thread when ``processes`` is 0.

    Use it as ``async with Workers(n) as workers:``; a process starts on the first call that
    finds none idle, and every process ends on exit (or at :meth:`aclose`).
    """

    def __init__(self, processes: int) -> None:
        if processes < 0:
            raise UsageError("workers must be 0 or more")
        self.processes = processes
        self._limiter = anyio.CapacityLimiter(processes) if processes else None
        self._idle: list[_Process] = []
        self._running: set[_Process] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End every worker process (each finishes the call in hand first)."""
        with anyio.CancelScope(shield=True):
            while self._running:
                await self._running.pop().aclose()
            self._idle.clear()

    async def _start(self) -> _Process:
        requests_in, requests = os.pipe()
        replies, replies_out = os.pipe()
        try:
            process = await anyio.open_process(
                [sys.executable, "-m", worker_process.__name__],
                stdin=requests_in,
                stdout=replies_out,
                stderr=None,
                env=_environment(),
            )
        except BaseException:
            os.close(requests)
            os.close(replies)
            raise
        finally:
            # The child holds its own copies.
            os.close(requests_in)
            os.close(replies_out)
        started = _Process(process, requests, replies)
        self._running.add(started)
        # Functions are found where this process finds them (tests, scripts, plugins).
        await started.send(pickle.dumps(sys.path, pickle.HIGHEST_PROTOCOL))
        return started

    async def run(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
        """``func(*args)`` in a worker process (or thread); its exception is raised here.

        A worker process that dies midway (killed, out of memory) raises
        :class:`~elastickv_async._core.errors.ExecutionError` ``errWorkerProcessDied``.
        """
        if self._limiter is None:
            # A worker thread runs in a copy of this context: reads record where they should.
            return await anyio.to_thread.run_sync(func, *args)
        recorder = active_recorder()
        request = pickle.dumps((func, args, recorder is not None), pickle.HIGHEST_PROTOCOL)
        async with self._limiter:
            with anyio.CancelScope(shield=True):
                status, reply = await self._call(func, request)
        await anyio.lowlevel.checkpoint_if_cancelled()
        if status == worker_process.EXCEPTION:
            raise pickle.loads(reply)
        result, digests = pickle.loads(reply)
        if recorder is not None and digests:
            # A recorder may spill to disk: not on the event loop.
            await anyio.to_thread.run_sync(recorder.record_many, digests)
        return result  # type: ignore[no-any-return]

    async def _call(self, func: Callable[..., object], request: bytes) -> tuple[bytes, bytes]:
        worker = self._idle.pop() if self._idle else await self._start()
        try:
            reply = await worker.call(request)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.IncompleteRead):
            self._running.discard(worker)
            await worker.aclose()
            code = worker.process.returncode
            raise ExecutionError(
                f"a worker process died while running {func.__qualname__} (exit code {code})",
                code="errWorkerProcessDied",
            ) from None
        self._idle.append(worker)
        return reply
