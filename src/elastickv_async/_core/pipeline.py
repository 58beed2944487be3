"""The decode engine: reader -> resolver -> router -> bounded channels -> adapter tasks -> writer.

One task group owns everything. The producer task reads the snapshot, keeps the visible
version of each key, routes it by prefix and sends batches over small bounded anyio memory
object streams, one per enabled adapter, so a slow adapter holds the reader back. Each
adapter task consumes its channel and then finalises (adapters finalise concurrently). The
tree's CHECKSUMS and, last of all, MANIFEST.json are written only after every adapter
succeeded: a tree without MANIFEST.json is an incomplete run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import partial
from itertools import accumulate, repeat
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import anyio
import anyio.to_thread
import msgspec
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from .._adapters.base import (
    AdapterSpec,
    DecodeAdapter,
    DecodeContext,
    Routed,
    StreamDecodeAdapter,
)
from .._adapters.registry import REGISTRY
from .._version import __version__
from .concurrency import task_group
from .dump.checksums import CHECKSUMS_NAME, ChecksumLedger
from .dump.manifest import CHECKSUM_ALGORITHM, CHECKSUMS_NONE, MANIFEST_NAME, DecodeManifest
from .dump.roots import TreeRoots, checked_output_roots
from .dump.writer import DumpWriter
from .errors import OutputError, SnapshotFormatError, UsageError
from .memory import MemoryBudget, check_budget
from .meter import ProgressMeter
from .options import DecodeOptions
from .report import Report, make_logger
from .routing import INTERNAL, Router, prefix_family
from .runfiles import (
    LockedDir,
    clear_directory,
    lock_directory,
    make_locked_dir,
    new_tag,
    remove_leftovers,
)
from .scope import normalise_scope, scope_filters, warn_missing
from .snapshot.entry import Entry, SnapshotHeader
from .snapshot.mvcc import VisibilityResolver
from .snapshot.reader import STDIN, Snapshot, SnapshotStats, open_snapshot
from .snapshot.source import snapshot_index_from_path
from .workers import AUTO_MIN_BYTES, Workers, auto_processes

if TYPE_CHECKING:
    from .progress import ProgressCallback

__all__ = [
    "INCOMPLETE_MARKER",
    "StreamOutcome",
    "claim_output",
    "decode_entries",
    "decode_snapshot",
    "make_scratch",
    "normalise_options",
    "release",
    "seal_manifest",
]

_HLC_LOGICAL_BITS: Final = 16
_VALUE: Final = attrgetter("value")
_CHECKSUM_CHOICES: Final = (CHECKSUM_ALGORITHM, CHECKSUMS_NONE)


#: Present in an output directory while a decode writes it; it becomes MANIFEST.json at the
#: end. The run began with the directory empty, so everything beside it belongs to that run.
INCOMPLETE_MARKER: Final = ".elastickv-async-incomplete"


def claim_output(output: Path, *, force: bool, tag: str) -> LockedDir:
    """Lock the output directory (created if absent) and check that it may be written.

    It must be empty, or, with ``force``, hold only the incomplete tree of an earlier decode
    that is no longer running (its marker is there and the lock was free): that tree is
    cleared. A complete tree or foreign files are never removed. The directory is marked
    incomplete until :func:`seal_manifest`. Blocking: call it in a worker thread.
    """
    if output.is_symlink():
        raise UsageError(f"output {output} is a symlink; refusing to write through it")
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} exists and is not a directory")
    output.mkdir(mode=0o755, parents=True, exist_ok=True)
    held = lock_directory(output, "output directory")
    try:
        names = set(os.listdir(held.fd))
        if names and INCOMPLETE_MARKER in names and force:
            clear_directory(held.fd)
        elif INCOMPLETE_MARKER in names:
            raise UsageError(
                f"output directory {output} holds the incomplete tree of a decode that did not "
                "finish; pass --force to replace it"
            )
        elif names:
            more = " (--force replaces only an unfinished decode's tree)" if force else ""
            raise UsageError(f"output directory {output} is not empty{more}")
        marker = os.open(
            INCOMPLETE_MARKER,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=held.fd,
        )
        try:
            os.write(marker, f"{tag}\n".encode())
        finally:
            os.close(marker)
    except BaseException:
        held.close()
        raise
    return held


def _claim_input_and_output(source: Path, output: Path, *, force: bool, tag: str) -> LockedDir:
    if os.fspath(source) != STDIN and not source.is_file():
        raise UsageError(f"input {source} is not a readable file")
    return claim_output(output, force=force, tag=tag)


class _Redirect(msgspec.Struct):
    """A redirected adapter's root, claimed like the output, and the scratch inside it.

    Its scratch shares the root's filesystem, so finished scratch files are renamed into
    place rather than copied.
    """

    root: LockedDir
    scratch: LockedDir | None = None


def _claim_redirects(
    roots: TreeRoots, options: DecodeOptions, *, force: bool, tag: str
) -> dict[str, _Redirect]:
    """Claim every redirected root (see :func:`claim_output`) and make its scratch.

    On a failure the roots claimed so far get their markers back out, so that fixing the
    cause needs no ``--force``. Blocking.
    """
    scratch_root = options.scratch_root.resolve() if options.scratch_root is not None else None
    claimed: dict[str, _Redirect] = {}
    try:
        for name, path in roots.redirected.items():
            if scratch_root is not None and scratch_root == path.resolve():
                raise UsageError(f"--scratch-root must not be --output-root {name}={path}")
            claimed[name] = _Redirect(claim_output(path, force=force, tag=tag))
            claimed[name].scratch = make_locked_dir(path, f".{tag}.scratch")
    except BaseException:
        _unclaim(claimed.values())
        raise
    return claimed


def _unmark(redirects: Mapping[str, _Redirect]) -> None:
    """Remove the redirected roots' incomplete markers (their trees are complete)."""
    for redirect in redirects.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(INCOMPLETE_MARKER, dir_fd=redirect.root.fd)


