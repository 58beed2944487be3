"""``decode --dry-run``: the plan of a decode, with nothing written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hostile import SAMPLE_FSM, cli, cli_argv

from elastickv_async import DecodeOptions, decode_snapshot
from elastickv_async._core.plan import plan_decode


def test_cli_dry_run_writes_nothing_and_prints_the_plan(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = cli("decode", "--input", SAMPLE_FSM, "--output", out, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert not out.exists()
    assert not any(tmp_path.iterdir())
    assert "nothing written" in done.stdout
    for unit in ("orders", "photos", "jobs"):
        assert f"    {unit}: " in done.stdout


def test_cli_dry_run_json_matches_a_real_decode(tmp_path: Path) -> None:
    args: list[str | Path] = ["--input", SAMPLE_FSM, "--dry-run", "--log-format", "json"]
    args += ["--adapter", "s3,sqs"]
    done = cli("decode", "--output", tmp_path / "dry", *args)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert not (tmp_path / "dry").exists()
    assert set(plan["adapters"]) == {"s3", "sqs"}
    report = tmp_path / "r.json"
    real = cli(
        "decode", "--input", SAMPLE_FSM, "--output", tmp_path / "real", "--adapter", "s3,sqs",
        "--report", report, "--quiet",
    )  # fmt: skip
    assert real.returncode == 0, real.stderr
    counters = json.loads(report.read_bytes())["counters"]
    for name in ("s3", "sqs"):
        assert plan["adapters"][name]["keys"] == counters[f"entries.{name}"]
    files = [p for p in (tmp_path / "real").rglob("*") if p.is_file()]
    assert len(files) <= plan["estimated_files"]
    assert sorted(p.name for p in (tmp_path / "real" / "s3").iterdir()) == sorted(
        plan["adapters"]["s3"]["units"]
    )


def test_cli_dry_run_from_standard_input(tmp_path: Path) -> None:
    with SAMPLE_FSM.open("rb") as stdin:
        done = subprocess.run(
            cli_argv("decode", "--input", "-", "--output", tmp_path / "out", "--dry-run"),
            stdin=stdin,
            check=False,
            capture_output=True,
            text=True,
        )
    assert done.returncode == 0, done.stderr
    assert "nothing written" in done.stdout and not (tmp_path / "out").exists()


@pytest.mark.anyio
async def test_library_plan_decode(tmp_path: Path) -> None:
    plan = await plan_decode(SAMPLE_FSM, DecodeOptions(adapters="dynamodb"))
    assert list(plan.adapters) == ["dynamodb"]
    report = await decode_snapshot(SAMPLE_FSM, tmp_path / "t", DecodeOptions(adapters="dynamodb"))
    assert plan.adapters["dynamodb"].keys == report.counters["entries.dynamodb"]
    assert plan.internal == report.counters["entries.internal"]
    assert list(plan.adapters["dynamodb"].units) == ["orders"]
    assert plan.to_dict()["adapters"]["dynamodb"]["units"]["orders"]["keys"] == (
        plan.adapters["dynamodb"].keys
    )
