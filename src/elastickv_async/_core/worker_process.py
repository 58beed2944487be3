"""The body of a worker process: runs the calls :class:`~elastickv_async._core.workers.Workers`
sends, one at a time, until its standard input ends.

Started as ``python -m elastickv_async._core.worker_process``. It imports only the standard
library until a call names a function (unpickling it imports that function's module), so a
worker holds what its calls need and nothing else: no event loop, no logging.

Frames on both pipes are a big-endian 8-byte length and a pickle. The first frame from the
parent is its ``sys.path``; each next one is ``(func, args, record)``. Each reply is a
one-byte status (``R`` result, ``E`` exception) before its frame. Every write is repeated
until the whole frame is out: a write to a full pipe comes back short when the process is
stopped and continued (job control, ``kill -STOP``), and a reply cut short would leave the
parent waiting for the rest forever.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable, Iterable
from typing import Any, Final

__all__ = ["EXCEPTION", "HEADER", "RESULT", "main"]

#: A frame's length prefix.
HEADER: Final = struct.Struct(">Q")
#: Reply statuses.
RESULT: Final = b"R"
EXCEPTION: Final = b"E"


class _Digests:
    """The digests of the tree files one call read, returned with its result."""

    def __init__(self) -> None:
        self.digests: list[tuple[str, bytes]] = []

    def record(self, rel: str, digest: bytes) -> None:
        self.digests.append((rel, digest))

    def record_many(self, digests: Iterable[tuple[str, bytes]]) -> None:
        self.digests.extend(digests)


def _call(func: Callable[..., Any], args: tuple[Any, ...], record: bool) -> tuple[Any, list[Any]]:
    if not record:
        return func(*args), []
    from .dump.tree import recording_reads

    recorder = _Digests()
    with recording_reads(recorder):
        result = func(*args)
    return result, recorder.digests


def _read_exactly(fd: int, size: int) -> bytearray | None:
    """``size`` bytes from ``fd``; None at a clean end before the first byte."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = os.readv(fd, [view[got:]])
        if count == 0:
            if got == 0:
                return None
            raise EOFError("the parent closed the pipe mid-frame")
        got += count
    return buffer


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _serve(requests: int, replies: int) -> None:
    header = _read_exactly(requests, HEADER.size)
    if header is None:
        return
    path = _read_exactly(requests, HEADER.unpack(header)[0])
    assert path is not None
    sys.path[:] = pickle.loads(path)
    while (header := _read_exactly(requests, HEADER.size)) is not None:
        frame = _read_exactly(requests, HEADER.unpack(header)[0])
        if frame is None:
            raise EOFError("the parent closed the pipe mid-frame")
        try:
            func, args, record = pickle.loads(frame)
            del frame
            reply = pickle.dumps(_call(func, args, record), pickle.HIGHEST_PROTOCOL)
            status = RESULT
        except BaseException as exc:
            status = EXCEPTION
            try:
                reply = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
            except BaseException:
                reply = pickle.dumps(RuntimeError(repr(exc)), pickle.HIGHEST_PROTOCOL)
        _write_all(replies, status + HEADER.pack(len(reply)))
        _write_all(replies, reply)
        del reply


def main() -> None:
    """Serve calls on the inherited standard input and output until the parent closes them."""
    # Ctrl-C reaches the whole process group: the parent decides, and ends this process by
    # closing its input once the call in hand is done.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests, replies = os.dup(0), os.dup(1)
    # Nothing a call prints or reads may touch the pipes.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    _serve(requests, replies)


if __name__ == "__main__":
    main()
