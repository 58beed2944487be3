"""Decoding S3 records into ``s3/<bucket>/`` (REFERENCE_NOTES §3.2).

Records arrive in key order: blob chunks, bucket metas, chunkblobs, chunkrefs, manifests,
upload records. Payloads are appended to scratch payload files
(:class:`~elastickv_async._core.scratch.PayloadFiles`) as they come, a few MiB at a time (one
file per object, one for all chunkblobs), and the bodies hashed as they are appended, by a
write lane and a hash lane (each its own worker thread) while the next records are read
(:meth:`S3Decoder.consume`); beyond those pending bytes only their offsets, the parsed
manifests and bucket metas stay in memory.
:meth:`S3Decoder.finalize` then lays out each bucket (see :mod:`.layout`), assembles every
body in part/chunk order and writes it, one task per bucket.
A body whose chunks already sit in its payload file in final order (the common case: one
object's chunks arrive together, in order) is moved into place without being copied, whatever
its size: a rename instead of a second write, and one file created instead of two.

Like the reference, a blob chunk is identified by ``(bucket, object, upload, part, chunk,
part version)`` *without* the generation (the reference's scratch file name): when two
generations of one key hold the same chunk identity, every reader gets the payload that
arrived last. The golden corpus pins this (``s3_orphans_flag``), so it is reproduced here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import msgspec
from anyio.abc import ObjectReceiveStream, TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from ..._core.concurrency import task_group
from ..._core.dump.keymap import keymap_line
from ..._core.dump.names import encode_segment
from ..._core.gojson import go_str
from ..._core.gojson_read import GoJSONError
from ..._core.scratch import PayloadFiles, Range
from ..base import DecodeContext, Routed
from . import keys
from .errors import record_error
from .keys import ChunkKey, ChunkRef
from .layout import (
    BUCKET_FILE,
    INCOMPLETE_DIR,
    INCOMPLETE_RECORDS,
    KEYMAP_FILE,
    META_SUFFIX,
    ORPHANS_DIR,
    ROOT,
    Placement,
    blob_file_name,
    orphan_dir_name,
    plan_objects,
)
from .options import S3Options
from .uploads import record_line
from .values import (
    LiveBucketMeta,
    LiveManifest,
    bucket_json,
    parse_live_bucket_meta,
    parse_live_manifest,
)

__all__ = ["S3Decoder"]

#: Payloads wait in memory until this many bytes are pending (or their part of the adapter's
#: memory share, when less: see :data:`_SPILLS_HELD`), then go to the spill files together:
#: an object's records usually make an input batch of their own, and a thread hop per batch
#: cost more than the appends themselves.
_APPEND_BYTES: Final = 4 << 20
#: Spill batches alive at once while the input is read: the one filling and those the lanes
#: still write or hash. Together they hold at most half of the adapter's memory share (the
#: share's other buffers serve the flush, which starts once the input is read), so each
#: batch is at most a ``2 * _SPILLS_HELD``-th of it; two in flight let each lane take its
#: next batch as soon as it is done with one, instead of waiting for the other lane.
_SPILLS_HELD: Final = 3
#: Bodies that cannot be moved into place are read and written in batches up to this size
#: (or a batch's bytes, when smaller); larger ones are copied file to file in a worker thread.
_SMALL_BODY: Final = 1 << 20
#: Batches of one bucket (small files written, bodies moved) in flight at once, so that a
#: batch of sidecars is written while the bodies of the previous batch are moved.
_IN_FLIGHT: Final = 2
#: A batch of small files is written once it holds this many files or bytes (or the bytes
#: the adapter's memory share gives a batch, when fewer).
_BATCH_FILES: Final = 256
_BATCH_BYTES: Final = 8 << 20
_ORPHAN_HINT: Final = "blob chunks present but no !s3|obj|head record matched"
_STALE_HINT: Final = (
    "stale-gen objects excluded; restore would otherwise emit them under the new bucket"
)


class _Object(msgspec.Struct):
    """Everything seen for one ``(bucket, generation, object key)``."""

    key: bytes
    gen: int
    fid: int | None = None
    #: Blob chunks seen for this object (their payloads are found through :class:`_Payloads`).
    chunks: set[ChunkKey] = msgspec.field(default_factory=set)
    refs: dict[ChunkKey, ChunkRef] = msgspec.field(default_factory=dict)
    manifest: LiveManifest | None = None
    #: The store key of each blob chunk, kept in full-fidelity mode only: the chunks of an
    #: upload in progress are written as raw records.
    blob_keys: dict[ChunkKey, bytes] = msgspec.field(default_factory=dict)
    #: The SHA-256 of the spill file ``fid``, taken as its payloads are appended: running
    #: while they arrive, then final (see :meth:`S3Decoder._hash_payloads`).
    hasher: hashlib._Hash | None = None
    digest: bytes | None = None
    #: False once payloads arrived after the digest was final: the file must be read to hash.
    hashed_whole: bool = True


class _Spill(msgspec.Struct):
    """Payloads to append to the spill files, and the blob payloads among them to hash."""

    writes: list[tuple[int, bytes]]
    blobs: list[tuple[_Object, bytes]]
    #: The lanes (write, hash) that are not done with it yet.
    lanes: int = 2


class _Lanes(msgspec.Struct, frozen=True):
    """The spill lanes' inputs, and a slot per batch in flight (see :meth:`S3Decoder.consume`)."""

    write: MemoryObjectSendStream[_Spill]
    hash: MemoryObjectSendStream[_Spill]
    slots: anyio.Semaphore


