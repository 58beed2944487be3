"""What ``encode`` writes, ``decode`` must read: trees whose .fsm would not decode are refused."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from hostile import SAMPLE_FSM, copy_tree, sample_tree, snapshot

from elastickv_async import DataError, EncodeOptions, decode_snapshot, encode_snapshot


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_tree(tmp_path_factory.mktemp("sample"))


#: The trees are edited by hand after decoding: their CHECKSUMS no longer match on purpose.
_EDITED = EncodeOptions(verify_checksums=False)


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
        anyio.run(encode_snapshot, tree, out, _EDITED)
    assert not out.exists()


def test_sqs_dotted_queue_names_round_trip(sample: Path, tmp_path: Path) -> None:
    tree = copy_tree(sample, tmp_path / "tree")
    queue = tree / "sqs" / "jobs"
    doc = json.loads((queue / "_queue.json").read_bytes())
    doc["name"] = "..."
    (queue / "_queue.json").write_text(json.dumps(doc))
    queue.rename(tree / "sqs" / "...")
    anyio.run(encode_snapshot, tree, tmp_path / "out.fsm", _EDITED)
    anyio.run(decode_snapshot, tmp_path / "out.fsm", tmp_path / "again")
    assert json.loads((tmp_path / "again/sqs/.../_queue.json").read_bytes())["name"] == "..."


def _seg(raw: bytes) -> bytes:
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00\x01"


@pytest.mark.parametrize("claimed", [1 << 60, 4, 0])
def test_s3_size_claim_is_checked_against_the_body(tmp_path: Path, claimed: int) -> None:
    bucket, obj, body = b"b", b"dir/k", b"hello"
    gen = (1).to_bytes(8, "big")
    part = {"part_no": 1, "chunk_count": 1, "chunk_sizes": [5], "size_bytes": 5}
    head = {"upload_id": "u", "parts": [part], "size_bytes": claimed, "content_type": "text/x"}
    fsm = tmp_path / "in.fsm"
    fsm.write_bytes(
        snapshot(
            [
                (b"!s3|bucket|meta|" + _seg(bucket), b'{"bucket_name": "b", "generation": 1}'),
                (b"!s3|obj|head|" + _seg(bucket) + gen + _seg(obj), json.dumps(head).encode()),
                (b"!s3|blob|" + _seg(bucket) + gen + _seg(obj) + _seg(b"u") + gen + bytes(8), body),
            ]
        )
    )
    report = anyio.run(decode_snapshot, fsm, tmp_path / "tree")
    sidecar = json.loads((tmp_path / "tree/s3/b/dir/k.elastickv-meta.json").read_bytes())
    assert sidecar == {"format_version": 1, "size_bytes": 5, "content_type": "text/x"}
    mismatch = report.warnings["s3_size_mismatch"]
    assert mismatch.count == 1
    assert mismatch.examples[0]["claimed"] == claimed
    assert mismatch.examples[0]["actual"] == 5
    # ...and so the decoded tree encodes, and decodes back to the same body.
    anyio.run(encode_snapshot, tmp_path / "tree", tmp_path / "out.fsm")
    again = anyio.run(decode_snapshot, tmp_path / "out.fsm", tmp_path / "again")
    assert (tmp_path / "again/s3/b/dir/k").read_bytes() == body
    assert "s3_size_mismatch" not in again.warnings


def test_s3_consistent_size_claim_has_no_warning(tmp_path: Path) -> None:
    report = anyio.run(decode_snapshot, SAMPLE_FSM, tmp_path / "tree")
    assert report.counters["s3.objects"] == 2
    assert "s3_size_mismatch" not in report.warnings
