"""Task groups whose failures surface as one exception.

anyio task groups raise exception groups; callers of this package (and the CLI's exit-code
mapping) expect one typed error. :func:`task_group` re-raises the most telling leaf: the first
of our own :class:`~elastickv_async._core.errors.ElasticKVError` leaves, else the first leaf.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
from anyio.abc import TaskGroup

from .errors import ElasticKVError

__all__ = ["first_error", "task_group"]


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The leaf of ``group`` to report: the first typed error of ours, else the first leaf."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = exc.exceptions
        else:
            leaves.append(exc)
    return next((e for e in leaves if isinstance(e, ElasticKVError)), leaves[0])


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[TaskGroup]:
    """``anyio.create_task_group()`` that raises :func:`first_error` instead of a group."""
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        raise first_error(group) from None
