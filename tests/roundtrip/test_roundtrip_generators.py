"""The property tests' generators agree with the golden corpus (the reference's own bytes).

The strategies restate file naming, S3 placement, HT-FIFO routing and the stream framing
instead of calling the adapters; these checks pin those restatements to reference output, so
a property failure points at the code under test rather than at the generator.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from roundtrip_stream import frame, mvcc, read_stream
from roundtrip_trees import (
    b64url,
    binary_segment,
    ddb_number_segment,
    fnv1a32,
    s3_placements,
    segment,
)
from support import shared_dir

SHARED = shared_dir()
pytestmark = pytest.mark.skipif(SHARED is None, reason="shared golden corpus not present")


def _encode_cases() -> list[Path]:
    if SHARED is None:
        return []
    cases = []
    for case in sorted((SHARED / "golden" / "public").glob("enc_*")):
        spec = json.loads((case / "case.json").read_text())
        if spec["expect_exit"] == 0:
            cases.append(case)
    return cases


CASES = _encode_cases()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_corpus_has_encode_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stream_builder_reproduces_encoder_output(case: Path) -> None:
    """Parsing an expected.fsm and framing its entries again gives the same bytes."""
    data = (case / "expected.fsm").read_bytes()
    last_commit_ts, versions = read_stream(data)
    assert frame(last_commit_ts, [mvcc(v) for v in reversed(versions)]) == data


def test_segment_names_match_redis_keymaps() -> None:
    """Every SHA-fallback name recorded in a golden Redis KEYMAP is segment(original)."""
    seen = 0
    for case in CASES:
        keymap = case / "input" / "redis" / "db_0" / "KEYMAP.jsonl"
        if not keymap.is_file():
            continue
        for line in keymap.read_text().splitlines():
            record = json.loads(line)
            assert segment(_b64url_decode(record["original"])) == record["encoded"]
            seen += 1
    assert seen >= 3


def _ddb_segment(value: dict[str, str]) -> str:
    ((kind, raw),) = value.items()
    if kind == "S":
        return segment(raw.encode())
    if kind == "N":
        return ddb_number_segment(raw)
    return binary_segment(base64.b64decode(raw))


def test_dynamodb_paths_match_golden_trees() -> None:
    """Table directories and item file paths follow from the schema and the key attributes."""
    checked = 0
    for case in CASES:
        root = case / "input" / "dynamodb"
        if not root.is_dir():
            continue
        for table_dir in root.iterdir():
            schema = json.loads((table_dir / "_schema.json").read_text())
            assert segment(schema["table_name"].encode()) == table_dir.name
            hash_name = schema["primary_key"]["hash_key"]["name"]
            range_name = schema["primary_key"]["range_key"].get("name")
            for item_file in (table_dir / "items").rglob("*.json"):
                item = json.loads(item_file.read_text())
                expected = _ddb_segment(item[hash_name])
                if range_name:
                    expected += "/" + _ddb_segment(item[range_name])
                assert item_file.relative_to(table_dir / "items").as_posix() == expected + ".json"
                checked += 1
    assert checked >= 30


def test_s3_placements_match_golden_trees() -> None:
    """Bodies sit where s3_placements puts their keys, renamed keys as KEYMAP records say."""
    checked = 0
    for case in CASES:
        root = case / "input" / "s3"
        if not root.is_dir():
            continue
        for bucket in root.iterdir():
            bodies = {
                p.relative_to(bucket).as_posix()
                for p in bucket.rglob("*")
                if p.is_file()
                and not p.name.endswith(".elastickv-meta.json")
                and p.relative_to(bucket).as_posix() not in ("_bucket.json", "KEYMAP.jsonl")
            }
            renamed = {}
            keymap = bucket / "KEYMAP.jsonl"
            if keymap.is_file():
                for line in keymap.read_text().splitlines():
                    record = json.loads(line)
                    original = _b64url_decode(record["original"]).decode()
                    renamed[original] = (record["encoded"], record["kind"])
            keys = (bodies - {path for path, _ in renamed.values()}) | renamed.keys()
            placements = s3_placements(sorted(keys))
            assert {path for path, _ in placements.values()} == bodies
            assert {k: v for k, v in placements.items() if v[1] is not None} == renamed
            checked += len(keys)
    assert checked >= 10


def test_htfifo_partitions_match_golden_tree() -> None:
    """The partition of every HT-FIFO message is FNV-1a 32 of its group, masked."""
    case = next(c for c in CASES if c.name == "enc_sqs_htfifo")
    queue = json.loads((case / "input" / "sqs" / "ht.fifo" / "_queue.json").read_text())
    lines = (case / "input" / "sqs" / "ht.fifo" / "messages.jsonl").read_text().splitlines()
    assert lines
    for line in lines:
        msg = json.loads(line)
        mask = queue["partition_count"] - 1
        assert msg["partition"] == fnv1a32(msg["message_group_id"].encode()) & mask


def test_b64url_has_no_padding() -> None:
    assert b64url(b"\xff\xfe") == "__4"
