"""Encoding ``s3/<bucket>/`` back into S3 records (REFERENCE_NOTES §6.5).

Per bucket directory: ``_bucket.json`` gives the ``!s3|bucket|meta|`` record and the
``!s3|bucket|gen|`` counter (generation 1); every other regular file with a sidecar is an
object whose key is its bucket-relative path, or the original key its KEYMAP.jsonl record
names. Bodies are re-chunked at 1 MiB into ``!s3|blob|`` records of one restored part,
followed by the ``!s3|obj|head|`` manifest. Bodies are read in 8 MiB blocks in worker
threads and handed on one 1 MiB chunk at a time, so no body is ever held whole.
"""

from __future__ import annotations

import itertools
import os
import stat
import struct
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from typing import Any, Final

import anyio.to_thread

from ..._core.dump.names import encode_segment
from ..._core.errors import DumpTreeError
from ..._core.gojson_read import GoJSONError
from ..base import EncodeContext
from . import keys
from .errors import (
    S3EncodeInvalidBucket,
    S3EncodeInvalidManifest,
    S3EncodeNotRegular,
    S3EncodeReservedPrefixCollision,
)
from .keymap import parse_keymap
from .layout import BUCKET_FILE, INCOMPLETE_DIR, KEYMAP_FILE, META_SUFFIX, ORPHANS_DIR
from .treeread import FileIdentity, TreeReader
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
#: Bytes read per worker-thread call.
_READ_BLOCK: Final = 8 * CHUNK_SIZE
#: Objects found per worker-thread call of the walk.
_SCAN_BATCH: Final = 256
_BUCKET_NAME: Final = os.fsdecode(BUCKET_FILE)
_KEYMAP_NAME: Final = os.fsdecode(KEYMAP_FILE)
_META: Final = os.fsdecode(META_SUFFIX)
_RESERVED_DIRS: Final = frozenset({os.fsdecode(ORPHANS_DIR), os.fsdecode(INCOMPLETE_DIR)})


@dataclass(frozen=True, slots=True)
class _Object:
    parts: tuple[str, ...]  # bucket directory first, then the body's path
    key: bytes
    manifest: bytes  # the restored manifest value (chunk sizes follow from the size)
    identity: FileIdentity
    size: int


def _chunk_sizes(size: int) -> list[int]:
    full, rest = divmod(size, CHUNK_SIZE)
    return [CHUNK_SIZE] * full + ([rest] if rest else [])