class _Bucket(msgspec.Struct):
    name: bytes
    meta: LiveBucketMeta | None = None
    objects: dict[tuple[bytes, int], _Object] = msgspec.field(default_factory=dict)
    uploads_fid: int | None = None
    uploads: int = 0


class _SmallFiles(msgspec.Struct):
    """Small output files (sidecars, small bodies, orphan chunks) waiting for one batched write."""

    #: Bytes after which the batch is written.
    limit: int
    ready: list[tuple[str, bytes]] = msgspec.field(default_factory=list)
    #: Files whose bytes are still in spill files: ``(path, ranges)``.
    spilled: list[tuple[str, list[Range]]] = msgspec.field(default_factory=list)
    consumed: list[int] = msgspec.field(default_factory=list)
    size: int = 0

    def full(self) -> bool:
        return len(self.ready) + len(self.spilled) >= _BATCH_FILES or self.size >= self.limit


class _Payloads:
    """Where every payload sits in the spill files."""

    def __init__(self, spill: PayloadFiles) -> None:
        self.spill = spill
        self._blobs: dict[tuple[bytes, bytes, ChunkKey], Range] = {}
        #: Spill files that other objects read from too: never moved or deleted early.
        self._pinned: set[int] = set()
        self.chunkblob_fid: int | None = None
        self.chunkblobs: dict[bytes, Range] = {}

    def add_blob(self, bucket: bytes, obj: _Object, chunk: ChunkKey, length: int) -> int:
        """Account for a blob payload of ``obj``; return the spill file it is appended to."""
        if obj.fid is None:
            obj.fid = self.spill.new_file()
        where = (bucket, obj.key, chunk)
        previous = self._blobs.get(where)
        if previous is not None and previous[0] != obj.fid:
            self._pinned.update((previous[0], obj.fid))
        self._blobs[where] = (obj.fid, self.spill.reserve(obj.fid, length), length)
        obj.chunks.add(chunk)
        return obj.fid

    def add_chunkblob(self, digest: bytes, length: int) -> int:
        """Account for a chunkblob payload; return the spill file it is appended to."""
        if self.chunkblob_fid is None:
            self.chunkblob_fid = self.spill.new_file()
        self.chunkblobs[digest] = (
            self.chunkblob_fid,
            self.spill.reserve(self.chunkblob_fid, length),
            length,
        )
        return self.chunkblob_fid

    def blob(self, bucket: bytes, obj: _Object, chunk: ChunkKey) -> Range:
        """The payload a blob chunk of ``obj`` reads (the last one stored under its identity)."""
        return self._blobs[(bucket, obj.key, chunk)]

    def movable(self, fid: int) -> bool:
        """Whether the spill file belongs to one object only (so it may be moved or deleted)."""
        return fid not in self._pinned


