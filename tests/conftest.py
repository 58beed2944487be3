"""Shared fixtures: every async test runs under asyncio, asyncio+uvloop and trio."""

from __future__ import annotations

from typing import Any

import pytest


def _backends() -> list[Any]:
    params: list[Any] = [pytest.param(("asyncio", {}), id="asyncio")]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        pass
    else:
        params.append(pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"))
    params.append(pytest.param(("trio", {}), id="trio"))
    return params


@pytest.fixture(params=_backends())
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """The anyio plugin's backend selector, parametrised over every supported loop."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend
