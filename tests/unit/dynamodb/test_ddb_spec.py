"""The DynamoDB package loads its SPEC on first use, so that worker modules can stay light
(``tests/unit/test_worker_imports.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import decode_context, encode_context


def test_spec_still_loads_on_first_use(tmp_path: Path) -> None:
    from elastickv_async._adapters import dynamodb
    from elastickv_async._adapters.dynamodb.decode import DynamoDBDecoder
    from elastickv_async._adapters.dynamodb.encode import DynamoDBEncoder

    scratch = tmp_path / "scratch"
    assert isinstance(dynamodb.SPEC.decoder(decode_context(tmp_path, "dynamodb")), DynamoDBDecoder)
    assert isinstance(
        dynamodb.SPEC.encoder(encode_context(tmp_path, scratch, "dynamodb")), DynamoDBEncoder
    )
    with pytest.raises(AttributeError):
        _ = dynamodb.NO_SUCH_NAME
