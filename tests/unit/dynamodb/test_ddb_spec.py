"""The DynamoDB package loads its SPEC on first use, so that worker modules can stay light
(``tests/unit/test_worker_imports.py``)."""

from __future__ import annotations

import pytest


def test_spec_still_loads_on_first_use() -> None:
    from elastickv_async._adapters import dynamodb
    from elastickv_async._adapters.dynamodb.decode import DynamoDBDecoder
    from elastickv_async._adapters.dynamodb.encode import DynamoDBEncoder

    assert dynamodb.SPEC.decoder is DynamoDBDecoder
    assert dynamodb.SPEC.encoder is DynamoDBEncoder
    with pytest.raises(AttributeError):
        _ = dynamodb.NO_SUCH_NAME