def _unclaim(redirects: Iterable[_Redirect]) -> None:
    """Undo :func:`_claim_redirects` for roots nothing was written to yet."""
    for redirect in redirects:
        release(redirect.scratch, remove=True)
        with contextlib.suppress(OSError):
            os.unlink(INCOMPLETE_MARKER, dir_fd=redirect.root.fd)
        redirect.root.close()


def _release_redirects(redirects: Mapping[str, _Redirect]) -> None:
    for redirect in redirects.values():
        release(redirect.scratch, remove=True)
        release(redirect.root, remove=False)


def _check_scratch_root(options: DecodeOptions) -> None:
    root = options.scratch_root
    if root is not None and not root.is_dir():
        raise UsageError(f"--scratch-root {root} is not an existing directory")


def make_scratch(options: DecodeOptions, output: Path, tag: str) -> LockedDir:
    """The run's locked scratch directory: in the output, or under ``--scratch-root``."""
    if options.scratch_root is None:
        return make_locked_dir(output, f".{tag}.scratch")
    # The run's scratch is always a fresh subdirectory, removed at the end; refusing the
    # output itself as the base keeps that removal away from the user's data.
    base = options.scratch_root.resolve()
    if not base.is_dir():
        raise UsageError(f"--scratch-root {base} is not an existing directory")
    if base == output.resolve():
        raise UsageError("--scratch-root must not be the output directory")
    remove_leftovers(base)
    return make_locked_dir(base, f"{tag}.scratch")


def release(held: LockedDir | None, *, remove: bool) -> None:
    """Unlock ``held`` (if any), removing the directory first when ``remove`` is set."""
    if held is None:
        return
    if remove and held.still_here():
        shutil.rmtree(held.path, ignore_errors=True)
    held.close()


