"""``encode_snapshot``: a dump tree in, a byte-exact ``.fsm`` out (REFERENCE_NOTES §6.2, §6.7).

Order of a run, following the reference CLI: read and gate MANIFEST.json, check the selected
adapters and the effective ``last_commit_ts`` against it, refuse layouts the encoders cannot
reverse, lock the output path and remove dead runs' leftovers, remove a stale
``<output>.mismatch.txt``, collect every adapter's records into a bounded-memory external
sort, stream the sorted snapshot into ``<output>.<run tag>.tmp``, optionally self-test it,
then publish it together with ``<output>.encode_info.json`` (see :mod:`.publish`): the
previous pair stays in place until the new pair is durable, and is put back on failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import anyio
import anyio.to_thread
import msgspec

from ..._adapters.base import AdapterSpec, EncodeContext
from ..._adapters.registry import REGISTRY
from ..concurrency import task_group
from ..dump.checksums import CHECKSUMS_NAME
from ..dump.manifest import (
    CHECKSUM_ALGORITHM,
    CHECKSUMS_NONE,
    MANIFEST_NAME,
    Manifest,
    read_manifest,
)
from ..dump.roots import TreeRoots, recorded_tree_roots
from ..dump.tree import DumpTree, recording_reads
from ..dump.verify import check_input_tree
from ..errors import (
    DataError,
    OutputError,
    SelfTestMismatch,
    UsageError,
    map_os_errors,
)
from ..gocompat import go_trim_space
from ..memory import DEFAULT_ENCODE_ADAPTER_MEMORY, MemoryBudget, check_budget
from ..meter import ProgressMeter
from ..options import DecodeOptions, EncodeOptions
from ..report import EventLog, Report, make_logger
from ..runfiles import LockedDir, PathLock, make_locked_dir, new_tag, remove_leftovers
from ..workers import AUTO_MIN_BYTES, AUTO_MIN_LISTING, Workers, auto_processes
from . import publish as disk
from .collect import CHANNEL_BUFFER, LARGE_VALUE, collect_records
from .framing import ts_suffix
from .info import EncodeInfo, TimeRebase
from .output import SLICES_HELD, FramedBlocks, SnapshotStream
from .readdigests import ReadDigests
from .sortframe import FramedSorter

if TYPE_CHECKING:
    from ..progress import Progress, ProgressCallback
    from .selftest import SelfTestOutcome

__all__ = ["EncodeResult", "encode_snapshot", "parse_last_commit_ts"]

_UINT64_MAX: Final = (1 << 64) - 1
#: The check of the input against its CHECKSUMS, given the digests of the files read.
Verify = Callable[[ReadDigests], Coroutine[Any, Any, None]]

#: The lower 16 bits of an HLC timestamp are its logical counter; the rest is Unix ms.
_HLC_LOGICAL_BITS: Final = 16


@dataclass(frozen=True, slots=True)
class EncodeResult:
    """What an encode run produced."""

    #: Lowercase hex SHA-256 of the .fsm bytes.
    sha256: str
    bytes_written: int
    entries: int
    last_commit_ts: int
    adapters_enabled: tuple[str, ...]
    self_test_ran: bool
    self_test_matched: bool
    report: Report


def parse_last_commit_ts(text: str) -> int:
    """Parse ``--last-commit-ts``: unsigned 64-bit, decimal or ``0x``/``0X`` hex, nothing else.

    Surrounding whitespace is ignored (as Go's ``strings.TrimSpace``); signs, underscores,
    trailing junk and values above 2**64-1 raise :class:`~elastickv_async._core.errors.UsageError`.
    """
    digits = go_trim_space(text)
    if not digits:
        raise UsageError("--last-commit-ts is empty")
    if digits[:2] in ("0x", "0X"):
        digits, base, pattern = digits[2:], 16, r"[0-9a-fA-F]+"
    else:
        base, pattern = 10, r"[0-9]+"
    # Compiled (and cached by re) only here: most encodes have no --last-commit-ts.
    if not re.fullmatch(pattern, digits):
        raise UsageError(f"--last-commit-ts {text!r} is not an unsigned integer")
    value = int(digits, base)
    if value > _UINT64_MAX:
        raise UsageError(f"--last-commit-ts {text!r} is out of range for uint64")
    return value


def _load_manifest(input_root: Path, specs: dict[str, AdapterSpec]) -> Manifest:
    # Read under the tree's rules: a symlinked or special MANIFEST.json is refused unopened.
    with DumpTree(input_root).open_root() as root:
        payload = root.read(MANIFEST_NAME)
    if payload is None:
        path = input_root / MANIFEST_NAME
        raise UsageError(f"{path} not found: --input must be a dump tree root")
    return read_manifest(payload, {name: spec.read_manifest for name, spec in specs.items()})


def _check_options(options: EncodeOptions, specs: dict[str, AdapterSpec]) -> dict[str, Any]:
    """Check the core options; return every adapter's resolved encode options."""
    unknown = sorted(set(options.adapter_options) - specs.keys())
    if unknown:
        raise UsageError(f"options for unknown adapter(s): {', '.join(unknown)}")
    ts = options.last_commit_ts
    if ts is not None and not 0 <= ts <= _UINT64_MAX:
        raise UsageError(f"last_commit_ts {ts} is out of range for uint64")
    if options.jobs < 1:
        raise UsageError("jobs must be at least 1")
    if options.workers is not None and options.workers < 0:
        raise UsageError("workers must be 0 or more")
    check_budget(options.memory_budget)
    return {
        name: spec.resolve_options(options.adapter_options.get(name), encode=True)
        for name, spec in specs.items()
    }


def _refuse_existing_output(output: Path, *, force: bool) -> None:
    # lexists: a dangling symlink at the output path is an existing entry too.
    if not force and os.path.lexists(output):
        raise UsageError(
            f"output {output} exists; pass --force to replace it "
            "(the previous file is kept until the new one is durable)",
            code="errOutputExists",
        )


def _check_placement(
    input_root: Path | TreeRoots, output: Path, options: EncodeOptions, selected: tuple[str, ...]
) -> None:
    roots = TreeRoots.of(input_root)
    # The adapters walk their subtrees (and the self-test compares them) while the run
    # creates its temp, work and scratch directories: those must not appear inside.
    subtrees = [(roots.root_of(name) / name).resolve() for name in selected]
    places = [("--output", output.parent.resolve())]
    if options.scratch_root is not None:
        places.append(("--scratch-root", options.scratch_root.resolve()))
    for flag, place in places:
        for subtree in subtrees:
            if place.is_relative_to(subtree):
                raise UsageError(f"{flag} must not be inside the input's {subtree.name}/ subtree")


def _effective_ts(options: EncodeOptions, manifest: Manifest) -> tuple[int, bool]:
    if options.last_commit_ts is None:
        return manifest.last_commit_ts, False
    if options.last_commit_ts < manifest.last_commit_ts:
        raise UsageError(
            f"--last-commit-ts {options.last_commit_ts} < manifest last_commit_ts "
            f"{manifest.last_commit_ts} (the HLC ceiling may only rise)",
            code="ErrLastCommitTSRegression",
        )
    return options.last_commit_ts, True


def _check_against_manifest(
    selected: tuple[str, ...], manifest: Manifest, specs: dict[str, AdapterSpec]
) -> None:
    for name in selected:
        if name not in manifest.adapters:
            raise DataError(
                f"adapter {name!r} selected but MANIFEST.json has no scope for it "
                "(use --adapter to restrict, or re-dump including this adapter)",
                code="errAdapterNotInManifest",
            )
    # Fail closed on trees the encoders cannot reverse yet, before any bytes are written.
    for name in selected:
        refusal = specs[name].encode_refusal(
            _decoded_with(manifest, specs[name]), manifest.full_fidelity
        )
        if refusal is not None:
            raise refusal


def _decoded_with(manifest: Manifest, spec: AdapterSpec) -> Any:
    """The decode options of ``spec``'s adapter that produced the tree."""
    recorded = manifest.adapter_options.get(spec.name)
    return spec.resolve_options(None) if recorded is None else recorded


def adapter_contexts(
    input_root: Path | TreeRoots,
    manifest: Manifest,
    adapter_options: dict[str, Any],
    log: EventLog,
    report: Report,
    work: Path,
    shift_ms: int = 0,
    workers: Workers | None = None,
    memory: MemoryBudget | None = None,
    present: Collection[str] | None = None,
) -> Callable[[AdapterSpec], EncodeContext]:
    """The factory of each adapter's :class:`EncodeContext` for one run (scratch in ``work``).

    Each adapter reads its subtree from the root that holds it (``input_root`` may be a split
    tree's :class:`~elastickv_async._core.dump.roots.TreeRoots`) and is given its share of
    ``memory`` (by default, the default budget's share of an adapter running alone); the
    adapters ``present`` (those with something to encode) share what the others leave.
    """
    roots = TreeRoots.of(input_root)

    shared = workers if workers is not None else Workers(0)

    def context(spec: AdapterSpec) -> EncodeContext:
        return EncodeContext(
            input_root=roots.root_of(spec.name),
            log=log.bind(adapter=spec.name),
            report=report,
            scratch=work / spec.name,
            manifest=dict(manifest.raw),
            adapter_options=adapter_options[spec.name],
            decoded_with=_decoded_with(manifest, spec),
            full_fidelity=manifest.full_fidelity,
            time_shift_ms=shift_ms,
            workers=shared,
            memory=DEFAULT_ENCODE_ADAPTER_MEMORY
            if memory is None
            else memory.adapter(spec.name, holding=present),
        )

    return context


def _time_shift(options: EncodeOptions, manifest: Manifest) -> TimeRebase | None:
    """The ``--rebase-time`` shift: from the snapshot's time to now (``None``: no rebase)."""
    if not options.rebase_time:
        return None
    source = manifest.source or {}
    ceiling = source.get("hlc_ceiling_ms")
    # A node that never advanced its HLC ceiling writes 0 there: fall back to the data's time.
    if type(ceiling) is int and ceiling > 0:
        snapshot_ms = ceiling
    else:
        snapshot_ms = manifest.last_commit_ts >> _HLC_LOGICAL_BITS
    if snapshot_ms <= 0:
        raise DataError(
            "--rebase-time: MANIFEST.json gives no snapshot time (no source.hlc_ceiling_ms "
            "and a zero last_commit_ts)",
            code="ErrInvalidManifest",
        )
    now_ms = options.now_ms if options.now_ms is not None else time.time_ns() // 1_000_000
    return TimeRebase(snapshot_ms=snapshot_ms, now_ms=now_ms)


def _self_test_options(
    options: EncodeOptions,
    manifest: Manifest,
    specs: dict[str, AdapterSpec],
    selected: tuple[str, ...],
    shift_ms: int,
) -> DecodeOptions:
    # Decode with the tree producer's options, and undo a rebase, so the scratch tree is
    # comparable.
    return DecodeOptions(
        full_fidelity=manifest.full_fidelity,
        time_shift_ms=shift_ms,
        adapters=selected,
        adapter_options={
            name: spec.self_test_options(_decoded_with(manifest, spec))
            for name, spec in specs.items()
        },
        jobs=options.jobs,
        memory_budget=options.memory_budget,
    )


def _make_workdir(base: Path, tag: str, names: tuple[str, ...]) -> LockedDir:
    work = make_locked_dir(base, f".{tag}.work")
    try:
        for name in (*names, "sort"):
            (work.path / name).mkdir(mode=0o700)
    except BaseException:
        _remove_workdir(work)
        raise
    return work


def _remove_workdir(work: LockedDir) -> None:
    if work.still_here():
        shutil.rmtree(work.path, ignore_errors=True)
    work.close()


def _remove_leftovers(places: list[Path]) -> list[str]:
    removed = []
    for place in places:
        removed += [str(place / name) for name in remove_leftovers(place)]
    return removed


class _Run:
    """One encode run: the state shared by its steps."""

    def __init__(
        self,
        input_root: TreeRoots,
        output: Path,
        options: EncodeOptions,
        selected: tuple[str, ...],
        adapter_options: dict[str, Any],
        report: Report,
        log: EventLog,
        sort_budget: int | None,
        tag: str,
        meter: ProgressMeter,
        shift_ms: int = 0,
        workers: Workers | None = None,
    ) -> None:
        self.tag = tag
        self.workers = workers if workers is not None else Workers(0)
        self.meter = meter
        self.shift_ms = shift_ms
        self.input_root = input_root
        self.output = output
        self.options = options
        #: The selected adapters in canonical order, and in the reference's encode order.
        self.selected = selected
        self.enabled = REGISTRY.encode_order(selected)
        self.adapter_options = adapter_options
        self.report = report
        self.log = log
        self.memory = MemoryBudget(options.memory_budget, "encode", selected)
        self.sort_budget = self.memory.share("sort") if sort_budget is None else sort_budget

    async def write_temp(
        self,
        temp: Path,
        manifest: Manifest,
        ts: int,
        specs: dict[str, AdapterSpec],
        verify: Verify | None = None,
    ) -> SnapshotStream:
        """Collect, sort and write the snapshot into ``temp`` (created here, fsync'd).

        With ``verify``, the digests of the tree files the encoders read are recorded as they
        are read, and ``verify`` checks them (and hashes the rest) beside the writing.
        """
        base = self.options.scratch_root or self.output.parent
        with map_os_errors(OutputError, f"cannot create a work directory in {base}"):
            held = await anyio.to_thread.run_sync(_make_workdir, base, self.tag, self.enabled)
        work = held.path
        sorter = FramedSorter(work / "sort", self.sort_budget, large_value=LARGE_VALUE)
        held_digests = self.memory.ledger_entries()
        read = ReadDigests(work / "read", limit=held_digests) if verify else None

        meter = self.meter
        try:
            meter.stage("collect", unit="records", done=lambda: sorter.records)
            recording = recording_reads(read) if read is not None else contextlib.nullcontext()
            encoding = await anyio.to_thread.run_sync(
                _with_subtree, self.input_root, [specs[n] for n in self.enabled]
            )
            # Adapters whose subtree the tree lacks encode nothing: they lend their shares.
            context = adapter_contexts(
                self.input_root,
                manifest,
                self.adapter_options,
                self.log,
                self.report,
                work,
                self.shift_ms,
                self.workers,
                self.memory,
                present=[spec.name for spec in encoding],
            )
            with recording:
                await collect_records(
                    encoding,
                    context,
                    sorter,
                    ts_suffix(ts),
                    batch_bytes=self.memory.batch_bytes(CHANNEL_BUFFER, streams=1),
                )
            fh = await anyio.to_thread.run_sync(disk.create_temp, temp, self.memory.output_buffer())
            # Deferred values (large object bodies) are read, and their digests recorded, as the
            # snapshot is written: checking the tree beside the writing would read them twice.
            check_after = verify is not None and sorter.defers_reads
            try:
                async with task_group() as tg:
                    if verify is not None and read is not None and not check_after:
                        tg.start_soon(verify, read)
                    total = sorter.records
                    stream = SnapshotStream(fh, FramedBlocks(sorter.blocks()), ts)
                    meter.output(files=lambda: 0, bytes_=lambda: stream.bytes_written)
                    meter.stage("write", unit="entries", done=lambda: stream.entries, total=total)
                    await stream.write(self.memory.write_slice(SLICES_HELD))
                if verify is not None and read is not None and check_after:
                    await verify(read)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(disk.close_quietly, fh)
                raise
            await anyio.to_thread.run_sync(disk.finish_temp, fh)
        except OSError as exc:
            # Adapters' own read errors were already turned into dump-tree errors.
            raise OutputError(f"cannot write {temp} or its sort scratch: {exc}") from None
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(sorter.close)
                if read is not None:
                    await anyio.to_thread.run_sync(read.close)
                await anyio.to_thread.run_sync(_remove_workdir, held)
        self.report.count("encode.sort_spills", sorter.spills)
        return stream

    async def execute(
        self,
        manifest: Manifest,
        ts: int,
        specs: dict[str, AdapterSpec],
        info: EncodeInfo,
        verify: Verify | None = None,
    ) -> tuple[SnapshotStream, SelfTestOutcome | None]:
        """Write, optionally self-test, and publish the .fsm and its sidecar.

        ``verify`` (the check of the input against its CHECKSUMS) runs beside the writing;
        nothing is published unless it passed.
        """
        options = self.options
        await anyio.to_thread.run_sync(disk.remove_stale_mismatch, disk.mismatch_path(self.output))
        temp = disk.temp_path(self.output, self.tag)
        try:
            stream = await self.write_temp(temp, manifest, ts, specs, verify)
            outcome = None
            if options.self_test:
                # Loaded here: the self-test brings the whole decoder (snapshot reader,
                # routing, every adapter's decoder), which an encode without it never uses.
                from .selftest import run_self_test

                # The scratch decode reads the new file once: its read stage is this stage.
                read = [0]

                def decoded(sample: Progress) -> None:
                    if sample.stage == "read":
                        read[0] = sample.done

                self.meter.stage(
                    "self_test", unit="bytes", done=lambda: read[0], total=stream.bytes_written
                )
                outcome = await run_self_test(
                    temp,
                    self.input_root,
                    {name: specs[name].compare for name in self.enabled},
                    _self_test_options(options, manifest, specs, self.selected, self.shift_ms),
                    ts,
                    options.scratch_root,
                    progress=decoded if self.meter.enabled else None,
                )
                # Warnings of the scratch decode mean the tree would not decode cleanly either.
                self.report.count("self_test.decode_warnings", outcome.decode_report.warning_count)
            data = msgspec.structs.replace(
                info,
                output_fsm_sha256=stream.sha256,
                self_test_ran=outcome is not None,
                self_test_matched=outcome is not None and outcome.matched,
            ).to_json()
            if outcome is not None and not outcome.matched:
                await self.mismatch(outcome, data)
                raise SelfTestMismatch(
                    f"self-test: the decoded snapshot differs from the input "
                    f"(see {disk.mismatch_path(self.output)})",
                    code="errSelfTestMismatch",
                )
            await self.publish(temp, data)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(disk.remove_path, temp)
        return stream, outcome

    async def publish(self, temp: Path, info: bytes) -> None:
        """Write the sidecar beside ``temp`` and publish both, keeping the previous pair until
        the new one is durable."""
        sidecar_temp = disk.temp_path(disk.sidecar_path(self.output), self.tag)
        try:
            await anyio.to_thread.run_sync(disk.write_temp_file, sidecar_temp, info)
            await anyio.to_thread.run_sync(
                disk.publish_pair, temp, self.output, sidecar_temp, self.tag
            )
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(disk.remove_path, sidecar_temp)

    async def mismatch(self, outcome: SelfTestOutcome, info: bytes) -> None:
        """Record a self-test mismatch: mismatch.txt, no stale output, the sidecar."""
        path = disk.mismatch_path(self.output)
        try:
            await anyio.to_thread.run_sync(disk.replace_small, path, outcome.mismatch, self.tag)
        except OutputError as exc:
            self.log.warning("encode_mismatch_txt_failed", path=str(path), error=str(exc))
        if not await anyio.to_thread.run_sync(disk.remove_stale_output, self.output):
            self.log.warning(
                "encode_stale_output_kept",
                path=str(self.output),
                hint="not a regular file or symlink, or it could not be removed",
            )
        sidecar = disk.sidecar_path(self.output)
        try:
            await anyio.to_thread.run_sync(disk.replace_small, sidecar, info, self.tag)
        except OutputError as exc:
            self.log.warning("encode_sidecar_failed", path=str(sidecar), error=str(exc))


def _with_subtree(root: Path | TreeRoots, specs: Sequence[AdapterSpec]) -> list[AdapterSpec]:
    """``specs`` but the adapters whose encoder reads only a subtree the tree lacks (a
    subtree of any type counts: its encoder judges it)."""
    roots = TreeRoots.of(root)
    out = []
    for spec in specs:
        if spec.subtree_only:
            try:
                os.lstat(roots.root_of(spec.name) / spec.name)
            except FileNotFoundError:
                continue
        out.append(spec)
    return out


def _workers(options: EncodeOptions, roots: TreeRoots) -> Workers:
    """The run's worker processes: ``options.workers``, or auto by the tree's size."""
    if options.workers is not None:
        return Workers(options.workers)
    return Workers(auto_processes(large=_large_tree(roots), per_cpu=True))


#: Entries the ``auto`` sizing walk looks at before it calls a tree large: about as many
#: files as a CHECKSUMS of :data:`AUTO_MIN_LISTING` bytes lists.
_AUTO_MIN_ENTRIES: Final = AUTO_MIN_LISTING // 100


def _large_tree(roots: TreeRoots) -> bool:
    """Whether the tree at ``roots`` is worth worker processes: a CHECKSUMS of
    :data:`AUTO_MIN_LISTING` bytes or more (many files), else :data:`AUTO_MIN_BYTES` of
    files (a few large ones, say a message queue's). The walk follows no link and
    stops at either bound, or past :data:`_AUTO_MIN_ENTRIES` entries."""
    try:
        if os.stat(roots.main / CHECKSUMS_NAME, follow_symlinks=False).st_size >= AUTO_MIN_LISTING:
            return True
    except OSError:
        pass
    size = entries = 0
    pending = [roots.main, *roots.redirected.values()]
    while pending:
        try:
            listing = os.scandir(pending.pop())
        except OSError:
            continue  # the encode itself names what it cannot read
        with listing:
            for entry in listing:
                entries += 1
                if entries > _AUTO_MIN_ENTRIES:
                    return True
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        size += entry.stat(follow_symlinks=False).st_size
                        if size >= AUTO_MIN_BYTES:
                            return True
                except OSError:
                    continue
    return False


async def _verify_input(
    root: Path | TreeRoots,
    report: Report,
    log: EventLog,
    read: ReadDigests | None = None,
    *,
    memory: int,
) -> None:
    """Check the tree at ``root`` against its CHECKSUMS; ``read`` holds the digests of the
    files the encoders have read (only the others are read here). The walk of the tree
    buffers at most ``memory`` bytes of listings."""
    # A hand-assembled tree may have no CHECKSUMS at all: that is worth a warning (which
    # --strict turns into a failure), not a refusal; a listed file that changed is.
    files, checked = await anyio.to_thread.run_sync(check_input_tree, root, read, memory)
    if checked == CHECKSUM_ALGORITHM:
        report.count("encode.files_verified", files)
    elif checked == CHECKSUMS_NONE:
        log.info(
            "checksums_absent",
            input=str(TreeRoots.of(root).main),
            hint="the tree was decoded with --checksums none: only its completeness was checked",
        )
    else:
        log.warning(
            "checksums_missing",
            input=str(TreeRoots.of(root).main),
            hint="the tree has no CHECKSUMS file, so its content could not be verified",
        )


async def encode_snapshot(
    input_root: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: EncodeOptions | None = None,
    *,
    report: Report | None = None,
    log_format: str | None = None,
    log_stream: TextIO | None = None,
    sort_budget: int | None = None,
    progress: ProgressCallback | None = None,
    force: bool = False,
    tree_roots: Mapping[str, str | os.PathLike[str]] | None = None,
) -> EncodeResult:
    """Encode the dump tree at ``input_root`` into the snapshot file ``output``.

    An existing ``output`` is refused with
    :class:`~elastickv_async._core.errors.UsageError` unless ``force`` is set; the previous
    file then stays in place until the new one is durable. Unless
    ``options.verify_checksums`` is false, the tree is first checked against its CHECKSUMS:
    a file that no longer matches raises
    :class:`~elastickv_async._core.errors.ChecksumMismatch` (exit 2) naming it.

    Both paths are recorded verbatim in ``<output>.encode_info.json``. The output path is
    locked for the run (``<output>.lock``): a second run on it fails at once with
    :class:`~elastickv_async._core.errors.UsageError`. ``sort_budget`` (default: the sort's
    share of ``options.memory_budget``) bounds the bytes of
    records held in memory before a sorted run is spilled (under ``options.scratch_root``,
    else next to the output). Raises
    :class:`~elastickv_async._core.errors.UsageError` (exit 1) for bad options or a tree without
    MANIFEST.json, a :class:`~elastickv_async._core.errors.DataError` (exit 2) for a bad or
    unsupported tree, :class:`~elastickv_async._core.errors.SelfTestMismatch` (exit 2) when the
    self-test finds a difference (nothing is published then), and
    :class:`~elastickv_async._core.errors.OutputError` (exit 1) when the output cannot be written.

    ``progress`` receives :class:`~elastickv_async.Progress` samples (see
    :func:`~elastickv_async.decode_snapshot`) through the stages ``collect`` (records read
    from the tree), ``write`` (entries framed into the .fsm, out of all collected) and, with
    the self-test, ``self_test`` (bytes of the new .fsm decoded again).

    A tree decoded with ``output_roots`` is read from the roots its MANIFEST.json records;
    ``tree_roots`` (adapter to directory) overrides one (see
    :func:`~elastickv_async.verify_tree`). The output is the same as for the tree made whole.
    """
    options = options or EncodeOptions()
    report = report if report is not None else Report()
    log = make_logger(report, log_format=log_format, stream=log_stream)
    input_label, output_label = os.fspath(input_root), os.fspath(output)
    root, out = Path(input_label), Path(output_label)
    specs = {spec.name: spec for spec in REGISTRY}
    selected = REGISTRY.select(options.adapters, lower=True)
    adapter_options = _check_options(options, specs)
    manifest = await anyio.to_thread.run_sync(_load_manifest, root, specs)
    roots = await anyio.to_thread.run_sync(
        lambda: recorded_tree_roots(root, manifest.output_roots, tree_roots, known=tuple(specs))
    )
    if manifest.scope and options.adapters == "all":
        # A scoped tree holds only its scoped adapters: "all" of it is those.
        selected = tuple(name for name in selected if name in manifest.adapters)
    await anyio.to_thread.run_sync(_check_placement, roots, out, options, selected)
    _check_against_manifest(selected, manifest, specs)
    ts, overridden = _effective_ts(options, manifest)
    rebase = _time_shift(options, manifest)
    shift_ms = rebase.shift_ms if rebase is not None else 0

    meter = ProgressMeter(progress)
    workers = await anyio.to_thread.run_sync(_workers, options, roots)
    run = _Run(
        roots,
        out,
        options,
        selected,
        adapter_options,
        report,
        log,
        sort_budget,
        new_tag(),
        meter,
        shift_ms,
        workers,
    )
    lock = PathLock(out)
    await anyio.to_thread.run_sync(lock.acquire)
    try:
        await anyio.to_thread.run_sync(lambda: _refuse_existing_output(out, force=force))
        verify = None
        if options.verify_checksums:
            # The check runs once the encoders are done: their part is free for its walk.
            walk = run.memory.share("walk") + run.memory.share("adapters")
            verify = partial(_verify_input, roots, report, log, memory=walk)
        else:
            log.info("checksums_not_verified", input=input_label)
        places = [out.parent]
        if options.scratch_root is not None:
            places.append(options.scratch_root)
        elif options.self_test:
            # Loaded only here: an encode without a self-test has no use for tempfile.
            import tempfile

            places.append(Path(tempfile.gettempdir()))
        removed = await anyio.to_thread.run_sync(_remove_leftovers, places)
        if removed:
            log.info("leftovers_removed", count=len(removed), paths=removed[:20])
            report.count("encode.leftovers_removed", len(removed))
        info = EncodeInfo(
            input_root=input_label,
            output_fsm_path=output_label,
            output_fsm_sha256="",
            last_commit_ts=ts,
            last_commit_ts_overridden=overridden,
            manifest_last_commit_ts=manifest.last_commit_ts,
            manifest_cluster_id=manifest.cluster_id,
            adapters_enabled=run.enabled,
            self_test_ran=False,
            self_test_matched=False,
            rebase=rebase,
            scope=manifest.scope,
        )
        if manifest.scope:
            log.info(
                "scoped_tree",
                scope={name: list(names) for name, names in manifest.scope.items()},
                hint="the tree was decoded with --scope: the snapshot restores only that scope",
            )
        async with workers, meter.running():
            stream, outcome = await run.execute(manifest, ts, specs, info, verify)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lock.release)

    report.count("encode.entries", stream.entries)
    report.count("encode.bytes_written", stream.bytes_written)
    report.snapshot.update(last_commit_ts=ts, sha256=stream.sha256, size_bytes=stream.bytes_written)
    return EncodeResult(
        sha256=stream.sha256,
        bytes_written=stream.bytes_written,
        entries=stream.entries,
        last_commit_ts=ts,
        adapters_enabled=run.enabled,
        self_test_ran=outcome is not None,
        self_test_matched=outcome is not None and outcome.matched,
        report=report,
    )
