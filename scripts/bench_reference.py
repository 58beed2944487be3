"""Side by side with the Go reference: decode and encode times, peak RSS, identical outputs.

    python scripts/bench.py --compare-reference [--quick] [--mix NAME ...] [--runs N]
        [--seed N] [--json FILE] [--workdir DIR] [--backend asyncio|trio]

The reference tools (``elastickv-snapshot-decode`` / ``-encode``, xz-compressed) come from
``../shared/elastickv-bin/`` beside the repository, or ``$ELASTICKV_SHARED/elastickv-bin/``;
they are unpacked into the run's temporary directory and checked against the folder's
``SHA256SUMS``. Without them the script says so and exits 0.

Each mix is a bare ``EKVPBBL1`` stream (no node header or footer, one version per key: what
the reference reads) built here, deterministically from ``--seed``, with the product's key and
value builders:

    dynamodb  100k items in 4 tables (the ``bench_dynamodb`` item shape)
    redis     100k strings (half with a TTL and its ``!redis|ttl|`` row) + 10k hashes x 10 fields
    sqs       100k messages in 4 queues (one FIFO), each a data record and a visibility row
    s3        1000 objects of 1 KB to 1 MB (log-uniform seeded sizes) in one bucket
    all       the four above in one snapshot (about 567k entries)
    mixed-1m  the four scaled by 1.78 (about 1M entries; not with ``--quick``)
    mixed-5m  the four scaled by 8.9 (about 5M entries; only when named with ``--mix``,
              not with ``--quick``): shows that peak RSS stays flat as the input grows

``--quick`` divides every count by 20. For each mix, both decoders run alternately (who goes
first alternates too) ``--runs`` times, each a fresh process (ours: the installed
``elastickv-async`` CLI, on ``--backend``); then both encoders (self-test off) encode our
decoded tree the same way. A run's figures are its wall time (process start included, on both
sides) and its peak RSS: the highest sum of the RSS of the tool and its worker processes, sampled
every 10 ms from /proc, and never below the tool's own ``ru_maxrss`` from ``wait4`` (taken by a
minimal launcher so that this script's own memory is not inherited: a floor of about 5 MiB).
The table shows ratios of minimum times (reference / ours: above
1 means we are faster), the highest RSS of each side, and our throughput (entries/s, and MB/s
of the ``.fsm``: read by decode, written by encode). On a shared machine the ratios move with
the load; the load average is printed and kept in the JSON.

The outputs must agree: the first decode of each side is compared file by file (bytes, except
MANIFEST.json without its wall time, source and version, and CHECKSUMS without the MANIFEST.json
line, as in the conformance tests) and the first encode of each side byte for byte. A mismatch
is printed loudly, flagged in the table and makes the script exit 1.
"""

from __future__ import annotations

import filecmp
import hashlib
import heapq
import json
import lzma
import math
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import bench_dynamodb
import bench_redis
import benchlib

from elastickv_async._adapters.s3.keys import blob_key, bucket_meta_key, manifest_key
from elastickv_async._adapters.sqs.keys import (
    message_data_key,
    message_vis_key,
    queue_gen_key,
    queue_meta_key,
)
from elastickv_async._adapters.sqs.values import (
    Message,
    QueueConfig,
    stored_meta_value,
    stored_value,
)
from elastickv_async._core.encode.framing import ts_suffix

DECODER: Final = "elastickv-snapshot-decode"
ENCODER: Final = "elastickv-snapshot-encode"
#: ``--quick`` divides every count by this.
QUICK_FACTOR: Final = 20
#: How many differing paths a mismatch report lists.
_SHOWN_DIFFERENCES: Final = 10

