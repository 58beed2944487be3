"""The DynamoDB adapter: tables, items and (on encode) GSI rows under ``!ddb|``.

``SPEC`` (and with it the decoder, the encoder and their imports) is loaded on first use:
a worker process that only renders or encodes items imports :mod:`.render` or
:mod:`.items` and what they need.
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
