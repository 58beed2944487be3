"""The fast subset of the fault trials (``scripts/faults.py`` runs them by the thousand):
SIGKILL at chosen and at timed points of decode and encode, one failing system call (EIO,
ENOSPC) at positions spread over a run, and a full disk (a tiny tmpfs, when mountable)."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest
from faultlib import (
    FAULT_CALLS,
    Reference,
    count_calls,
    decode_args,
    encode_args,
    fault_decode,
    fault_encode,
    fresh,
    full_disk_decode,
    full_disk_encode,
    kill_decode,
    kill_encode,
    make_reference,
    tmpfs,
)

FRACTIONS = (0.1, 0.55, 0.97, 1.0)


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return make_reference(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def totals(ref: Reference) -> dict[str, int]:
    return {
        "decode": count_calls(decode_args(ref.base / "count-decode")),
        "encode": count_calls(encode_args(ref, ref.base / "count.fsm")),
    }


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_sigkill_decode_at_a_system_call(
    ref: Reference, totals: dict[str, int], tmp_path: Path, fraction: float
) -> None:
    assert kill_decode(ref, tmp_path, stop=max(1, int(totals["decode"] * fraction))) == []


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_sigkill_encode_at_a_system_call(
    ref: Reference, totals: dict[str, int], tmp_path: Path, fraction: float
) -> None:
    assert kill_encode(ref, tmp_path, stop=max(1, int(totals["encode"] * fraction))) == []


def test_sigkill_at_a_random_time(ref: Reference, tmp_path: Path) -> None:
    rng = random.Random(13)
    assert kill_decode(ref, fresh(tmp_path / "d"), at=rng.uniform(0.2, 0.8)) == []
    assert kill_encode(ref, fresh(tmp_path / "e"), at=rng.uniform(0.2, 0.8)) == []


@pytest.mark.parametrize("call", FAULT_CALLS)
@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC], ids=["EIO", "ENOSPC"])
def test_one_failing_system_call(ref: Reference, tmp_path: Path, call: str, err: int) -> None:
    rng = random.Random(f"{call}-{err}")
    for nth in (1, rng.randint(2, 40), rng.randint(41, 150)):
        assert fault_decode(ref, fresh(tmp_path / "d"), call, nth, err) == [], nth
        assert fault_encode(ref, fresh(tmp_path / "e"), call, nth, err) == [], nth


@pytest.mark.parametrize("size", [64 << 10, 1 << 20, 4 << 20], ids=["64K", "1M", "4M"])
def test_full_disk(ref: Reference, tmp_path: Path, size: int) -> None:
    with tmpfs(tmp_path / "decode", size) as disk:
        if disk is None:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        assert full_disk_decode(ref, disk) == []
    with tmpfs(tmp_path / "encode", size) as disk:
        assert disk is not None
        assert full_disk_encode(ref, disk) == []