_SUFFIX: Final = ts_suffix(benchlib.COMMIT_TS)
_DYNAMODB_TABLES: Final = ("orders", "invoices", "shipments", "returns")
_SQS_QUEUES: Final = (
    QueueConfig("events", visibility_timeout_seconds=30, message_retention_seconds=345_600),
    QueueConfig(
        "jobs.fifo",
        fifo=True,
        visibility_timeout_seconds=60,
        message_retention_seconds=345_600,
    ),
    QueueConfig("mail", visibility_timeout_seconds=30, message_retention_seconds=345_600),
    QueueConfig("webhooks", visibility_timeout_seconds=30, message_retention_seconds=345_600),
)
_SQS_GENERATION: Final = 1
_SQS_GROUPS: Final = 100
_SEND_BASE_MS: Final = 1_700_000_000_000
_DAY_MS: Final = 86_400_000
_S3_BUCKET: Final = b"media"
_S3_UPLOAD: Final = b"upload-1"
_S3_GENERATION: Final = 1
_S3_MIN_BYTES: Final = 1_000
_S3_MAX_BYTES: Final = 1_000_000
_STAMP_BYTES: Final = 8


# --- the mixes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mix:
    """What one snapshot holds: items, strings, hashes, messages and objects."""

    summary: str
    dynamodb_items: int = 0
    redis_strings: int = 0
    redis_hashes: int = 0
    sqs_messages: int = 0
    s3_objects: int = 0

    def scaled(self, factor: int) -> Mix:
        """The same mix with every non-zero count divided by ``factor`` (at least 1)."""
        counts = {
            name: max(1, value // factor) if value else 0
            for name, value in asdict(self).items()
            if name != "summary"
        }
        return Mix(self.summary, **counts)


_DYNAMODB: Final = Mix("DynamoDB 100k items, 4 tables", dynamodb_items=100_000)
_REDIS: Final = Mix(
    "Redis 100k strings + 10k 10-field hashes", redis_strings=100_000, redis_hashes=10_000
)
_SQS: Final = Mix("SQS 100k messages, 4 queues (1 FIFO)", sqs_messages=100_000)
_S3: Final = Mix("S3 1000 objects, 1 KB-1 MB", s3_objects=1_000)
MIXES: Final = {
    "dynamodb": _DYNAMODB,
    "redis": _REDIS,
    "sqs": _SQS,
    "s3": _S3,
    "all": Mix("all four together", 100_000, 100_000, 10_000, 100_000, 1_000),
    "mixed-1m": Mix("all four x 1.78, about 1M entries", 178_000, 178_000, 17_800, 178_000, 1_780),
    "mixed-5m": Mix("all four x 8.9, about 5M entries", 890_000, 890_000, 89_000, 890_000, 8_900),
}
#: Mixes too large for ``--quick``.
FULL_ONLY: Final = frozenset({"mixed-1m", "mixed-5m"})
#: Mixes run only when named with ``--mix`` (minutes per run on each side).
ON_REQUEST: Final = frozenset({"mixed-5m"})


def _digest(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()


def _dynamodb_records(items: int) -> Iterator[benchlib.Record]:
    per_table = [items // len(_DYNAMODB_TABLES)] * len(_DYNAMODB_TABLES)
    per_table[0] += items - sum(per_table)
    return _merge(
        bench_dynamodb.records(n, table)
        for n, table in zip(per_table, _DYNAMODB_TABLES, strict=True)
    )


def _redis_records(strings: int, hashes: int) -> Iterator[benchlib.Record]:
    parts = []
    if strings:
        parts.append(bench_redis.records("strings", strings, 0))
    if hashes:
        parts.append(bench_redis.records("hashes", hashes, 10))
    return _merge(parts)


def _sqs_message(seed: int, cfg: QueueConfig, i: int) -> Message:
    digest = _digest(seed, cfg.name, i)
    send = _SEND_BASE_MS + int.from_bytes(digest[:4]) % _DAY_MS
    body = b"order %d shipped; tracking %s" % (i, digest.hex().encode())
    return Message(
        message_id=digest.hex(),
        body=body,
        md5_of_body=hashlib.md5(body, usedforsecurity=False).hexdigest(),
        md5_of_message_attributes="",
        message_attributes=None,
        sender_id="",
        send_timestamp_millis=send,
        available_at_millis=send,
        visible_at_millis=0,
        receive_count=0,
        first_receive_millis=0,
        current_receipt_token=None,
        queue_generation=_SQS_GENERATION,
        message_group_id=f"group-{i % _SQS_GROUPS}" if cfg.fifo else "",
        message_deduplication_id=f"dedup-{i}" if cfg.fifo else "",
        sequence_number=i + 1 if cfg.fifo else 0,
        dead_letter_source_arn="",
    )


def _sqs_records(messages: int, seed: int) -> Iterator[benchlib.Record]:
    """Per queue: message data, visibility rows (as a live node has them), generation, meta."""
    records: list[benchlib.Record] = []
    per_queue = [messages // len(_SQS_QUEUES)] * len(_SQS_QUEUES)
    per_queue[0] += messages - sum(per_queue)
    for count, cfg in zip(per_queue, _SQS_QUEUES, strict=True):
        name = cfg.name.encode()
        for i in range(count):
            msg = _sqs_message(seed, cfg, i)
            msg_id = msg.message_id.encode()
            data = message_data_key(name, None, _SQS_GENERATION, msg_id)
            records.append((data, stored_value(msg, _SQS_GENERATION)))
            vis = message_vis_key(name, None, _SQS_GENERATION, msg.available_at_millis, msg_id)
            records.append((vis, msg_id))
        records.append((queue_gen_key(name), str(_SQS_GENERATION).encode()))
        records.append((queue_meta_key(name), stored_meta_value(cfg, _SQS_GENERATION)))
    records.sort()
    return iter(records)


def object_sizes(objects: int, seed: int) -> list[int]:
    """Seeded object sizes, log-uniform between 1 KB and 1 MB."""
    rng = random.Random(seed)
    low, high = math.log(_S3_MIN_BYTES), math.log(_S3_MAX_BYTES)
    return [int(math.exp(rng.uniform(low, high))) for _ in range(objects)]


def _s3_records(objects: int, seed: int) -> Iterator[benchlib.Record]:
    """One bucket: each object one chunk (all are below the 1 MiB chunk size) and a manifest."""
    block = random.Random(seed).randbytes(_S3_MAX_BYTES)
    specs = sorted(
        (b"%s/object-%05d.bin" % (b"photos" if n % 3 else b"docs", n), n, size)
        for n, size in enumerate(object_sizes(objects, seed))
    )
    for key, n, size in specs:
        # Stamped with the object number so that no two bodies are equal.
        body = n.to_bytes(_STAMP_BYTES) + block[_STAMP_BYTES:size]
        yield blob_key(_S3_BUCKET, _S3_GENERATION, key, _S3_UPLOAD, 1, 0), body
    meta = {"bucket_name": _S3_BUCKET.decode(), "generation": _S3_GENERATION, "owner": "bench"}
    yield bucket_meta_key(_S3_BUCKET), json.dumps(meta).encode()
    for key, n, size in specs:
        body_md5 = hashlib.md5(
            n.to_bytes(_STAMP_BYTES) + block[_STAMP_BYTES:size], usedforsecurity=False
        )
        doc = {
            "upload_id": _S3_UPLOAD.decode(),
            "etag": body_md5.hexdigest(),
            "size_bytes": size,
            "content_type": "application/octet-stream",
            "parts": [{"part_no": 1, "chunk_count": 1, "chunk_sizes": [size]}],
        }
        yield manifest_key(_S3_BUCKET, _S3_GENERATION, key), json.dumps(doc).encode()


def _merge(parts: Iterable[Iterable[benchlib.Record]]) -> Iterator[benchlib.Record]:
    """Sorted record streams merged in snapshot (encoded-key) order."""
    return heapq.merge(*parts, key=lambda record: record[0] + _SUFFIX)


def records(mix: Mix, seed: int) -> Iterator[benchlib.Record]:
    """Every record of ``mix``, in snapshot order."""
    parts: list[Iterator[benchlib.Record]] = []
    if mix.dynamodb_items:
        parts.append(_dynamodb_records(mix.dynamodb_items))
    if mix.redis_strings or mix.redis_hashes:
        parts.append(_redis_records(mix.redis_strings, mix.redis_hashes))
    if mix.sqs_messages:
        parts.append(_sqs_records(mix.sqs_messages, seed))
    if mix.s3_objects:
        parts.append(_s3_records(mix.s3_objects, seed))
    return _merge(parts)


def prepare(fsm: str, mix: dict[str, Any], seed: int) -> dict[str, int]:
    """Write ``mix``'s snapshot to ``fsm``; return its entry count and size (child process)."""
    return benchlib.write_fsm(Path(fsm), records(Mix(**mix), seed))


# --- the tools --------------------------------------------------------------------------------


def shared_bin_dir() -> Path:
    """``$ELASTICKV_SHARED/elastickv-bin``, else ``../shared/elastickv-bin`` beside the repo."""
    override = os.environ.get("ELASTICKV_SHARED")
    shared = (
        Path(override) if override else Path(__file__).resolve().parent.parent.parent / "shared"
    )
    return shared / "elastickv-bin"


def _sha256sums(path: Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name:
            sums[name.strip()] = digest
    return sums


def unpack_reference(source: Path, dest: Path) -> dict[str, Path] | None:
    """Unpack the reference decoder and encoder from ``source`` into ``dest``.

    Returns their paths, or ``None`` when ``source`` does not hold both; raises
    :class:`SystemExit` when an unpacked file does not match ``SHA256SUMS``.
    """
    packed = {name: source / f"{name}.xz" for name in (DECODER, ENCODER)}
    if not all(path.is_file() for path in packed.values()):
        return None
    sums_file = source / "SHA256SUMS"
    sums = _sha256sums(sums_file) if sums_file.is_file() else {}
    tools = {}
    for name, path in packed.items():
        target = dest / name
        digest = hashlib.sha256()
        with lzma.open(path) as src, target.open("xb") as out:
            while chunk := src.read(benchlib.MIB):
                digest.update(chunk)
                out.write(chunk)
        if name in sums and digest.hexdigest() != sums[name]:
            raise SystemExit(f"{path}: unpacked SHA-256 does not match {sums_file}")
        target.chmod(0o755)
        tools[name] = target
    return tools


def our_cli() -> Path:
    """The ``elastickv-async`` console script of this interpreter's environment."""
    path = Path(sysconfig.get_path("scripts")) / "elastickv-async"
    if not path.is_file():
        raise SystemExit(f"{path} not found: install the package (pip install -e .)")
    return path


@dataclass(frozen=True, slots=True)
class Run:
    """One child process: its wall time, its own peak RSS, and its process tree's."""

    seconds: float
    peak_rss_kib: int
    #: The highest sum of the RSS of the tool and every process under it (worker processes),
    #: sampled every 10 ms; never below ``peak_rss_kib``.
    tree_rss_kib: int = 0

    @property
    def memory_kib(self) -> int:
        """The figure the table shows: the process tree's peak."""
        return max(self.peak_rss_kib, self.tree_rss_kib)


# Linux carries the parent's high-water mark into a child's ru_maxrss (at exec, the mm being
# replaced is the parent's, shared by vfork or copied by fork), so a child of this script would
# never report less than the script's own RSS. A minimal interpreter in between forks the tool
# and reports its rusage instead: a floor of about 5 MiB instead of this script's 50+. While it
# waits, a thread sums the RSS of the tool's process tree (it may start worker processes,
# whose memory counts too) from /proc every 10 ms.
_LAUNCHER: Final = """
import os, sys, threading, time
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
peak = [0]
done = threading.Event()
def descendants(root):
    # /proc/<pid>/task/<tid>/children is not in every kernel: walk the parent links instead.
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    parents[int(name)] = int(fh.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.add(child)
                frontier.append(child)
    return found
def rss_kib(pids):
    total = 0
    for each in pids:
        try:
            with open(f"/proc/{each}/statm") as fh:
                total += int(fh.read().split()[1]) * page_kib
        except (OSError, ValueError, IndexError):
            pass
    return total
def sample():
    # The tree is found again every 0.2 s (worker processes live long); its RSS every 10 ms.
    tree, found_at = {pid}, 0.0
    while not done.wait(0.01):
        if time.monotonic() - found_at >= 0.2:
            tree, found_at = descendants(pid), time.monotonic()
        peak[0] = max(peak[0], rss_kib(tree))
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
_pid, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
done.set()
sampler.join()
print(seconds, usage.ru_maxrss, peak[0], os.waitstatus_to_exitcode(status))
"""


def run_child(argv: list[str], log: Path) -> Run:
    """Run ``argv`` (stdout and stderr to ``log``); its wall time and peak RSS figures.

    A failure ends the script with the tool's last lines of output.
    """
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(log), *argv]
    done = subprocess.run(
        launcher, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True
    )
    seconds, rss_kib, tree_kib, code = done.stdout.split()
    if int(code) != 0:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise SystemExit(f"{argv[0]} exited {code}:\n" + "\n".join(tail))
    # Linux reports ru_maxrss in KiB.
    return Run(float(seconds), int(rss_kib), int(tree_kib))


# --- comparing outputs ------------------------------------------------------------------------


def _manifest_view(data: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(data)
    for key in ("wall_time_iso", "source", "elastickv_version"):
        doc.pop(key, None)
    doc["adapters"] = sorted(doc.get("adapters", {}))
    return doc


def _checksums_view(data: bytes) -> list[bytes]:
    return [line for line in data.splitlines() if not line.endswith(b"  MANIFEST.json")]


def _regular_files(root: Path) -> set[str]:
    found = set()
    for base, _dirs, names in os.walk(root):
        for name in names:
            path = Path(base, name)
            if path.is_file() and not path.is_symlink():
                found.add(path.relative_to(root).as_posix())
    return found


def tree_differences(ours: Path, theirs: Path) -> list[str]:
    """How two decoded trees differ (empty when equivalent), one line per difference.

    Same rule as the conformance tests: the same regular files with the same bytes, except
    MANIFEST.json (compared as JSON without wall time, source and version; adapters by name)
    and CHECKSUMS (its MANIFEST.json line ignored).
    """
    our_files, their_files = _regular_files(ours), _regular_files(theirs)
    problems = [f"only ours: {rel}" for rel in sorted(our_files - their_files)]
    problems += [f"only the reference's: {rel}" for rel in sorted(their_files - our_files)]
    for rel in sorted(our_files & their_files):
        mine, other = ours / rel, theirs / rel
        if rel == "MANIFEST.json":
            same = _manifest_view(mine.read_bytes()) == _manifest_view(other.read_bytes())
        elif rel == "CHECKSUMS":
            same = _checksums_view(mine.read_bytes()) == _checksums_view(other.read_bytes())
        else:
            same = filecmp.cmp(mine, other, shallow=False)
        if not same:
            problems.append(f"differs: {rel}")
    return problems


# --- measuring --------------------------------------------------------------------------------


@dataclass(slots=True)
class Side:
    """One tool's runs of one operation."""

    runs: list[Run] = field(default_factory=list)

    @property
    def best_seconds(self) -> float:
        """The minimum wall time (the least disturbed run)."""
        return min(run.seconds for run in self.runs)

    @property
    def peak_rss_mib(self) -> float:
        """The highest peak RSS of the process tree over the runs, in MiB."""
        return max(run.memory_kib for run in self.runs) / 1024


@dataclass(slots=True)
class Operation:
    """Decode or encode of one mix by both tools, and whether their outputs agreed."""

    ours: Side = field(default_factory=Side)
    ref: Side = field(default_factory=Side)
    differences: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Reference time / our time (above 1: we are faster)."""
        return self.ref.best_seconds / self.ours.best_seconds


@dataclass(slots=True)
class MixResult:
    """Every figure of one mix."""

    name: str
    entries: int
    fsm_bytes: int
    load_before: float
    load_after: float = 0.0
    decode: Operation = field(default_factory=Operation)
    encode: Operation = field(default_factory=Operation)

    @property
    def matched(self) -> bool:
        """Whether both decodes and both encodes agreed."""
        return not self.decode.differences and not self.encode.differences


def alternate(runs: int) -> Iterator[tuple[int, tuple[str, str]]]:
    """``(round, order of the two sides)``: ours first in even rounds, the reference's in odd."""
    for i in range(runs):
        yield i, ("ours", "ref") if i % 2 == 0 else ("ref", "ours")


def _discard(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        for each in (path, Path(f"{path}.encode_info.json")):
            each.unlink(missing_ok=True)


def _measure(
    op: Operation,
    commands: dict[str, Callable[[Path], list[str]]],
    outputs: dict[str, Path],
    work: Path,
    runs: int,
) -> None:
    """Alternate both sides ``runs`` times; keep each side's first output, discard the rest.

    ``commands[side](output)`` is the argv writing to ``output``. The later outputs are
    discarded only after the last run: on an ext4 without a journal, the inode allocator
    skips over inodes freed in the last seconds to minutes, one block read each, so a run
    that follows the deletion of a 100k-file tree spends many times the usual system time
    creating its files, whichever side it is.
    """
    sides = {"ours": op.ours, "ref": op.ref}
    again: list[Path] = []
    try:
        for i, order in alternate(runs):
            for side in order:
                out = outputs[side]
                if i:
                    out = out.with_name(f"{side}-again-{i}")
                    again.append(out)
                sides[side].runs.append(run_child(commands[side](out), work / f"{side}.log"))
    finally:
        for out in again:
            _discard(out)


def _report_differences(what: str, differences: list[str]) -> None:
    if not differences:
        print(f"  {what}: outputs identical", flush=True)
        return
    print(f"  !!! {what}: OUTPUTS DIFFER ({len(differences)} differences) !!!", flush=True)
    for line in differences[:_SHOWN_DIFFERENCES]:
        print(f"  !!!   {line}", flush=True)


def measure_mix(
    bench: benchlib.Bench, name: str, mix: Mix, tools: dict[str, Path], runs: int, seed: int
) -> MixResult:
    """Generate ``mix``, then decode and encode it with both tools; return the figures."""
    cli = str(our_cli())
    our_flags = ["--quiet", "--no-progress", "--backend", bench.backend]
    with bench.workspace(f"ref-{name}") as work:
        fsm = work / "input.fsm"
        what = f"{name} snapshot"
        made = bench.prepare(what, prepare, fsm=str(fsm), mix=asdict(mix), seed=seed)
        result = MixResult(name, made["entries"], made["bytes"], os.getloadavg()[0])
        print(f"  {result.entries:,} entries, {result.fsm_bytes / 1e6:,.1f} MB", flush=True)

        trees = {"ours": work / "tree-ours", "ref": work / "tree-ref"}
        ours_decode = [cli, "decode", *our_flags, "--input", str(fsm), "--output"]
        ref_decode = [str(tools[DECODER]), "--input", str(fsm), "--output"]
        decode: dict[str, Callable[[Path], list[str]]] = {
            "ours": lambda out: [*ours_decode, str(out)],
            "ref": lambda out: [*ref_decode, str(out)],
        }
        _measure(result.decode, decode, trees, work, runs)
        result.decode.differences = tree_differences(trees["ours"], trees["ref"])
        _report_differences("decode", result.decode.differences)
        _discard(trees["ref"])

        # Both encoders read our decoded tree.
        tree = str(trees["ours"])
        fsms = {"ours": work / "ours.fsm", "ref": work / "ref.fsm"}
        ours_encode = [cli, "encode", *our_flags, "--input", tree, "--output"]
        ref_encode = [str(tools[ENCODER]), "--input", tree, "--output"]
        encode: dict[str, Callable[[Path], list[str]]] = {
            "ours": lambda out: [*ours_encode, str(out)],
            "ref": lambda out: [*ref_encode, str(out)],
        }
        _measure(result.encode, encode, fsms, work, runs)
        if not filecmp.cmp(fsms["ours"], fsms["ref"], shallow=False):
            result.encode.differences = ["the .fsm outputs differ"]
        _report_differences("encode", result.encode.differences)
        result.load_after = os.getloadavg()[0]
    return result


# --- reporting --------------------------------------------------------------------------------

TABLE_HEADER: Final = (
    "| mix | entries | decode ratio | our RSS (ref) MiB | encode ratio | our RSS (ref) MiB "
    "| ours decode entries/s, MB/s | ours encode entries/s, MB/s | outputs |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def table_row(result: MixResult) -> str:
    """One Markdown table row for ``result``."""
    dec, enc = result.decode, result.encode

    def rss(op: Operation) -> str:
        return f"{op.ours.peak_rss_mib:.0f} ({op.ref.peak_rss_mib:.0f})"

    def rate(op: Operation) -> str:
        seconds = op.ours.best_seconds
        return f"{result.entries / seconds:,.0f}, {result.fsm_bytes / 1e6 / seconds:.1f}"

    outputs = "identical" if result.matched else "**MISMATCH**"
    return (
        f"| {result.name} | {result.entries:,} | {dec.ratio:.2f} | {rss(dec)} | {enc.ratio:.2f} "
        f"| {rss(enc)} | {rate(dec)} | {rate(enc)} | {outputs} |"
    )


def _to_json(result: MixResult) -> dict[str, Any]:
    doc = asdict(result)
    for op in ("decode", "encode"):
        doc[op]["ratio"] = getattr(result, op).ratio
    return doc


def run(bench: benchlib.Bench, *, mixes: list[str], quick: bool, runs: int, seed: int) -> int:
    """Run the comparison on ``mixes``; print the table, write the JSON; the exit status."""
    source = shared_bin_dir()
    with tempfile.TemporaryDirectory(prefix="elastickv-ref-") as tmp:
        tools = unpack_reference(source, Path(tmp))
        if tools is None:
            print(f"reference tools not found in {source}: nothing to compare")
            return 0
        results = []
        for name in mixes:
            mix = MIXES[name].scaled(QUICK_FACTOR) if quick else MIXES[name]
            print(f"== {name}: {mix.summary}" + (" (quick)" if quick else ""), flush=True)
            result = measure_mix(bench, name, mix, tools, runs, seed)
            print(TABLE_HEADER.splitlines()[0] + "\n" + table_row(result), flush=True)
            results.append(result)
    load = os.getloadavg()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\n{bench.command}\n{when}, {runs} alternating runs per side, minimum time; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs\n"
    )
    print(TABLE_HEADER)
    for result in results:
        print(table_row(result))
    if bench.json_path is not None:
        doc = {
            "command": bench.command,
            "date": when,
            "runs": runs,
            "seed": seed,
            "quick": quick,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load_average_end": load,
            "mixes": [_to_json(result) for result in results],
        }
        bench.json_path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {bench.json_path}")
    failed = [result.name for result in results if not result.matched]
    if failed:
        print(f"\n!!! outputs differ from the reference's on: {', '.join(failed)} !!!")
        return 1
    return 0
