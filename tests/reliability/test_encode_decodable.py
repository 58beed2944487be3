"""What ``encode`` writes, ``decode`` must read: trees whose .fsm would not decode are refused."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from hostile import copy_tree, sample_tree

from elastickv_async import DataError, decode_snapshot, encode_snapshot


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_tree(tmp_path_factory.mktemp("sample"))


@pytest.mark.parametrize(("dirname", "name"), [("%2E%2E", ".."), ("%2E", "."), ("jobs", "..")])
def test_sqs_queue_named_dot_dot_is_refused_at_encode(
    sample: Path, tmp_path: Path, dirname: str, name: str
) -> None:
    tree = copy_tree(sample, tmp_path / "tree")
    queue = tree / "sqs" / "jobs"
    doc = json.loads((queue / "_queue.json").read_bytes())
    doc["name"] = name
    (queue / "_queue.json").write_text(json.dumps(doc))
    queue.rename(tree / "sqs" / dirname)
    out = tmp_path / "out.fsm"
    with pytest.raises(DataError, match=rf"sqs/{dirname}/_queue.json: queue name .* directory"):
        anyio.run(encode_snapshot, tree, out)
    assert not out.exists()


def test_sqs_dotted_queue_names_round_trip(sample: Path, tmp_path: Path) -> None:
    tree = copy_tree(sample, tmp_path / "tree")
    queue = tree / "sqs" / "jobs"
    doc = json.loads((queue / "_queue.json").read_bytes())
    doc["name"] = "..."
    (queue / "_queue.json").write_text(json.dumps(doc))
    queue.rename(tree / "sqs" / "...")
    anyio.run(encode_snapshot, tree, tmp_path / "out.fsm")
    anyio.run(decode_snapshot, tmp_path / "out.fsm", tmp_path / "again")
    assert json.loads((tmp_path / "again/sqs/.../_queue.json").read_bytes())["name"] == "..."
