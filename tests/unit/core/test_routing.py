"""Longest-prefix routing."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from elastickv_async._adapters.base import AdapterSpec
from elastickv_async._core.routing import (
    GLOBAL_INTERNAL_PREFIXES,
    INTERNAL,
    Router,
    prefix_family,
)
from elastickv_async._core.snapshot.entry import Entry


def _never(ctx: object) -> Any:
    raise AssertionError("not used")


SPECS = {
    "redis": AdapterSpec(
        "redis", (b"!hs|meta|", b"!hs|meta|d|", b"!hs|fld|"), (b"!redis|txn-",), _never, _never
    ),
    "s3": AdapterSpec("s3", (b"!s3|blob|",), (b"!s3|bucket|gen|",), _never, _never),
}


def test_longest_prefix_wins() -> None:
    """!hs|meta|d| beats !hs|meta| for delta keys."""
    router = Router(SPECS, ["redis", "s3"])
    assert router.route(b"!hs|meta|d|\x00\x00\x00\x01k") == ("redis", b"!hs|meta|d|")
    assert router.route(b"!hs|meta|\x00\x00\x00\x01k") == ("redis", b"!hs|meta|")


def test_disabled_adapter_and_internal_prefixes() -> None:
    """Routed prefixes of disabled adapters and internal prefixes go to INTERNAL."""
    router = Router(SPECS, ["redis"])
    assert router.route(b"!s3|blob|x")[0] == INTERNAL
    assert router.route(b"!s3|bucket|gen|x")[0] == INTERNAL
    assert router.route(b"!redis|txn-wide-hash|x")[0] == INTERNAL
    assert router.route(b"!txn|lock|x")[0] == INTERNAL


def test_unknown_keys() -> None:
    """Keys matching nothing (even shorter than every prefix) are unknown."""
    router = Router(SPECS, ["redis", "s3"])
    assert router.route(b"!zz|x") == (None, b"")
    assert router.route(b"!") == (None, b"")
    assert prefix_family(b"!zz|family|rest") == b"!zz|family|"
    assert prefix_family(b"plainkey") == b"plainkey"


def _longest_match(key: bytes, table: dict[bytes, str]) -> tuple[str | None, bytes]:
    matches = [p for p in table if key.startswith(p)]
    if not matches:
        return None, b""
    best = max(matches, key=len)
    return table[best], best


def test_reused_answer_never_hides_a_longer_prefix() -> None:
    """Any key order gives the plain longest match, however the previous key was routed."""
    router = Router(SPECS, ["redis", "s3"])
    table = {
        b"!hs|meta|": "redis",
        b"!hs|meta|d|": "redis",
        b"!hs|fld|": "redis",
        b"!redis|txn-": INTERNAL,
        b"!s3|blob|": "s3",
        b"!s3|bucket|gen|": INTERNAL,
        **{p: INTERNAL for p in GLOBAL_INTERNAL_PREFIXES},
    }
    stems = [*table, b"!hs|", b"!s3|", b"", b"!zz|"]
    tails = [b"", b"d|", b"x", b"\x00\x01k", b"meta|d|q"]
    keys = [stem + tail for stem in stems for tail in tails]
    # Every ordered pair: the second key's answer must not depend on the first.
    for first in keys:
        for second in keys:
            router.route(first)
            assert router.route(second) == _longest_match(second, table), (first, second)


_STEMS = [b"!hs|meta|", b"!hs|meta|d|", b"!hs|fld|", b"!s3|blob|", b"!s3|bucket|gen|", b"!hs|"]
_STEMS += [b"!txn|", b"!zz|", b"!s3|blo", b""]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(_STEMS),
            st.binary(max_size=3),
            st.integers(0, (1 << 64) - 1),
        ),
        max_size=40,
    ),
    st.sets(st.integers(0, 40)),
)
def test_runs_answer_what_route_answers_for_each_entry(
    rows: list[tuple[bytes, bytes, int]], held: set[int]
) -> None:
    """Entries in stream order (sorted by key ‖ inverted timestamp; some moved later past
    the keys that start with theirs, as a cluster merge holds a key back), keys shorter
    than the prefixes included: every entry of a run is routed as ``route`` routes it
    alone, and the runs cover the batch in order."""
    encoded = sorted(
        (stem + tail + (ts ^ ((1 << 64) - 1)).to_bytes(8, "big"), ts) for stem, tail, ts in rows
    )
    entries = [Entry(key[:-8], b"v" * (i % 3), ts, 0, False) for i, (key, ts) in enumerate(encoded)]
    for i in sorted(held, reverse=True):
        if i < len(entries):
            # Move the entry past every following entry whose key starts with its key.
            entry = entries.pop(i)
            end = i
            while end < len(entries) and entries[end].key.startswith(entry.key):
                end += 1
            entries.insert(end, entry)
    router = Router(SPECS, ["redis", "s3"])
    got = [(target, prefix, entry) for target, prefix, run in router.runs(entries) for entry in run]
    assert [entry for _, _, entry in got] == entries
    alone = Router(SPECS, ["redis", "s3"])
    assert [(t, p) for t, p, _ in got] == [alone.route(e.key) for e in entries]


def test_runs_of_a_sorted_batch_are_long() -> None:
    """A batch of one maximal prefix is one run; a batch with a key shorter than the prefix
    is routed entry by entry (still right)."""
    router = Router(SPECS, ["redis", "s3"])
    entries = [Entry(b"!s3|blob|%04d" % i, b"", 1, 0, False) for i in range(100)]
    assert [(t, p, len(r)) for t, p, r in router.runs(entries)] == [("s3", b"!s3|blob|", 100)]
    mixed = [*entries[:50], Entry(b"!s3|bl", b"", 1, 0, False), *entries[50:]]
    assert len(list(router.runs(mixed))) == 101
