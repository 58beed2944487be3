"""``prepare-restore``: turn an encoded ``.fsm`` and its sidecar into a node's Raft data directory.

The job of the reference's ``cmd/elastickv-snapshot-prepare-restore`` (checks) and
``PrepareExternalSnapshotRestore`` in ``internal/raftengine/etcd/external_snapshot_restore.go``
(layout), in Python:

1. the sidecar ``<input>.encode_info.json`` (at most 1 MiB, format version 1) must record the
   payload's SHA-256, the current key format version, a self-test that ran and matched
   (unless allowed otherwise) and a cluster id that fits ``--target-cluster-id`` /
   ``--fresh-cluster`` (or ``--allow-missing-cluster-id`` when it has none);
2. the payload must be a bare ``EKVPBBL1`` stream as encoders write it, no entry newer than
   its header's ``last_commit_ts``;
3. the data directory is built beside its destination (``<data-dir>.restore-prep``) and
   renamed into place only when complete: ``fsm-snap/<index>.fsm`` (kv-FSM header with the
   HLC ceiling just after ``last_commit_ts``, the payload, the CRC32C footer), the Raft
   snapshot naming it, a WAL whose HardState commits it, and the peers file
   (:mod:`.raftstate`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

import anyio
import crc32c

from .. import gojson_read
from ..dump.manifest import CURRENT_FORMAT_VERSION
from ..errors import DataError, OutputError, SnapshotFormatError, UsageError
from ..snapshot.framing import FrameDecoder
from . import raftstate
from .raftstate import Peer, PeerSpecError

__all__ = [
    "PrepareRestoreOptions",
    "PrepareRestoreResult",
    "describe",
    "prepare_restore",
]

_ENCODE_INFO_FORMAT_VERSION: Final = 1
_MAX_ENCODE_INFO_BYTES: Final = 1 << 20
_HLC_LOGICAL_BITS: Final = 16
_MAX_HLC_PHYSICAL_MS: Final = (1 << (64 - _HLC_LOGICAL_BITS)) - 1
_CHUNK: Final = 4 << 20
_DECODE_BATCH: Final = 4096
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: opening a FIFO must not hang; it is refused right after as not a regular file.
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_CREATE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
_PREP_SUFFIX: Final = ".restore-prep"


def _refused(message: str) -> DataError:
    """The error for a payload or sidecar that fails a restore check (nothing was written)."""
    return DataError(message, code="ErrRestoreRefused")


@dataclass(frozen=True, slots=True)
class PrepareRestoreOptions:
    """The reference helper's flags.

    ``encode_info`` defaults to ``<input>.encode_info.json``. ``peers`` is
    ``id=host:port,...``: every peer becomes a voter, its node id derived from its id.
    """

    input: Path
    data_dir: Path
    index: int
    peers: str
    term: int = 1
    encode_info: Path | None = None
    target_cluster_id: str = ""
    fresh_cluster: bool = False
    allow_missing_cluster_id: bool = False
    allow_unverified_self_test: bool = False


@dataclass(frozen=True, slots=True)
class PrepareRestoreResult:
    """What was written: the data directory and its snapshot files, with their checksums."""

    data_dir: Path
    fsm_path: Path
    snap_path: Path
    crc32c: int
    payload_bytes: int
    payload_sha256: str
    last_commit_ts: int
    peers: int
    #: The scope of a payload encoded from a ``--scope`` tree: it restores only that.
    scope: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _EncodeInfo:
    sha256: str
    key_format_version: int
    self_test_ran: bool
    self_test_matched: bool
    cluster_id: str
    scope: dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class _Payload:
    sha256: str
    size: int
    last_commit_ts: int


# --- checks ----------------------------------------------------------------------------------


def _check_options(opts: PrepareRestoreOptions) -> list[Peer]:
    if opts.index <= 0:
        raise UsageError("--index must be > 0")
    if opts.term <= 0:
        raise UsageError("--term must be > 0")
    if not opts.peers.strip():
        raise UsageError("--peers is required")
    if opts.fresh_cluster and opts.target_cluster_id:
        raise UsageError("--fresh-cluster and --target-cluster-id are mutually exclusive")
    try:
        return raftstate.parse_peers(opts.peers)
    except PeerSpecError as exc:
        raise UsageError(f"--peers: {exc}") from None


def _open_regular(path: Path, kind: str) -> BinaryIO:
    """Open an input for reading, refusing symlinks and anything but a regular file."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{kind} {path} is a symlink") from None
        raise UsageError(f"cannot open {kind} {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{kind} {path} is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _read_encode_info(path: Path) -> _EncodeInfo:
    with _open_regular(path, "encode info") as fh:
        body = fh.read(_MAX_ENCODE_INFO_BYTES + 1)
    if len(body) > _MAX_ENCODE_INFO_BYTES:
        raise _refused(f"encode info {path} exceeds {_MAX_ENCODE_INFO_BYTES} bytes")
    try:
        tree = gojson_read.parse_tree(body)
        top = gojson_read.decode_struct(
            tree,
            (
                gojson_read.Field("format_version", "u32"),
                gojson_read.Field("encoder_key_format_version", "u32"),
                gojson_read.Field("output_fsm_sha256", "str"),
                gojson_read.Field("manifest_cluster_id", "str"),
            ),
        )
        if top["format_version"] != _ENCODE_INFO_FORMAT_VERSION:
            raise _refused(
                f"encode info {path}: unsupported format_version {top['format_version']}, "
                f"want {_ENCODE_INFO_FORMAT_VERSION}"
            )
        self_test = _self_test(tree)
    except gojson_read.GoJSONError as exc:
        raise _refused(f"encode info {path} is malformed: {exc}") from None
    return _EncodeInfo(
        sha256=top["output_fsm_sha256"],
        key_format_version=top["encoder_key_format_version"],
        self_test_ran=self_test["ran"],
        self_test_matched=self_test["matched"],
        cluster_id=top["manifest_cluster_id"],
        scope=_scope(body),
    )


def _scope(body: bytes) -> dict[str, list[str]]:
    """The sidecar's ``scope`` (written only for a scoped tree); it only feeds a warning."""
    try:
        scope = json.loads(body).get("scope")
    except (ValueError, AttributeError):
        return {}
    if not isinstance(scope, dict):
        return {}
    return {str(k): [str(n) for n in v] for k, v in scope.items() if isinstance(v, list)}


def _self_test(tree: Any) -> dict[str, Any]:
    """The nested ``self_test`` struct; repeated keys merge in order, as Go's do."""
    fields = (gojson_read.Field("ran", "bool"), gojson_read.Field("matched", "bool"))
    merged = gojson_read.decode_struct(None, fields)
    for key, value in gojson_read.object_items(tree):
        if key.lower() == "self_test":
            if value is None:
                continue
            update = gojson_read.decode_struct(value, fields)
            present = {k.lower() for k, _ in gojson_read.object_items(value)}
            merged |= {k: v for k, v in update.items() if k in present}
    return merged


def _scan_payload(path: Path) -> _Payload:
    """SHA-256 and header of an encoder payload, every entry framed and checked."""
    digest = hashlib.sha256()
    decoder = FrameDecoder()
    size = 0
    max_commit_ts = 0
    with _open_regular(path, "payload") as fh:
        at_eof = False

        def fill() -> None:
            nonlocal at_eof, size
            want = max(_CHUNK, decoder.need)
            data = fh.read(want)
            at_eof = len(data) < want
            size += len(data)
            digest.update(data)
            decoder.feed(data)

        try:
            fill()
            while (header := decoder.read_header(at_eof=at_eof)) is None:
                fill()
            if header.kind != "none":
                raise _refused(
                    f"payload {path} starts with a {header.kind} header: it is a node's "
                    "fsm-snap file, not an encoder payload"
                )
            while not decoder.done:
                batch = decoder.decode(_DECODE_BATCH, at_eof=at_eof)
                for entry in batch:
                    max_commit_ts = max(max_commit_ts, entry.commit_ts)
                if len(batch) < _DECODE_BATCH and not decoder.done:
                    if at_eof:
                        raise SnapshotFormatError(
                            f"payload {path} ends inside an entry", code="ErrSnapshotTruncated"
                        )
                    fill()
        except SnapshotFormatError as exc:
            raise _refused(f"payload {path}: {exc}") from None
    if decoder.footer is not None or decoder.meta or decoder.writer_registry_rows:
        raise _refused(
            f"payload {path} carries a CRC footer or raw store keys: it is not an encoder payload"
        )
    if max_commit_ts > header.last_commit_ts:
        raise _refused(
            f"payload {path}: an entry's commit_ts {max_commit_ts} exceeds the header's "
            f"last_commit_ts {header.last_commit_ts}"
        )
    return _Payload(digest.hexdigest(), size, header.last_commit_ts)


def _check_encode_info(info: _EncodeInfo, payload: _Payload, opts: PrepareRestoreOptions) -> None:
    if not info.sha256:
        raise _refused("encode info has no output_fsm_sha256")
    if info.sha256.lower() != payload.sha256:
        raise _refused(
            f"payload {opts.input} has SHA-256 {payload.sha256}, "
            f"its encode info records {info.sha256}"
        )
    if info.key_format_version != CURRENT_FORMAT_VERSION:
        raise _refused(
            f"encoder key format version {info.key_format_version}, "
            f"this restore supports {CURRENT_FORMAT_VERSION}"
        )
    if not opts.allow_unverified_self_test and not (info.self_test_ran and info.self_test_matched):
        raise _refused(
            "the encoder's self-test did not pass: re-encode with --self-test "
            "or pass --allow-unverified-self-test"
        )
    source = info.cluster_id
    if not source:
        if not opts.allow_missing_cluster_id:
            raise _refused(
                "encode info has no manifest_cluster_id (pass --allow-missing-cluster-id)"
            )
    elif not opts.fresh_cluster:
        if not opts.target_cluster_id:
            raise _refused(
                f"payload comes from cluster {source!r}: pass --target-cluster-id "
                "or --fresh-cluster"
            )
        if source != opts.target_cluster_id:
            raise _refused(
                f"payload comes from cluster {source!r}, target is {opts.target_cluster_id!r}"
            )


def _hlc_ceiling_ms(last_commit_ts: int) -> int:
    """The first HLC millisecond after ``last_commit_ts`` (0 for an empty history)."""
    if last_commit_ts == 0:
        return 0
    physical = last_commit_ts >> _HLC_LOGICAL_BITS
    if physical == _MAX_HLC_PHYSICAL_MS:
        raise _refused(f"last_commit_ts {last_commit_ts} leaves no HLC ceiling")
    return physical + 1


# --- writing ---------------------------------------------------------------------------------


def _create(path: Path, mode: int) -> BinaryIO:
    fd = os.open(path, _CREATE_FLAGS, mode)
    os.fchmod(fd, mode)
    return os.fdopen(fd, "wb")


def _write_file(path: Path, data: bytes, mode: int) -> None:
    with _create(path, mode) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_fsm(opts: PrepareRestoreOptions, payload: _Payload, target: Path) -> tuple[int, str]:
    """Header + payload + CRC32C footer; returns the CRC and the SHA-256 of what was copied."""
    header = raftstate.fsm_header(_hlc_ceiling_ms(payload.last_commit_ts))
    crc = crc32c.crc32c(header)
    digest = hashlib.sha256()
    with _open_regular(opts.input, "payload") as src, _create(target, 0o600) as out:
        out.write(header)
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            crc = crc32c.crc32c(chunk, value=crc)
            digest.update(chunk)
        out.write(crc.to_bytes(4, "big"))
        out.flush()
        os.fsync(out.fileno())
    return crc, digest.hexdigest()


def _seed(prep: Path, opts: PrepareRestoreOptions, peers: list[Peer], payload: _Payload) -> int:
    fsm_dir, snap_dir, wal_dir = prep / "fsm-snap", prep / "snap", prep / "wal"
    fsm_dir.mkdir(0o755)
    crc, copied_sha = _write_fsm(opts, payload, fsm_dir / raftstate.fsm_snap_name(opts.index))
    if copied_sha != payload.sha256:
        raise _refused(f"payload {opts.input} changed while it was being copied")
    voters = [p.node_id for p in peers]
    token = raftstate.snapshot_token(opts.index, crc)
    snap_dir.mkdir(0o755)
    _write_file(
        snap_dir / raftstate.snap_name(opts.term, opts.index),
        raftstate.snap_file(token, voters, opts.index, opts.term),
        0o644,
    )
    wal_dir.mkdir(0o700)
    with _create(wal_dir / raftstate.WAL_FILE_NAME, 0o600) as wal:
        wal.write(raftstate.wal_records(voters, opts.index, opts.term))
        wal.flush()
        # etcd preallocates each segment; the zeros past the records end the log.
        os.ftruncate(wal.fileno(), raftstate.WAL_SEGMENT_BYTES)
        os.fsync(wal.fileno())
    _write_file(prep / "etcd-raft-peers.bin", raftstate.peers_file(peers, opts.index), 0o600)
    for directory in (fsm_dir, snap_dir, wal_dir, prep):
        _fsync_dir(directory)
    return crc


def _reserve(data_dir: Path) -> Path:
    """Check the destination is free and create the staging directory beside it."""
    if os.path.lexists(data_dir):
        raise OutputError(f"data directory {data_dir} already exists")
    if not data_dir.parent.is_dir():
        raise OutputError(f"parent of data directory {data_dir} does not exist")
    prep = data_dir.with_name(data_dir.name + _PREP_SUFFIX)
    try:
        prep.mkdir(0o755)
    except FileExistsError:
        raise OutputError(
            f"staging directory {prep} already exists (left by an interrupted run? remove it)"
        ) from None
    return prep


def _prepare(opts: PrepareRestoreOptions) -> PrepareRestoreResult:
    peers = _check_options(opts)
    info = _read_encode_info(opts.encode_info or Path(f"{opts.input}.encode_info.json"))
    payload = _scan_payload(opts.input)
    _check_encode_info(info, payload, opts)
    data_dir = Path(os.path.normpath(opts.data_dir))
    prep = _reserve(data_dir)
    try:
        crc = _seed(prep, opts, peers, payload)
        if os.path.lexists(data_dir):
            raise OutputError(f"data directory {data_dir} appeared while it was being prepared")
        os.rename(prep, data_dir)
    except OSError as exc:
        shutil.rmtree(prep, ignore_errors=True)
        raise OutputError(f"cannot prepare {data_dir}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(prep, ignore_errors=True)
        raise
    try:
        _fsync_dir(data_dir.parent)
    except OSError as exc:
        # A data directory whose rename may not survive a crash must not look like a success.
        shutil.rmtree(data_dir, ignore_errors=True)
        raise OutputError(f"cannot fsync {data_dir.parent}: {exc.strerror or exc}") from None
    return PrepareRestoreResult(
        data_dir=data_dir,
        fsm_path=data_dir / "fsm-snap" / raftstate.fsm_snap_name(opts.index),
        snap_path=data_dir / "snap" / raftstate.snap_name(opts.term, opts.index),
        crc32c=crc,
        payload_bytes=payload.size,
        payload_sha256=payload.sha256,
        last_commit_ts=payload.last_commit_ts,
        peers=len(peers),
        scope=info.scope,
    )


async def prepare_restore(opts: PrepareRestoreOptions) -> PrepareRestoreResult:
    """Check an encoded payload and build a fresh Raft data directory for it at ``data_dir``.

    Raises :class:`~elastickv_async._core.errors.UsageError` for bad options or unreadable
    inputs, :class:`DataError` (``ErrRestoreRefused``) when a check fails, and
    :class:`~elastickv_async._core.errors.OutputError` when the destination exists or cannot
    be written. On any failure no data directory (and no staging directory) is left behind.
    """
    # One worker thread does it all: the steps are sequential blocking file work.
    return await anyio.to_thread.run_sync(_prepare, opts)


def describe(result: PrepareRestoreResult) -> dict[str, Any]:
    """The result as report fields (what the reference helper logs)."""
    return {
        "data_dir": str(result.data_dir),
        "fsm": str(result.fsm_path),
        "snap": str(result.snap_path),
        "crc32c": f"{result.crc32c:08x}",
        "payload_sha256": result.payload_sha256,
        "payload_bytes": result.payload_bytes,
        "last_commit_ts": result.last_commit_ts,
        "peers": result.peers,
    } | ({"scope": result.scope} if result.scope else {})
