"""``encode_cluster``: a cluster dump tree back into one ``.fsm`` per Raft group.

The tree is encoded once, as :func:`~elastickv_async._core.encode.api.encode_snapshot` does
(the adapters' records collected into one bounded external sort), except that each record
is stamped with the commit timestamp of the group that owns its route key in the route
catalog (the tree's MANIFEST ``cluster.routes``, or ``routes.json``). The sorted stream is
then read once and each record framed into its group's file: the subsequence of one group
is sorted by that group's encoded keys, since every key of a group carries the same suffix.

The group holding the catalog (the one routing ``!dist|meta|version``, where the node looks
for it) also gets the catalog's own rows, so a restored cluster keeps its routes.

Each group's ``last_commit_ts`` is its own, as the cluster MANIFEST records it (groups
snapshot independently; a group the MANIFEST does not list gets the tree's), or the
``--last-commit-ts`` override for every group (not below the tree's, the maximum).

Publication is all or nothing: the group files, their ``encode_info.json`` sidecars and,
last, :data:`SET_MARKER` (the list of the groups written) are written into a temporary
directory beside ``output_dir``, which is then renamed to ``output_dir`` in one step.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, TextIO

import anyio
import anyio.to_thread

from ..._adapters.base import AdapterSpec, EncodeContext
from ..._adapters.registry import REGISTRY
from ..concurrency import task_group
from ..dump.manifest import MANIFEST_NAME, Manifest
from ..dump.roots import TreeRoots
from ..dump.tree import recording_reads
from ..encode import publish as disk
from ..encode.api import (
    Verify,
    _check_against_manifest,
    _check_options,
    _check_placement,
    _effective_ts,
    _load_manifest,
    _make_workdir,
    _remove_leftovers,
    _remove_workdir,
    _self_test_options,
    _verify_input,
    _with_subtree,
    _workers,
    adapter_contexts,
)
from ..encode.collect import CHANNEL_BUFFER, LARGE_VALUE, collect_records
from ..encode.framing import ts_suffix
from ..encode.info import EncodeInfo, encoder_version
from ..encode.output import FrameWriter
from ..encode.readdigests import ReadDigests
from ..encode.selftest import diff_trees
from ..errors import DataError, OutputError, SelfTestMismatch, UsageError, map_os_errors
from ..extsort import ExternalSorter
from ..memory import MemoryBudget
from ..meter import ProgressMeter
from ..options import EncodeOptions
from ..report import Report, make_logger
from ..runfiles import LockedDir, PathLock, make_locked_dir, new_tag
from ..snapshot.framing import TS_SIZE
from ..workers import Workers
from .inputs import GroupInput
from .routes import CATALOG_PREFIX, CATALOG_VERSION_KEY, RouteCatalog, catalog_rows

if TYPE_CHECKING:
    from ..progress import ProgressCallback

__all__ = ["SET_MARKER", "ClusterEncodeResult", "GroupFile", "encode_cluster", "group_file_name"]

#: Written last into the output directory: the groups of the set, so a set is recognisable
#: as complete (and as this tool's, for ``force``).
SET_MARKER: Final = "ENCODE_CLUSTER.json"
SET_FORMAT_VERSION: Final = 1


def group_file_name(group: int) -> str:
    """``group-<g>.fsm``: a group's snapshot in the output directory."""
    return f"group-{group}.fsm"


@dataclass(frozen=True, slots=True)
class GroupFile:
    """One group's snapshot written by :func:`encode_cluster`."""

    group: int
    path: Path
    sha256: str
    bytes_written: int
    entries: int
    last_commit_ts: int


