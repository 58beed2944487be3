"""Task groups whose failures surface as one exception, with no failure dropped.

anyio task groups raise exception groups; callers of this package (and the CLI's exit-code
mapping) expect one typed error. :func:`task_group` re-raises the most telling leaf and
attaches every other failure to it as an exception note, so nothing is lost. A
``KeyboardInterrupt`` (or any other ``BaseException`` that is not an ``Exception``) always
wins, and a group made only of cancellations propagates unchanged so that the cancel scope
that caused them can catch it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
from anyio.abc import TaskGroup

from .errors import ElasticKVError

__all__ = ["most_telling", "task_group"]


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = exc.exceptions
        else:
            leaves.append(exc)
    return leaves


def _rank(exc: BaseException) -> int:
    # Lower is more telling: an interrupt or exit request must never be hidden by the
    # errors it caused, our typed errors explain more than a bare Python one, and a
    # cancellation only says that another failure stopped this task.
    if not isinstance(exc, Exception):
        return 0
    if isinstance(exc, ElasticKVError):
        return 1
    return 2


def most_telling(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The leaf of ``group`` to raise, the other failures attached as notes.

    Returns ``None`` when every leaf is a cancellation: the group itself must then
    propagate. Within a rank the first leaf wins.
    """
    cancelled = anyio.get_cancelled_exc_class()
    leaves = [e for e in _leaves(group) if not isinstance(e, cancelled)]
    if not leaves:
        return None
    chosen = min(leaves, key=_rank)
    for other in leaves:
        if other is not chosen:
            chosen.add_note(f"also failed: {type(other).__name__}: {other}")
    return chosen


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[TaskGroup]:
    """``anyio.create_task_group()`` that raises :func:`most_telling` instead of a group."""
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        chosen = most_telling(group)
        if chosen is None:
            raise
        # Keep the leaf's own cause (an OSError behind our error); drop the group context.
        raise chosen from chosen.__cause__
