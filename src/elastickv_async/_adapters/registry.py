"""The adapters known to the pipeline, in canonical order."""

from __future__ import annotations

import importlib

from .._core.options import ADAPTER_NAMES
from .base import AdapterSpec

__all__ = ["adapter_specs"]


def adapter_specs() -> dict[str, AdapterSpec]:
    """Every adapter's :class:`AdapterSpec` by name (each package exports ``SPEC``)."""
    specs: dict[str, AdapterSpec] = {}
    for name in ADAPTER_NAMES:
        module = importlib.import_module(f"{__package__}.{name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, AdapterSpec):
            specs[name] = spec
    return specs
