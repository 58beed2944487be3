"""The SQS spill's own part: the message order as a byte key, generations, side lines."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from elastickv_async._adapters.sqs.spill import MessageSpill, message_key, pack_run

_arrivals = itertools.count()


def add(
    spill: MessageSpill, queue: str, send_ms: int, seq: int, msg_id: bytes, gen: int, line: bytes
) -> None:
    """Add a message the way the decoder does, with the next arrival number, as a run of one."""
    records = [(message_key(send_ms, seq, msg_id, next(_arrivals)), line)]
    spill.add_run(queue, gen, pack_run(records), 1)


@given(
    st.lists(
        st.tuples(
            st.integers(-(1 << 63), (1 << 63) - 1),
            st.integers(0, (1 << 64) - 1),
            st.binary(max_size=6),
        ),
        max_size=30,
    )
)
def test_key_sorts_like_the_reference_tuple(msgs: list[tuple[int, int, bytes]]) -> None:
    """Sorting by the byte key orders messages as (send time, sequence, id, arrival) does,
    ids with NUL bytes and ids that are prefixes of others included."""
    rows = [(*msg, arrival) for arrival, msg in enumerate(msgs)]
    assert sorted(rows, key=lambda r: message_key(*r)) == sorted(rows)


def lines(spill: MessageSpill, queue: str, active_gen: int) -> bytes:
    return b"".join(spill.message_lines(queue, active_gen))


@pytest.mark.parametrize("budget", [1 << 20, 1])
@pytest.mark.parametrize("spill_every", [0, 1, 2])
def test_messages_merge_in_order_and_other_generations_drop(
    tmp_path: Path, spill_every: int, budget: int
) -> None:
    """Buffered and spilled messages come out in order, one queue at a time, sorted at once
    or (a budget too small for that) in two passes; side lines keep their arrival order."""
    spill = MessageSpill(tmp_path, budget=budget)
    sends = [(5, 0, b"b", 2), (1, 0, b"z", 2), (5, 0, b"a", 1), (-3, 9, b"m", 2), (1, 0, b"z", 2)]
    for i, (send_ms, seq, msg_id, gen) in enumerate(sends, 1):
        add(spill, "q", send_ms, seq, msg_id, gen, b"line%d\n" % i)
        add(spill, "other", 0, 0, b"x", 2, b"other\n")
        spill.add_side("q", b"side%d\n" % i)
        if spill_every and i % spill_every == 0:
            spill.spill()
    assert spill.message_count("q") == 5 and spill.side_count("q") == 5
    assert spill.message_counts("q", 2) == (4, 1)
    assert lines(spill, "q", 2) == b"line4\nline2\nline5\nline1\n"
    spill.write_sides("q", tmp_path / "sides")
    assert (tmp_path / "sides").read_bytes() == b"".join(b"side%d\n" % i for i in range(1, 6))
    assert spill.message_counts("other", 0) == (5, 0)
    assert lines(spill, "other", 0) == b"other\n" * 5
    assert spill.message_counts("missing", 0) == (0, 0)
    assert any(tmp_path.glob("sqs-sorted-*")) == (budget == 1)


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(1, 2)), max_size=60),
    st.integers(1, 7),
    st.sampled_from([1, 600, 1 << 20]),
    st.integers(0, 9),
)
def test_every_budget_and_run_split_gives_the_same_file(
    tmp_path_factory: pytest.TempPathFactory,
    msgs: list[tuple[int, int, int]],
    run_size: int,
    budget: int,
    spill_every: int,
) -> None:
    """Runs of any size, spilled at any point, come out as one sort of every message kept
    (keys and lines checked against a sort of the tuples), whether the queue is put in order
    in memory or, over the budget, through sorted scratch runs."""
    tmp = tmp_path_factory.mktemp("spill")
    spill = MessageSpill(tmp, budget=budget)
    rows = [(send, seq, b"id%d" % (i % 5), i, gen) for i, (send, seq, gen) in enumerate(msgs)]
    for n, start in enumerate(range(0, len(rows), run_size), 1):
        by_gen: dict[int, list[tuple[bytes, bytes]]] = {}
        for send, seq, msg_id, arrival, gen in rows[start : start + run_size]:
            line = b"%d %d %s %d\n" % (send, seq, msg_id, arrival)
            by_gen.setdefault(gen, []).append((message_key(send, seq, msg_id, arrival), line))
        for gen, records in by_gen.items():
            spill.add_run("q", gen, pack_run(records), len(records))
        if spill_every and n % spill_every == 0:
            spill.spill()
    kept = sorted(row for row in rows if row[4] == 2)
    assert spill.message_counts("q", 2) == (len(kept), len(rows) - len(kept))
    expected = b"".join(b"%d %d %s %d\n" % row[:4] for row in kept)
    assert (lines(spill, "q", 2) if rows else b"") == expected
