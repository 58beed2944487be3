"""MVCC visibility: newest version at read_ts, tombstones, expiry, non-contiguous versions."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from snapshot_streams import mvcc_key

from elastickv_async._core.snapshot.entry import Entry
from elastickv_async._core.snapshot.mvcc import ResolverStats, VisibilityResolver


def live(key: bytes, ts: int, value: bytes = b"v", expire_at: int = 0) -> Entry:
    """A live version."""
    return Entry(key, value, ts, expire_at, False)


def dead(key: bytes, ts: int) -> Entry:
    """A tombstone version."""
    return Entry(key, b"", ts, 0, True)


def in_stream_order(entries: Sequence[Entry]) -> list[Entry]:
    """Sort versions the way the store does: by encoded key ``userKey ‖ BE(^ts)``."""
    return sorted(entries, key=lambda e: mvcc_key(e.key, e.commit_ts))


def resolve_in_batches(
    resolver: VisibilityResolver, entries: Sequence[Entry], size: int
) -> list[Entry]:
    """Feed ``entries`` in batches of ``size``."""
    out: list[Entry] = []
    for start in range(0, len(entries), size):
        out.extend(resolver.resolve(entries[start : start + size]))
    return out


def oracle(entries: Sequence[Entry], read_ts: int) -> list[Entry]:
    """Naive whole-snapshot resolution: per key the newest version at read_ts, if it is live."""
    newest: dict[bytes, tuple[int, Entry]] = {}
    for index, entry in enumerate(entries):
        if entry.commit_ts > read_ts:
            continue
        known = newest.get(entry.key)
        if known is None or entry.commit_ts > known[1].commit_ts:
            newest[entry.key] = (index, entry)
    return [
        entry
        for _, entry in sorted(newest.values(), key=lambda pair: pair[0])
        if not entry.tombstone and not (entry.expire_at and entry.expire_at <= read_ts)
    ]


def test_newest_version_wins() -> None:
    """Older versions of a key are superseded by the newest one at read_ts."""
    entries = in_stream_order(
        [live(b"a", 10, b"old"), live(b"a", 30, b"new"), live(b"a", 20, b"mid")]
    )
    resolver = VisibilityResolver(100)
    assert resolver.resolve(entries) == [live(b"a", 30, b"new")]
    assert resolver.stats == ResolverStats(visible=1, versions_superseded=2)


def test_tombstone_hides_older_versions() -> None:
    """A deleted key stays deleted; a re-created key shows its newest life."""
    entries = in_stream_order(
        [
            live(b"gone", 10, b"v1"),
            dead(b"gone", 20),
            live(b"back", 10, b"v1"),
            dead(b"back", 20),
            live(b"back", 30, b"v2"),
        ]
    )
    resolver = VisibilityResolver(100)
    assert resolver.resolve(entries) == [live(b"back", 30, b"v2")]
    assert resolver.stats == ResolverStats(visible=1, versions_superseded=3, tombstones=1)


def test_future_versions_are_ignored() -> None:
    """Versions newer than read_ts do not exist yet: the older version shows, or nothing."""
    entries = in_stream_order(
        [
            live(b"a", 90, b"future"),
            live(b"a", 50, b"current"),
            dead(b"b", 90),
            live(b"b", 50, b"alive"),
            live(b"c", 90, b"only future"),
            live(b"d", 50, b"at read_ts"),
        ]
    )
    resolver = VisibilityResolver(50)
    assert resolver.resolve(entries) == [
        live(b"a", 50, b"current"),
        live(b"b", 50, b"alive"),
        live(b"d", 50, b"at read_ts"),
    ]
    assert resolver.stats == ResolverStats(visible=3, future_versions=3, straddling_keys=2)


def test_future_versions_visible_when_asked() -> None:
    """With ignore_future_versions=False the newest version decides whatever its timestamp."""
    entries = in_stream_order([live(b"a", 90, b"future"), live(b"a", 50), live(b"c", 90, b"c")])
    resolver = VisibilityResolver(50, ignore_future_versions=False)
    assert resolver.resolve(entries) == [live(b"a", 90, b"future"), live(b"c", 90, b"c")]
    assert resolver.stats == ResolverStats(visible=2, versions_superseded=1)


def test_expired_versions() -> None:
    """Store rule: expire_at != 0 and expire_at <= read_ts hides the key (and older versions)."""
    entries = in_stream_order(
        [
            live(b"expired", 20, b"new", expire_at=100),
            live(b"expired", 10, b"old"),
            live(b"at-limit", 20, expire_at=99),
            live(b"not-yet", 20, b"n", expire_at=101),
            live(b"never", 20, b"z", expire_at=0),
        ]
    )
    resolver = VisibilityResolver(100)
    assert resolver.resolve(entries) == [
        live(b"never", 20, b"z"),
        live(b"not-yet", 20, b"n", expire_at=101),
    ]
    assert resolver.stats == ResolverStats(visible=2, versions_superseded=1, expired=2)


def test_non_contiguous_versions() -> None:
    """A longer key sorting between two versions of a shorter one does not split its history."""
    interloper = b"a" + b"\xff" * 7 + b"\xb0"
    entries = in_stream_order(
        [live(b"a", 100, b"new"), live(b"a", 50, b"old"), live(interloper, 10, b"x")]
    )
    # The premise: the interloper really sorts between the two versions of b"a".
    assert [e.key for e in entries] == [b"a", interloper, b"a"]
    resolver = VisibilityResolver(1000)
    assert resolver.resolve(entries) == [live(b"a", 100, b"new"), live(interloper, 10, b"x")]
    assert resolver.stats.versions_superseded == 1


def test_non_contiguous_tombstone_and_future() -> None:
    """The decision made before an interloper holds after it, across batches."""
    interloper = b"a" + b"\xff" * 7 + b"\xb0"
    entries = in_stream_order(
        [
            live(b"a", 300, b"future"),
            dead(b"a", 100),
            live(b"a", 50, b"resurrected?"),
            live(interloper, 10, b"x"),
        ]
    )
    assert [e.key for e in entries] == [b"a", b"a", interloper, b"a"]
    resolver = VisibilityResolver(200)
    assert resolve_in_batches(resolver, entries, 1) == [live(interloper, 10, b"x")]
    assert resolver.stats == ResolverStats(
        visible=1, versions_superseded=1, tombstones=1, future_versions=1, straddling_keys=1
    )


def test_undecided_key_decided_after_interloper() -> None:
    """A key with only future versions before an interloper is decided by a later version."""
    interloper = b"a" + b"\xff" * 7 + b"\xb0"
    entries = in_stream_order(
        [live(b"a", 100, b"future"), live(interloper, 10, b"x"), live(b"a", 50, b"current")]
    )
    assert [e.key for e in entries] == [b"a", interloper, b"a"]
    resolver = VisibilityResolver(60)
    assert resolver.resolve(entries) == [live(interloper, 10, b"x"), live(b"a", 50, b"current")]


def test_shorter_key_completed_by_timestamp_bytes() -> None:
    """A shorter key whose timestamp bytes extend it into a longer key's range."""
    # b"ab\xff" versions sort in [ab\xff 00.., ab\xff FF..]; b"ab" at a small ts encodes as
    # ab FF FF .. which falls inside that range.
    longer = b"ab\xff"
    entries = in_stream_order(
        [live(longer, 2**56, b"new"), live(longer, 5, b"old"), live(b"ab", 7, b"s")]
    )
    assert [e.key for e in entries] == [longer, b"ab", longer]
    resolver = VisibilityResolver(2**60)
    assert resolver.resolve(entries) == [live(longer, 2**56, b"new"), live(b"ab", 7, b"s")]


