"""Worker modules start light.

A worker process unpickles the function it runs by importing that function's module: a
module whose functions run in workers must not pull in its adapter's SPEC (decoder, encoder,
``base``), structlog or anyio, which would only lengthen every worker's start and memory.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Per adapter, the modules holding the functions its decoder and encoder send to workers.
WORKER_MODULES = {
    "dynamodb": ("render", "items"),
    "redis": ("rows", "slices"),
    "sqs": ("render", "lines"),
}


@pytest.mark.parametrize(
    ("adapter", "module"),
    [(adapter, module) for adapter, modules in WORKER_MODULES.items() for module in modules],
)
def test_a_worker_module_imports_neither_its_adapter_nor_logging_nor_anyio(
    adapter: str, module: str
) -> None:
    package = f"elastickv_async._adapters.{adapter}"
    heavy = (
        "elastickv_async._adapters.base",
        f"{package}.decode",
        f"{package}.encode",
        f"{package}.spec",
        "structlog",
        "anyio",
    )
    code = (
        f"import sys; import {package}.{module}; print([m for m in {heavy!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
