"""The Redis worker modules start light.

A worker process unpickles the function it runs by importing that function's module: the
modules of :func:`~elastickv_async._adapters.redis.rows.decode_rows` and
:func:`~elastickv_async._adapters.redis.slices.encode_slice` must not pull in the adapter's
SPEC (decoder, encoder, ``base``) nor structlog or anyio.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = (
    "elastickv_async._adapters.base",
    "elastickv_async._adapters.redis.decode",
    "elastickv_async._adapters.redis.encode",
    "elastickv_async._adapters.redis.spec",
    "structlog",
    "anyio",
)


@pytest.mark.parametrize(
    "module", ["elastickv_async._adapters.redis.rows", "elastickv_async._adapters.redis.slices"]
)
def test_worker_module_imports_neither_the_adapter_nor_logging_nor_anyio(module: str) -> None:
    code = f"import sys; import {module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_spec_still_loads_on_first_use() -> None:
    from elastickv_async._adapters import redis
    from elastickv_async._adapters.base import BYTES, LINE_SET
    from elastickv_async._adapters.redis.decode import RedisDecoder
    from elastickv_async._adapters.redis.encode import RedisEncoder

    assert redis.SPEC.decoder is RedisDecoder
    assert redis.SPEC.encoder is RedisEncoder
    assert redis.SPEC.compare("db_0/KEYMAP.jsonl") is LINE_SET
    assert redis.SPEC.compare("db_0/strings/a.bin") is BYTES
    with pytest.raises(AttributeError):
        _ = redis.NO_SUCH_NAME
