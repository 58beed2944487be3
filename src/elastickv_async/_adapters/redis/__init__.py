"""The Redis adapter: ``redis/db_0/`` in the dump tree (REFERENCE_NOTES §3.3, §6.3).

``SPEC`` (and with it the decoder, the encoder and their imports) is loaded on first use:
a worker process that only decodes rows or encodes a slice of files imports :mod:`.rows`
or :mod:`.slices` and what they need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spec import SPEC as SPEC

__all__ = ["SPEC"]


def __getattr__(name: str) -> Any:
    if name == "SPEC":
        from .spec import SPEC

        return SPEC
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