class S3Encoder:
    """The S3 adapter's :class:`~elastickv_async._adapters.base.EncodeAdapter`."""

    def __init__(self, ctx: EncodeContext) -> None:
        self._ctx = ctx
        self._tree = TreeReader(ctx.input_root / "s3")

    async def records(self) -> AsyncIterator[tuple[bytes, bytes]]:
        """Yield every S3 record of the tree, bucket by bucket.

        A bucket is walked in batches of objects (one worker-thread call each), so memory
        stays bounded however many objects it holds.
        """
        for dir_name in await anyio.to_thread.run_sync(self._bucket_dirs):
            scan = _BucketScan(self._tree, dir_name)
            try:
                name, meta_value = await anyio.to_thread.run_sync(scan.start)
                yield keys.bucket_meta_key(name), meta_value
                yield keys.bucket_gen_key(name), struct.pack(">Q", RESTORE_GENERATION)
                while batch := await anyio.to_thread.run_sync(scan.next_batch):
                    for obj in batch:
                        async for record in self._object_records(name, obj):
                            yield record
                scan.finish()
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(scan.close)
            self._ctx.report.count("s3.buckets")

    async def _object_records(
        self, bucket: bytes, obj: _Object
    ) -> AsyncIterator[tuple[bytes, bytes]]:
        offset = chunk_no = 0
        while offset < obj.size:
            length = min(_READ_BLOCK, obj.size - offset)
            block = await anyio.to_thread.run_sync(
                self._tree.read_block, obj.parts, obj.identity, offset, length
            )
            if len(block) != length:
                raise S3EncodeInvalidManifest(
                    f"s3/{'/'.join(obj.parts)} changed size while it was read"
                )
            for start in range(0, length, CHUNK_SIZE):
                key = keys.blob_key(
                    bucket,
                    RESTORE_GENERATION,
                    obj.key,
                    RESTORE_UPLOAD_ID,
                    RESTORE_PART_NO,
                    chunk_no,
                )
                yield key, block[start : start + CHUNK_SIZE]
                chunk_no += 1
            offset += length
        yield keys.manifest_key(bucket, RESTORE_GENERATION, obj.key), obj.manifest
        self._ctx.report.count("s3.objects")
        self._ctx.report.count("s3.body_bytes", obj.size)

    def _bucket_dirs(self) -> list[str]:
        """The bucket directories under ``s3/`` (worker thread)."""
        try:
            st = os.stat(self._tree.root, follow_symlinks=False)
        except FileNotFoundError:
            return []
        if not stat.S_ISDIR(st.st_mode):
            raise S3EncodeNotRegular("s3 is not a plain directory")
        out = []
        with self._tree.directory(()) as fd:
            for name in self._tree.names(fd):
                entry = self._tree.lstat(fd, name)
                if entry is not None and stat.S_ISDIR(entry.st_mode):
                    out.append(name)
                elif not name.startswith("_"):
                    # A file here means a truncated or hand-made tree; skipping it would
                    # silently drop a bucket.
                    raise S3EncodeNotRegular(f"s3/{name} is not a bucket directory")
        return out


