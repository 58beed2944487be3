"""Running the selected adapter encoders concurrently and feeding their records to the sorter.

Each adapter runs in its own task of one task group and sends batches of records over a
bounded channel: the lists its ``produce()`` sends, or its ``records()`` gathered into lists.
An encoder with lanes of its own keeps them running while the channel is full.
A single consumer checks each batch against the reader's size limits, stamps its keys with the
snapshot timestamp and buffers it in the sorter (an encode's
:class:`~.sortframe.FramedSorter`, which stamps as it frames, or an
:class:`~elastickv_async._core.extsort.ExternalSorter`), a whole batch at a time. A spill
runs in a worker thread while the producers wait on the full channel (backpressure).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

import anyio
import anyio.to_thread
import msgspec
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from ..._adapters.base import (
    AdapterSpec,
    BatchEncodeAdapter,
    EncodeAdapter,
    EncodeContext,
    send_batches,
)
from ..concurrency import task_group
from ..errors import DumpTreeError, UsageError, map_os_errors
from ..extsort import Deferred, ExternalSorter
from .framing import check_records
from .sortframe import FramedSorter

__all__ = ["LARGE_VALUE", "collect_records"]

Batch = Sequence[tuple[bytes, bytes | Deferred]]
#: The MVCC suffix of every key, or a function giving each user key its own.
Suffix = bytes | Callable[[bytes], bytes]

#: A batch gathered from ``records()`` is sent when it holds this many records or
#: ``batch_bytes`` bytes (by default this many).
BATCH_RECORDS: Final = 512
BATCH_BYTES: Final = 4 << 20
#: Batches buffered in the channel.
CHANNEL_BUFFER: Final = 4
#: Values at least this large (object body chunks) wait in the sorter's side file, not its runs.
LARGE_VALUE: Final = 64 << 10


class _Job(msgspec.Struct, frozen=True):
    name: str
    encoder: EncodeAdapter | BatchEncodeAdapter


async def _gathered(
    records: AsyncIterator[tuple[bytes, bytes]], batch_bytes: int
) -> AsyncIterator[Batch]:
    """The records of a ``records()`` encoder in lists of about :data:`BATCH_RECORDS` or
    ``batch_bytes``."""
    batch: list[tuple[bytes, bytes]] = []
    size = 0
    try:
        async for key, value in records:
            batch.append((key, value))
            size += len(key) + len(value)
            if len(batch) >= BATCH_RECORDS or size >= batch_bytes:
                yield batch
                batch, size = [], 0
    finally:
        # Close an abandoned async generator now (its cleanup may need the event loop).
        aclose = getattr(records, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()
    if batch:
        yield batch


async def _produce(job: _Job, send: ObjectSendStream[Batch], batch_bytes: int) -> None:
    async def sliced(batch: Batch) -> None:
        # Sent in slices, so the channel holds no more than with gathered records.
        for start in range(0, len(batch), BATCH_RECORDS):
            await send.send(batch[start : start + BATCH_RECORDS])

    encoder = job.encoder
    async with send:
        # An unreadable input file is a problem with the dump tree, as in the reference.
        with map_os_errors(
            DumpTreeError,
            "cannot read the dump tree",
            code="ErrEncodeAdapterData",
            adapter=job.name,
        ):
            produce = getattr(encoder, "produce", None)
            if produce is not None:
                await produce(sliced)
            else:
                records = encoder.records()  # type: ignore[union-attr]
                await send_batches(_gathered(records, batch_bytes), sliced)


def _stamped(batch: Batch, suffix: Suffix) -> Batch:
    """``batch`` checked against the reader's limits, each key with its MVCC suffix."""
    check_records(batch)
    if isinstance(suffix, bytes):
        return [(key + suffix, value) for key, value in batch]
    return [(key + suffix(key), value) for key, value in batch]


async def _consume(
    receive: ObjectReceiveStream[Batch], sorter: ExternalSorter | FramedSorter, suffix: Suffix
) -> None:
    async with receive:
        async for batch in receive:
            if isinstance(sorter, FramedSorter) and isinstance(suffix, bytes):
                # Stamped as it is framed: one pass over the batch.
                check_records(batch)
                sorter.add_many(batch, suffix)
            else:
                sorter.add_many(_stamped(batch, suffix))
            if sorter.over_budget:
                await anyio.to_thread.run_sync(sorter.spill)


async def collect_records(
    specs: Sequence[AdapterSpec],
    make_context: Callable[[AdapterSpec], EncodeContext],
    sorter: ExternalSorter | FramedSorter,
    suffix: Suffix,
    *,
    batch_bytes: int = BATCH_BYTES,
) -> None:
    """Run every adapter encoder in ``specs`` and add all their records to ``sorter``.

    ``suffix`` is appended to every user key (the MVCC timestamp suffix); a function gives
    each key its own (and may refuse a key by raising). The records of an encoder that
    yields them one by one are sent in lists of up to ``batch_bytes``. The first error of
    any adapter cancels the others and is raised as itself (not as an exception group).
    """
    jobs = []
    for spec in specs:
        if spec.encoder is None:
            raise UsageError(f"adapter {spec.name!r} has no encoder in this build")
        jobs.append(_Job(spec.name, spec.encoder(make_context(spec))))
    send, receive = anyio.create_memory_object_stream[Batch](CHANNEL_BUFFER)
    async with task_group() as tg:
        async with send:
            for job in jobs:
                tg.start_soon(_produce, job, send.clone(), batch_bytes)
        tg.start_soon(_consume, receive, sorter, suffix)
