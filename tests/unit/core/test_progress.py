"""Progress samples of encode and verify, and the meter's sampling."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import REPO_ROOT

from elastickv_async import EncodeOptions, Progress, decode_snapshot, encode_snapshot, verify_tree
from elastickv_async._core.meter import ProgressMeter

pytestmark = pytest.mark.anyio

SAMPLE = REPO_ROOT / "examples" / "sample.fsm"


def _finished(samples: list[Progress]) -> dict[str, Progress]:
    return {s.stage: s for s in samples if s.finished}


async def test_encode_shows_collect_write_and_self_test(tmp_path: Path) -> None:
    """collect ends with every record, write with every entry out of them, self_test with
    the new file's bytes; each stage first appears unfinished."""
    tree = tmp_path / "tree"
    await decode_snapshot(SAMPLE, tree)
    samples: list[Progress] = []
    options = EncodeOptions(self_test=True, scratch_root=tmp_path)
    result = await encode_snapshot(tree, tmp_path / "o.fsm", options, progress=samples.append)
    assert [s.stage for s in samples if s.finished] == ["collect", "write", "self_test"]
    assert next(s.stage for s in samples if not s.finished) == "collect"
    done = _finished(samples)
    assert done["collect"].unit == "records" and done["collect"].total is None
    write = done["write"]
    assert write.done == write.total == result.entries == done["collect"].done
    assert write.bytes_written == result.bytes_written == (tmp_path / "o.fsm").stat().st_size
    assert done["self_test"].done == done["self_test"].total == result.bytes_written


async def test_verify_counts_the_listed_files(tmp_path: Path) -> None:
    """verify's one stage ends at the number of files CHECKSUMS lists."""
    tree = tmp_path / "tree"
    await decode_snapshot(SAMPLE, tree)
    listed = len((tree / "CHECKSUMS").read_bytes().splitlines())
    samples: list[Progress] = []
    await verify_tree(tree, progress=samples.append)
    assert [s.stage for s in samples if s.finished] == ["verify"]
    last = samples[-1]
    assert last.finished and last.unit == "files" and last.done == last.total == listed


async def test_the_meter_samples_on_a_clock_not_per_update() -> None:
    """However much work a stage does, the callback only sees its start and its end when
    the clock does not tick in between; ETA and rate come from the sample."""
    samples: list[Progress] = []
    meter = ProgressMeter(samples.append, interval=3600)
    work = [0]
    async with meter.running():
        meter.stage("read", unit="bytes", done=lambda: work[0], total=1_000_000)
        for _ in range(100_000):
            work[0] += 10
        meter.stage("flush", unit="files", done=lambda: 3)
    assert [(s.stage, s.finished) for s in samples] == [
        ("read", False),
        ("read", True),
        ("flush", False),
        ("flush", True),
    ]
    assert samples[1].done == 1_000_000 and samples[3].done == 3 and samples[3].total is None


def test_eta_and_rate() -> None:
    """ETA is what is left at the stage's rate; unknown without a total or a rate."""
    half = Progress("read", "bytes", done=500, total=1000, elapsed=5.0)
    assert half.rate == 100.0 and half.eta == 5.0 and half.fraction == 0.5
    assert Progress("flush", "files", done=5, elapsed=1.0).eta is None
    assert Progress("read", "bytes", done=0, total=10, elapsed=0.0).eta is None


def test_no_callback_no_ticker() -> None:
    """Without a callback the meter does nothing (the engine pays one attribute check)."""
    assert not ProgressMeter(None).enabled
