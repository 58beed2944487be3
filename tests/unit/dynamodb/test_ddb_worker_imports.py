"""The DynamoDB worker modules start light.

A worker process unpickles the function it runs by importing that function's module: the
modules of :func:`~elastickv_async._adapters.dynamodb.render.item_files`,
:func:`~elastickv_async._adapters.dynamodb.render.bundle_lines` and
:func:`~elastickv_async._adapters.dynamodb.items.encode_items` must not pull in the adapter's
SPEC (decoder, encoder, ``base``) nor structlog or anyio.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = (
    "elastickv_async._adapters.base",
    "elastickv_async._adapters.dynamodb.decode",
    "elastickv_async._adapters.dynamodb.encode",
    "elastickv_async._adapters.dynamodb.spec",
    "structlog",
    "anyio",
)


@pytest.mark.parametrize(
    "module",
    ["elastickv_async._adapters.dynamodb.render", "elastickv_async._adapters.dynamodb.items"],
)
def test_worker_module_imports_neither_the_adapter_nor_logging_nor_anyio(module: str) -> None:
    code = f"import sys; import {module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_spec_still_loads_on_first_use() -> None:
    from elastickv_async._adapters import dynamodb
    from elastickv_async._adapters.dynamodb.decode import DynamoDBDecoder
    from elastickv_async._adapters.dynamodb.encode import DynamoDBEncoder

    assert dynamodb.SPEC.decoder is DynamoDBDecoder
    assert dynamodb.SPEC.encoder is DynamoDBEncoder
    with pytest.raises(AttributeError):
        _ = dynamodb.NO_SUCH_NAME
