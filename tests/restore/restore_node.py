"""The reference binaries and a real elastickv node for the restore tests.

:func:`unpack` decompresses the shipped ``*.xz`` binaries once per test session (never into
the read-only shared folder). :class:`Node` starts ``elastickv`` on a prepared
``<raftDataDir>/<raftId>`` with every listener on a free loopback port, waits (bounded) until
it serves reads, and stops it by its PID; use it as a context manager so the process never
outlives the test.
"""

from __future__ import annotations

import lzma
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

import redis

__all__ = ["BINARIES", "Node", "free_ports", "unpack"]

BINARIES: Final = ("elastickv", "elastickv-snapshot-prepare-restore")
#: How long a node may take to elect itself and serve reads (it takes about a second).
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 15.0
_POLL_S: Final = 0.1


def unpack(bin_dir: Path, base: Path) -> dict[str, Path]:
    """Decompress each of :data:`BINARIES` from ``bin_dir/<name>.xz`` into ``base/elastickv-bin``.

    Pass the test session's base temp directory: the binaries are unpacked once per session
    and reused by every test module.
    """
    dest = base / "elastickv-bin"
    out = {name: dest / name for name in BINARIES}
    done = dest / ".complete"
    if done.is_file():
        return out
    dest.mkdir(exist_ok=True)
    for name, target in out.items():
        with lzma.open(bin_dir / f"{name}.xz") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        target.chmod(0o755)
    done.touch()
    return out


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    with ExitStack() as stack:
        socks = [stack.enter_context(closing(socket.socket())) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


@dataclass
class Node:
    """One single-voter elastickv node on ``raft_data_dir/raft_id``, listening on loopback."""

    binary: Path
    raft_data_dir: Path
    raft_id: str
    raft_port: int
    log_path: Path
    #: start a new one-node cluster instead of loading the data directory
    bootstrap: bool = False
    #: extra environment (e.g. ``ELASTICKV_RAFT_SNAPSHOT_COUNT``)
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def raft_address(self) -> str:
        """The Raft address the data directory's peers file must name."""
        return f"127.0.0.1:{self.raft_port}"

    def endpoint(self, api: str) -> str:
        """``http://127.0.0.1:<port>`` of ``dynamo``, ``s3`` or ``sqs``."""
        return f"http://127.0.0.1:{self.ports[api]}"

    @property
    def data_dir(self) -> Path:
        """``<raftDataDir>/<raftId>``."""
        return self.raft_data_dir / self.raft_id

    def command(self) -> list[str]:
        """The command line; a restored node has no ``--raftBootstrap``: its directory decides."""
        redis_, dynamo, s3, sqs, metrics = free_ports(5)
        self.ports = {"redis": redis_, "dynamo": dynamo, "s3": s3, "sqs": sqs}
        return [
            str(self.binary),
            "--address",
            self.raft_address,
            "--raftId",
            self.raft_id,
            "--raftDataDir",
            str(self.raft_data_dir),
            "--redisAddress",
            f"127.0.0.1:{redis_}",
            "--dynamoAddress",
            f"127.0.0.1:{dynamo}",
            "--s3Address",
            f"127.0.0.1:{s3}",
            "--sqsAddress",
            f"127.0.0.1:{sqs}",
            "--metricsAddress",
            f"127.0.0.1:{metrics}",
            "--pprofAddress",
            "",
            *(["--raftBootstrap"] if self.bootstrap else []),
        ]

    def redis(self) -> redis.Redis:
        """A binary-safe RESP2 client (this server has no HELLO)."""
        return redis.Redis(
            host="127.0.0.1", port=self.ports["redis"], protocol=2, socket_timeout=10
        )

    def __enter__(self) -> Node:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        """Poll until a read succeeds; fail with the log's tail if the node dies or stalls."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"elastickv exited with {self.process.returncode}: {self.tail()}"
                )
            try:
                with self.redis() as client:
                    client.type("restore-test:readiness-probe")
                return
            except redis.RedisError as exc:
                last = exc
            time.sleep(_POLL_S)
        raise RuntimeError(
            f"elastickv did not serve reads in {START_TIMEOUT_S}s ({last}): {self.tail()}"
        )

    def tail(self, lines: int = 20) -> str:
        """The last lines of the node's log, for failure messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return " | ".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the node by its PID, SIGKILL it if it has not exited in time, and reap it."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)