class _BucketScan:
    """Walks one bucket directory; every method runs in a worker thread."""

    def __init__(self, tree: TreeReader, dir_name: str) -> None:
        self._tree = tree
        self._dir = dir_name
        self._keymap: dict[str, bytes] = {}
        self._seen: set[str] = set()
        self._walk: Generator[_Object, None, None] | None = None

    def start(self) -> tuple[bytes, bytes]:
        """Read ``_bucket.json`` and the KEYMAP; return the bucket name and its meta value."""
        with self._tree.directory((self._dir,)) as fd:
            bucket = self._read_bucket_json(fd)
            self._keymap = self._read_keymap(fd)
        self._walk = self._objects()
        return bucket["name"].encode("utf-8"), live_bucket_meta_json(bucket)

    def next_batch(self) -> list[_Object]:
        """The next objects of the walk (empty when it is done)."""
        assert self._walk is not None
        return list(itertools.islice(self._walk, _SCAN_BATCH))

    def finish(self) -> None:
        """After the walk: every KEYMAP record must have named an object file."""
        missing = sorted(set(self._keymap) - self._seen)
        if missing:
            raise S3EncodeInvalidBucket(
                f"s3/{self._dir}/KEYMAP.jsonl names {missing[0]!r}, which is not an object file"
            )

    def close(self) -> None:
        """Release the walk's directory descriptors."""
        if self._walk is not None:
            self._walk.close()

    def _objects(self) -> Generator[_Object, None, None]:
        with self._tree.directory((self._dir,)) as fd:
            yield from self._walk_dir(fd, (self._dir,))

    def _read_bucket_json(self, fd: int) -> dict[str, Any]:
        dir_name = self._dir
        bucket = self._read_versioned(
            fd,
            (dir_name, _BUCKET_NAME),
            parse_public_bucket,
            S3EncodeInvalidBucket,
            f"s3/{dir_name} has no {_BUCKET_NAME}",
        )
        if not bucket["name"]:
            raise S3EncodeInvalidBucket(f"s3/{dir_name}/{_BUCKET_NAME}: empty bucket name")
        if encode_segment(bucket["name"].encode("utf-8")) != dir_name:
            raise S3EncodeInvalidBucket(
                f"s3/{dir_name}/{_BUCKET_NAME}: bucket {bucket['name']!r} does not belong "
                "in this directory"
            )
        return bucket

    def _read_keymap(self, fd: int) -> dict[str, bytes]:
        """The rename tracker, if ``KEYMAP.jsonl`` is one (a regular file with no sidecar)."""
        st = self._tree.lstat(fd, _KEYMAP_NAME)
        if st is None or not stat.S_ISREG(st.st_mode):
            return {}
        sidecar = self._tree.lstat(fd, _KEYMAP_NAME + _META)
        if sidecar is not None and stat.S_ISREG(sidecar.st_mode):
            return {}  # a user object literally named KEYMAP.jsonl (reference-made trees)
        parts = (self._dir, _KEYMAP_NAME)
        self._tree.check_regular(st, parts)
        return parse_keymap(self._tree.read_file(fd, parts), f"s3/{self._dir}/{_KEYMAP_NAME}")

    def _walk_dir(self, fd: int, parts: tuple[str, ...]) -> Generator[_Object, None, None]:
        top = len(parts) == 1
        for name in self._tree.names(fd):
            st = self._tree.lstat(fd, name)
            if st is None:
                continue
            child = (*parts, name)
            if stat.S_ISDIR(st.st_mode):
                if top and name in _RESERVED_DIRS:
                    self._check_reserved_dir(fd, child)
                    continue
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    yield from self._walk_dir(sub, child)
                finally:
                    os.close(sub)
            elif (
                (top and name == _BUCKET_NAME)
                or (top and name == _KEYMAP_NAME and self._keymap)
                or name.endswith(_META)
            ):
                continue
            else:
                yield self._object(fd, child, st)

    def _check_reserved_dir(self, fd: int, parts: tuple[str, ...]) -> None:
        """``_orphans/``/``_incomplete_uploads/`` are the decoder's; user objects there are not."""
        sub = os.open(parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        try:
            for name in self._tree.names(sub):
                st = self._tree.lstat(sub, name)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    self._check_reserved_dir(sub, (*parts, name))
                elif name.endswith(_META):
                    raise S3EncodeReservedPrefixCollision(
                        f"s3/{'/'.join(parts)} holds object sidecars: a user key collides with a "
                        "reserved dump directory"
                    )
        finally:
            os.close(sub)

    def _read_versioned(
        self,
        fd: int,
        parts: tuple[str, ...],
        parse: Callable[[bytes], dict[str, Any]],
        error: type[DumpTreeError],
        missing: str,
    ) -> dict[str, Any]:
        """Read a required regular JSON file in ``fd`` and check its ``format_version``."""
        st = self._tree.lstat(fd, parts[-1])
        if st is None:
            raise error(missing)
        self._tree.check_regular(st, parts)
        where = "s3/" + "/".join(parts)
        try:
            doc = parse(self._tree.read_file(fd, parts))
        except GoJSONError as exc:
            raise error(f"{where}: {exc}") from None
        if doc["format_version"] != FORMAT_VERSION:
            raise error(f"{where}: unsupported format_version {doc['format_version']}")
        return doc

    def _object(self, fd: int, parts: tuple[str, ...], st: os.stat_result) -> _Object:
        rel = "/".join(parts[1:])
        sidecar = self._read_versioned(
            fd,
            (*parts[:-1], parts[-1] + _META),
            parse_public_manifest,
            S3EncodeInvalidManifest,
            f"s3/{'/'.join(parts)} has no {_META} sidecar",
        )
        identity = self._tree.check_regular(st, parts)
        if sidecar["size_bytes"] != st.st_size:
            raise S3EncodeInvalidManifest(
                f"s3/{'/'.join(parts)}: size_bytes {sidecar['size_bytes']} != body length "
                f"{st.st_size}"
            )
        self._seen.add(rel)
        key = self._keymap.get(rel, os.fsencode(rel))
        manifest = live_manifest_json(sidecar, _chunk_sizes(st.st_size))
        return _Object(parts, key, manifest, identity, st.st_size)