@dataclass(frozen=True, slots=True)
class ClusterEncodeResult:
    """What an encode-cluster run produced."""

    groups: tuple[GroupFile, ...]
    #: The group whose snapshot carries the route catalog rows.
    catalog_group: int
    adapters_enabled: tuple[str, ...]
    self_test_ran: bool
    self_test_matched: bool
    report: Report


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where every key goes, and the timestamp each group's file is stamped with."""

    catalog: RouteCatalog
    catalog_group: int
    stamps: Mapping[int, int]
    #: The ``last_commit_ts`` the MANIFEST records for each group (the tree's when absent).
    recorded: Mapping[int, int]
    overridden: bool

    def owner(self, key: bytes) -> int:
        """The group a user key is written to; refuses a key no route covers."""
        if key.startswith(CATALOG_PREFIX):
            return self.catalog_group
        group = self.catalog.owner(key)
        if group is None:
            raise DataError(
                f"no route of the catalog covers key {key[:64]!r}",
                code="errKeyNotRouted",
                key=key,
            )
        return group


def _cluster_section(manifest: Manifest) -> Mapping[str, Any] | None:
    section = manifest.raw.get("cluster")
    return section if isinstance(section, dict) else None


def _recorded_groups(section: Mapping[str, Any] | None) -> dict[int, int]:
    if section is None:
        return {}
    try:
        return {int(g["raft_group_id"]): int(g["last_commit_ts"]) for g in section["groups"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"MANIFEST.json cluster.groups is not a group list: {exc}", code="ErrInvalidManifest"
        ) from None


def _make_plan(
    manifest: Manifest, given: RouteCatalog | None, options: EncodeOptions, input_root: Path
) -> _Plan:
    section = _cluster_section(manifest)
    if given is not None:
        catalog = given
    elif section is None:
        raise UsageError(
            f"{input_root} is not a cluster tree (its MANIFEST.json has no cluster section); "
            "give the route catalog with --routes",
            code="errNotClusterTree",
        )
    elif section.get("routes") is None:
        raise UsageError(
            f"{input_root}: the cluster decode found no route catalog; give it with --routes",
            code="errNoRouteCatalog",
        )
    else:
        catalog = RouteCatalog.from_manifest(section["routes"])
    if not catalog.routes:
        raise UsageError("the route catalog has no routes", code="errNoRouteCatalog")
    catalog_group = catalog.owner(CATALOG_VERSION_KEY)
    if catalog_group is None:
        raise DataError(
            f"no route of the catalog covers {CATALOG_VERSION_KEY!r}, where a node keeps it",
            code="errKeyNotRouted",
        )
    recorded = _recorded_groups(section)
    groups = sorted(recorded.keys() | catalog.group_ids())
    ts, overridden = _effective_ts(options, manifest)
    recorded = {g: recorded.get(g, manifest.last_commit_ts) for g in groups}
    stamps = {g: ts if overridden else recorded[g] for g in groups}
    return _Plan(catalog, catalog_group, stamps, recorded, overridden)


# --- the output directory (blocking helpers) ---------------------------------------------------


def _is_our_set(names: set[str]) -> bool:
    if SET_MARKER not in names:
        return False
    for name in names - {SET_MARKER}:
        base = name.removesuffix(".encode_info.json")
        group = base.removeprefix("group-").removesuffix(".fsm")
        if not (base.startswith("group-") and base.endswith(".fsm") and group.isdigit()):
            return False
    return True


def _check_output_dir(output: Path, *, force: bool) -> bool:
    """Whether ``output`` holds a previous set to replace (refuses anything else non-empty)."""
    try:
        mode = os.lstat(output).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise UsageError(f"--output-dir {output} is a symlink; refusing to write through it")
    if not stat.S_ISDIR(mode):
        raise UsageError(f"--output-dir {output} exists and is not a directory")
    names = set(os.listdir(output))
    if not names:
        return False
    if _is_our_set(names):
        if force:
            return True
        raise UsageError(
            f"--output-dir {output} holds the snapshots of an earlier encode-cluster; "
            "pass --force to replace them"
        )
    raise UsageError(f"--output-dir {output} is not empty")


def _publish_dir(temp: LockedDir, output: Path, replace: bool, tag: str) -> None:
    """Rename the finished ``temp`` to ``output``; a replaced set is removed only after."""
    previous = output.with_name(f".{output.name}.{tag}.prev")
    if replace:
        os.rename(output, previous)
    try:
        # Over an absent or empty directory, the rename is one atomic step.
        os.rename(temp.path, output)
    except OSError as exc:
        if replace:
            os.rename(previous, output)
        raise OutputError(f"cannot publish {output}: {exc.strerror}") from None
    disk.fsync_dir(output.parent)
    if replace:
        shutil.rmtree(previous, ignore_errors=True)


def _remove_temp(temp: LockedDir) -> None:
    if temp.still_here():
        shutil.rmtree(temp.path, ignore_errors=True)
    temp.close()


# --- writing the group files -------------------------------------------------------------------


class _Splitter:
    """Frames the merged stream into each record's group file, in slices."""

    def __init__(
        self,
        records: Iterator[tuple[bytes, bytes]],
        writers: Mapping[int, FrameWriter],
        owner: Callable[[bytes], int],
    ) -> None:
        self._records = records
        self._writers = writers
        self._owner = owner
        self.bytes_written = 0
        self.entries = 0

    def write_some(self, budget: int = 16 << 20) -> bool:
        """Write records until about ``budget`` bytes went out; True once all are written."""
        start = self.bytes_written
        for key, body in self._records:
            writer = self._writers[self._owner(key[:-TS_SIZE])]
            before = writer.position
            writer.add(key, body)
            self.bytes_written += writer.position - before
            self.entries += 1
            if self.bytes_written - start >= budget:
                return False
        for writer in self._writers.values():
            writer.finish()
        return True


def _open_group_files(
    directory: Path, groups: Mapping[int, int], buffer: int
) -> dict[int, BinaryIO]:
    files: dict[int, BinaryIO] = {}
    try:
        for group in groups:
            files[group] = disk.create_temp(directory / group_file_name(group), buffer)
    except BaseException:
        for fh in files.values():
            disk.close_quietly(fh)
        raise
    return files


class _Run:
    """One encode-cluster run: the state its steps share."""

    def __init__(
        self,
        input_root: Path,
        manifest: Manifest,
        plan: _Plan,
        options: EncodeOptions,
        specs: dict[str, AdapterSpec],
        selected: tuple[str, ...],
        adapter_options: dict[str, Any],
        report: Report,
        log: Any,
        meter: ProgressMeter,
        tag: str,
        sort_budget: int | None,
        workers: Workers,
    ) -> None:
        self.input_root = input_root
        self.manifest = manifest
        self.plan = plan
        self.options = options
        self.specs = specs
        self.selected = selected
        self.enabled = REGISTRY.encode_order(selected)
        self.adapter_options = adapter_options
        self.report = report
        self.log = log
        self.meter = meter
        self.tag = tag
        self.memory = MemoryBudget(options.memory_budget, "encode", selected)
        self.sort_budget = self.memory.share("sort") if sort_budget is None else sort_budget
        self.workers = workers

    def _context(
        self, work: Path, encoding: list[AdapterSpec]
    ) -> Callable[[AdapterSpec], EncodeContext]:
        return adapter_contexts(
            self.input_root,
            self.manifest,
            self.adapter_options,
            self.log,
            self.report,
            work,
            workers=self.workers,
            memory=self.memory,
            present=[spec.name for spec in encoding],
        )

    async def write_groups(
        self, directory: Path, base: Path, verify: Verify | None = None
    ) -> dict[int, FrameWriter]:
        """Collect, sort and split the records into ``directory/group-<g>.fsm`` (fsync'd).

        With ``verify``, the digests of the tree files the encoders read are recorded as they
        are read, and ``verify`` checks them (and hashes the rest) beside the splitting.
        """
        plan = self.plan
        with map_os_errors(OutputError, f"cannot create a work directory in {base}"):
            held = await anyio.to_thread.run_sync(_make_workdir, base, self.tag, self.enabled)
        work = held.path
        sorter = ExternalSorter(work / "sort", self.sort_budget, large_value=LARGE_VALUE)
        limit = self.memory.ledger_entries()
        read = ReadDigests(work / "read", limit=limit) if verify else None
        suffixes = {g: ts_suffix(ts) for g, ts in plan.stamps.items()}
        meter = self.meter
        try:
            meter.stage("collect", unit="records", done=lambda: sorter.records)
            # As in encode: adapters whose subtree the tree lacks lend their shares.
            encoding = await anyio.to_thread.run_sync(
                _with_subtree, self.input_root, [self.specs[n] for n in self.enabled]
            )
            with recording_reads(read) if read is not None else contextlib.nullcontext():
                await collect_records(
                    encoding,
                    self._context(work, encoding),
                    sorter,
                    lambda key: suffixes[plan.owner(key)],
                    batch_bytes=self.memory.batch_bytes(CHANNEL_BUFFER, streams=1),
                )
            for key, value in catalog_rows(plan.catalog.routes):
                sorter.add(key + suffixes[plan.catalog_group], value)
            buffer = self.memory.output_buffer(len(plan.stamps))
            files = await anyio.to_thread.run_sync(
                _open_group_files, directory, plan.stamps, buffer
            )
            block = self.memory.frame_block(len(plan.stamps))
            writers = {
                g: FrameWriter(fh, plan.stamps[g], block_size=block) for g, fh in files.items()
            }
            try:
                splitter = _Splitter(sorter.merged(), writers, plan.owner)
                meter.output(files=lambda: 0, bytes_=lambda: splitter.bytes_written)
                meter.stage(
                    "write", unit="entries", done=lambda: splitter.entries, total=sorter.records
                )
                async with task_group() as tg:
                    if verify is not None and read is not None:
                        tg.start_soon(verify, read)
                    while not await anyio.to_thread.run_sync(splitter.write_some):
                        pass
                for fh in files.values():
                    await anyio.to_thread.run_sync(disk.finish_temp, fh)
            finally:
                with anyio.CancelScope(shield=True):
                    for fh in files.values():
                        await anyio.to_thread.run_sync(disk.close_quietly, fh)
        except OSError as exc:
            raise OutputError(
                f"cannot write the group snapshots or their sort scratch: {exc}"
            ) from None
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(sorter.close)
                if read is not None:
                    await anyio.to_thread.run_sync(read.close)
                await anyio.to_thread.run_sync(_remove_workdir, held)
        self.report.count("encode.sort_spills", sorter.spills)
        return writers

    async def self_test(self, directory: Path) -> str:
        """Decode the group files as a cluster and compare; the mismatch text ('' when none)."""
        from .api import decode_cluster

        plan = self.plan
        base = self.options.scratch_root
        if base is None:
            base = Path(await anyio.to_thread.run_sync(tempfile.gettempdir))
        held = await anyio.to_thread.run_sync(make_locked_dir, base, f"{new_tag()}.selftest")
        try:
            tree = held.path / "tree"
            decoded = Report()
            inputs = [GroupInput(g, directory / group_file_name(g)) for g in plan.stamps]
            options = _self_test_options(self.options, self.manifest, self.specs, self.selected, 0)
            self.meter.stage("self_test", unit="groups")
            try:
                await decode_cluster(inputs, tree, options, report=decoded)
            except DataError as exc:
                return f"self-test failed: decode-cluster rejected the produced snapshots: {exc}\n"
            self.report.count("self_test.decode_warnings", decoded.warning_count)
            got = {g["raft_group_id"]: g["last_commit_ts"] for g in decoded.snapshot["groups"]}
            if got != dict(plan.stamps):
                return f"self-test failed: groups' last_commit_ts {got} != {dict(plan.stamps)}\n"
            doc = json.loads(await anyio.Path(tree / MANIFEST_NAME).read_bytes())
            if doc["cluster"].get("routes") != plan.catalog.to_json():
                return "self-test failed: the decoded route catalog differs from the input's\n"
            spill = held.path / "compare"
            await anyio.Path(spill).mkdir()
            comparers = {name: self.specs[name].compare for name in self.enabled}
            lines = await diff_trees(
                self.input_root,
                tree,
                comparers,
                spill,
                jobs=self.options.jobs,
                memory=self.options.memory_budget,
            )
            return "".join(f"{line}\n" for line in lines)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, held.path, True)
                await anyio.to_thread.run_sync(held.close)

    def sidecars(
        self, output: Path, writers: Mapping[int, FrameWriter], tested: bool
    ) -> dict[str, bytes]:
        """Every group's ``encode_info.json`` and the set marker, by file name."""
        files: dict[str, bytes] = {}
        for group, writer in writers.items():
            name = group_file_name(group)
            files[f"{name}.encode_info.json"] = EncodeInfo(
                input_root=os.fspath(self.input_root),
                output_fsm_path=os.fspath(output / name),
                output_fsm_sha256=writer.sha256,
                last_commit_ts=self.plan.stamps[group],
                last_commit_ts_overridden=self.plan.overridden,
                manifest_last_commit_ts=self.plan.recorded[group],
                manifest_cluster_id=self.manifest.cluster_id,
                adapters_enabled=self.enabled,
                self_test_ran=tested,
                self_test_matched=tested,
            ).to_json()
        marker = {
            "format_version": SET_FORMAT_VERSION,
            "encoder_version": encoder_version(),
            "input_root": os.fspath(self.input_root),
            "catalog_group": self.plan.catalog_group,
            "routes": self.plan.catalog.to_json(),
            "groups": [
                {
                    "raft_group_id": group,
                    "fsm": group_file_name(group),
                    "sha256": writer.sha256,
                    "bytes": writer.bytes_written,
                    "entries": writer.entries,
                    "last_commit_ts": self.plan.stamps[group],
                }
                for group, writer in sorted(writers.items())
            ],
            "self_test": {"ran": tested, "matched": tested},
        }
        files[SET_MARKER] = (json.dumps(marker, indent=2) + "\n").encode()
        return files


