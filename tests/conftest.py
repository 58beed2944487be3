"""Shared fixtures: every async test runs under asyncio, asyncio+uvloop and trio, and fails
if the package makes a blocking call on the event loop."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from blockbuster import BlockBuster, blockbuster_ctx


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


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """For async tests: any blocking call made by the package on the event loop fails.

    Only frames of ``elastickv_async`` are watched, so a test may prepare its files
    synchronously. blockbuster hooks asyncio's running loop (uvloop included); under trio
    the same code paths are exercised by the asyncio runs of the test.
    """
    if not inspect.iscoroutinefunction(getattr(request.node, "function", None)):
        yield None
        return
    with blockbuster_ctx("elastickv_async") as bb:
        yield bb
