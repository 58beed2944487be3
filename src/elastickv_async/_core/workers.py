"""CPU-bound work in worker processes, so that a run uses every core.

The event loop and its worker threads share one GIL, and the per-record work of the
adapters (parsing JSON, building protobuf, rendering files) is pure Python that holds it:
threads add no speed there, and small syscalls between such work queue up behind the GIL.
:class:`Workers` hands that work to worker processes instead, one batch per call (the same
on asyncio and trio). A process is started by the first call that needs it, so a run whose
input holds nothing for the adapters that use them (object bodies only, say) starts
none, and they are ended when the run leaves its ``async with Workers(...)`` block. The
first call waits for its process's start-up, but the adapters make it as soon as their
first records arrive, so little of the run's own work could have overlapped it. A process
holds up to two calls: while it runs one, the next waits in its pipe, so it does not idle
while its reply crosses back and this process sends more.

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

import contextlib
import fcntl
import os
import sys
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar, TypeVarTuple

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from .concurrency import task_group
from .dump.tree import active_recorder
from .errors import ExecutionError, UsageError

__all__ = [
    "AUTO_MIN_BYTES",
    "AUTO_MIN_LISTING",
    "OUTSTANDING",
    "Workers",
    "auto_processes",
    "available_cpus",
]

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


def auto_processes(*, large: bool, per_cpu: bool = False) -> int:
    """How many worker processes ``workers=None`` means: for a ``large`` input, one per CPU
    but one, since the run's own process keeps reading and writing on a core of its own, or
    one per CPU with ``per_cpu`` (an encode: its own process mostly waits for the workers'
    records, listing and sorting between them); none for a small input or on a single CPU.
    Each worker costs its start-up (some 0.3 s of imports) and some 35-50 MiB of memory.
    """
    cpus = available_cpus()
    if not large or cpus < 2:
        return 0
    return cpus if per_cpu else cpus - 1


#: Calls a worker process holds at once: the one it runs and the next, waiting in its pipe,
#: so that it goes on as soon as it has written a reply instead of waiting for this process
#: to read it and send more.
OUTSTANDING: Final = 2

#: Pipe capacity asked for (Linux): a call's request or reply (some 1 MiB for the
#: adapters' batches) crosses in one write instead of pieces of 64 KiB, each of which would
#: wait for the writing thread to take the GIL back from the event loop.
_PIPE_SIZE: Final = 1 << 20

_OUTSTANDING_CALLS: Final = attrgetter("outstanding")

#: How long a worker process may take to exit once its input is closed, before it is killed.
_EXIT_GRACE: Final = 10.0


class _Process:
    """One worker process and this process's ends of its pipes.

    Up to :data:`OUTSTANDING` calls share it: requests are written whole one at a time, and
    the worker answers them in the order they were sent, so each caller takes a ticket as
    it sends and reads its reply when the replies before it have been read. This process's
    ends of the pipes are non-blocking and served by the event loop: with pipes wide enough
    for a whole request or reply (:func:`_widen`), each crosses in one system call as soon
    as the loop sees the pipe ready. (Served by worker threads, each piece waited for the
    thread to take the GIL back from the event loop's CPU-bound work, some milliseconds,
    while the worker process waited with it.)
    """

    def __init__(self, process: anyio.abc.Process, requests: int, replies: int) -> None:
        from .worker_process import HEADER

        self.process = process
        self._header = HEADER
        #: Calls sent or about to be, whose replies are not read yet.
        self.outstanding = 0
        self._requests = requests
        self._replies = replies
        self._closed = False
        #: Set once a pipe broke: every call still waiting fails as the one that saw it.
        self._broken = False
        self._send_lock = anyio.Lock()
        self._close_lock = anyio.Lock()
        self._turn = anyio.Condition()
        self._sent = 0
        self._received = 0

    @property
    def broken(self) -> bool:
        """Whether a pipe broke: the process takes no more calls."""
        return self._broken

    async def send(self, frame: bytes) -> None:
        """Write one frame (the first, ``sys.path``, and each request) whole."""
        views = [memoryview(self._header.pack(len(frame))), memoryview(frame)]
        while views:
            try:
                written = os.writev(self._requests, views)
            except BlockingIOError:
                await anyio.wait_writable(self._requests)
                continue
            except BrokenPipeError:
                raise anyio.BrokenResourceError from None
            while views and written >= len(views[0]):
                written -= len(views.pop(0))
            if written:
                views[0] = views[0][written:]

    async def _read_exactly(self, size: int) -> bytes:
        """``size`` bytes of the replies; :class:`anyio.IncompleteRead` at an end before."""
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            try:
                count = os.readv(self._replies, [view[got:]])
            except BlockingIOError:
                await anyio.wait_readable(self._replies)
                continue
            if count == 0:
                raise anyio.IncompleteRead
            got += count
        return bytes(buffer)

    async def _receive(self) -> tuple[bytes, bytes]:
        head = await self._read_exactly(1 + self._header.size)
        (size,) = self._header.unpack_from(head, 1)
        return head[:1], await self._read_exactly(size)

    async def call(self, request: bytes) -> tuple[bytes, bytes]:
        """The reply to ``request``: its status and its pickle. Not to be cancelled midway
        (the caller shields it): a request half sent, or a reply left unread, would shift
        every later call onto the wrong reply.

        Raises :class:`anyio.BrokenResourceError` or :class:`anyio.IncompleteRead` when the
        process is gone, for this call and every call queued behind it.
        """
        async with self._send_lock:
            if self._broken:
                raise anyio.BrokenResourceError
            try:
                await self.send(request)
            except BaseException:
                self._broken = True
                raise
            ticket = self._sent
            self._sent += 1
        async with self._turn:
            while self._received != ticket:
                await self._turn.wait()
        try:
            if self._broken:
                raise anyio.BrokenResourceError
            return await self._receive()
        except BaseException:
            self._broken = True
            raise
        finally:
            async with self._turn:
                self._received += 1
                self._turn.notify_all()

    async def aclose(self) -> None:
        """End the process: close its input, let it exit, kill it if it does not."""
        with anyio.CancelScope(shield=True):
            async with self._close_lock:
                if not self._closed:
                    self._closed = True
                    # Not under a request being written: its descriptor stays valid.
                    async with self._send_lock:
                        self._broken = True
                        os.close(self._requests)
                with anyio.move_on_after(_EXIT_GRACE):
                    await self.process.aclose()
                if self.process.returncode is None:
                    self.process.kill()
                    await self.process.aclose()
                if self._replies >= 0:
                    # Nor under a reply being read: the calls still queued end first.
                    async with self._turn:
                        while self._received != self._sent:
                            await self._turn.wait()
                    os.close(self._replies)
                    self._replies = -1


def _widen(fd: int) -> None:
    """Ask for a pipe of :data:`_PIPE_SIZE` bytes; keep the default where that is refused
    (another system, or the user's pipe allowance spent)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, set_size, _PIPE_SIZE)


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
    finds none idle, and every process ends on exit (or at :meth:`aclose`). Each process
    takes up to :data:`OUTSTANDING` calls at once (the next request waits in its pipe while
    it runs one), so :attr:`in_flight` concurrent calls keep every process busy.
    """

    def __init__(self, processes: int) -> None:
        if processes < 0:
            raise UsageError("workers must be 0 or more")
        self.processes = processes
        self._limiter = anyio.CapacityLimiter(processes * OUTSTANDING) if processes else None
        self._running: list[_Process] = []
        self._start_lock = anyio.Lock()

    @property
    def in_flight(self) -> int:
        """How many calls at once keep every worker process busy (1 without processes)."""
        return self.processes * OUTSTANDING or 1

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
        """End every worker process (each finishes the calls in hand first)."""
        with anyio.CancelScope(shield=True):
            while self._running:
                await self._running.pop().aclose()

    async def _start(self) -> _Process:
        # pickle and the worker's protocol load with the first process: most short runs
        # start none.
        import pickle

        from . import worker_process

        requests_in, requests = os.pipe()
        replies, replies_out = os.pipe()
        for end in (requests, replies):
            _widen(end)
            os.set_blocking(end, False)
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
        try:
            # Functions are found where this process finds them (tests, scripts, plugins).
            await started.send(pickle.dumps(sys.path, pickle.HIGHEST_PROTOCOL))
        except BaseException:
            await started.aclose()
            raise
        # Only now may other calls find it: this frame comes first.
        self._running.append(started)
        return started

    async def start_all(self, first: Callable[[], object], started: anyio.Event) -> None:
        """Start every worker process with one call of ``first`` (a no-op whose import loads
        the caller's worker module there), then set ``started``: lanes that wait for it
        find the processes ready instead of each waiting for a start-up."""
        async with task_group() as tg:
            for _ in range(self.processes):
                tg.start_soon(self.run, first)
        started.set()

    async def run(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
        """``func(*args)`` in a worker process (or thread); its exception is raised here.

        A worker process that dies midway (killed, out of memory) raises
        :class:`~elastickv_async._core.errors.ExecutionError` ``errWorkerProcessDied`` in
        every call it had in hand.
        """
        if self._limiter is None:
            # A worker thread runs in a copy of this context: reads record where they should.
            return await anyio.to_thread.run_sync(func, *args)
        import pickle

        from . import worker_process

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

    def _least_busy(self) -> _Process | None:
        usable = [worker for worker in self._running if not worker.broken]
        return min(usable, key=_OUTSTANDING_CALLS, default=None)

    def _wants_start(self, worker: _Process | None) -> bool:
        """Whether a call should start a process rather than queue behind ``worker``'s."""
        if worker is None:
            return True
        usable = sum(not running.broken for running in self._running)
        return worker.outstanding > 0 and usable < self.processes

    async def _call(self, func: Callable[..., object], request: bytes) -> tuple[bytes, bytes]:
        worker = self._least_busy()
        if self._wants_start(worker):
            async with self._start_lock:  # another call may be starting one already
                worker = self._least_busy()
                if self._wants_start(worker):
                    worker = await self._start()
        assert worker is not None
        worker.outstanding += 1
        try:
            return await worker.call(request)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.IncompleteRead):
            if worker in self._running:
                self._running.remove(worker)
            await worker.aclose()
            code = worker.process.returncode
            raise ExecutionError(
                f"a worker process died while running {func.__qualname__} (exit code {code})",
                code="errWorkerProcessDied",
            ) from None
        finally:
            worker.outstanding -= 1
