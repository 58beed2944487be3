"""Shared mechanics of the benchmark scripts (``bench.py`` and the per-area ``bench_*.py``).

* Synthetic snapshots: :class:`FsmWriter` / :func:`write_fsm` frame ``(user_key, body)``
  records with the encoder's own helpers (:mod:`elastickv_async._core.encode.framing`), so the byte
  layout lives in the product only. Keys must come in snapshot (encoded-key) order; the writer
  checks it.
* Measurement: :meth:`Bench.measure` runs one workload function in a fresh interpreter and
  reports that child's wall time (of the function call only: interpreter start-up and imports
  excluded) and its peak RSS. The child reads its own ``VmHWM`` at the end: the high-water
  mark belongs to the address space, which ``exec`` replaces, so nothing of the parent (or of
  the input generator, which runs in a child of its own) is counted.
* Results: one row per measurement (workload, items, entries, seconds, items/s, MB/s of input,
  peak RSS MiB, 1-minute load average before and after), printed as text and optionally
  written as JSON.
* :func:`feed_adapter` drives one adapter's decoder directly, the way the pipeline does
  (same routing, batching and context), for the scripts' ``--mode adapter``.

MB are 10^6 bytes, MiB 2^20. This file is also the child's entry point
(``python scripts/benchlib.py --child MODULE:FUNCTION RESULT_FILE BACKEND``, JSON keyword
arguments on stdin); that is internal to :class:`Bench`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import inspect
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Final

import anyio
import anyio.to_thread

from elastickv_async._adapters.base import DecodeAdapter, DecodeContext, Routed
from elastickv_async._adapters.registry import REGISTRY
from elastickv_async._core.dump.writer import DumpWriter
from elastickv_async._core.encode.framing import frame_entry, header, ts_suffix
from elastickv_async._core.options import DecodeOptions
from elastickv_async._core.report import Report, make_logger
from elastickv_async._core.routing import Router
from elastickv_async._core.snapshot.entry import Entry, SnapshotHeader
from elastickv_async._core.snapshot.framing import TOMBSTONE_FLAG, VALUE_HEADER_SIZE

__all__ = [
    "COMMIT_TS",
    "MIB",
    "Bench",
    "FsmWriter",
    "Record",
    "Row",
    "add_common_arguments",
    "bench_from_args",
    "feed_adapter",
    "write_fsm",
]

MIB: Final = 1 << 20
#: The commit timestamp of every synthetic record (and the stream's ``last_commit_ts``).
COMMIT_TS: Final = 1 << 40
#: One snapshot record: user key and body (what follows the 9-byte value header).
Record = tuple[bytes, bytes]

_HERE: Final = Path(__file__).resolve()
_WRITE_BUFFER: Final = 16 * MIB
# The physical part of an HLC timestamp is above its 16 logical bits (as in the pipeline).
_HLC_LOGICAL_BITS: Final = 16


# --- synthetic snapshots ----------------------------------------------------------------------


class FsmWriter:
    """Writes an ``EKVPBBL1`` stream entry by entry (use as a context manager).

    Entries must arrive in snapshot order, i.e. ascending encoded key ``user_key ‖ BE(^ts)``
    (for one user key: newest version first); anything else raises :class:`ValueError`, since
    the product would read such a stream without complaint and the figures would be wrong.
    """

    def __init__(self, path: Path, last_commit_ts: int = COMMIT_TS) -> None:
        self.path = path
        self.entries = 0
        #: Bytes written so far (the header included).
        self.size = 0
        self._last_commit_ts = last_commit_ts
        self._last_key = b""
        self._out: IO[bytes] | None = None

    def __enter__(self) -> FsmWriter:
        self._out = self.path.open("wb", buffering=_WRITE_BUFFER)
        head = header(self._last_commit_ts)
        self._out.write(head)
        self.size = len(head)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def add(
        self, user_key: bytes, body: bytes, *, commit_ts: int = COMMIT_TS, tombstone: bool = False
    ) -> None:
        """Append one version of ``user_key`` (a tombstone's ``body`` should be empty)."""
        if self._out is None:
            raise RuntimeError("FsmWriter used outside its with block")
        key = user_key + ts_suffix(commit_ts)
        if key <= self._last_key:
            raise ValueError(f"entry {user_key[:48]!r} is out of snapshot order")
        self._last_key = key
        key_part, value_head = frame_entry(key, body)
        if tombstone:
            # The encoder writes live values only; flip the flags byte of its value header.
            flags = len(value_head) - VALUE_HEADER_SIZE
            value_head = value_head[:flags] + bytes((TOMBSTONE_FLAG,)) + value_head[flags + 1 :]
        self._out.write(key_part)
        self._out.write(value_head)
        self._out.write(body)
        self.entries += 1
        self.size += len(key_part) + len(value_head) + len(body)


def write_fsm(path: Path, records: Iterable[Record], commit_ts: int = COMMIT_TS) -> dict[str, int]:
    """Write ``records`` (in snapshot order), all stamped ``commit_ts``, as a bare stream.

    Returns ``{"entries": n, "bytes": stream size}``; with ``os.devnull`` as ``path`` that
    sizes the stream without storing it (for the scripts' adapter modes).
    """
    with FsmWriter(path, commit_ts) as out:
        for user_key, body in records:
            out.add(user_key, body, commit_ts=commit_ts)
    return {"entries": out.entries, "bytes": out.size}


# --- driving one adapter directly -------------------------------------------------------------


async def feed_adapter(
    adapter: str,
    out: Path,
    records: Iterable[Record],
    *,
    options: DecodeOptions | None = None,
    decoder: Callable[[DecodeContext], DecodeAdapter] | None = None,
) -> Report:
    """Feed ``records`` (live, in key order) straight to ``adapter``'s decoder and finalise it.

    Routing, batch limits and the context match the pipeline's; the reader, the resolver and
    the MANIFEST/CHECKSUMS stage are left out. ``decoder`` replaces the adapter's factory
    (e.g. to pass a tuning argument). Returns the run's report.
    """
    options = options or DecodeOptions(adapters=(adapter,))
    specs = {spec.name: spec for spec in REGISTRY}
    router = Router(specs, (adapter,))
    report = Report()
    scratch = out / ".scratch"
    await anyio.to_thread.run_sync(functools.partial(scratch.mkdir, parents=True))
    ctx = DecodeContext(
        options=options,
        writer=DumpWriter(out, jobs=options.jobs, fsync=options.fsync),
        log=make_logger(report).bind(adapter=adapter),
        report=report,
        header=SnapshotHeader(COMMIT_TS),
        scratch=scratch,
        now_ms=COMMIT_TS >> _HLC_LOGICAL_BITS,
        adapter_options=specs[adapter].resolve_options(options.adapter_options.get(adapter)),
    )
    sink = (decoder or specs[adapter].decoder)(ctx)
    batch: list[Routed] = []
    size = 0
    for key, body in records:
        target, prefix = router.route(key)
        if target != adapter:
            report.count("bench_not_routed")
            continue
        batch.append((prefix, Entry(key, body, COMMIT_TS, 0, False)))
        size += len(body)
        if len(batch) >= options.batch_size or size >= options.batch_bytes:
            await sink.handle(batch)
            batch, size = [], 0
    if batch:
        await sink.handle(batch)
    await sink.finalize()
    await anyio.to_thread.run_sync(shutil.rmtree, scratch)
    return report


# --- measured child processes -----------------------------------------------------------------


def _target_name(func: Callable[..., Any]) -> str:
    module = sys.modules[func.__module__]
    name = func.__module__
    if name == "__main__":  # a bench script run directly: the child imports it by file name
        name = Path(module.__file__ or "").stem
    return f"{name}:{func.__qualname__}"


def _peak_rss_kib() -> int:
    """This process's peak RSS: ``VmHWM`` on Linux, else ``ru_maxrss`` (KiB on Linux/BSD)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _run_async(func: Callable[[], Any], backend: str) -> Any:
    """Run ``func`` the way the CLI does: asyncio with uvloop when installed, or trio."""
    if backend == "trio":
        return anyio.run(func, backend="trio")
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return anyio.run(func)
    return anyio.run(func, backend_options={"use_uvloop": True})


def _child_main(target: str, result_file: str, backend: str) -> None:
    kwargs = json.loads(sys.stdin.read())
    module_name, _, func_name = target.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    start = time.perf_counter()
    if inspect.iscoroutinefunction(func):
        value = _run_async(functools.partial(func, **kwargs), backend)
    else:
        value = func(**kwargs)
    seconds = time.perf_counter() - start
    doc = {"seconds": seconds, "peak_rss_kib": _peak_rss_kib(), "value": value}
    Path(result_file).write_text(json.dumps(doc))


@dataclass(frozen=True, slots=True)
class ChildResult:
    """What a child reported: wall time of the call, its peak RSS and the function's value."""

    seconds: float
    peak_rss_kib: int
    value: Any


def _load1() -> float:
    return os.getloadavg()[0]


@dataclass(slots=True)
class Row:
    """One measurement."""

    workload: str
    items: int
    entries: int
    input_bytes: int
    seconds: float
    peak_rss_mib: float
    load_before: float
    load_after: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def items_per_s(self) -> float:
        """Items per second."""
        return self.items / self.seconds

    @property
    def mb_per_s(self) -> float:
        """Input MB (10^6 bytes) per second."""
        return self.input_bytes / 1e6 / self.seconds

    HEADER: ClassVar[str] = (
        f"{'workload':<26} {'items':>10} {'entries':>10} {'seconds':>8} {'items/s':>10} "
        f"{'MB/s':>7} {'peak RSS MiB':>12}  load 1m before/after"
    )

    def text(self) -> str:
        """The row as one line under :attr:`HEADER`."""
        return (
            f"{self.workload:<26} {self.items:>10,} {self.entries:>10,} {self.seconds:>8.2f} "
            f"{self.items_per_s:>10,.0f} {self.mb_per_s:>7.1f} {self.peak_rss_mib:>12.0f}  "
            f"{self.load_before:.2f}/{self.load_after:.2f}"
        )

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON object (rates included)."""
        doc = asdict(self)
        doc["items_per_s"] = round(self.items_per_s, 1)
        doc["mb_per_s"] = round(self.mb_per_s, 2)
        return doc


class Bench:
    """A benchmark session: work directories, measured children, printed and saved rows."""

    def __init__(
        self,
        *,
        command: str,
        workdir: Path | None = None,
        backend: str = "asyncio",
        json_path: Path | None = None,
    ) -> None:
        self.command = command
        self.workdir = workdir
        self.backend = backend
        self.json_path = json_path
        self.rows: list[Row] = []
        self._header_printed = False

    @contextlib.contextmanager
    def workspace(self, name: str) -> Iterator[Path]:
        """A fresh directory for one workload's files, removed afterwards (even on failure)."""
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=self.workdir))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def call(self, func: Callable[..., Any], **kwargs: Any) -> ChildResult:
        """Run ``func(**kwargs)`` in a fresh interpreter; ``kwargs`` must be JSON values.

        ``func`` is a module-level function of a module importable from ``scripts/`` (the
        scripts' own functions qualify); a coroutine function runs under :attr:`backend`.
        """
        with tempfile.TemporaryDirectory(prefix="bench-result-") as tmp:
            result_file = Path(tmp) / "result.json"
            cmd = [sys.executable, str(_HERE), "--child", _target_name(func), str(result_file)]
            proc = subprocess.run(
                [*cmd, self.backend], input=json.dumps(kwargs), text=True, check=False
            )
            if proc.returncode != 0:
                raise SystemExit(f"{_target_name(func)} failed (exit {proc.returncode})")
            doc = json.loads(result_file.read_text())
        return ChildResult(doc["seconds"], doc["peak_rss_kib"], doc["value"])

    def prepare(self, what: str, func: Callable[..., Any], **kwargs: Any) -> Any:
        """Run an input generator in a child (not measured as a row); return its value."""
        result = self.call(func, **kwargs)
        print(f"  prepared {what} in {result.seconds:.1f}s", flush=True)
        return result.value

    def measure(
        self,
        workload: str,
        func: Callable[..., Any],
        kwargs: dict[str, Any],
        *,
        items: int,
        entries: int,
        input_bytes: int,
    ) -> Row:
        """Run ``func(**kwargs)`` in a measured child; print, keep and return its row.

        A dict returned by ``func`` lands in the row's ``extra`` (JSON only).
        """
        before = _load1()
        result = self.call(func, **kwargs)
        value = result.value if isinstance(result.value, dict) else {}
        row = Row(
            workload=workload,
            items=items,
            entries=entries,
            input_bytes=input_bytes,
            seconds=result.seconds,
            peak_rss_mib=result.peak_rss_kib / 1024,
            load_before=before,
            load_after=_load1(),
            extra=value,
        )
        if not self._header_printed:
            print(Row.HEADER, flush=True)
            self._header_printed = True
        print(row.text(), flush=True)
        self.rows.append(row)
        return row

    def finish(self) -> None:
        """Print every row again as one table (when there are several); write the JSON file."""
        if len(self.rows) > 1:
            print(f"\nsummary: {self.command}\n{Row.HEADER}")
            for row in self.rows:
                print(row.text())
        if self.json_path is None:
            return
        doc = {
            "command": self.command,
            "python": sys.version.split()[0],
            "backend": self.backend,
            "cpus": os.cpu_count(),
            "rows": [row.to_json() for row in self.rows],
        }
        self.json_path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {self.json_path}")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json FILE``, ``--workdir DIR`` and ``--backend`` (shared by every bench script)."""
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument(
        "--workdir", type=Path, help="base directory for the inputs and outputs (default: temp)"
    )
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="event loop of the measured runs (asyncio uses uvloop when installed, like the CLI)",
    )


def bench_from_args(args: argparse.Namespace) -> Bench:
    """A :class:`Bench` for parsed :func:`add_common_arguments` options and this command."""
    command = " ".join(["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    return Bench(command=command, workdir=args.workdir, backend=args.backend, json_path=args.json)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child_main(*sys.argv[2:])
    else:
        raise SystemExit("benchlib.py is a library; run scripts/bench.py")
