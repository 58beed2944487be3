"""Fault trials shared by the fast tests and ``scripts/faults.py``: kill a decode or an encode
at a chosen point, fail one system call of the writer, fill the disk; then check what was
left on disk against what the project promises (README "Guarantees").

Each trial returns the problems it found (an empty list when every promise held).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio

from elastickv_async import decode_snapshot, encode_snapshot
from elastickv_async._core.cli import main
from elastickv_async._core.dump.checksums import compute_checksums
from elastickv_async._core.pipeline import INCOMPLETE_MARKER
from elastickv_async._core.runfiles import leftover_owner

REPO_ROOT: Final = Path(__file__).resolve().parent.parent.parent
SAMPLE_FSM: Final = REPO_ROOT / "examples" / "sample.fsm"
#: The system calls the fault layer can fail (the writer's and the publisher's).
FAULT_CALLS: Final = ("write", "fsync", "rename", "mkdir", "open", "link", "fchmod", "ftruncate")
#: Entries that are not part of a dump tree's content.
_UNCOMPARED: Final = frozenset({"MANIFEST.json", "CHECKSUMS"})

#: A child running the CLI that counts calls of the patched ``os`` functions and, at the Nth
#: one, dies as SIGKILL would (no cleanup). N = 0 only counts, and prints the count at exit.
_CHILD: Final = """
import itertools, os, sys
from elastickv_async._core.cli import main
names, stop = sys.argv.pop(1).split(","), int(sys.argv.pop(1))
counter = itertools.count(1)
def patch(name):
    real = getattr(os, name)
    def counted(*args, **kwargs):
        if next(counter) == stop:
            os._exit(137)
        return real(*args, **kwargs)
    setattr(os, name, counted)
for name in names:
    patch(name)
code = main(sys.argv[1:])
print(next(counter) - 1, flush=True)
sys.exit(code)
"""
_KILL_CALLS: Final = ("write", "fsync", "rename", "mkdir", "open", "link", "unlink")


@dataclass(frozen=True, slots=True)
class Reference:
    """What a good run produces: the decoded tree's files and the encoded .fsm."""

    base: Path
    tree: Path
    files: dict[str, bytes]
    fsm: bytes


def make_reference(base: Path) -> Reference:
    """Decode the sample and encode it back, once, as the yardstick of every trial."""
    tree = base / "reference-tree"
    anyio.run(decode_snapshot, SAMPLE_FSM, tree)
    anyio.run(encode_snapshot, tree, base / "reference.fsm")
    return Reference(base, tree, tree_files(tree), (base / "reference.fsm").read_bytes())


