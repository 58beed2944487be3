"""Redis decode options (``--keep-expired``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..base import option

__all__ = ["RedisOptions", "self_test_options"]


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Which Redis keys the decoder keeps."""

    keep_expired: bool = option(
        False,
        flag="keep-expired",
        help="keep Redis keys whose TTL had passed when the snapshot was taken",
    )


def self_test_options(options: RedisOptions) -> RedisOptions:
    """Keep expired keys when re-decoding: the self-test checks what the .fsm holds, not its
    age (MANIFEST.json does not record the option)."""
    return replace(options, keep_expired=True)