def _write_sidecars(directory: Path, files: Mapping[str, bytes]) -> None:
    # The marker last: a directory without it is not a complete set.
    for name, data in sorted(files.items(), key=lambda item: item[0] == SET_MARKER):
        disk.write_temp_file(directory / name, data)
    disk.fsync_dir(directory)


async def encode_cluster(
    input_root: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    options: EncodeOptions | None = None,
    *,
    routes: str | os.PathLike[str] | None = None,
    force: bool = False,
    report: Report | None = None,
    log_format: str | None = None,
    log_stream: TextIO | None = None,
    progress: ProgressCallback | None = None,
    sort_budget: int | None = None,
) -> ClusterEncodeResult:
    """Encode the cluster dump tree at ``input_root`` into one ``.fsm`` per Raft group.

    Writes ``output_dir/group-<g>.fsm`` and ``group-<g>.fsm.encode_info.json`` for every
    group of the tree's cluster MANIFEST and of the route catalog, then
    ``ENCODE_CLUSTER.json``; the whole set appears at once. Each record goes to the group
    owning its route key in the catalog (``routes``, a ``routes.json`` file, else the tree's
    MANIFEST ``cluster.routes``); the catalog group also gets the catalog rows.
    ``output_dir`` must be absent or empty, or with ``force`` hold an earlier set, which is
    replaced. The tree is first checked against its CHECKSUMS unless
    ``options.verify_checksums`` is false. ``options.self_test`` decodes the files with
    ``decode_cluster`` and compares the tree with the input before publishing
    (``output_dir.mismatch.txt`` lists differences).

    ``options.memory_budget`` bounds the run's buffers as it does :func:`encode_snapshot`'s;
    ``sort_budget`` (default: the sort's share of it) bounds the records the sort holds.

    Raises :class:`~elastickv_async._core.errors.UsageError` for a tree that is not a cluster
    tree without ``routes``, :class:`~elastickv_async._core.errors.DataError`
    (``errKeyNotRouted``) for a key no route covers, and the encoder's other errors.
    """
    options = options or EncodeOptions()
    if options.rebase_time:
        raise UsageError("encode-cluster does not rebase times; encode each group instead")
    report = report if report is not None else Report()
    log = make_logger(report, log_format=log_format, stream=log_stream)
    root, out = Path(os.fspath(input_root)), Path(os.fspath(output_dir))
    specs = {spec.name: spec for spec in REGISTRY}
    selected = REGISTRY.select(options.adapters, lower=True)
    adapter_options = _check_options(options, specs)
    given = None
    if routes is not None:
        given = await anyio.to_thread.run_sync(RouteCatalog.from_json_file, Path(routes))
    manifest = await anyio.to_thread.run_sync(_load_manifest, root, specs)
    await anyio.to_thread.run_sync(
        _check_placement, root, out / group_file_name(1), options, selected
    )
    _check_against_manifest(selected, manifest, specs)
    plan = _make_plan(manifest, given, options, root)

    meter = ProgressMeter(progress)
    tag = new_tag()
    run = _Run(
        root,
        manifest,
        plan,
        options,
        specs,
        selected,
        adapter_options,
        report,
        log,
        meter,
        tag,
        sort_budget,
        await anyio.to_thread.run_sync(_workers, options, TreeRoots(root)),
    )
    lock = PathLock(out)
    await anyio.to_thread.run_sync(lock.acquire)
    temp: LockedDir | None = None
    try:
        replace = await anyio.to_thread.run_sync(lambda: _check_output_dir(out, force=force))
        verify = None
        if options.verify_checksums:
            verify = partial(_verify_input, root, report, log, memory=run.memory.share("walk"))
        else:
            log.info("checksums_not_verified", input=os.fspath(root))
        places = [out.parent] + ([options.scratch_root] if options.scratch_root else [])
        removed = await anyio.to_thread.run_sync(_remove_leftovers, places)
        if removed:
            log.info("leftovers_removed", count=len(removed), paths=removed[:20])
            report.count("encode.leftovers_removed", len(removed))
        await anyio.to_thread.run_sync(disk.remove_stale_mismatch, _mismatch_path(out))
        with map_os_errors(OutputError, f"cannot create a temporary directory beside {out}"):
            temp = await anyio.to_thread.run_sync(
                make_locked_dir, out.parent, f".{out.name}.{tag}.tmp"
            )
        async with run.workers, meter.running():
            writers = await run.write_groups(temp.path, options.scratch_root or out.parent, verify)
            mismatch = await run.self_test(temp.path) if options.self_test else ""
        if mismatch:
            text = mismatch.encode("utf-8", "surrogateescape")
            await anyio.to_thread.run_sync(disk.replace_small, _mismatch_path(out), text, tag)
            raise SelfTestMismatch(
                f"self-test: the decoded cluster differs from the input "
                f"(see {_mismatch_path(out)})",
                code="errSelfTestMismatch",
            )
        files = run.sidecars(out, writers, options.self_test)
        await anyio.to_thread.run_sync(_write_sidecars, temp.path, files)
        await anyio.to_thread.run_sync(_publish_dir, temp, out, replace, tag)
    finally:
        with anyio.CancelScope(shield=True):
            if temp is not None:
                await anyio.to_thread.run_sync(_remove_temp, temp)
            await anyio.to_thread.run_sync(lock.release)

    groups = tuple(
        GroupFile(
            group=g,
            path=out / group_file_name(g),
            sha256=w.sha256,
            bytes_written=w.bytes_written,
            entries=w.entries,
            last_commit_ts=plan.stamps[g],
        )
        for g, w in sorted(writers.items())
    )
    report.count("encode.groups", len(groups))
    report.count("encode.entries", sum(g.entries for g in groups))
    report.count("encode.bytes_written", sum(g.bytes_written for g in groups))
    report.snapshot.update(
        header_kind="cluster",
        catalog_group=plan.catalog_group,
        groups=[
            {"raft_group_id": g.group, "last_commit_ts": g.last_commit_ts, "sha256": g.sha256}
            for g in groups
        ],
    )
    return ClusterEncodeResult(
        groups=groups,
        catalog_group=plan.catalog_group,
        adapters_enabled=run.enabled,
        self_test_ran=options.self_test,
        self_test_matched=options.self_test,
        report=report,
    )


def _mismatch_path(output: Path) -> Path:
    return output.with_name(output.name + ".mismatch.txt")