def normalise_options(options: DecodeOptions) -> DecodeOptions:
    """``options`` checked and made explicit: ``adapters`` the selected names in canonical
    order, ``adapter_options`` every registered adapter's resolved options (enabled or not:
    MANIFEST.json records them all). Raises :class:`~elastickv_async._core.errors.UsageError`.
    """
    if options.jobs < 1:
        raise UsageError("jobs must be at least 1")
    if options.workers is not None and options.workers < 0:
        raise UsageError("workers must be 0 or more")
    check_budget(options.memory_budget)
    if options.checksums not in _CHECKSUM_CHOICES:
        raise UsageError(f"checksums must be sha256 or none, not {options.checksums!r}")
    unknown = sorted(set(options.adapter_options) - set(REGISTRY.names()))
    if unknown:
        raise UsageError(f"options for unknown adapter(s): {', '.join(unknown)}")
    scoped = [spec.name for spec in REGISTRY if spec.scope_unit is not None]
    scope = normalise_scope(options.scope, scoped)
    adapters = options.adapters
    if scope and adapters == "all":
        adapters = tuple(scope)
    selected = REGISTRY.select(adapters)
    unselected = sorted(set(scope) - set(selected))
    if unselected:
        raise UsageError(f"--scope names adapter(s) not selected: {', '.join(unselected)}")
    return dataclasses.replace(
        options,
        adapters=selected,
        adapter_options={spec.name: _fidelity(spec, options) for spec in REGISTRY},
        scope=scope,
    )


def _fidelity(spec: AdapterSpec, options: DecodeOptions) -> Any:
    """The adapter's resolved options, widened by its full-fidelity part when that is on."""
    resolved = spec.resolve_options(options.adapter_options.get(spec.name))
    return spec.full_fidelity(resolved) if options.full_fidelity else resolved


async def decode_snapshot(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: DecodeOptions | None = None,
    *,
    log_format: str | None = None,
    log_stream: TextIO | None = None,
    progress: ProgressCallback | None = None,
    report: Report | None = None,
    force: bool = False,
    expected_index: int | None = None,
    output_roots: Mapping[str, str | os.PathLike[str]] | None = None,
) -> Report:
    """Decode the snapshot at ``input_path`` into a dump tree at ``output``.

    ``input_path`` ``"-"`` reads standard input (read once, front to back; a snapshot whose
    header is below its data needs a second pass, which standard input cannot give: that
    raises :class:`~elastickv_async._core.errors.UsageError` ``errStdinNotRereadable``).
    ``output`` must be absent or an empty directory; with ``force`` it may also hold the
    incomplete tree of a decode that was killed, which is then replaced. The directory is
    locked for the run: a second run on it fails at once with
    :class:`~elastickv_async._core.errors.UsageError`. Returns the run's :class:`Report`
    (counters, warnings, what the snapshot said about itself); pass ``report`` to keep it
    even when the run fails. Raises an :class:`~elastickv_async._core.errors.ElasticKVError`
    subclass on bad input; the partial tree then has no MANIFEST.json.

    ``progress`` is called with a :class:`~elastickv_async.Progress` sample
    about four times a second, from the event loop, through the stages ``read`` (input
    bytes), ``flush`` (the adapters' remaining files) and ``checksums``; each stage ends with
    a ``finished`` sample. It must return quickly.

    ``expected_index`` is the Raft index the snapshot must carry in its
    ``_meta_applied_index`` (a node's ``fsm-snap/<index>.fsm`` names it): a different one
    raises :class:`~elastickv_async._core.errors.SnapshotFormatError` before MANIFEST.json is
    written; a snapshot without the key is decoded with the warning ``snapshot_index_unchecked``.

    ``output_roots`` maps an adapter to another directory (on another disk, say) that holds
    its subtree ``<adapter>/`` instead of ``output``; each is claimed like ``output`` (absent
    or empty, locked, ``force`` as above) and holds that adapter's scratch. No root may be
    inside ``output`` or another root, nor contain one. MANIFEST.json (in ``output``) records
    the roots in ``output_roots``; CHECKSUMS lists the tree's files by their paths in the
    whole tree.
    """
    options = normalise_options(options or DecodeOptions())
    await anyio.to_thread.run_sync(_check_scratch_root, options)
    source = Path(input_path)
    out = Path(output)
    roots = await anyio.to_thread.run_sync(
        lambda: checked_output_roots(
            out, output_roots, known=REGISTRY.names(), selected=REGISTRY.select(options.adapters)
        )
    )
    tag = new_tag()
    report = report if report is not None else Report()
    log = make_logger(report, log_format=log_format, stream=log_stream)
    held = await anyio.to_thread.run_sync(
        lambda: _claim_input_and_output(source, out, force=force, tag=tag)
    )
    scratch: LockedDir | None = None
    redirects: dict[str, _Redirect] = {}
    try:
        try:
            redirects = await anyio.to_thread.run_sync(
                lambda: _claim_redirects(roots, options, force=force, tag=tag)
            )
        except BaseException:
            # Nothing was written: the output is left as it was found, but for its marker.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_unclaim, [_Redirect(held)])
            raise
        scratch = await anyio.to_thread.run_sync(make_scratch, options, out, tag)
        meter = ProgressMeter(progress)
        run = _DecodeRun(
            source, os.fspath(input_path), held, scratch.path, options, report, log, meter
        )
        run.expected_index = expected_index
        run.roots, run.redirects = roots, redirects
        async with meter.running():
            try:
                return await run.execute(ignore_future_versions=True)
            except _HeaderBelowData:
                if os.fspath(source) == STDIN:
                    raise UsageError(
                        "the snapshot's header is below its data, so it must be decoded a "
                        "second time, and standard input cannot be read again: save the "
                        "stream to a file and decode that",
                        code="errStdinNotRereadable",
                    ) from None
            # Start over: the first pass's files and counts describe the wrong state.
            report.counters.clear()
            report.warnings.clear()
            await anyio.to_thread.run_sync(_reset_output, held, scratch, redirects)
            log.warning(
                "mvcc_header_below_data",
                hint="versions newer than the header's last_commit_ts exist but no key has "
                "versions on both sides of it, so the header does not describe the data; "
                "decoded again with the newest version of each key deciding",
            )
            return await run.execute(ignore_future_versions=False)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: release(scratch, remove=True))
            await anyio.to_thread.run_sync(_release_redirects, redirects)
            await anyio.to_thread.run_sync(lambda: release(held, remove=False))


