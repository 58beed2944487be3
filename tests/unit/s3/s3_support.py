"""Helpers for the S3 adapter tests: hand-built keys, a decoder harness, an encode context.

Keys are built here from the layout in REFERENCE_NOTES §3.2 (not with the adapter's own
``keys`` module), so the tests check the parser against an independent construction.
"""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
from support import decode_context, encode_context, tree_files

from elastickv_async._adapters.base import Deferred, Routed
from elastickv_async._adapters.s3.decode import S3Decoder
from elastickv_async._adapters.s3.encode import S3Encoder
from elastickv_async._core.report import Report
from elastickv_async._core.snapshot.entry import Entry

PREFIXES = (
    b"!s3|bucket|meta|",
    b"!s3|obj|head|",
    b"!s3|upload|meta|",
    b"!s3|upload|part|",
    b"!s3|blob|",
    b"!s3|chunkref|",
    b"!s3|chunkblob|",
)


def seg(raw: bytes) -> bytes:
    """An ordered key segment: ``00`` -> ``00 FF``, then ``00 01``."""
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def bucket_meta(bucket: bytes, generation: int = 1, **fields: Any) -> tuple[bytes, bytes]:
    doc = {"bucket_name": bucket.decode(), "generation": generation, **fields}
    return b"!s3|bucket|meta|" + seg(bucket), json.dumps(doc).encode()


def blob(
    bucket: bytes,
    obj: bytes,
    data: bytes,
    *,
    gen: int = 1,
    upload: bytes = b"u1",
    part: int = 1,
    chunk: int = 0,
    version: int | None = None,
) -> tuple[bytes, bytes]:
    key = b"!s3|blob|" + seg(bucket) + u64(gen) + seg(obj) + seg(upload) + u64(part) + u64(chunk)
    if version is not None:
        key += u64(version)
    return key, data


def manifest(
    bucket: bytes,
    obj: bytes,
    parts: list[dict[str, Any]] | None,
    *,
    gen: int = 1,
    upload: str = "u1",
    **fields: Any,
) -> tuple[bytes, bytes]:
    doc = {"upload_id": upload, "parts": parts, **fields}
    key = b"!s3|obj|head|" + seg(bucket) + u64(gen) + seg(obj)
    return key, json.dumps(doc).encode()


def part(no: int, sizes: list[int], *, version: int = 0, **fields: Any) -> dict[str, Any]:
    return {
        "part_no": no,
        "chunk_count": len(sizes),
        "chunk_sizes": sizes,
        "part_version": version,
        "size_bytes": sum(sizes),
        **fields,
    }


def simple_object(
    bucket: bytes, obj: bytes, body: bytes, **fields: Any
) -> list[tuple[bytes, bytes]]:
    """One single-chunk object (an empty body has no chunk and no part)."""
    if not body:
        return [manifest(bucket, obj, None, size_bytes=0, **fields)]
    return [
        blob(bucket, obj, body),
        manifest(bucket, obj, [part(1, [len(body)])], size_bytes=len(body), **fields),
    ]


def routed(records: Iterable[tuple[bytes, bytes]]) -> list[Routed]:
    """Sort records into snapshot key order and attach their routing prefix."""
    out: list[Routed] = []
    for key, value in sorted(records):
        prefix = max((p for p in PREFIXES if key.startswith(p)), key=len)
        out.append((prefix, Entry(key, value, commit_ts=1, expire_at=0, tombstone=False)))
    return out


@dataclass
class Harness:
    """A decoder wired to a real DumpWriter under ``root``."""

    root: Path
    scratch: Path
    report: Report
    decoder: S3Decoder

    async def run(self, records: Iterable[tuple[bytes, bytes]], batch: int = 3) -> dict[str, Any]:
        entries = routed(records)
        for i in range(0, len(entries), batch):
            await self.decoder.handle(entries[i : i + batch])
        return await self.decoder.finalize()

    async def consume(
        self, records: Iterable[tuple[bytes, bytes]], batch: int = 3
    ) -> dict[str, Any]:
        """Like :meth:`run`, through the decoder's :meth:`~S3Decoder.consume` (as the
        pipeline calls it)."""
        entries = routed(records)

        async def batches() -> AsyncIterator[list[Routed]]:
            for i in range(0, len(entries), batch):
                yield entries[i : i + batch]

        return await self.decoder.consume(batches())

    def files(self) -> dict[str, bytes]:
        """Every regular file written, by slash path (``os.fsdecode`` of raw names)."""
        return tree_files(self.root)

    def warnings(self, event: str) -> list[dict[str, Any]]:
        summary = self.report.warnings.get(event)
        return summary.examples if summary else []


def harness(tmp_path: Path, **options: Any) -> Harness:
    ctx = decode_context(tmp_path, "s3", **options)
    return Harness(tmp_path / "out", tmp_path / "scratch", ctx.report, S3Decoder(ctx))


def encoder(root: Path, scratch: Path) -> S3Encoder:
    return S3Encoder(encode_context(root, scratch, "s3"))


async def encode_all(root: Path, scratch: Path) -> dict[bytes, bytes]:
    """All records of the tree at ``root``, deferred values read; duplicate keys fail the test."""
    records: dict[bytes, bytes | Deferred] = {}
    async for batch in encoder(root, scratch).batches():
        for key, value in batch:
            assert key not in records, key
            records[key] = value
    # Deferred bodies are read once the walk is over, as the snapshot writer reads them.
    out: dict[bytes, bytes] = {}
    for key, value in records.items():
        if isinstance(value, Deferred):
            value = await anyio.to_thread.run_sync(value.source.read, value.token, len(value))
        out[key] = value
    return out
