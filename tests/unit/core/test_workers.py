"""Worker processes for CPU-bound batches: where calls run, what comes back, and that a
run's output does not depend on how many processes it used."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import anyio
import pytest
from support import REPO_ROOT, DigestLog, run_independent_files

from elastickv_async._core import workers as workers_module
from elastickv_async._core.cli import main
from elastickv_async._core.dump.tree import DumpTree, recording_reads
from elastickv_async._core.encode.api import encode_snapshot
from elastickv_async._core.errors import (
    ChecksumMismatch,
    DumpTreeError,
    ExecutionError,
    UsageError,
)
from elastickv_async._core.options import DecodeOptions, EncodeOptions
from elastickv_async._core.pipeline import decode_snapshot
from elastickv_async._core.workers import (
    AUTO_MIN_BYTES,
    AUTO_MIN_LISTING,
    Workers,
    auto_processes,
)

pytestmark = pytest.mark.anyio

SAMPLE = REPO_ROOT / "examples" / "sample.fsm"
needs_sample = pytest.mark.skipif(not SAMPLE.is_file(), reason="examples/sample.fsm is absent")


def _pid_and_square(n: int) -> tuple[int, int]:
    return os.getpid(), n * n


def _refuse(path: str) -> None:
    raise DumpTreeError(f"{path}: refused", code="ErrTest", path=path)


async def test_no_processes_runs_in_this_process() -> None:
    pid, square = await Workers(0).run(_pid_and_square, 7)
    assert (pid, square) == (os.getpid(), 49)


async def test_processes_run_the_call_elsewhere_and_return_its_result() -> None:
    async with Workers(2) as workers:
        results = [await workers.run(_pid_and_square, n) for n in range(3)]
    assert [square for _, square in results] == [0, 1, 4]
    assert all(pid != os.getpid() for pid, _ in results)


async def test_an_error_in_a_worker_process_arrives_typed() -> None:
    async with Workers(1) as workers:
        with pytest.raises(DumpTreeError) as caught:
            await workers.run(_refuse, "a/b.json")
    assert caught.value.code == "ErrTest"
    assert caught.value.path == "a/b.json"


async def test_a_worker_process_imports_only_what_its_calls_need() -> None:
    """A worker starts with the standard library: no event loop, no logging, no adapter, and
    not the caller's ``__main__`` again (``__mp_main__``, as spawn would)."""
    heavy = ("anyio", "structlog", "elastickv_async._adapters", "__mp_main__")
    probe = f"[m for m in {heavy!r} if m in __import__('sys').modules]"
    async with Workers(1) as workers:
        assert await workers.run(eval, probe) == []


async def test_ctrl_c_is_left_to_the_run_a_worker_process_goes_on() -> None:
    """SIGINT reaches the whole process group: the run decides what to do, and a worker
    finishes its calls until the run closes its input."""
    async with Workers(1) as workers:
        pid, _ = await workers.run(_pid_and_square, 0)
        os.kill(pid, signal.SIGINT)
        assert await workers.run(_pid_and_square, 4) == (pid, 16)


async def test_a_worker_process_stopped_and_continued_mid_reply_still_delivers_it() -> None:
    """Ctrl-Z then ``fg`` (or ``kill -STOP``/``-CONT``) cuts a write to a full pipe short;
    the worker writes the rest, so a large result arrives whole instead of leaving the run
    waiting for it forever."""
    size = 8 << 20
    async with Workers(1) as workers:
        pid, _ = await workers.run(_pid_and_square, 0)
        done = threading.Event()

        def stop_and_continue() -> None:
            while not done.is_set():
                os.kill(pid, signal.SIGSTOP)
                time.sleep(0.002)
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.002)

        pauser = threading.Thread(target=stop_and_continue)
        pauser.start()
        try:
            with anyio.fail_after(300):
                results = [await workers.run(bytes, size) for _ in range(10)]
        finally:
            done.set()
            pauser.join()
    assert [len(r) for r in results] == [size] * 10


def _die() -> None:
    os._exit(9)


