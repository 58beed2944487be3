"""Task-group failures surfaced as this package's typed errors."""

from __future__ import annotations

from ...errors import ElasticKVError

__all__ = ["first_error"]


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to surface from a failed task group: the first typed one, else the first.

    Callers map this package's typed errors to exit codes, so they must not arrive wrapped.
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = exc.exceptions
        else:
            leaves.append(exc)
    return next((e for e in leaves if isinstance(e, ElasticKVError)), leaves[0])
