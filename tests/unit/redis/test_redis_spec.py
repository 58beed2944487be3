"""The Redis package loads its SPEC on first use, so that worker modules can stay light
(``tests/unit/test_worker_imports.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import decode_context, encode_context


def test_spec_still_loads_on_first_use(tmp_path: Path) -> None:
    from elastickv_async._adapters import redis
    from elastickv_async._adapters.base import BYTES, LINE_SET
    from elastickv_async._adapters.redis.decode import RedisDecoder
    from elastickv_async._adapters.redis.encode import RedisEncoder

    scratch = tmp_path / "scratch"
    assert isinstance(redis.SPEC.decoder(decode_context(tmp_path, "redis")), RedisDecoder)
    assert isinstance(redis.SPEC.encoder(encode_context(tmp_path, scratch, "redis")), RedisEncoder)
    assert redis.SPEC.compare("db_0/KEYMAP.jsonl") is LINE_SET
    assert redis.SPEC.compare("db_0/strings/a.bin") is BYTES
    assert redis.SPEC.compare("db_0/strings_ttl.jsonl") is LINE_SET
    assert redis.SPEC.compare("db_0/hll_ttl.jsonl") is LINE_SET
    assert redis.SPEC.compare("db_0/hashes/h.json") is BYTES


def test_spec_names_the_layouts_root_directory() -> None:
    """The SPEC spells the tree's top directory itself, so that it loads without the layout."""
    from elastickv_async._adapters import redis
    from elastickv_async._adapters.redis import layout

    assert redis.SPEC.name == layout.ROOT
    with pytest.raises(AttributeError):
        _ = redis.NO_SUCH_NAME