async def test_a_worker_process_that_dies_is_a_typed_error_and_the_pool_goes_on() -> None:
    async with Workers(1) as workers:
        with pytest.raises(ExecutionError) as caught:
            await workers.run(_die)
        assert caught.value.code == "errWorkerProcessDied"
        assert "_die" in str(caught.value) and "exit code 9" in str(caught.value)
        _, square = await workers.run(_pid_and_square, 3)
    assert square == 9


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One item per worker process started."""
    starts: list[int] = []
    start = Workers._start

    async def counted(self: Workers) -> object:
        starts.append(1)
        return await start(self)

    monkeypatch.setattr(Workers, "_start", counted)
    return starts


async def test_a_process_starts_at_the_first_call_not_on_entry(started: list[int]) -> None:
    """A run whose input gives its worker-using adapters nothing (an S3-only snapshot) pays
    for no process; the first call starts one and the next calls reuse it."""
    async with Workers(2):
        pass
    assert started == []
    async with Workers(2) as workers:
        pids = {(await workers.run(_pid_and_square, n))[0] for n in range(3)}
    assert len(started) == 1
    assert len(pids) == 1


def _nothing() -> None:
    pass


async def test_start_all_starts_every_process_before_it_says_so(started: list[int]) -> None:
    """start_all sets its event once each process has answered a first call; calls after it
    start no process."""
    ready = anyio.Event()
    async with Workers(2) as workers:
        await workers.start_all(_nothing, ready)
        assert ready.is_set() and len(started) == 2
        pids = {(await workers.run(_pid_and_square, n))[0] for n in range(4)}
    assert len(started) == 2 and len(pids) <= 2


def test_negative_process_count_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        Workers(-1)


def test_auto_leaves_a_cpu_to_the_run_and_starts_nothing_for_a_small_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert auto_processes(large=False) == auto_processes(large=False, per_cpu=True) == 0
    for cpus, spare, each in ((1, 0, 0), (2, 1, 2), (8, 7, 8)):
        monkeypatch.setattr(workers_module, "available_cpus", lambda cpus=cpus: cpus)
        assert auto_processes(large=True) == spare
        assert auto_processes(large=True, per_cpu=True) == each


def test_an_encode_of_a_large_tree_starts_a_worker_per_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auto: a worker per CPU for a tree of many files (a long CHECKSUMS, or many entries
    without one) or of few large files (an SQS queue's messages, even in a redirected
    adapter root); none for a small tree, however its links point."""
    from elastickv_async._core.dump.roots import TreeRoots
    from elastickv_async._core.encode import api

    def auto(roots: Path | TreeRoots) -> int:
        return api._workers(EncodeOptions(workers=None), TreeRoots.of(roots)).processes

    monkeypatch.setattr(workers_module, "available_cpus", lambda: 2)
    long_listing = tmp_path / "long"
    long_listing.mkdir()
    (long_listing / "CHECKSUMS").write_bytes(b"x" * AUTO_MIN_LISTING)
    assert auto(long_listing) == 2
    assert api._workers(EncodeOptions(workers=1), TreeRoots(long_listing)).processes == 1
    (long_listing / "CHECKSUMS").write_bytes(b"x" * (AUTO_MIN_LISTING - 1))
    assert auto(long_listing) == 0

    few_large = tmp_path / "large" / "sqs" / "q"
    few_large.mkdir(parents=True)
    with open(few_large / "messages.jsonl", "wb") as file:
        file.truncate(AUTO_MIN_BYTES - 1000)
    (tmp_path / "large" / "CHECKSUMS").write_bytes(b"x" * 200)
    (tmp_path / "large" / "big").symlink_to(few_large / "messages.jsonl")
    assert auto(tmp_path / "large") == 0
    (few_large / "_queue.json").write_bytes(b"x" * 800)
    assert auto(tmp_path / "large") == 2
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (tmp_path / "large" / "sqs").rename(moved / "sqs")
    assert auto(tmp_path / "large") == 0
    assert auto(TreeRoots(tmp_path / "large", {"sqs": moved})) == 2

    many = tmp_path / "many" / "redis"
    many.mkdir(parents=True)
    for index in range(api._AUTO_MIN_ENTRIES):
        (many / f"k{index}").touch()
    assert auto(tmp_path / "many") == 2
    (many / "k0").unlink()
    assert auto(tmp_path / "many") == 0


@needs_sample
async def test_decode_and_encode_do_not_depend_on_the_process_count(tmp_path: Path) -> None:
    trees = {}
    for workers in (0, 2):
        tree = tmp_path / f"tree-{workers}"
        await decode_snapshot(SAMPLE, tree, DecodeOptions(workers=workers))
        trees[workers] = run_independent_files(tree)
    assert trees[0] == trees[2]
    outputs = []
    for workers in (0, 2):
        out = tmp_path / f"out-{workers}.fsm"
        result = await encode_snapshot(tmp_path / "tree-0", out, EncodeOptions(workers=workers))
        assert result.report.counters["encode.files_verified"] == len(trees[0])
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


