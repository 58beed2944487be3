"""Encoding ``s3/<bucket>/`` back into S3 records (REFERENCE_NOTES §6.5).

Per bucket directory: ``_bucket.json`` gives the ``!s3|bucket|meta|`` record and the
``!s3|bucket|gen|`` counter (generation 1); every other regular file with a sidecar is an
object whose key is its bucket-relative path, or the original key its KEYMAP.jsonl record
names. Bodies are re-chunked at 1 MiB into ``!s3|blob|`` records of one restored part,
followed by the ``!s3|obj|head|`` manifest. A small body is read by the walk itself, beside
its sidecar, so one worker-thread call reads many small objects (up to 4 MiB of bodies); the
chunks of a larger body are :class:`~elastickv_async._adapters.base.Deferred` values: they
stay in the file while the records are sorted, and are read one chunk at a time (re-opened
and re-checked) only when the snapshot is written, so each byte is read once, straight into
the output. A full-fidelity tree's incomplete uploads are replayed from
``_incomplete_uploads/records.jsonl`` (see :mod:`.uploads`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import IO, Any, Final

import anyio.to_thread
import msgspec

from ..._core.dump.names import encode_segment
from ..._core.dump.tree import (
    DigestRecorder,
    DumpTree,
    TreeDir,
    TreeEntry,
    TreeFile,
    active_recorder,
)
from ..._core.encode.output import hash_beside
from ..._core.errors import DumpTreeError, map_os_errors
from ..._core.gojson_read import GoJSONError
from ..base import Deferred, EncodeContext, SendBatch, send_batches
from . import keys
from .errors import TreeCode, tree_error
from .keymap import BucketKeymap
from .layout import (
    BUCKET_FILE,
    INCOMPLETE_DIR,
    INCOMPLETE_RECORDS,
    KEYMAP_FILE,
    META_SUFFIX,
    ORPHANS_DIR,
    ROOT,
)
from .uploads import parse_line, restore_records
from .values import (
    FORMAT_VERSION,
    RESTORE_GENERATION,
    RESTORE_PART_NO,
    RESTORE_UPLOAD_ID,
    live_bucket_meta_json,
    live_manifest_json,
    parse_public_bucket,
    parse_public_manifest,
)

__all__ = ["CHUNK_SIZE", "S3Encoder"]

#: Restored bodies are split into chunks of this size, as the live adapter does.
CHUNK_SIZE: Final = 1 << 20
#: Bytes of ``records.jsonl`` read per worker-thread call (at most half the encoder's memory
#: share).
_READ_BLOCK: Final = 8 * CHUNK_SIZE
#: A body this large is deferred (read when the snapshot is written); a smaller one is read
#: by the walk, where reading it costs less than opening it again later.
_DEFER_BYTES: Final = 64 << 10
#: Deferred chunk records handed over per list.
_DEFERRED_PER_LIST: Final = 1024
#: A deferred chunk's token: the body's ``st_dev``, ``st_ino`` and size as listed, and the
#: chunk's offset; the body's slash path follows.
_TOKEN: Final = struct.Struct("<QQQQ")
#: A deferred body: its ``st_dev``, ``st_ino`` and size as listed, and its slash path.
_BodyKey = tuple[int, int, int, bytes]
#: Bodies hashed at once by the writing (key order reads one body at a time: one or two).
_HASHING: Final = 16
#: Objects found per worker-thread call of the walk, and bytes of small bodies read with them
#: (at most half the encoder's memory share).
_SCAN_BATCH: Final = 256
_SCAN_BYTES: Final = 4 * CHUNK_SIZE
_BUCKET_NAME: Final = os.fsdecode(BUCKET_FILE)
_KEYMAP_NAME: Final = os.fsdecode(KEYMAP_FILE)
_META: Final = os.fsdecode(META_SUFFIX)
_RESERVED_DIRS: Final = frozenset({os.fsdecode(ORPHANS_DIR), os.fsdecode(INCOMPLETE_DIR)})
Record = tuple[bytes, bytes]
Value = bytes | Deferred


class _Object(msgspec.Struct, frozen=True):
    parts: tuple[str, ...]  # ``s3``, the bucket directory, then the body's path
    key: bytes
    manifest: bytes  # the restored manifest value (chunk sizes follow from the size)
    entry: TreeEntry  # as listed: the body must still be this file when it is read
    body: bytes | None  # the whole body when it is small, read by the walk


def _read_exact(file: TreeFile, offset: int, length: int) -> bytes:
    """``length`` bytes of ``file`` at ``offset`` (fewer only if it shrank), copied once."""
    data = os.pread(file.fd, length, offset)
    if 0 < len(data) < length:  # a short read is legal: finish it
        data += file.pread(offset + len(data), length - len(data))
    return data


def _read_whole(file: TreeFile, size: int, parts: tuple[str, ...]) -> bytes:
    """A small body read whole, to its end: through :meth:`TreeFile.blocks`, so the digest
    encode checks CHECKSUMS with is taken as it is read (the file is not read again)."""
    chunks = []
    total = 0
    for block in file.blocks():
        total += len(block)
        if total > size:
            raise _changed_size(parts)
        chunks.append(block)
    if total != size:
        raise _changed_size(parts)
    return b"".join(chunks)


def _changed_size(parts: tuple[str, ...]) -> DumpTreeError:
    return tree_error(
        "ErrS3EncodeInvalidManifest", f"{'/'.join(parts)} changed size while it was read"
    )


def _upload_batch(fh: IO[bytes], rel: str, limit: int) -> list[tuple[bytes, bytes, bytes]]:
    """The next records of an open ``records.jsonl``, about ``limit`` bytes of its lines
    (empty at its end; worker thread)."""
    out = []
    size = 0
    for line in fh:
        if not line.strip():
            continue
        try:
            prefix, key, value = parse_line(line)
        except GoJSONError as exc:
            raise tree_error("ErrS3EncodeInvalidIncompleteUpload", f"{rel}: {exc}") from None
        out.append((prefix, key, value))
        size += len(line)
        if size >= limit:
            break
    return out


def _chunk_sizes(size: int) -> list[int]:
    full, rest = divmod(size, CHUNK_SIZE)
    return [CHUNK_SIZE] * full + ([rest] if rest else [])


class _Bodies:
    """Reads deferred body chunks from the tree when the snapshot is written (a
    :class:`~elastickv_async._adapters.base.ValueSource`; worker thread).

    With a ``recorder`` (the encode's :func:`~elastickv_async._core.dump.tree.recording_reads`
    one), a body read chunk after chunk from its start to its listed size records its SHA-256
    as a file read to its end does, so the CHECKSUMS check does not read it again. Chunks
    arriving in another order (never, in key order) only leave the body to that check.

    The directory of the last body read stays open for the next one (in key order, bodies
    come a directory at a time) until :meth:`close`, which the sorter holding the chunks
    calls when it is closed.
    """

    def __init__(self, tree: DumpTree) -> None:
        self._tree = tree
        self.recorder: DigestRecorder | None = None
        #: Bodies being hashed: the offset of the chunk due next, and the hash so far.
        self._hashing: dict[_BodyKey, tuple[int, hashlib._Hash]] = {}
        self._lock = threading.Lock()
        #: The directory kept open, by its parts, and what closes it.
        self._open: tuple[tuple[str, ...], TreeDir] | None = None
        self._closing = contextlib.ExitStack()
        self._dir_lock = threading.Lock()

    def read(self, token: bytes, length: int) -> bytes:
        """The chunk ``token`` names, from its body re-opened and checked against the listing."""
        dev, ino, size, offset = _TOKEN.unpack_from(token)
        path = token[_TOKEN.size :]
        parts = tuple(os.fsdecode(path).split("/"))
        entry = TreeEntry(parts[-1], False, size, (dev, ino))
        with map_os_errors(DumpTreeError, "cannot read the dump tree", code="ErrEncodeAdapterData"):
            with self._dir_lock:
                body = self._directory(parts[:-1]).open_file(entry)
            with body:
                chunk = _read_exact(body, offset, length)
        if len(chunk) != length:
            raise _changed_size(parts)
        if self.recorder is not None:
            # When read for a snapshot, in a thread beside the one hashing it (the two hashes
            # of these bytes take two cores): the reading thread then only copies bytes.
            job = partial(self._hash, (dev, ino, size, path), offset, chunk, body.size, body.rel)
            if not hash_beside(job):
                job()
        return chunk

    def _directory(self, parts: tuple[str, ...]) -> TreeDir:
        """The open directory ``parts``: the one kept open, or opened now in its place."""
        if self._open is not None and self._open[0] == parts:
            return self._open[1]
        self._closing.close()
        self._open = None
        directory = self._closing.enter_context(self._tree.directory(parts))
        self._open = (parts, directory)
        return directory

    def close(self) -> None:
        """Close the directory kept open (a later read opens its own again)."""
        with self._dir_lock:
            self._open = None
            self._closing.close()

    def _hash(self, key: _BodyKey, offset: int, chunk: bytes, file_size: int, rel: str) -> None:
        """Add ``chunk``, read at ``offset``, to its body's hash; record the digest as ``rel``'s
        once the chunks reached the listed size (and ``file_size``, the opened file's size,
        is still that size)."""
        with self._lock:
            held = self._hashing.pop(key, None)
        if offset == 0:
            held = (0, hashlib.sha256())
        elif held is None or held[0] != offset:
            return
        end, digest = offset + len(chunk), held[1]
        digest.update(chunk)
        size = key[2]
        if end < size:
            with self._lock:
                if len(self._hashing) < _HASHING:
                    self._hashing[key] = (end, digest)
        elif file_size == size and self.recorder is not None:
            self.recorder.record(rel, digest.digest())


class S3Encoder:
    """The S3 adapter's :class:`~elastickv_async._adapters.base.BatchEncodeAdapter`."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._ctx = ctx
        self._tree = ctx.tree
        self._bodies = _Bodies(ctx.tree)
        # Only a full-fidelity tree's _incomplete_uploads/ holds the uploads' chunks too.
        self._uploads = ctx.full_fidelity
        # A walk batch's small bodies, or a block of records.jsonl: one at a time is read
        # while the previous one is handed on. A bucket's KEYMAP records take the other half.
        self._read_bytes = max(1, ctx.memory // 2)
        self._keymap_bytes = max(1, ctx.memory - self._read_bytes)

    async def produce(self, send: SendBatch) -> None:
        """Send the lists :meth:`batches` yields (a ``BatchEncodeAdapter``)."""
        await send_batches(self.batches(), send)

    async def batches(self) -> AsyncIterator[Sequence[tuple[bytes, Value]]]:
        """Yield every S3 record of the tree, bucket by bucket, in lists.

        A bucket is walked in batches of objects (one worker-thread call each), so memory
        stays bounded however many objects it holds.
        """
        self._bodies.recorder = active_recorder()
        for number, dir_name in enumerate(await self._tree.run(self._bucket_dirs)):
            # Numbered: a bucket directory's name may be as long as a name can be.
            spill = self._ctx.scratch / f"s3-keymap-{number}"
            scan = _BucketScan(self._tree, dir_name, spill, self._keymap_bytes)
            try:
                name, meta_value = await self._tree.run(scan.start)
                yield [
                    (keys.bucket_meta_key(name), meta_value),
                    (keys.bucket_gen_key(name), struct.pack(">Q", RESTORE_GENERATION)),
                ]
                read_bytes = min(_SCAN_BYTES, self._read_bytes)
                while batch := await self._tree.run(scan.next_batch, read_bytes):
                    out: list[tuple[bytes, Value]] = []
                    for obj in batch:
                        for record in self._object_records(name, obj):
                            out.append(record)
                            if len(out) >= _DEFERRED_PER_LIST:
                                yield out
                                out = []
                    yield out
                await self._tree.run(scan.finish)
                self._ctx.report.count("s3.keymap_spills", scan.keymap.spills)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._tree.run(scan.close)
            if self._uploads:
                async for records in self._upload_batches(dir_name):
                    yield records
            self._ctx.report.count("s3.buckets")

    async def _upload_batches(self, dir_name: str) -> AsyncIterator[list[Record]]:
        """The records of ``<bucket>/_incomplete_uploads/records.jsonl``, at generation 1."""
        rel = f"{ROOT}/{dir_name}/{INCOMPLETE_DIR.decode()}/{INCOMPLETE_RECORDS.decode()}"
        fh = await self._tree.run(self._open_uploads, dir_name)
        if fh is None:
            return
        count = 0
        try:
            limit = min(_READ_BLOCK, self._read_bytes)
            while batch := await self._tree.run(_upload_batch, fh, rel, limit):
                out: list[Record] = []
                for prefix, key, value in batch:
                    out += restore_records(prefix, key, value)
                    count += 1
                yield out
        finally:
            fh.close()  # a read-only descriptor: closing it does not block
        self._ctx.report.count("s3.incomplete_upload_records", count)

    def _open_uploads(self, dir_name: str) -> IO[bytes] | None:
        uploads = self._tree.open_dir((ROOT, dir_name, INCOMPLETE_DIR.decode()))
        if uploads is None:
            return None
        with uploads:
            file = uploads.open_name(INCOMPLETE_RECORDS.decode())
        return None if file is None else file.stream()

    def _object_records(self, bucket: bytes, obj: _Object) -> Iterator[tuple[bytes, Value]]:
        """The records of one object: its chunks (read by the walk or deferred), its manifest."""
        size = obj.entry.size
        if obj.body is not None:
            if obj.body:
                yield self._blob_key(bucket, obj, 0), obj.body
        else:
            path = os.fsencode("/".join(obj.parts))
            dev, ino = obj.entry.identity
            for chunk_no, offset in enumerate(range(0, size, CHUNK_SIZE)):
                token = _TOKEN.pack(dev, ino, size, offset) + path
                chunk = Deferred(self._bodies, token, min(CHUNK_SIZE, size - offset))
                yield self._blob_key(bucket, obj, chunk_no), chunk
        yield keys.manifest_key(bucket, RESTORE_GENERATION, obj.key), obj.manifest
        self._ctx.report.count("s3.objects")
        self._ctx.report.count("s3.body_bytes", size)

    @staticmethod
    def _blob_key(bucket: bytes, obj: _Object, chunk_no: int) -> bytes:
        return keys.blob_key(
            bucket, RESTORE_GENERATION, obj.key, RESTORE_UPLOAD_ID, RESTORE_PART_NO, chunk_no
        )

    def _bucket_dirs(self) -> list[str]:
        """The bucket directories under ``s3/`` (worker thread)."""
        top = self._tree.open_dir((ROOT,))
        if top is None:
            return []
        out = []
        with top:
            for entry in top.entries():
                if entry.is_dir:
                    out.append(entry.name)
                elif not entry.name.startswith("_"):
                    # A file here means a truncated or hand-made tree; skipping it would
                    # silently drop a bucket.
                    raise tree_error(
                        "ErrS3EncodeInvalidBucket",
                        f"{top.path(entry.name)} is not a bucket directory",
                    )
        return out


class _Lookahead:
    """A directory listing read one entry ahead, so a body's sidecar can be taken with it.

    An error listing the entry ahead (an unsafe entry) is raised only when that entry is
    reached, so errors come in listing order as without the lookahead.
    """

    def __init__(self, entries: Iterator[TreeEntry]) -> None:
        self._entries = entries
        self._next: TreeEntry | None = None
        self._error: DumpTreeError | None = None
        self._fill()

    def _fill(self) -> None:
        try:
            self._next = next(self._entries, None)
        except DumpTreeError as exc:
            self._next, self._error = None, exc

    def take(self) -> TreeEntry | None:
        """The next entry (``None`` at the end)."""
        if self._error is not None:
            raise self._error
        entry = self._next
        if entry is not None:
            self._fill()
        return entry

    def take_if(self, name: str) -> TreeEntry | None:
        """The next entry if it is a regular file named ``name``."""
        entry = self._next
        if entry is None or entry.name != name or entry.is_dir:
            return None
        return self.take()


class _BucketScan:
    """Walks one bucket directory; every method runs in a worker thread."""

    def __init__(self, tree: DumpTree, dir_name: str, scratch: Path, keymap_memory: int) -> None:
        self._tree = tree
        self._dir = dir_name
        where = f"{ROOT}/{dir_name}/{_KEYMAP_NAME}"
        #: The bucket's rename tracker (records held or sorted within ``keymap_memory``).
        self.keymap = BucketKeymap(where, scratch, keymap_memory)
        self._walk: Generator[_Object, None, None] | None = None

    def start(self) -> tuple[bytes, bytes]:
        """Read ``_bucket.json`` and the KEYMAP; return the bucket name and its meta value."""
        with self._tree.directory((ROOT, self._dir)) as bucket_dir:
            bucket = self._read_bucket_json(bucket_dir)
            self._read_keymap(bucket_dir)
        self._walk = self._objects()
        return bucket["name"].encode("utf-8"), live_bucket_meta_json(bucket)

    def next_batch(self, read_bytes: int) -> list[_Object]:
        """The next objects of the walk (empty when it is done).

        A batch ends after :data:`_SCAN_BATCH` objects or ``read_bytes`` bytes of bodies.
        """
        assert self._walk is not None
        batch = []
        read = 0
        for obj in self._walk:
            batch.append(obj)
            read += len(obj.body or b"")
            if len(batch) >= _SCAN_BATCH or read >= read_bytes:
                break
        return batch

    def finish(self) -> None:
        """After the walk: every KEYMAP record must have named an object file."""
        missing = self.keymap.missing()
        if missing is not None:
            raise tree_error(
                "ErrS3EncodeInvalidBucket",
                f"s3/{self._dir}/KEYMAP.jsonl names {missing!r}, which is not an object file",
            )

    def close(self) -> None:
        """Release the walk's directory descriptors and the KEYMAP's spilled runs."""
        if self._walk is not None:
            self._walk.close()
        self.keymap.close()

    def _objects(self) -> Generator[_Object, None, None]:
        with self._tree.directory((ROOT, self._dir)) as bucket_dir:
            yield from self._walk_dir(bucket_dir, (ROOT, self._dir))

    def _read_bucket_json(self, bucket_dir: TreeDir) -> dict[str, Any]:
        dir_name = self._dir
        where = bucket_dir.path(_BUCKET_NAME)
        bucket = self._read_versioned(
            bucket_dir,
            _BUCKET_NAME,
            parse_public_bucket,
            "ErrS3EncodeInvalidBucket",
            f"s3/{dir_name} has no {_BUCKET_NAME}",
        )
        if not bucket["name"]:
            raise tree_error("ErrS3EncodeInvalidBucket", f"{where}: empty bucket name")
        if encode_segment(bucket["name"].encode("utf-8")) != dir_name:
            raise tree_error(
                "ErrS3EncodeInvalidBucket",
                f"{where}: bucket {bucket['name']!r} does not belong in this directory",
            )
        return bucket

    def _read_keymap(self, bucket_dir: TreeDir) -> None:
        """Load the rename tracker, if ``KEYMAP.jsonl`` is one (a regular file with no
        sidecar), a block at a time: an index of renamed keys has no per-file cap."""
        entry = bucket_dir.lookup(_KEYMAP_NAME)
        if entry is None or entry.is_dir:
            return
        if bucket_dir.lookup(_KEYMAP_NAME + _META) is not None:
            return  # a user object literally named KEYMAP.jsonl (reference-made trees)
        with bucket_dir.open_file(entry) as file:
            self.keymap.load(file.blocks())

    def _walk_dir(
        self, directory: TreeDir, parts: tuple[str, ...]
    ) -> Generator[_Object, None, None]:
        top = len(parts) == 2
        listing = _Lookahead(directory.entries())
        while (entry := listing.take()) is not None:
            name = entry.name
            child = (*parts, name)
            if entry.is_dir:
                if top and name in _RESERVED_DIRS:
                    self._check_reserved_dir(directory, child)
                    continue
                sub = directory.subdir(name)
                if sub is not None:
                    with sub:
                        yield from self._walk_dir(sub, child)
            elif (
                (top and name == _BUCKET_NAME)
                or (top and name == _KEYMAP_NAME and self.keymap.present)
                or name.endswith(_META)
            ):
                continue
            else:
                # A body's sidecar sorts right after it (unless another name starts with the
                # body's name and a character below "."): take its listed entry instead of
                # looking the name up again.
                sidecar = listing.take_if(name + _META)
                yield self._object(directory, child, entry, sidecar)

    def _check_reserved_dir(self, parent: TreeDir, parts: tuple[str, ...]) -> None:
        """``_orphans/``/``_incomplete_uploads/`` are the decoder's; user objects there are not."""
        sub = parent.subdir(parts[-1])
        if sub is None:
            return
        with sub:
            for entry in sub.entries():
                if entry.is_dir:
                    self._check_reserved_dir(sub, (*parts, entry.name))
                elif entry.name.endswith(_META):
                    raise tree_error(
                        "ErrS3EncodeReservedPrefixCollision",
                        f"{'/'.join(parts)} holds object sidecars: a user key collides with a "
                        "reserved dump directory",
                    )

    @staticmethod
    def _read_versioned(
        directory: TreeDir,
        name: str,
        parse: Callable[[bytes], dict[str, Any]],
        code: TreeCode,
        missing: str,
        listed: TreeEntry | None = None,
    ) -> dict[str, Any]:
        """Read a required JSON file of ``directory`` (its ``listed`` entry, if known) and
        check its ``format_version``."""
        where = directory.path(name)
        if listed is None:
            data = directory.read(name)
        else:
            with directory.open_file(listed) as file:
                data = file.read_all()
        if data is None:
            raise tree_error(code, missing, path=where)
        try:
            doc = parse(data)
        except GoJSONError as exc:
            raise tree_error(code, f"{where}: {exc}", path=where) from None
        if doc["format_version"] != FORMAT_VERSION:
            version = doc["format_version"]
            raise tree_error(code, f"{where}: unsupported format_version {version}", path=where)
        return doc

    def _object(
        self,
        directory: TreeDir,
        parts: tuple[str, ...],
        entry: TreeEntry,
        listed: TreeEntry | None,
    ) -> _Object:
        """The object at ``parts`` (``entry``), with its sidecar ``listed`` if the listing
        gave its entry already (else it is looked up by name)."""
        rel = "/".join(parts[2:])
        sidecar = self._read_versioned(
            directory,
            entry.name + _META,
            parse_public_manifest,
            "ErrS3EncodeInvalidManifest",
            f"{'/'.join(parts)} has no {_META} sidecar",
            listed,
        )
        if sidecar["size_bytes"] != entry.size:
            where = "/".join(parts)
            raise tree_error(
                "ErrS3EncodeInvalidManifest",
                f"{where}: size_bytes {sidecar['size_bytes']} != body length {entry.size}",
                path=where,
            )
        key = self.keymap.original(parts[2:], rel)
        if key is None:
            key = os.fsencode(rel)
        manifest = live_manifest_json(sidecar, _chunk_sizes(entry.size))
        body = None
        if entry.size < _DEFER_BYTES:
            with directory.open_file(entry) as file:
                body = _read_whole(file, entry.size, parts)
        return _Object(parts, key, manifest, entry, body)