def _end_hash(obj: _Object) -> None:
    """Make the digest of the object's spill file final (its payloads went elsewhere)."""
    if obj.hasher is not None:
        obj.digest = obj.hasher.digest()
        obj.hasher = None


def _check_bucket(name: bytes) -> bytes:
    if name in (b"", b".", b".."):
        raise record_error(
            "ErrS3MalformedKey", f"S3 bucket name {name!r} is empty or a dot segment"
        )
    return name


class S3Decoder:
    """The S3 adapter's :class:`~elastickv_async._adapters.base.DecodeAdapter`."""

    def __init__(self, ctx: DecodeContext) -> None:
        self._ctx = ctx
        self._options: S3Options = ctx.adapter_options
        self._full_fidelity = ctx.options.full_fidelity
        self._spill = PayloadFiles(ctx.scratch / "s3-spill")
        self._payloads = _Payloads(self._spill)
        self._buckets: dict[bytes, _Bucket] = {}
        #: ``(bucket, gen, object, upload id)`` of every multipart upload still in progress: its
        #: parts' chunks have no manifest yet, and that is healthy, not an orphan.
        self._live_uploads: set[tuple[bytes, int, bytes, bytes]] = set()
        #: The object whose spill file is being hashed (its payloads arrive together).
        self._hashing: _Object | None = None
        #: Payloads reserved in the spill files but not appended yet, and their blobs to hash.
        self._writes: list[tuple[int, bytes]] = []
        self._blobs: list[tuple[_Object, bytes]] = []
        self._pending = 0
        #: Where :meth:`_append` hands its work while :meth:`consume` runs.
        self._behind: _Lanes | None = None

    # --- handle --------------------------------------------------------------------------------

    def _bucket(self, name: bytes) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(_check_bucket(name))
        return bucket

    def _object(self, bucket: bytes, gen: int, key: bytes) -> _Object:
        objects = self._bucket(bucket).objects
        obj = objects.get((key, gen))
        if obj is None:
            obj = objects[(key, gen)] = _Object(key, gen)
        return obj

    async def handle(self, batch: Sequence[Routed]) -> None:
        """Index the batch's records and append its payloads to the spill files (once
        enough are pending)."""
        writes = self._writes
        blobs = self._blobs
        digests: list[tuple[bytes, bytes]] = []
        for prefix, entry in batch:
            key, value = entry.key, entry.value
            if prefix == keys.BLOB_PREFIX:
                bucket, gen, obj_key, chunk = keys.parse_blob_key(key)
                obj = self._object(bucket, gen, obj_key)
                writes.append((self._payloads.add_blob(bucket, obj, chunk, len(value)), value))
                blobs.append((obj, value))
                self._pending += len(value)
                if self._full_fidelity:
                    obj.blob_keys[chunk] = key
            elif prefix == keys.BUCKET_META_PREFIX:
                name = keys.parse_bucket_meta_key(key)
                try:
                    meta = parse_live_bucket_meta(value)
                except GoJSONError as exc:
                    raise record_error(
                        "ErrS3InvalidBucketMeta", f"bucket {name[:100]!r}: {exc}"
                    ) from None
                self._bucket(name).meta = meta
            elif prefix == keys.CHUNKBLOB_PREFIX:
                digest = keys.parse_chunkblob_key(key)
                writes.append((self._payloads.add_chunkblob(digest, len(value)), value))
                digests.append((digest, value))
                self._pending += len(value)
            elif prefix == keys.CHUNKREF_PREFIX:
                bucket, gen, obj_key, chunk = keys.parse_chunkref_key(key)
                self._object(bucket, gen, obj_key).refs[chunk] = keys.parse_chunkref_value(
                    value, key
                )
            elif prefix == keys.MANIFEST_PREFIX:
                bucket, gen, obj_key = keys.parse_manifest_key(key)
                try:
                    manifest = parse_live_manifest(value)
                except ValueError as exc:  # GoJSONError included
                    raise record_error(
                        "ErrS3InvalidManifest", f"manifest {key[:100]!r}: {exc}"
                    ) from None
                self._object(bucket, gen, obj_key).manifest = manifest
            elif prefix in (keys.UPLOAD_META_PREFIX, keys.UPLOAD_PART_PREFIX):
                self._handle_upload(prefix, key, value, writes)
        if digests:
            # Checked with this batch, so that a bad chunkblob is the error a run reports
            # even when a later record is bad too.
            mismatch = await anyio.to_thread.run_sync(self._spill.first_digest_mismatch, digests)
            if mismatch is not None:
                raise record_error(
                    "ErrS3ChunkBlobHashMismatch",
                    f"chunkblob {mismatch[0].hex()} hashes to {mismatch[1].hex()}",
                )
        if self._pending >= min(_APPEND_BYTES, max(1, self._ctx.memory // (2 * _SPILLS_HELD))):
            await self._append()

    async def consume(self, batches: AsyncIterable[Sequence[Routed]]) -> dict[str, Any]:
        """:meth:`handle` every batch, then :meth:`finalize`, with the payloads spilled
        behind: each batch of them is appended by the write lane and hashed by the hash lane
        (each in order, on its own worker thread) while the next batches are read and
        indexed; at most :data:`_SPILLS_HELD` batches are held."""
        in_flight = _SPILLS_HELD - 1
        # Each lane's input can take every batch in flight: handing one over never waits.
        to_write, writes = anyio.create_memory_object_stream[_Spill](in_flight)
        to_hash, hashes = anyio.create_memory_object_stream[_Spill](in_flight)
        slots = anyio.Semaphore(in_flight)
        # The receiving ends are closed after the lanes end, not by them: when a lane fails,
        # the wait for a slot it would have freed is cancelled, no hand-off fails again.
        async with writes, hashes, task_group() as tg:
            tg.start_soon(self._lane, writes, self._write_spill, slots)
            tg.start_soon(self._lane, hashes, self._hash_spill, slots)
            async with to_write, to_hash:
                self._behind = _Lanes(to_write, to_hash, slots)
                try:
                    async for batch in batches:
                        await self.handle(batch)
                finally:
                    self._behind = None
        return await self.finalize()

    async def _lane(
        self,
        spills: ObjectReceiveStream[_Spill],
        work: Callable[[_Spill], None],
        slots: anyio.Semaphore,
    ) -> None:
        """Run ``work`` on each batch in a worker thread, in order; a batch's slot is freed
        once both lanes are done with it."""
        async for spill in spills:
            await anyio.to_thread.run_sync(work, spill)
            spill.lanes -= 1
            if not spill.lanes:
                slots.release()

    async def _append(self) -> None:
        """Append the pending payloads and hash the blobs among them: behind the caller
        while :meth:`consume` runs (it waits only while :data:`_SPILLS_HELD` batches are
        held), else in one worker-thread call before returning."""
        spill = _Spill(self._writes, self._blobs)
        self._writes, self._blobs, self._pending = [], [], 0
        lanes = self._behind
        if lanes is not None:
            await lanes.slots.acquire()
            lanes.write.send_nowait(spill)
            lanes.hash.send_nowait(spill)
        else:
            await anyio.to_thread.run_sync(self._append_sync, spill.writes, spill.blobs)

    def _write_spill(self, spill: _Spill) -> None:
        self._spill.append(spill.writes)

    def _hash_spill(self, spill: _Spill) -> None:
        self._hash_payloads(spill.blobs)

    def _append_sync(
        self, writes: Sequence[tuple[int, bytes]], blobs: list[tuple[_Object, bytes]]
    ) -> None:
        self._spill.append(writes)
        self._hash_payloads(blobs)

    def _hash_payloads(self, blobs: list[tuple[_Object, bytes]]) -> None:
        """Add each blob payload to its object's spill-file digest, in append order.

        A body moved into place whole then needs no second read for CHECKSUMS. One object's
        chunks arrive together, so one hash runs at a time; an object whose payloads
        resume after another's (never, in key order) is left to be read and hashed.
        """
        current = self._hashing
        for obj, data in blobs:
            if obj is not current:
                if current is not None:
                    _end_hash(current)
                current = obj
                if obj.hasher is None:
                    if obj.digest is None and obj.hashed_whole:
                        obj.hasher = hashlib.sha256()
                    else:
                        obj.digest = None
                        obj.hashed_whole = False
            if obj.hasher is not None:
                obj.hasher.update(data)
        self._hashing = current

    def _handle_upload(
        self, prefix: bytes, key: bytes, value: bytes, writes: list[tuple[int, bytes]]
    ) -> None:
        if prefix == keys.UPLOAD_META_PREFIX:
            live = keys.parse_upload_meta_key(key)
            if live is not None:
                self._live_uploads.add(live)
        if not self._options.include_incomplete_uploads:
            self._ctx.report.count("s3.incomplete_upload_records_excluded")
            return
        bucket = self._bucket(keys.parse_upload_key_bucket(prefix, key))
        if bucket.uploads_fid is None:
            bucket.uploads_fid = self._spill.new_file()
        line = record_line(prefix, key, value)
        self._spill.reserve(bucket.uploads_fid, len(line))
        bucket.uploads += 1
        writes.append((bucket.uploads_fid, line))
        self._pending += len(line)

    # --- finalize ------------------------------------------------------------------------------

    async def finalize(self) -> dict[str, Any]:
        """Write every bucket (concurrently), then drop the spill files; return the scope."""
        try:
            if self._writes:
                await self._append()
            if self._hashing is not None:
                _end_hash(self._hashing)
                self._hashing = None
            jobs = max(1, self._ctx.options.jobs)
            # Each bucket flushed at once holds the batch it fills and those in flight, each
            # under twice the batch bytes (no body larger than them joins a batch): all of
            # them within the adapter's memory share.
            flushing = min(jobs, max(1, len(self._buckets)))
            held = 2 * flushing * (_IN_FLIGHT + 1)
            batch_bytes = max(1, min(_BATCH_BYTES, self._ctx.memory // held))
            limiter = anyio.CapacityLimiter(jobs)
            async with task_group() as tg:
                for name in sorted(self._buckets):
                    bucket = self._buckets[name]
                    tg.start_soon(self._flush_bucket, bucket, limiter, batch_bytes)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, self._spill.root, True)
        return {"buckets": [go_str(name) for name in sorted(self._buckets)]}

    async def _flush_bucket(
        self, bucket: _Bucket, limiter: anyio.CapacityLimiter, batch_bytes: int
    ) -> None:
        async with limiter:
            await _BucketFlush(self, bucket, batch_bytes).run()


class _BucketFlush:
    """Writes one bucket directory, in batches of about ``batch_bytes``."""

    def __init__(self, decoder: S3Decoder, bucket: _Bucket, batch_bytes: int) -> None:
        self._ctx = decoder._ctx
        self._options = decoder._options
        self._full_fidelity = decoder._full_fidelity
        self._spill = decoder._spill
        self._payloads = decoder._payloads
        self._live_uploads = decoder._live_uploads
        self._bucket = bucket
        self._dir = f"{ROOT}/{encode_segment(bucket.name)}"
        self._batch_bytes = batch_bytes
        self._small_body = min(_SMALL_BODY, batch_bytes)
        self._small = _SmallFiles(batch_bytes)
        #: Bodies whose spill file holds exactly their bytes: ``(path, spill file, its
        #: SHA-256 if known)``, moved into place (a rename) instead of being read back and
        #: written again.
        self._moves: list[tuple[str, Path, bytes | None]] = []
        self._name = go_str(bucket.name)
        self._slots = anyio.Semaphore(_IN_FLIGHT)
        self._batches: TaskGroup | None = None

    async def run(self) -> None:
        async with task_group() as self._batches:
            await self._flush()
        if self._bucket.uploads_fid is not None:
            rel = f"{self._dir}/{INCOMPLETE_DIR.decode()}/{INCOMPLETE_RECORDS.decode()}"
            await self._ctx.writer.install(rel, self._spill.path(self._bucket.uploads_fid))
            self._ctx.report.count("s3.incomplete_upload_records", self._bucket.uploads)

    async def _flush(self) -> None:
        bucket, options = self._bucket, self._options
        if bucket.meta is not None:
            self._small.ready.append(
                (
                    f"{self._dir}/{BUCKET_FILE.decode()}",
                    bucket_json(bucket.name, bucket.meta, full_fidelity=self._full_fidelity),
                )
            )
        active, stale = self._split_generations()
        plan = plan_objects(
            {o.key for o in active},
            [o.key for o in active if o.manifest is not None],
            rename_collisions=options.rename_collisions,
        )
        renamed: list[tuple[bytes, bytes, str]] = []  # (key, path, kind)
        for obj in active:
            if obj.manifest is None:
                await self._flush_orphan(obj)
                continue
            placement = plan[obj.key]
            await self._flush_object(obj, obj.manifest, placement)
            if placement.kind is not None:
                renamed.append((obj.key, placement.path, placement.kind))
        for obj in stale:
            if options.include_orphans:
                await self._flush_orphan(obj)
                self._ctx.report.count("s3.stale_objects_orphaned")
            else:
                self._ctx.report.count("s3.stale_objects_excluded")
        if stale:
            self._ctx.log.warning(
                "s3_stale_generation_objects",
                bucket=self._name,
                active_generation=bucket.meta.generation if bucket.meta else 0,
                stale_count=len(stale),
                hint=_STALE_HINT,
            )
        if renamed:
            lines = b"".join(
                keymap_line(path.decode("utf-8"), key, kind)
                for key, path, kind in sorted(renamed, key=lambda r: r[0])
            )
            self._small.ready.append((f"{self._dir}/{KEYMAP_FILE.decode()}", lines))
            self._ctx.report.count("s3.renamed_keys", len(renamed))
        await self._write_small()
        await self._move_bodies()

    def _split_generations(self) -> tuple[list[_Object], list[_Object]]:
        """Active and stale objects, each sorted by key then generation.

        With a bucket meta only its generation is active. Without one (generation 0) every
        generation is; where one key has manifests in several generations the newest wins
        and the others count as stale (the reference lets them race for one path).
        """
        objects = sorted(self._bucket.objects.values(), key=lambda o: (o.key, o.gen))
        meta = self._bucket.meta
        if meta is not None and meta.generation != 0:
            return (
                [o for o in objects if o.gen == meta.generation],
                [o for o in objects if o.gen != meta.generation],
            )
        newest: dict[bytes, int] = {}
        for obj in objects:
            if obj.manifest is not None:
                newest[obj.key] = obj.gen
        active = [o for o in objects if o.manifest is None or newest[o.key] == o.gen]
        stale = [o for o in objects if o.manifest is not None and newest[o.key] != o.gen]
        return active, stale

    async def _flush_object(
        self, obj: _Object, manifest: LiveManifest, placement: Placement
    ) -> None:
        ranges = self._body_ranges(obj, manifest)
        rel = f"{self._dir}/{os.fsdecode(placement.path)}"
        size = sum(r[2] for r in ranges)
        sidecar = manifest.sidecar
        if size != manifest.size_bytes:
            # The encoder requires size_bytes == body length; a sidecar repeating a false
            # claim would make the decoded tree impossible to encode.
            self._ctx.log.warning(
                "s3_size_mismatch",
                bucket=self._name,
                object=go_str(obj.key),
                claimed=manifest.size_bytes,
                actual=size,
                hint="the object manifest's size_bytes differs from its assembled body; "
                "the sidecar records the body's length",
            )
            sidecar = manifest.sidecar_with_size(size)
        self._small.ready.append((rel + META_SUFFIX.decode(), sidecar))
        self._small.size += len(sidecar)
        self._ctx.report.count("s3.objects")
        self._ctx.report.count("s3.body_bytes", size)
        if obj.fid is not None and self._is_whole_spill_file(obj.fid, ranges):
            digest = obj.digest if obj.hashed_whole else None
            self._moves.append((rel, self._spill.path(obj.fid), digest))
            if len(self._moves) >= _BATCH_FILES:
                await self._move_bodies()
            if self._small.full():
                await self._write_small()
            return
        if size <= self._small_body:
            self._small.spilled.append((rel, ranges))
            self._small.size += size
            self._consume(obj)
            if self._small.full():
                await self._write_small()
            return
        body = await anyio.to_thread.run_sync(self._spill.assemble, ranges)
        await self._ctx.writer.install(rel, body)
        if obj.fid is not None and self._payloads.movable(obj.fid):
            await anyio.to_thread.run_sync(self._spill.discard, [obj.fid])

    async def _start(self, batch: Callable[[], Awaitable[None]]) -> None:
        """Run ``batch`` beside this flush, once fewer than :data:`_IN_FLIGHT` batches run."""
        assert self._batches is not None
        await self._slots.acquire()

        async def run() -> None:
            try:
                await batch()
            finally:
                self._slots.release()

        self._batches.start_soon(run)

    async def _move_bodies(self) -> None:
        """Start moving the collected bodies into place, in one worker-thread call."""
        if not self._moves:
            return
        moves, self._moves = self._moves, []
        await self._start(partial(self._ctx.writer.install_many, moves))

    def _consume(self, obj: _Object) -> None:
        """Delete the object's spill file after the next batched write, unless shared."""
        if obj.fid is not None and self._payloads.movable(obj.fid):
            self._small.consumed.append(obj.fid)

    def _is_whole_spill_file(self, own: int, ranges: list[Range]) -> bool:
        """Whether ``ranges`` are exactly the object's own spill file, start to end, in order."""
        if not self._payloads.movable(own):
            return False
        expected = 0
        for fid, offset, length in ranges:
            if fid != own or offset != expected:
                return False
            expected += length
        return expected == self._spill.size(own)

    def _body_ranges(self, obj: _Object, manifest: LiveManifest) -> list[Range]:
        """The body's payload ranges in assembly order, as the reference selects them.

        Offloaded chunks are resolved through their chunkref to the chunkblob payload; only
        chunks of the manifest's upload and declared parts count; every declared part must
        have exactly chunks ``0..chunk_count-1``.
        """
        bucket = self._bucket.name
        located = {ck: self._payloads.blob(bucket, obj, ck) for ck in obj.chunks}
        for ck in sorted(obj.refs):
            if ck.upload_id != manifest.upload_id:
                continue
            declared = manifest.parts.get((ck.part_no, ck.part_version, True))
            payload = self._payloads.chunkblobs.get(obj.refs[ck].sha256)
            if declared is None or payload is None:
                continue
            ref_size = obj.refs[ck].size
            if payload[2] != ref_size:
                raise record_error(
                    "ErrS3InvalidChunkRef",
                    f"{self._where(obj)}: part {ck.part_no} chunk {ck.chunk_no}: chunkref size "
                    f"{ref_size} != chunkblob size {payload[2]}",
                )
            if (
                ck.chunk_no >= len(declared.chunk_sizes)
                or declared.chunk_sizes[ck.chunk_no] != ref_size
            ):
                raise record_error(
                    "ErrS3InvalidChunkRef",
                    f"{self._where(obj)}: part {ck.part_no} chunk {ck.chunk_no}: chunkref size "
                    f"{ref_size} does not match the manifest",
                )
            located[ck] = payload
        selected = []
        seen: dict[tuple[int, int, bool], set[int]] = {}
        for ck in located:
            if manifest.upload_id and ck.upload_id != manifest.upload_id:
                continue
            part = (ck.part_no, ck.part_version, ck.offloaded)
            declared = manifest.parts.get(part)
            if declared is None or declared.chunk_count == 0:
                continue
            selected.append(ck)
            seen.setdefault(part, set()).add(ck.chunk_no)
        for part, declared in manifest.parts.items():
            if declared.chunk_count == 0:
                continue
            got = seen.get(part, set())
            if len(got) != declared.chunk_count or max(got) != declared.chunk_count - 1:
                raise record_error(
                    "ErrS3IncompleteBlobChunks",
                    f"{self._where(obj)}: part {part[0]} (version {part[1]}, offloaded "
                    f"{str(part[2]).lower()}) declares {declared.chunk_count} chunks, "
                    f"the snapshot holds {len(got)} of them",
                )
        selected.sort()
        return [located[ck] for ck in selected]

    def _where(self, obj: _Object) -> str:
        return f"bucket {self._name!r} object {go_str(obj.key)[:200]!r} generation {obj.gen}"

    async def _flush_orphan(self, obj: _Object) -> None:
        """Chunks without a manifest: a warning, and with ``--include-orphans`` one file each.

        The parts of a multipart upload still in progress have no manifest either; they are
        reported as information, so that alerting on warnings stays quiet on a healthy node.
        """
        uploads = {ck.upload_id for ck in obj.chunks} | {ck.upload_id for ck in obj.refs}
        if uploads and all(
            (self._bucket.name, obj.gen, obj.key, upload) in self._live_uploads
            for upload in uploads
        ):
            self._ctx.report.count("s3.uploads_in_progress")
            self._ctx.log.info(
                "s3_upload_in_progress",
                bucket=self._name,
                object=go_str(obj.key),
                chunks=len(obj.chunks) + len(obj.refs),
            )
            if self._full_fidelity:
                await self._record_upload_chunks(obj)
        else:
            self._ctx.log.warning(
                "s3_orphan_chunks",
                bucket=self._name,
                object=go_str(obj.key),
                chunks=len(obj.chunks),
                hint=_ORPHAN_HINT,
            )
        if not self._options.include_orphans or not obj.chunks:
            self._ctx.report.count("s3.orphan_objects_excluded")
            return
        self._ctx.report.count("s3.orphan_objects_written")
        base = f"{self._dir}/{ORPHANS_DIR.decode()}/{orphan_dir_name(obj.key)}/gen-{obj.gen}"
        for ck in sorted(obj.chunks):
            payload = self._payloads.blob(self._bucket.name, obj, ck)
            name = blob_file_name(ck.upload_id, ck.part_no, ck.chunk_no, ck.part_version)
            if payload[2] > self._small_body:
                copy = await anyio.to_thread.run_sync(self._spill.assemble, [payload])
                await self._ctx.writer.install(f"{base}/{name}", copy)
                continue
            self._small.spilled.append((f"{base}/{name}", [payload]))
            self._small.size += payload[2]
            if self._small.full():
                await self._write_small()
        self._consume(obj)

    async def _record_upload_chunks(self, obj: _Object) -> None:
        """Append an in-progress upload's blob chunks to the bucket's ``records.jsonl``."""
        fid = self._bucket.uploads_fid
        if fid is None:  # chunks of an upload whose meta records are gone: not restorable
            return
        chunks = sorted(obj.chunks)
        payloads = [self._payloads.blob(self._bucket.name, obj, ck) for ck in chunks]
        bodies = await anyio.to_thread.run_sync(
            lambda: [self._spill.read([payload]) for payload in payloads]
        )
        lines = [
            record_line(keys.BLOB_PREFIX, obj.blob_keys[ck], body)
            for ck, body in zip(chunks, bodies, strict=True)
        ]
        writes = [(fid, line) for line in lines]
        for line in lines:
            self._spill.reserve(fid, len(line))
        await anyio.to_thread.run_sync(self._spill.append, writes)
        self._bucket.uploads += len(lines)
        self._ctx.report.count("s3.incomplete_upload_chunks", len(lines))

    async def _write_small(self) -> None:
        """Read the pending small files' bytes in one thread hop, then start writing them.

        The bytes are read here, before the next batch is collected: a batch deletes the spill
        files it consumed once written, and an earlier batch may hold ranges of them too (an
        orphan's chunks can straddle two batches).
        """
        small, self._small = self._small, _SmallFiles(self._batch_bytes)
        if small.spilled:
            bodies = await anyio.to_thread.run_sync(self._read_bodies, small.spilled)
            small.ready.extend(zip((rel for rel, _ in small.spilled), bodies, strict=True))

        async def batch() -> None:
            if small.ready:
                await self._ctx.writer.write_many(small.ready)
            if small.consumed:
                await anyio.to_thread.run_sync(self._spill.discard, small.consumed)

        if small.ready or small.consumed:
            await self._start(batch)

    def _read_bodies(self, files: Sequence[tuple[str, list[Range]]]) -> list[bytes]:
        return [self._spill.read(ranges) for _, ranges in files]