def tree_files(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by relative path (symlinks are not followed)."""
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def _leftovers(root: Path, *, tolerate_own: bool = False) -> list[str]:
    """Temporary entries and lock files under ``root``.

    With ``tolerate_own``, entries tagged with this process's pid are not listed: a fault
    injected into a cleanup call (an ``open`` inside ``rmtree``) can leave them, and the
    next run removes them once this process is gone.
    """
    if not root.exists():
        return []
    found = []
    for path in root.rglob("*"):
        owner = leftover_owner(path.name)
        if owner is None and not path.name.endswith(".lock"):
            continue
        if tolerate_own and owner == os.getpid():
            continue
        found.append(path.relative_to(root).as_posix())
    return sorted(found)


def check_decode_tree(out: Path, ref: Reference, *, finished: bool) -> list[str]:
    """The promises about a decode output after any run: MANIFEST.json only on a complete,
    verifiable tree; no torn file (every file present is whole); after a run that ended by
    itself (not killed), no temporary entries."""
    problems: list[str] = []
    if not out.exists():
        return problems
    files = tree_files(out)
    if "MANIFEST.json" in files:
        if compute_checksums(out) != files.get("CHECKSUMS"):
            problems.append("MANIFEST.json on a tree that does not match CHECKSUMS")
        missing = sorted(set(ref.files) - set(files))
        if missing:
            problems.append(f"MANIFEST.json on an incomplete tree (missing {missing[:3]})")
    for rel, data in files.items():
        parts = rel.split("/")
        if rel in _UNCOMPARED or rel == INCOMPLETE_MARKER:
            continue
        if any(leftover_owner(part) is not None for part in parts):
            continue  # a killed run's temp file or scratch: removed by the next run
        if ref.files.get(rel) != data:
            problems.append(f"torn or foreign file {rel}")
    left = _leftovers(out, tolerate_own=True)
    if finished and left:
        problems.append(f"temporary entries left: {left[:3]}")
    if files and "MANIFEST.json" not in files and INCOMPLETE_MARKER not in files:
        problems.append("an unfinished tree without the marker --force needs")
    return problems


def check_encode_pair(out: Path, ref: Reference, old: tuple[bytes, bytes]) -> list[str]:
    """The .fsm is the previous one or the new one, never neither and never torn; the sidecar
    either matches it or records another file's sha256 (which readers detect)."""
    problems = []
    if not out.exists():
        return ["neither the previous nor the new .fsm at the output path"]
    fsm = out.read_bytes()
    if fsm not in (old[0], ref.fsm):
        problems.append("torn .fsm at the output path")
    sidecar = out.with_name(out.name + ".encode_info.json")
    try:
        recorded = json.loads(sidecar.read_bytes())["output_fsm_sha256"]
    except (OSError, ValueError, KeyError):
        return [*problems, "sidecar missing or unreadable"]
    known = {hashlib.sha256(old[0]).hexdigest(), hashlib.sha256(ref.fsm).hexdigest()}
    if recorded not in known:
        problems.append("sidecar describes neither the previous nor the new .fsm")
    return problems


def previous_pair(out: Path) -> tuple[bytes, bytes]:
    """Plant a previous good-looking pair at ``out``; return its bytes."""
    old = b"EKVPBBL1" + bytes(8)
    info = json.dumps({"output_fsm_sha256": hashlib.sha256(old).hexdigest()}).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(old)
    out.with_name(out.name + ".encode_info.json").write_bytes(info)
    return old, info


def _child(calls: tuple[str, ...], stop: int, args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, ",".join(calls), str(stop), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def count_calls(args: list[str]) -> int:
    """How many patched system calls a whole run of ``args`` makes."""
    child = _child(_KILL_CALLS, 0, args)
    out, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"counting run failed: {err.strip()}")
    return int(out.split()[-1])


def decode_args(out: Path, *extra: str) -> list[str]:
    """CLI arguments of a quiet decode of the sample into ``out``."""
    return ["decode", "--input", str(SAMPLE_FSM), "--output", str(out), "--quiet", *extra]


def encode_args(ref: Reference, out: Path) -> list[str]:
    """CLI arguments of a quiet encode of the reference tree into ``out`` (replacing it)."""
    return ["encode", "--input", str(ref.tree), "--output", str(out), "--quiet", "--force"]


def _killed(child: subprocess.Popen[str], *, at: float | None) -> int:
    if at is not None:
        time.sleep(at)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGKILL)
    child.communicate()
    return child.returncode


def kill_decode(ref: Reference, work: Path, *, stop: int = 0, at: float | None = None) -> list[str]:
    """Kill a decode at its ``stop``-th system call (or ``at`` seconds in), check what it left,
    then check that ``--force`` reuses the directory and produces the reference tree."""
    out = work / "out"
    code = _killed(_child(_KILL_CALLS, stop, decode_args(out)), at=at)
    problems = check_decode_tree(out, ref, finished=code not in (137, -signal.SIGKILL))
    rerun = subprocess.run(
        [sys.executable, "-m", "elastickv_async", *decode_args(out, "--force")],
        capture_output=True,
        text=True,
        check=False,
    )
    complete = (out / "MANIFEST.json").exists() and not (out / INCOMPLETE_MARKER).exists()
    if rerun.returncode != 0 and not (complete and "not empty" in rerun.stderr):
        problems.append(f"rerun with --force failed: {rerun.stderr.strip()}")
    problems += check_decode_tree(out, ref, finished=True)
    if set(tree_files(out)) != set(ref.files):
        problems.append("rerun did not produce the reference tree")
    return problems


