"""The SQS spill's own part: the message order as a byte key, generations, side lines."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from elastickv_async._adapters.sqs.spill import MessageSpill, buffered_size, message_key

_arrivals = itertools.count()


def add(
    spill: MessageSpill, queue: str, send_ms: int, seq: int, msg_id: bytes, gen: int, line: bytes
) -> None:
    """Add a message the way the decoder does, with the next arrival number."""
    records = [(message_key(send_ms, seq, msg_id, next(_arrivals), gen), line)]
    spill.add_rendered(queue, records, buffered_size(records))


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


@pytest.mark.parametrize("spill_every", [0, 1, 2])
def test_messages_merge_in_order_and_other_generations_drop(
    tmp_path: Path, spill_every: int
) -> None:
    """Buffered and spilled messages come out in order, one queue at a time; side lines keep
    their arrival order."""
    spill = MessageSpill(tmp_path, budget=1 << 20)
    sends = [(5, 0, b"b", 2), (1, 0, b"z", 2), (5, 0, b"a", 1), (-3, 9, b"m", 2), (1, 0, b"z", 2)]
    for i, (send_ms, seq, msg_id, gen) in enumerate(sends, 1):
        add(spill, "q", send_ms, seq, msg_id, gen, b"line%d\n" % i)
        add(spill, "other", 0, 0, b"x", 2, b"other\n")
        spill.add_side("q", b"side%d\n" % i)
        if spill_every and i % spill_every == 0:
            spill.spill()
    assert spill.message_count("q") == 5 and spill.side_count("q") == 5
    written, dropped = spill.write_messages("q", 2, tmp_path / "out")
    assert (written, dropped) == (4, 1)
    assert (tmp_path / "out").read_bytes() == b"line4\nline2\nline5\nline1\n"
    spill.write_sides("q", tmp_path / "sides")
    assert (tmp_path / "sides").read_bytes() == b"".join(b"side%d\n" % i for i in range(1, 6))
    assert spill.write_messages("other", 0, tmp_path / "o") == (5, 0)