class _HeaderBelowData(Exception):
    """Raised by a strict pass whose snapshot header is below all of its history."""


def _reset_output(
    out: LockedDir, scratch: LockedDir, redirects: Mapping[str, _Redirect] | None = None
) -> None:
    """Empty the output and the redirected roots (they were empty when the run began) and
    the run's scratch directories.

    Everything goes through the descriptors opened at the start: if a root no longer names
    that directory (say a symlink was swapped in), the run stops instead of following it.
    """
    places = [(out, scratch)] + [(r.root, r.scratch) for r in (redirects or {}).values()]
    for root, _ in places:
        if not root.still_here():
            raise OutputError(f"output directory {root.path} was replaced during the run")
    for root, work in places:
        assert work is not None, "a claimed root has its scratch"
        clear_directory(root.fd, keep=frozenset({INCOMPLETE_MARKER, work.path.name}))
        clear_directory(work.fd)


def seal_manifest(out_fd: int, manifest: bytes) -> None:
    """Turn the marker into MANIFEST.json: write the manifest into it, then rename it.

    One rename ends the run, so a kill leaves either the marker (an unfinished tree that
    ``--force`` replaces) or MANIFEST.json on a complete tree, never both, never neither.
    """
    flags = os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(INCOMPLETE_MARKER, flags, dir_fd=out_fd)
        try:
            view = memoryview(manifest)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(INCOMPLETE_MARKER, MANIFEST_NAME, src_dir_fd=out_fd, dst_dir_fd=out_fd)
        try:
            os.fsync(out_fd)
        except OSError:
            # Not durable, so the run fails: it must not leave MANIFEST.json behind.
            with contextlib.suppress(OSError):
                os.rename(MANIFEST_NAME, INCOMPLETE_MARKER, src_dir_fd=out_fd, dst_dir_fd=out_fd)
            raise
    except OSError as exc:
        raise OutputError(f"cannot write {MANIFEST_NAME}: {exc}") from None


def _make_scratch_dirs(paths: list[Path]) -> None:
    for path in paths:
        path.mkdir(mode=0o700, exist_ok=True)


