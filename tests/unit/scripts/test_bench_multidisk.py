"""The multi-disk benchmark's timing loop (``scripts/bench_multidisk.py``), without a decode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))

import bench_multidisk
import bench_reference


def test_layouts_alternate_and_every_tree_outlives_the_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run right after a big tree is deleted pays for the deletion in inode allocation,
    # more for the layout with more files on that disk: no tree may go while runs remain.
    seen: list[tuple[str, list[str]]] = []

    def fake_run(argv: list[str], log: Path) -> bench_reference.Run:
        seen.append((argv[0], sorted(p.name for p in tmp_path.iterdir())))
        for out in argv[1:]:
            Path(out).mkdir()
        return bench_reference.Run(1.0, 1)

    def layout(name: str) -> bench_multidisk.Layout:
        def make(label: str) -> tuple[list[str], list[Path]]:
            outs = [tmp_path / f"{name}-{label}-{part}" for part in ("main", "other")]
            return [name, *map(str, outs)], outs

        return make

    monkeypatch.setattr(bench_multidisk, "run_child", fake_run)
    written: list[Path] = []
    timed = bench_multidisk._alternate(
        {"one": layout("one"), "split": layout("split")}, 3, tmp_path / "log", written
    )

    assert {name: len(runs) for name, runs in timed.items()} == {"one": 3, "split": 3}
    assert [who for who, _ in seen] == ["one", "split", "split", "one", "one", "split"]
    # Each run sees every tree written before it.
    for i, (_, present) in enumerate(seen):
        assert len(present) == 2 * i
    assert sorted(p.name for p in written) == sorted(p.name for p in tmp_path.iterdir())
    assert len(written) == 12