def test_memory_stays_bounded_on_a_long_stream() -> None:
    """Keys are forgotten once the stream passes their version range."""
    versions: list[Entry] = []
    for i in range(5000):
        key = b"!redis|str|k%05d" % i
        versions += [
            live(key, 100, b"new%d" % i),
            live(key, 50, b"old"),
            live(key + b"\xff" * 7 + b"\xb0", 10, b"x"),  # sorts between the two versions
            live(key + b"0", 10, b"prefix-extended"),  # shares the prefix, sorts before
        ]
    entries = in_stream_order(versions)
    resolver = VisibilityResolver(1000)
    out: list[Entry] = []
    peak = 0
    for entry in entries:
        out += resolver.resolve([entry])
        peak = max(peak, resolver.remembered)
    assert peak <= 2
    assert resolver.remembered <= 2
    assert len(out) == 3 * 5000
    assert out == oracle(entries, 1000)


def test_prefix_chains_stay_small() -> None:
    """Keys extending each other (k, k0, k00, ...) sort apart from each other's versions."""
    keys = [b"k" + b"0" * depth for depth in range(30)] + [b"m%04d" % i for i in range(1000)]
    entries = in_stream_order([live(k, ts) for k in keys for ts in (20, 10)])
    resolver = VisibilityResolver(100)
    out = resolve_in_batches(resolver, entries, 7)
    assert out == oracle(entries, 100)
    assert resolver.remembered <= 1


READ_TS = 100
KEY_PARTS = st.sampled_from([b"a", b"\x00", b"\xff", b"\xfe"])
# Tails that make a key sort inside another key's version range: ^ts of a small ts is
# FF*7 + (0xFF - ts), so FF*7 + B0 lands between the versions at ts 100 and ts 50.
KEYS = st.builds(
    lambda parts, tail: b"".join(parts) + tail,
    st.lists(KEY_PARTS, max_size=3),
    st.sampled_from([b"", b"", b"\xff" * 7 + b"\xb0", b"\xff" * 8, b"\xff" * 6 + b"\xfe"]),
)
VERSIONS = st.lists(
    st.tuples(
        KEYS,
        st.sampled_from([1, 50, 99, 100, 101, 2**56, 2**63]),
        st.booleans(),
        st.sampled_from([0, 0, 0, 1, 100, 101]),
    ),
    max_size=60,
    unique_by=lambda v: (v[0], v[1]),
)


@settings(max_examples=300, deadline=None)
@given(VERSIONS, st.integers(min_value=1, max_value=8))
def test_matches_naive_resolution(versions: list[tuple[bytes, int, bool, int]], size: int) -> None:
    """Streaming resolution equals whole-snapshot resolution for any stream and batching."""
    entries = in_stream_order(
        [
            Entry(key, b"" if tomb else b"v%d" % ts, ts, expire, tomb)
            for key, ts, tomb, expire in versions
        ]
    )
    resolver = VisibilityResolver(READ_TS)
    assert resolve_in_batches(resolver, entries, size) == oracle(entries, READ_TS)
    stats = resolver.stats
    assert stats.visible + stats.versions_superseded + stats.tombstones + stats.expired + (
        stats.future_versions
    ) == len(entries)