class _Prepended:
    """A batch already taken from ``rest``, then the rest of it, as one async iterator."""

    def __init__(self, first: list[Routed] | None, rest: ObjectReceiveStream[list[Routed]]):
        self._first = first
        self._rest = rest

    def __aiter__(self) -> _Prepended:
        return self

    async def __anext__(self) -> list[Routed]:
        first, self._first = self._first, None
        if first is not None:
            return first
        return await self._rest.__anext__()


class _DecodeRun:
    """One decode: adapters, the producer and consumers in one task group, then the tree's
    CHECKSUMS and MANIFEST.json."""

    def __init__(
        self,
        source: Path | None,
        source_label: str,
        out: LockedDir | Path,
        scratch: Path,
        options: DecodeOptions,
        report: Report,
        log: Any,
        meter: ProgressMeter,
    ) -> None:
        self.source, self.source_label, self.scratch = source, source_label, scratch
        # A run without a locked output (decode_entries) leaves the tree's finish to its caller.
        self.held = out if isinstance(out, LockedDir) else None
        self.out = out.path if isinstance(out, LockedDir) else out
        self.options = normalise_options(options)
        self.report, self.log, self.meter = report, log, meter
        self.specs = {spec.name: spec for spec in REGISTRY}
        self.enabled = REGISTRY.select(self.options.adapters)
        self.router = Router(self.specs, self.enabled)
        self.memory = MemoryBudget(self.options.memory_budget, "decode", self.enabled)
        buffered, streams = self.options.channel_buffer, len(self.enabled)
        self.batch_bytes = min(
            self.options.batch_bytes,
            self.memory.batch_bytes(buffered, streams=streams, reader=True),
        )
        self.read_chunk = self.memory.read_chunk()
        self.scope_filters = scope_filters(self.options.scope, self.specs)
        #: The ``_meta_applied_index`` the snapshot must carry (see :func:`decode_snapshot`).
        self.expected_index: int | None = None
        #: Where each adapter's subtree goes, and the claimed roots of those redirected.
        self.roots = TreeRoots(self.out)
        self.redirects: Mapping[str, _Redirect] = {}

    def _scratch_of(self, name: str) -> Path:
        """The adapter's scratch: on the filesystem of the root its files go to."""
        redirect = self.redirects.get(name)
        if redirect is not None and redirect.scratch is not None:
            return redirect.scratch.path / name
        return self.scratch / name

    def _workers(self) -> Workers:
        chosen = self.options.workers
        if chosen is None:
            # A stream assembled by the caller (a cluster's groups) already runs once per
            # core on the distributed engine: more processes would only compete.
            if self.source is None:
                chosen = 0
            else:
                stdin = os.fspath(self.source) == STDIN
                large = stdin or self.source.stat().st_size >= AUTO_MIN_BYTES
                chosen = auto_processes(large=large)
        return Workers(chosen)

    async def _setup(self) -> None:
        options = self.options
        self.workers = await anyio.to_thread.run_sync(self._workers)
        self.ledger = ChecksumLedger(
            self.scratch / ".checksums", limit=self.memory.ledger_entries()
        )
        self.writer = DumpWriter(
            self.roots, jobs=options.jobs, fsync=options.fsync, ledger=self.ledger
        )
        self.scopes: dict[str, dict[str, Any]] = {}
        self.counters = {"total": 0, "internal": 0, "unknown": 0} | dict.fromkeys(self.enabled, 0)
        if self.scope_filters:
            self.counters["out_of_scope"] = 0
        self.unknown_families: dict[bytes, int] = {}
        #: The adapters that received entries, once the input is read (see _flush_share).
        self.holding: frozenset[str] | None = None
        scratch = [self._scratch_of(name) for name in self.enabled]
        await anyio.to_thread.run_sync(_make_scratch_dirs, scratch)

    async def execute(self, *, ignore_future_versions: bool) -> Report:
        """Decode the whole snapshot once; raise :class:`_HeaderBelowData` to ask for a rerun."""
        assert self.source is not None, "a single-file run has a source"
        await self._setup()
        async with self.workers, open_snapshot(self.source, chunk_size=self.read_chunk) as snap:
            header = snap.header
            writer, counters = self.writer, self.counters
            self.meter.output(
                files=lambda: writer.files_written,
                bytes_=lambda: writer.bytes_written,
                entries=lambda: counters["total"],
            )
            self.meter.stage(
                "read",
                unit="bytes",
                done=lambda: snap.stats.bytes_read,
                # Standard input's size is known only at its end.
                total=snap.stats.total_bytes or None,
            )
            resolver = VisibilityResolver(
                header.last_commit_ts, ignore_future_versions=ignore_future_versions
            )
            now_ms = header.hlc_ceiling_ms or (header.last_commit_ts >> _HLC_LOGICAL_BITS)
            await self.decode_stream(header, now_ms, self._resolved(snap, resolver))
        mvcc = resolver.stats
        if ignore_future_versions and mvcc.future_versions and not mvcc.straddling_keys:
            raise _HeaderBelowData
        self._account(header, snap.stats, msgspec.structs.asdict(mvcc))
        self._check_index(snap.stats)
        await self._finish(header, snap.stats)
        return self.report

    def _check_index(self, stats: SnapshotStats) -> None:
        expected = self.expected_index
        if expected is None:
            return
        applied = stats.meta.get("_meta_applied_index")
        if applied is None:
            self.log.warning(
                "snapshot_index_unchecked",
                path=self.source_label,
                index=expected,
                hint="the snapshot has no _meta_applied_index to check its file name against",
            )
        elif applied != expected:
            raise SnapshotFormatError(
                f"{self.source_label}: the file name says index {expected} but the snapshot's "
                f"_meta_applied_index is {applied}",
                code="errSnapshotIndexMismatch",
                path=self.source_label,
            )

    async def decode_stream(
        self, header: SnapshotHeader, now_ms: int, batches: AsyncIterator[list[Entry]]
    ) -> None:
        """Route visible entries (in snapshot key order) to the adapters and finalise them."""
        options = self.options

        def decoder(name: str) -> DecodeAdapter:
            return self.specs[name].decoder(
                DecodeContext(
                    options=options,
                    writer=self.writer,
                    log=self.log.bind(adapter=name),
                    report=self.report,
                    header=header,
                    scratch=self._scratch_of(name),
                    now_ms=now_ms,
                    adapter_options=options.adapter_options[name],
                    workers=self.workers,
                    memory=self.memory.adapter(name),
                    flush_share=partial(self._flush_share, name),
                )
            )

        async with task_group() as tg:
            sends: dict[str, ObjectSendStream[list[Routed]]] = {}
            for name in self.enabled:
                send, receive = anyio.create_memory_object_stream[list[Routed]](
                    options.channel_buffer
                )
                sends[name] = send
                tg.start_soon(self._consume, name, decoder, receive)
            tg.start_soon(self._produce, batches, sends)

    def _flush_share(self, name: str) -> int:
        """``name``'s share once the input is read: adapters that received no entries hold
        nothing, so the adapters' part goes to those that did."""
        return self.memory.adapter(name, holding=self.holding)

    async def _resolved(
        self, snap: Snapshot, resolver: VisibilityResolver
    ) -> AsyncIterator[list[Entry]]:
        """The snapshot's visible entries, batch by batch; counts raw entries."""
        counters = self.counters
        batch_size, batch_bytes = self.options.batch_size, self.batch_bytes
        async for raw_batch in snap.batches(batch_size, batch_bytes):
            counters["total"] += len(raw_batch)
            yield resolver.resolve(raw_batch)

    async def _consume(
        self,
        name: str,
        decoder: Callable[[str], DecodeAdapter],
        receive: ObjectReceiveStream[list[Routed]],
    ) -> None:
        async with receive:
            try:
                first = await receive.receive()
            except anyio.EndOfStream:
                first = None
            empty_scope = self.specs[name].empty_scope
            if first is None and empty_scope is not None:
                # Nothing routed here: the scope is known without building (and importing)
                # the decoder, which would write nothing.
                self.scopes[name] = empty_scope()
            else:
                adapter = decoder(name)
                if isinstance(adapter, StreamDecodeAdapter):
                    # Background work of its own: it takes the whole stream and finalises
                    # itself.
                    self.scopes[name] = await adapter.consume(_Prepended(first, receive))
                else:
                    if first is not None:
                        await adapter.handle(first)
                    async for batch in receive:
                        await adapter.handle(batch)
                    self.scopes[name] = await adapter.finalize()
        scope = self.scope_filters.get(name)
        if scope is not None:
            warn_missing({name: scope}, self.log)

    async def _produce(
        self,
        batches: AsyncIterator[list[Entry]],
        sends: dict[str, ObjectSendStream[list[Routed]]],
    ) -> None:
        """Route; batches go out at ``batch_size`` entries or bytes. Entries are taken a
        run of one route at a time (see :meth:`Router.runs`)."""
        counters, runs, unknown = self.counters, self.router.runs, self.unknown_families
        in_scope = {name: scope.keep for name, scope in self.scope_filters.items()}
        pending: dict[str, list[Routed]] = {name: [] for name in sends}
        pending_bytes = dict.fromkeys(sends, 0)
        batch_size, batch_bytes = self.options.batch_size, self.batch_bytes
        try:
            async for visible in batches:
                for target, prefix, run in runs(visible):
                    if target is None:
                        counters["unknown"] += len(run)
                        for entry in run:
                            family = prefix_family(entry.key)
                            unknown[family] = unknown.get(family, 0) + 1
                        continue
                    if target == INTERNAL:
                        counters["internal"] += len(run)
                        continue
                    keep = in_scope.get(target)
                    if keep is not None:
                        kept = [entry for entry in run if keep(prefix, entry.key)]
                        counters["out_of_scope"] += len(run) - len(kept)
                        run = kept
                    counters[target] += len(run)
                    # Cumulative value bytes: where the run crosses the bytes limit.
                    ends = list(accumulate(map(len, map(_VALUE, run))))
                    bucket, size = pending[target], pending_bytes[target]
                    start = 0
                    while start < len(run):
                        before = ends[start - 1] if start else 0
                        crossing = bisect_left(ends, batch_bytes - size + before, start)
                        stop = min(start + batch_size - len(bucket), crossing + 1, len(run))
                        bucket += zip(repeat(prefix), run[start:stop])
                        size += ends[stop - 1] - before
                        start = stop
                        if len(bucket) >= batch_size or size >= batch_bytes:
                            await sends[target].send(bucket)
                            bucket = pending[target] = []
                            size = 0
                    pending_bytes[target] = size
            for name, bucket in pending.items():
                if bucket:
                    await sends[name].send(bucket)
            # The input is read; what the adapters still hold is written from here on.
            self.holding = frozenset(name for name in sends if counters[name])
            writer = self.writer
            self.meter.stage("flush", unit="files", done=lambda: writer.files_written)
        finally:
            for send in sends.values():
                await send.aclose()

    def _account(self, header: SnapshotHeader, stats: SnapshotStats, mvcc: dict[str, int]) -> None:
        """Move the run's counts and snapshot facts into the report."""
        report = self.report
        for family, count in sorted(self.unknown_families.items()):
            self.log.warning(
                "unknown_prefix_entries",
                prefix=family.decode("utf-8", "backslashreplace"),
                count=count,
                hint="keys matched no known prefix and were not decoded; check for corruption "
                "or a newer elastickv keyspace",
            )
        for name, value in self.counters.items():
            report.count(f"entries.{name}", value)
        for name, value in mvcc.items():
            report.count(f"mvcc.{name}", value)
        report.snapshot.update(
            header_kind=header.kind,
            last_commit_ts=header.last_commit_ts,
            hlc_ceiling_ms=header.hlc_ceiling_ms,
            footer=stats.footer,
            payload_crc32c=f"{stats.payload_crc32c:08x}",
            meta_keys=dict(stats.meta),
            encryption_writer_rows=stats.encryption_writer_rows,
            size_bytes=stats.total_bytes,
        )

    async def _finish(self, header: SnapshotHeader, stats: SnapshotStats) -> None:
        """Write CHECKSUMS and, last, MANIFEST.json; remove scratch."""
        held = self.held
        assert self.source is not None and held is not None, "a single-file run finishes"
        index = snapshot_index_from_path(self.source) or stats.meta.get("_meta_applied_index")
        manifest = DecodeManifest(
            adapters=self.enabled,
            cluster_id=self.options.cluster_id,
            fields=REGISTRY.manifest_fields(self.options.adapter_options),
            fsm_path=self.source_label,
            last_commit_ts=header.last_commit_ts,
            elastickv_version=f"elastickv-async {__version__}",
            wall_time=datetime.now(UTC),
            snapshot_index=index,
            fsm_crc32c=stats.payload_crc32c,
            hlc_ceiling_ms=header.hlc_ceiling_ms,
            scopes=self.scopes,
            scope=self.options.scope,
            full_fidelity=self.options.full_fidelity,
            checksums=self.options.checksums,
            output_roots=self.roots.recorded(),
        ).to_json()
        writer = self.writer
        if self.options.checksums != CHECKSUMS_NONE:
            self.meter.stage("checksums", unit="files", total=writer.files_written)
            listing = self.ledger.listing(
                {MANIFEST_NAME: hashlib.sha256(manifest).digest()},
                block_size=self.memory.listing_block(),
            )
            await writer.write_chunks(CHECKSUMS_NAME, listing)
        scratch = [self.scratch] + [r.scratch.path for r in self.redirects.values() if r.scratch]
        for path in scratch:
            await anyio.to_thread.run_sync(shutil.rmtree, path, True)
        await anyio.to_thread.run_sync(seal_manifest, held.fd, manifest)
        # A kill right here leaves a marker in a redirected root of a complete tree: verify
        # and encode read only <adapter>/ there, and a new decode into it needs --force.
        await anyio.to_thread.run_sync(_unmark, self.redirects)
        self.report.count("output.files_written", writer.files_written + 1)
        self.report.count("output.bytes_written", writer.bytes_written + len(manifest))


