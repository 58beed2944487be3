"""Longest-prefix routing."""

from __future__ import annotations

from typing import Any

from elastickv_async._adapters.base import AdapterSpec
from elastickv_async._core.routing import (
    GLOBAL_INTERNAL_PREFIXES,
    INTERNAL,
    Router,
    prefix_family,
)


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
