"""Helpers for the Redis adapter tests: feed rows to the decoder, collect what it wrote."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import decode_context, produced

from elastickv_async._adapters.base import DecodeContext, EncodeContext, Routed
from elastickv_async._adapters.redis import SPEC
from elastickv_async._adapters.redis.decode import RedisDecoder
from elastickv_async._adapters.redis.encode import RedisEncoder
from elastickv_async._core.report import Report, make_logger
from elastickv_async._core.snapshot.entry import Entry, SnapshotHeader
from elastickv_async._core.workers import Workers

COMMIT_TS = 5000
#: The MVCC suffix every key carries in a snapshot: it takes part in the key order.
TS_SUFFIX = struct.pack(">Q", ~COMMIT_TS & ((1 << 64) - 1))
U32 = struct.Struct(">I").pack
U64 = struct.Struct(">Q").pack
DB = "redis/db_0/"


def snapshot_order(rows: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Rows sorted the way a snapshot stores them: by user key plus the timestamp suffix."""
    return sorted(rows, key=lambda row: row[0] + TS_SUFFIX)


def route(rows: Iterable[tuple[bytes, bytes]]) -> list[Routed]:
    """Route rows by the adapter's longest matching prefix, dropping internal rows."""
    prefixes = sorted(SPEC.routed_prefixes + SPEC.internal_prefixes, key=len, reverse=True)
    out: list[Routed] = []
    for key, value in rows:
        prefix = next(p for p in prefixes if key.startswith(p))
        if prefix in SPEC.routed_prefixes:
            out.append((prefix, Entry(key, value, COMMIT_TS, 0, False)))
    return out


@dataclass
class Decoded:
    """What one decode wrote: files under the output root, the report and the scope."""

    files: dict[str, bytes]
    report: Report
    scope: dict[str, Any]

    def text(self, rel: str) -> str:
        """A written file as text (``rel`` is relative to ``redis/db_0/``)."""
        return self.files[DB + rel].decode()

    def warnings(self, event: str) -> list[dict[str, Any]]:
        """The fields of every ``event`` warning."""
        summary = self.report.warnings.get(event)
        return (
            [{k: v for k, v in e.items() if k != "adapter"} for e in summary.examples]
            if (summary)
            else []
        )


def make_context(
    root: Path,
    *,
    header_kind: str = "none",
    now_ms: int = 0,
    keep_expired: bool = False,
    workers: int = 0,
    memory: int | None = None,
) -> DecodeContext:
    """A decode context writing under ``root/out`` with its scratch in ``root/scratch``;
    ``memory`` is the adapter's share of the run's budget (default: the default share)."""
    ctx = decode_context(
        root,
        "redis",
        header=SnapshotHeader(COMMIT_TS << 16, kind=header_kind),
        now_ms=now_ms,
        adapters=("redis",),
        keep_expired=keep_expired,
    )
    ctx.workers = Workers(workers)
    if memory is not None:
        ctx.memory = memory
    return ctx


async def decode_rows(
    root: Path,
    rows: Iterable[tuple[bytes, bytes]],
    *,
    batch: int = 3,
    ordered: bool = True,
    streamed: bool = False,
    **context: Any,
) -> Decoded:
    """Decode ``rows`` (put in snapshot order unless ``ordered`` is false) in small batches,
    handed to the decoder one by one, or with ``streamed`` as the stream that the pipeline
    gives :meth:`RedisDecoder.consume`."""
    ctx = make_context(root, **context)
    async with ctx.workers:
        decoder = RedisDecoder(ctx)
        routed = route(snapshot_order(rows) if ordered else rows)
        batches = [routed[start : start + batch] for start in range(0, len(routed), batch)]
        if streamed:

            async def stream() -> AsyncIterator[list[Routed]]:
                for each in batches:
                    yield each

            scope = await decoder.consume(stream())
        else:
            for each in batches:
                await decoder.handle(each)
            scope = await decoder.finalize()
    out = root / "out"
    files = {
        p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
    }
    return Decoded(files, ctx.report, scope)


async def encode_tree(
    root: Path, *, workers: int = 0, memory: int | None = None
) -> list[tuple[bytes, bytes]]:
    """Every record the encoder yields for the dump tree at ``root``, sorted by key."""
    return sorted(await encode_tree_in_order(root, workers=workers, memory=memory))


async def encode_tree_in_order(
    root: Path, *, workers: int = 0, memory: int | None = None
) -> list[tuple[bytes, bytes]]:
    """Every record the encoder yields for the dump tree at ``root``, as it yields them;
    ``memory`` is the encoder's share of the run's budget (default: a lone encoder's)."""
    report = Report()
    async with Workers(workers) as pool:
        ctx = EncodeContext(
            input_root=root, log=make_logger(report), report=report, scratch=root, workers=pool
        )
        if memory is not None:
            ctx.memory = memory
        return await produced(RedisEncoder(ctx))


def wide(prefix: bytes, user_key: bytes, suffix: bytes = b"") -> bytes:
    """``<prefix><len u32><user key><suffix>``, written out independently of the adapter."""
    return prefix + U32(len(user_key)) + user_key + suffix


def list_seq(seq: int) -> bytes:
    """A list item's 8-byte sequence suffix (sign bit flipped)."""
    return U64(seq + (1 << 63))