class StreamOutcome(msgspec.Struct, frozen=True):
    """What decoding a stream of visible entries into a shared tree produced.

    ``checksums`` is the file holding the CHECKSUMS lines of the files written, sorted by
    path.
    """

    scopes: dict[str, dict[str, Any]]
    counters: dict[str, int]
    unknown_families: dict[bytes, int]
    checksums: Path
    files_written: int
    bytes_written: int


async def decode_entries(
    batches: AsyncIterator[list[Entry]],
    header: SnapshotHeader,
    *,
    now_ms: int,
    output: Path,
    scratch: Path,
    options: DecodeOptions,
    report: Report,
    log: Any,
    checksums: Path,
) -> StreamOutcome:
    """Decode visible entries (already resolved, in snapshot key order) into ``output``.

    The seam for callers that assemble the stream themselves (a cluster's merged groups):
    the adapters of ``options`` write their files, but neither CHECKSUMS nor MANIFEST.json;
    the caller writes those once every stream of the tree is done, from the lines written
    into the file ``checksums`` (replaced if it exists). ``scratch`` must exist.
    """
    run = _DecodeRun(None, "", output, scratch, options, report, log, ProgressMeter(None))
    await run._setup()
    try:
        async with run.workers:
            await run.decode_stream(header, now_ms, batches)
        await anyio.to_thread.run_sync(
            _write_listing, run.ledger, checksums, run.memory.listing_block()
        )
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(run.ledger.close)
    return StreamOutcome(
        scopes=run.scopes,
        counters=run.counters,
        unknown_families=run.unknown_families,
        checksums=checksums,
        files_written=run.writer.files_written,
        bytes_written=run.writer.bytes_written,
    )


def _write_listing(ledger: ChecksumLedger, path: Path, block_size: int) -> None:
    """The ledger's CHECKSUMS lines into the file ``path``, a block at a time (a scratch
    file: a retried partition replaces its killed attempt's)."""
    with open(path, "wb") as fh:
        for block in ledger.listing({}, block_size=block_size):
            fh.write(block)