@needs_sample
async def test_a_changed_file_found_by_a_worker_process_publishes_nothing(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    await decode_snapshot(SAMPLE, tree)
    victim = next(p for p in sorted((tree / "sqs").rglob("*.jsonl")))
    victim.write_bytes(victim.read_bytes() + b"\n")
    out = tmp_path / "out.fsm"
    with pytest.raises(ChecksumMismatch):
        await encode_snapshot(tree, out, EncodeOptions(workers=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


def test_the_library_stays_in_process_unless_asked_and_the_cli_chooses() -> None:
    """A library caller's ``__main__`` is never re-imported by surprise; the CLI's default is
    the automatic choice."""
    from elastickv_async._core.cli import _build_parser, _decode_options, encode_options

    assert DecodeOptions().workers == 0 and EncodeOptions().workers == 0
    parser = _build_parser()
    decode = parser.parse_args(["decode", "--input", "a", "--output", "b"])
    encode = parser.parse_args(["encode", "--input", "a", "--output", "b"])
    assert _decode_options(decode).workers is None
    assert encode_options(encode).workers is None


@pytest.mark.parametrize("command", ["decode", "encode"])
def test_cli_refuses_a_negative_worker_count(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in"
    source.write_bytes(b"")
    argv = [command, "--input", str(source), "--output", str(tmp_path / "out"), "--workers", "-1"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "workers must be 0 or more" in err[0]


def _read_tree_file(root: str, parts: tuple[str, ...], name: str) -> int:
    with DumpTree(Path(root)).directory(parts) as directory:
        data = directory.read(name)
    return os.getpid() if data is not None else -1


@pytest.mark.parametrize("processes", [0, 1])
async def test_files_read_by_a_call_are_recorded_by_its_caller(
    tmp_path: Path, processes: int
) -> None:
    """Inside ``recording_reads``, a call reading tree files records their digests in the
    caller's recorder, whether it ran in a worker process or a thread; outside, nothing."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.json").write_bytes(b"[1]")
    recorder = DigestLog()
    async with Workers(processes) as workers:
        with recording_reads(recorder):
            pid = await workers.run(_read_tree_file, str(tmp_path), ("d",), "f.json")
        assert (pid != os.getpid()) == (processes > 0)
        assert recorder.digests == {"d/f.json": hashlib.sha256(b"[1]").digest()}
        await workers.run(_read_tree_file, str(tmp_path), ("d",), "f.json")
    assert recorder.records == 1


def _children() -> set[str]:
    me = Path("/proc") / str(os.getpid()) / "task"
    return {pid for task in me.iterdir() for pid in (task / "children").read_text().split()}


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_cancelled_call_finishes_and_leaving_the_block_ends_every_process(backend: str) -> None:
    """Cancelled while its worker process is still starting, a call finishes first (a process
    stopped mid-call would be left unreaped), then the cancellation takes effect; leaving the
    ``async with`` block ends the processes, with nothing left to reap or to warn about."""
    import gc
    import warnings

    finished: list[tuple[int, int]] = []
    during: set[str] = set()

    async def cancelled_early() -> None:
        async with Workers(2) as workers:
            with anyio.move_on_after(0.01):
                finished.append(await workers.run(_pid_and_square, 3))
            during.update(_children())

    before = _children()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        anyio.run(cancelled_early, backend=backend)
        gc.collect()
    assert [w.message for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert len(during - before) == 1  # the call's own: none start on entry
    assert _children() <= before
    assert finished == []


# --- two calls in flight per worker process -------------------------------------------------


def _echo_size(size: int) -> bytes:
    return bytes([size % 251]) * size


def _wait_for(path: str, then_exit: int | None = None) -> int:
    """Block until ``path`` exists (the test's signal); then exit with ``then_exit`` if given."""
    while not os.path.exists(path):
        time.sleep(0.002)
    if then_exit is not None:
        os._exit(then_exit)
    return os.getpid()


class _SendLog:
    """Records, at each request sent, how many requests its process then holds unanswered;
    :meth:`until` waits for a number of them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from elastickv_async._core import workers as workers_module

        self.log: list[int] = []
        self._wanted: tuple[int, anyio.Event] | None = None
        send = workers_module._Process.send

        async def counted(process: workers_module._Process, frame: bytes) -> None:
            await send(process, frame)
            if process.outstanding:  # not the first frame (sys.path)
                self.log.append(process._sent - process._received + 1)
                if self._wanted is not None and len(self.log) >= self._wanted[0]:
                    self._wanted[1].set()

        monkeypatch.setattr(workers_module._Process, "send", counted)

    async def until(self, count: int) -> None:
        if len(self.log) < count:
            self._wanted = (count, anyio.Event())
            with anyio.fail_after(60):
                await self._wanted[1].wait()


async def test_concurrent_calls_on_one_process_each_get_their_own_result() -> None:
    """Replies come back in the order the requests went out, each to its caller, also when
    requests and replies are larger than a pipe holds."""
    sizes = [3 << 20, 10, 2 << 20, 0, 1 << 20, 70_000, 5 << 20, 1]
    got: dict[int, bytes] = {}

    async def one(index: int, size: int) -> None:
        got[index] = await workers.run(_echo_size, size)

    async with Workers(1) as workers, anyio.create_task_group() as tg:
        for index, size in enumerate(sizes):
            tg.start_soon(one, index, size)
    assert {index: len(data) for index, data in got.items()} == dict(enumerate(sizes))
    assert all(data == _echo_size(sizes[index]) for index, data in got.items())


async def test_a_process_holds_at_most_two_calls_and_the_next_waits_in_its_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five calls at once on one process: two are sent (the one it runs and the next), the
    others wait here until a reply is read."""
    sent = _SendLog(monkeypatch)
    go = tmp_path / "go"
    pids: list[int] = []

    async def one() -> None:
        pids.append(await workers.run(_wait_for, str(go)))

    async with Workers(1) as workers, anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
        try:
            await sent.until(2)
            await anyio.wait_all_tasks_blocked()
            assert sent.log == [1, 2]
        finally:  # the calls in hand finish before anything else happens
            go.touch()
    assert len(pids) == 5 and len(set(pids)) == 1
    assert max(sent.log) == 2 and len(sent.log) == 5


async def test_calls_go_to_an_idle_process_before_a_second_one_queues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two processes, two calls at once run side by side (one each); the third and
    fourth wait in their pipes."""
    sent = _SendLog(monkeypatch)
    go = tmp_path / "go"
    pids: list[int] = []

    async def one() -> None:
        pids.append(await workers.run(_wait_for, str(go)))

    async with Workers(2) as workers, anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one)
        try:
            await sent.until(4)
        finally:
            go.touch()
    assert len(set(pids)) == 2
    assert sorted(sent.log) == [1, 1, 2, 2]


async def test_a_process_that_dies_with_two_calls_in_hand_fails_both_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The call it was running and the one waiting in its pipe both raise
    ``errWorkerProcessDied``; the pool starts a new process for the next call."""
    sent = _SendLog(monkeypatch)
    go = tmp_path / "go"
    errors: list[ExecutionError] = []

    async def one(then_exit: int) -> None:
        try:
            await workers.run(_wait_for, str(go), then_exit)
        except ExecutionError as exc:
            errors.append(exc)

    async with Workers(1) as workers:
        async with anyio.create_task_group() as tg:
            # Either may be sent first (trio starts tasks in any order): both would exit.
            tg.start_soon(one, 9)
            tg.start_soon(one, 9)
            try:
                await sent.until(2)
            finally:
                go.touch()
        assert [exc.code for exc in errors] == ["errWorkerProcessDied"] * 2
        assert all("_wait_for" in str(exc) and "exit code 9" in str(exc) for exc in errors)
        _, square = await workers.run(_pid_and_square, 5)
    assert square == 25


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cancelled_with_two_calls_in_hand_both_finish_and_no_process_is_left(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancellation that comes while a process holds two calls lets both finish (neither
    result is delivered), then leaving the block ends the process."""
    go = tmp_path / "go"
    delivered: list[int] = []
    during: set[str] = set()
    before = _children()
    sent = _SendLog(monkeypatch)

    async def cancelled_with_two() -> None:
        log: list[int] = []

        async def one() -> None:
            delivered.append(await workers.run(_wait_for, str(go)))

        async with Workers(1) as workers, anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
            try:
                await sent.until(2)
                log.append(1)
                during.update(_children())
                tg.cancel_scope.cancel()
            finally:
                go.touch()
        assert log == [1]

    anyio.run(cancelled_with_two, backend=backend)
    assert delivered == []
    assert len(during - before) == 1
    assert _children() <= before
