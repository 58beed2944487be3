"""A fast, seeded slice of the mutation fuzzing that ``scripts/fuzz.py`` runs at length."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import anyio
import pytest
from fuzzlib import fuzz_snapshot, fuzz_tree, mutate
from hostile import SAMPLE_FSM

from elastickv_async import decode_snapshot


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "tree"
    anyio.run(decode_snapshot, SAMPLE_FSM, out)
    return out


def _work(tmp_path: Path) -> Path:
    work = tmp_path / "trial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return work


def test_mutator_is_seeded_and_changes_its_input() -> None:
    data = SAMPLE_FSM.read_bytes()[:4096]
    first = [mutate(random.Random(3), data) for _ in range(2)]
    assert first[0] == first[1]
    assert sum(mutate(random.Random(i), data) != data for i in range(50)) >= 45


def test_mutated_snapshots(tmp_path: Path) -> None:
    rng = random.Random(20261205)
    seed = SAMPLE_FSM.read_bytes()
    outcomes = []
    for i in range(40):
        outcome, problems = fuzz_snapshot(rng, seed, _work(tmp_path))
        assert problems == [], i
        outcomes.append(outcome)
    assert "crashed" not in outcomes
    assert {"refused", "decoded"} <= set(outcomes)  # both paths were exercised


def test_mutated_trees(tree: Path, tmp_path: Path) -> None:
    rng = random.Random(20261206)
    outcomes = []
    for i in range(30):
        outcome, problems = fuzz_tree(rng, tree, _work(tmp_path))
        assert problems == [], i
        outcomes.append(outcome)
    assert "crashed" not in outcomes
    assert {"refused", "encoded"} <= set(outcomes)
