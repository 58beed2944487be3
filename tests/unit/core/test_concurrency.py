"""The task-group helper: one exception out, no failure dropped, no interrupt hidden."""

from __future__ import annotations

import anyio
import pytest

from elastickv_async._core.concurrency import most_telling, task_group
from elastickv_async._core.errors import DataError, DumpTreeError

pytestmark = pytest.mark.anyio


async def _fail(exc: BaseException) -> None:
    # No checkpoint before raising: every task started together fails, none is cancelled.
    raise exc


async def test_our_error_wins_and_the_others_become_notes() -> None:
    """A typed error beats a bare Python one; the other failures are attached as notes."""
    with pytest.raises(DumpTreeError, match="bad tree") as info:
        async with task_group() as tg:
            tg.start_soon(_fail, ValueError("bare"))
            tg.start_soon(_fail, DumpTreeError("bad tree", code="ErrX"))
            tg.start_soon(_fail, RuntimeError("bug"))
    # trio schedules the tasks in no fixed order, so the notes come in no fixed order.
    assert sorted(info.value.__notes__) == [
        "also failed: RuntimeError: bug",
        "also failed: ValueError: bare",
    ]


async def test_a_single_failure_carries_no_notes_and_keeps_its_cause() -> None:
    """Siblings cancelled by a failure are not reported; the error's own cause survives."""
    cause = PermissionError(13, "denied")
    error = DataError("cannot read")
    error.__cause__ = cause
    with pytest.raises(DataError) as info:
        async with task_group() as tg:
            tg.start_soon(anyio.sleep_forever)
            tg.start_soon(_fail, error)
    assert not hasattr(info.value, "__notes__")
    assert info.value.__cause__ is cause


async def test_an_outer_cancellation_is_not_turned_into_an_error() -> None:
    """Cancelling the scope around the group ends it quietly, as a bare task group would."""
    with anyio.CancelScope() as scope:
        async with task_group() as tg:
            tg.start_soon(anyio.sleep_forever)
            tg.start_soon(anyio.sleep_forever)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert scope.cancelled_caught


async def test_an_interrupt_beats_every_error() -> None:
    """KeyboardInterrupt is what propagates, with the errors it interrupted as notes."""
    group = BaseExceptionGroup("run", [DataError("bad", code="ErrX"), KeyboardInterrupt()])
    chosen = most_telling(group)
    assert isinstance(chosen, KeyboardInterrupt)
    assert chosen.__notes__ == ["also failed: DataError: bad"]


async def test_nested_groups_are_flattened_in_order() -> None:
    """Leaves of nested groups are ranked together; within a rank the first one wins."""
    first, second = DataError("one"), DataError("two")
    group = ExceptionGroup("outer", [ValueError("v"), ExceptionGroup("inner", [first, second])])
    assert most_telling(group) is first
    assert first.__notes__ == ["also failed: ValueError: v", "also failed: DataError: two"]