def kill_encode(ref: Reference, work: Path, *, stop: int = 0, at: float | None = None) -> list[str]:
    """Kill an encode over a previous pair at its ``stop``-th system call (or ``at`` seconds
    in); check the pair; check that a rerun publishes a consistent pair and cleans up."""
    out = work / "out.fsm"
    old = previous_pair(out)
    _killed(_child(_KILL_CALLS, stop, encode_args(ref, out)), at=at)
    problems = check_encode_pair(out, ref, old)
    rerun = subprocess.run(
        [sys.executable, "-m", "elastickv_async", *encode_args(ref, out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if rerun.returncode != 0:
        problems.append(f"rerun failed: {rerun.stderr.strip()}")
    elif out.read_bytes() != ref.fsm:
        problems.append("rerun did not publish the reference .fsm")
    elif check_encode_pair(out, ref, (ref.fsm, b"")):
        problems.append("rerun left an inconsistent pair")
    if _leftovers(work):
        problems.append(f"rerun left temporary entries: {_leftovers(work)[:3]}")
    return problems


@contextlib.contextmanager
def failing_call(name: str, nth: int, err: int = errno.EIO) -> Iterator[list[int]]:
    """Make the ``nth`` call of ``os.<name>`` (counted from here, in any thread) fail with
    ``err``. Yields a one-item list holding the number of calls seen so far."""
    real: Callable[..., Any] = getattr(os, name)
    seen = [0]

    def failing(*args: Any, **kwargs: Any) -> Any:
        seen[0] += 1
        if seen[0] == nth:
            raise OSError(err, f"injected {os.strerror(err)} in {name}")
        return real(*args, **kwargs)

    setattr(os, name, failing)
    try:
        yield seen
    finally:
        setattr(os, name, real)


def _run_cli(args: list[str]) -> tuple[int, str]:
    stderr = sys.stderr
    capture = _Capture()
    sys.stderr = capture
    try:
        code = main(args)
    finally:
        sys.stderr = stderr
    return code, capture.text


class _Capture:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""

    def isatty(self) -> bool:
        return False


def fault_decode(ref: Reference, work: Path, name: str, nth: int, err: int) -> list[str]:
    """Decode (in this process) with the ``nth`` ``os.<name>`` call failing with ``err``."""
    out = work / "out"
    with failing_call(name, nth, err):
        code, text = _run_cli(decode_args(out))
    problems = _one_line_error(code, text)
    problems += check_decode_tree(out, ref, finished=True)
    if code != 0 and (out / "MANIFEST.json").exists():
        problems.append("failed run left MANIFEST.json")
    return problems


def fault_encode(ref: Reference, work: Path, name: str, nth: int, err: int) -> list[str]:
    """Encode (in this process) over a previous pair with one failing ``os.<name>`` call."""
    out = work / "out.fsm"
    old = previous_pair(out)
    with failing_call(name, nth, err):
        code, text = _run_cli(encode_args(ref, out))
    problems = _one_line_error(code, text)
    problems += check_encode_pair(out, ref, old)
    sidecar = out.with_name(out.name + ".encode_info.json").read_bytes()
    if code != 0 and (out.read_bytes(), sidecar) != old:
        problems.append("failed run did not keep the previous pair")
    if code == 0 and check_encode_pair(out, ref, (ref.fsm, b"")):
        problems.append("successful run published an inconsistent pair")
    left = _leftovers(work, tolerate_own=True)
    if left:
        problems.append(f"temporary entries left: {left[:3]}")
    return problems


def _one_line_error(code: int, text: str) -> list[str]:
    if code == 0:
        return []
    if code not in (1, 2):
        return [f"exit code {code}"]
    if text.count("\n") != 1 or not text.startswith("elastickv-async: "):
        return [f"not a one-line error: {text[:300]!r}"]
    return []


def fresh(work: Path) -> Path:
    """An empty directory at ``work``."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def pick(rng: random.Random, total: int) -> int:
    """A call number in ``1..total``, biased towards the end (where publishing happens)."""
    return rng.choice([rng.randint(1, total), total - rng.randint(0, min(total - 1, 30))])


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path | None]:
    """A tmpfs of ``size`` bytes mounted at ``path`` (None when mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True, check=False)


def _cli_child(args: list[str]) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "elastickv_async", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stderr


def full_disk_decode(ref: Reference, disk: Path) -> list[str]:
    """Decode into a small filesystem: a one-line error and nothing half-done, or success."""
    out = disk / "out"
    code, text = _cli_child(decode_args(out))
    problems = _one_line_error(code, text)
    if code not in (0, 1):
        problems.append(f"exit {code} on a full disk")
    problems += check_decode_tree(out, ref, finished=True)
    if code != 0 and (out / "MANIFEST.json").exists():
        problems.append("failed run left MANIFEST.json")
    return problems


def full_disk_encode(ref: Reference, disk: Path) -> list[str]:
    """Encode over a previous pair on a small filesystem: the previous pair or the new one."""
    out = disk / "out.fsm"
    old = previous_pair(out)
    code, text = _cli_child(encode_args(ref, out))
    problems = _one_line_error(code, text) + check_encode_pair(out, ref, old)
    sidecar = out.with_name(out.name + ".encode_info.json").read_bytes()
    if code != 0 and (out.read_bytes(), sidecar) != old:
        problems.append("failed run did not keep the previous pair")
    if _leftovers(disk):
        problems.append(f"temporary entries left: {_leftovers(disk)[:3]}")
    return problems
