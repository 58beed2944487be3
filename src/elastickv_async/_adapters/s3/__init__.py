"""The S3 adapter: buckets and objects <-> ``s3/<bucket>/`` (REFERENCE_NOTES §3.2, §6.5).

``SPEC`` (and with it the adapter's keys, options and layout) is loaded on first use, as the
other adapters' are: importing one module of the package (say :mod:`.keys`) stays light.
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
