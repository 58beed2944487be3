"""The Redis package loads its SPEC on first use, so that worker modules can stay light
(``tests/unit/test_worker_imports.py``)."""

from __future__ import annotations

import pytest


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
