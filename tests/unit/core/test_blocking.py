"""The test suite's blocking-call detector is on for every async test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from blockbuster import BlockingError

from elastickv_async._core.dump.checksums import compute_checksums

pytestmark = pytest.mark.anyio


async def test_a_blocking_package_call_on_the_loop_fails(
    tmp_path: Path, anyio_backend: tuple[str, dict[str, Any]]
) -> None:
    """The autouse fixture is active: a package call that blocks the event loop raises.

    blockbuster watches asyncio loops (uvloop included); under trio there is none to watch.
    """
    if anyio_backend[0] == "trio":
        pytest.skip("blockbuster watches asyncio event loops only")
    with pytest.raises(BlockingError):
        compute_checksums(tmp_path)
