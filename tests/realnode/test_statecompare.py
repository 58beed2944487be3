"""The semantic comparison itself, on small hand-made dump trees and expectations."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from statecompare import compare, expectation_from_json, load_tree

HELLO_SHA256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
HELLO_MD5 = "5d41402abc4b2a76b9719d911017c592"
DEADLINE = 1_700_000_000_000

#: One record of every kind, written the way the decoder writes them.
TREE: dict[str, Any] = {
    "dynamodb/t/_schema.json": {
        "format_version": 1,
        "table_name": "t",
        "primary_key": {"hash_key": {"name": "id", "type": "N"}, "range_key": {}},
        "attribute_definitions": [{"name": "id", "type": "N"}],
    },
    "dynamodb/t/items/1.json": {
        "id": {"N": "1"},
        "score": {"N": "2.50"},
        "tags": {"SS": ["b", "a"]},
        "nums": {"NS": ["10", "1.0"]},
        "m": {"M": {"x": {"N": "1e1"}, "l": {"L": [{"B": "AP8="}, {"NULL": True}]}}},
    },
    "s3/b/_bucket.json": {"format_version": 1, "name": "b", "region": "us-east-1"},
    "s3/b/dir/hello.txt": b"hello",
    "s3/b/dir/hello.txt.elastickv-meta.json": {
        "format_version": 1,
        "etag": HELLO_MD5,
        "size_bytes": 5,
        "content_type": "text/plain",
        "user_metadata": {"owner": "bob"},
    },
    "redis/db_0/strings/k%3As.bin": b"\x00\xff",
    "redis/db_0/strings_ttl.jsonl": f'{{"key":"k%3As","expire_at_ms":{DEADLINE}}}\n',
    "redis/db_0/hashes/h.json": {
        "format_version": 1,
        "fields": [{"name": "f", "value": {"base64": "_wA"}}, {"name": "g", "value": "x"}],
        "expire_at_ms": None,
    },
    "redis/db_0/sets/s.json": {"format_version": 1, "members": ["m2", "m1"], "expire_at_ms": None},
    "redis/db_0/lists/l.json": {"format_version": 1, "items": ["a", "b"], "expire_at_ms": None},
    "redis/db_0/zsets/z.json": {
        "format_version": 1,
        "members": [{"member": "a", "score": 11}, {"member": "b", "score": "-inf"}],
        "expire_at_ms": DEADLINE,
    },
    "redis/db_0/streams/st.jsonl": (
        '{"id":"5-0","fields":[{"name":"f","value":"v"},{"name":"n","value":"1"}]}\n'
        '{"_meta":true,"length":1,"last_ms":5,"last_seq":0,"expire_at_ms":null}\n'
    ),
    "sqs/q/_queue.json": {
        "format_version": 1,
        "name": "q",
        "visibility_timeout_seconds": 30,
        "message_retention_seconds": 345600,
        "delay_seconds": 0,
        "maximum_message_size": 262144,
    },
    "sqs/q/messages.jsonl": json.dumps(
        {
            "message_id": "m1",
            "body": "hi",
            "md5_of_body": "49f68a5c8493ec2c0bf489821c21fc3b",
            "message_attributes": {"blob": {"DataType": "Binary", "BinaryValue": "AP8="}},
            "receive_count": 0,
        }
    )
    + "\n",
}

#: The client's record of the one in-flight message of TREE (receive count and visibility are
#: what a decode resets).
IN_FLIGHT: dict[str, Any] = {
    "message_id": "m1",
    "body": "hi",
    "md5_of_body": "49f68a5c8493ec2c0bf489821c21fc3b",
    "message_attributes": {"blob": {"DataType": "Binary", "BinaryValue": {"b64": "AP8="}}},
    "group_id": None,
    "dedup_id": None,
    "sequence_number": None,
    "receive_count": 1,
    "state": "in_flight(visibility 600s from 1795312262)",
}

#: The client-side view of exactly TREE, in the expected.json shapes.
EXPECTED: dict[str, Any] = {
    "dynamodb": {
        "tables": {
            "t": {
                "key_schema": [{"AttributeName": "id", "KeyType": "HASH"}],
                "attribute_definitions": [{"AttributeName": "id", "AttributeType": "N"}],
                "global_secondary_indexes": [],
                "items": [
                    {
                        "id": {"N": "1.0"},
                        "score": {"N": "2.5"},
                        "tags": {"SS": ["a", "b"]},
                        "nums": {"NS": ["1", "1e1"]},
                        "m": {"M": {"x": {"N": "10"}, "l": {"L": [{"B": "AP8="}, {"NULL": True}]}}},
                    }
                ],
            }
        }
    },
    "s3": {
        "buckets": {
            "b": {
                "objects": {
                    "dir/hello.txt": {
                        "sha256": HELLO_SHA256,
                        "size": 5,
                        "etag": f'"{HELLO_MD5}"',
                        "content_type": "text/plain",
                        "metadata": {"Owner": "bob"},
                    }
                },
                "incomplete_multipart_uploads": [],
            }
        }
    },
    "redis": {
        "keys": {
            "k:s": {
                "type": "string",
                "value": {"b64": "AP8="},
                "client_expire_at_ms": DEADLINE,
                "pttl_ms_at_readback": 5000,
            },
            "h": {
                "type": "hash",
                "value": {"f": {"b64": "/wA="}, "g": {"utf8": "x"}},
                "client_expire_at_ms": None,
                "pttl_ms_at_readback": -1,
            },
            "s": {"type": "set", "value": ["m1", "m2"], "client_expire_at_ms": None},
            "l": {"type": "list", "value": [{"utf8": "a"}, {"utf8": "b"}]},
            "z": {
                "type": "zset",
                "value": [["b", float("-inf")], ["a", 11.0]],
                "client_expire_at_ms": DEADLINE,
            },
            "st": {
                "type": "stream",
                "value": [{"id": "5-0", "fields": {"n": {"utf8": "1"}, "f": {"utf8": "v"}}}],
            },
            "gone": {"absent": True, "type": "none"},
        },
        "optional_key_prefixes": ["snapmarker:"],
    },
    "sqs": {
        "queues": {
            "q": {
                "attributes_at_readback": {
                    "FifoQueue": "false",
                    "ContentBasedDeduplication": "false",
                    "VisibilityTimeout": "30",
                    "MessageRetentionPeriod": "345600",
                    "DelaySeconds": "0",
                    "ReceiveMessageWaitTimeSeconds": "0",
                    "MaximumMessageSize": "262144",
                },
                "messages": [
                    IN_FLIGHT,
                    dict(IN_FLIGHT, message_id="m0", body="old", state="deleted"),
                ],
            }
        }
    },
    "deleted_so_far": {"ddb_tables": ["dropped"], "s3_objects": ["b/old.txt (phase4)"]},
}


def _write(root: Path, tree: dict[str, Any]) -> Path:
    for rel, content in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(json.dumps(content), encoding="utf-8")
    return root


def _run(
    tmp_path: Path,
    tree: dict[str, Any] | None = None,
    expected: dict[str, Any] | None = None,
    **options: bool,
) -> list[str]:
    state = load_tree(_write(tmp_path / "tree", TREE if tree is None else tree))
    return compare(
        state, expectation_from_json(EXPECTED if expected is None else expected, **options)
    )


def test_a_tree_equal_to_the_expectation_has_no_discrepancies(tmp_path: Path) -> None:
    # Also: numbers equal numerically (1 = 1.0, 2.50 = 2.5, 1e1 = 10), sets in any order,
    # binary envelopes of either side, stream fields by name, S3 etag quotes and
    # metadata-name case, SQS omitempty queue fields and reset receive counts.
    assert _run(tmp_path) == []


def test_an_empty_tree_misses_everything(tmp_path: Path) -> None:
    assert _run(tmp_path, tree={}) == [
        "dynamodb t: missing",
        "dynamodb t/[N:1]: missing",
        "s3 b: missing",
        "s3 b/dir/hello.txt: missing",
        "redis h: missing",
        "redis k:s: missing",
        "redis l: missing",
        "redis s: missing",
        "redis st: missing",
        "redis z: missing",
        "sqs q: missing",
        "sqs q/m1: missing",
    ]


# --- DynamoDB ---


def test_a_different_number_is_a_discrepancy(tmp_path: Path) -> None:
    item = dict(TREE["dynamodb/t/items/1.json"], score={"N": "2.51"})
    assert _run(tmp_path, dict(TREE) | {"dynamodb/t/items/1.json": item}) == [
        "dynamodb t/[N:1].score: expected ('N', Decimal('2.5')), got ('N', Decimal('2.51'))"
    ]


def test_a_number_set_member_and_a_type_change_are_discrepancies(tmp_path: Path) -> None:
    item = dict(TREE["dynamodb/t/items/1.json"], nums={"NS": ["1", "11"]}, tags={"S": "a"})
    tree = dict(TREE) | {"dynamodb/t/items/1.json": item}
    assert _run(tmp_path, tree) == [
        "dynamodb t/[N:1].nums: expected ('NS', {Decimal('1'), Decimal('1E+1')}), "
        "got ('NS', {Decimal('1'), Decimal('11')})",
        "dynamodb t/[N:1].tags: expected ('SS', {'a', 'b'}), got ('S', 'a')",
    ]


def test_items_are_named_by_their_key_attributes_not_their_file_names(tmp_path: Path) -> None:
    tree = dict(TREE)
    tree["dynamodb/t/items/renamed.json"] = tree.pop("dynamodb/t/items/1.json")
    tree["dynamodb/t/items/2.json"] = {"id": {"N": "2"}}
    assert _run(tmp_path, tree) == ["dynamodb t/[N:2]: unexpected (not in the expected state)"]


def test_a_dropped_tables_items_are_reported_as_deleted(tmp_path: Path) -> None:
    tree = dict(TREE)
    tree["dynamodb/dropped/_schema.json"] = dict(
        TREE["dynamodb/t/_schema.json"], table_name="dropped"
    )
    tree["dynamodb/dropped/items/7.json"] = {"id": {"N": "7"}}
    deleted = "present, but deleted, purged, dropped, aborted or excluded"
    assert _run(tmp_path, tree) == [
        f"dynamodb dropped: {deleted}",
        f"dynamodb dropped/[N:7]: {deleted}",
    ]


def test_a_schema_difference_is_a_discrepancy(tmp_path: Path) -> None:
    schema = copy.deepcopy(TREE["dynamodb/t/_schema.json"])
    schema["primary_key"]["range_key"] = {"name": "r", "type": "S"}
    assert _run(tmp_path, dict(TREE) | {"dynamodb/t/_schema.json": schema}) == [
        "dynamodb t.range_key: expected None, got 'r'",
        "dynamodb t/[N:1, ?]: unexpected (not in the expected state)",
        "dynamodb t/[N:1]: missing",
    ]


# --- S3 ---


def test_a_different_body_is_caught_by_sha256_and_size(tmp_path: Path) -> None:
    assert _run(tmp_path, dict(TREE) | {"s3/b/dir/hello.txt": b"hello!"}) == [
        f"s3 b/dir/hello.txt.sha256: expected {HELLO_SHA256!r}, "
        "got 'ce06092fb948d9ffac7d1a376e404b26b7575bcc11ee05a4615fef4fec3a308b'",
        "s3 b/dir/hello.txt.size: expected 5, got 6",
    ]


def test_sidecar_fields_are_compared(tmp_path: Path) -> None:
    sidecar = {"format_version": 1, "etag": "x", "size_bytes": 4, "user_metadata": {"Owner": "al"}}
    assert _run(tmp_path, dict(TREE) | {"s3/b/dir/hello.txt.elastickv-meta.json": sidecar}) == [
        "s3 b/dir/hello.txt.content_type: expected 'text/plain', got ''",
        f"s3 b/dir/hello.txt.etag: expected {HELLO_MD5!r}, got 'x'",
        "s3 b/dir/hello.txt.size_bytes: expected 5, got 4",
        "s3 b/dir/hello.txt.user_metadata.owner: expected 'bob', got 'al'",
    ]


def test_a_deleted_object_and_a_dump_control_file_are_told_apart(tmp_path: Path) -> None:
    tree = dict(TREE) | {
        "s3/b/old.txt": b"",
        "s3/b/KEYMAP.jsonl": "",
        "s3/b/_orphans/x/gen-1/c.bin": b"zz",
    }
    assert _run(tmp_path, tree) == [
        "s3 b/old.txt: present, but deleted, purged, dropped, aborted or excluded"
    ]


def _segment(raw: bytes) -> bytes:
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def _upload_record(kind: str, obj: bytes, value: dict[str, Any], part: int | None) -> str:
    prefix = f"!s3|upload|{kind}|"
    key = prefix.encode() + _segment(b"b") + (1).to_bytes(8, "big") + _segment(obj)
    key += _segment(b"u-1") + (b"" if part is None else part.to_bytes(8, "big"))
    return json.dumps(
        {
            "prefix": prefix,
            "key": base64.b64encode(key).decode(),
            "value": base64.b64encode(json.dumps(value).encode()).decode(),
        }
    )


UPLOAD_RECORDS = "\n".join(
    [
        _upload_record("meta", b"mpu/a\x00b", {"upload_id": "u-1"}, None),
        _upload_record("part", b"mpu/a\x00b", {"part_no": 1, "size_bytes": 5}, 1),
        _upload_record("part", b"mpu/a\x00b", {"part_no": 2, "size_bytes": 7}, 2),
    ]
)
EXPECTED_UPLOAD = {
    "key": "mpu/a\x00b",
    "upload_id": "u-1",
    "parts": {"1": {"size": 5, "sha256": "-"}, "2": {"size": 7, "sha256": "-"}},
}


def _with_upload(expected: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(expected)
    out["s3"]["buckets"]["b"]["incomplete_multipart_uploads"] = [EXPECTED_UPLOAD]
    out["s3"]["buckets"]["b"]["aborted_multipart_uploads"] = ["mpu/ab.bin (then aborted)"]
    return out


def test_incomplete_uploads_must_be_present_with_the_flag_and_absent_without(
    tmp_path: Path,
) -> None:
    with_records = dict(TREE) | {"s3/b/_incomplete_uploads/records.jsonl": UPLOAD_RECORDS}
    expected = _with_upload(EXPECTED)
    assert _run(tmp_path / "1", with_records, expected, incomplete_uploads=True) == []
    assert _run(tmp_path / "2", TREE, expected, incomplete_uploads=True) == [
        "s3 b/mpu/a\x00b (incomplete upload): missing"
    ]
    assert _run(tmp_path / "3", with_records, expected) == [
        "s3 b/mpu/a\x00b (incomplete upload): present, but deleted, purged, dropped, aborted "
        "or excluded"
    ]


def test_an_upload_part_size_difference_and_an_aborted_upload_are_discrepancies(
    tmp_path: Path,
) -> None:
    records = UPLOAD_RECORDS.replace(
        base64.b64encode(json.dumps({"part_no": 2, "size_bytes": 7}).encode()).decode(),
        base64.b64encode(json.dumps({"part_no": 2, "size_bytes": 8}).encode()).decode(),
    )
    records += "\n" + _upload_record("meta", b"mpu/ab.bin", {}, None)
    tree = dict(TREE) | {"s3/b/_incomplete_uploads/records.jsonl": records}
    assert _run(tmp_path, tree, _with_upload(EXPECTED), incomplete_uploads=True) == [
        "s3 b/mpu/a\x00b (incomplete upload).parts.2: expected 7, got 8",
        "s3 b/mpu/ab.bin (incomplete upload): present, but deleted, purged, dropped, aborted "
        "or excluded",
    ]


# --- Redis ---


@pytest.mark.parametrize(
    ("dumped", "discrepancy"),
    [
        (DEADLINE - 1000, None),
        (DEADLINE + 1000, None),
        (DEADLINE - 1001, f"got {DEADLINE - 1001}"),
        (DEADLINE + 1001, f"got {DEADLINE + 1001}"),
    ],
)
def test_ttls_match_within_one_second(tmp_path: Path, dumped: int, discrepancy: str | None) -> None:
    ttl = f'{{"key":"k%3As","expire_at_ms":{dumped}}}\n'
    found = _run(tmp_path, dict(TREE) | {"redis/db_0/strings_ttl.jsonl": ttl})
    want = (
        []
        if discrepancy is None
        else [f"redis k:s.expire_at_ms: expected {DEADLINE}±1000, {discrepancy}"]
    )
    assert found == want


def test_a_lost_ttl_and_an_extra_ttl_are_discrepancies(tmp_path: Path) -> None:
    tree = dict(TREE) | {
        "redis/db_0/strings_ttl.jsonl": "",
        "redis/db_0/lists/l.json": {
            "format_version": 1,
            "items": ["a", "b"],
            "expire_at_ms": DEADLINE,
        },
    }
    assert _run(tmp_path, tree) == [
        "redis k:s.expire_at_ms: expected 1700000000000±1000, got None",
        f"redis l.expire_at_ms: expected None, got {DEADLINE}",
    ]


def test_a_ttl_known_only_relative_to_the_read_back_is_refused() -> None:
    doc = {"redis": {"keys": {"k": {"type": "string", "value": "v", "pttl_ms_at_readback": 5}}}}
    with pytest.raises(ValueError, match="client_expire_at_ms"):
        expectation_from_json(doc)


def test_redis_values_are_compared_per_type(tmp_path: Path) -> None:
    tree = dict(TREE) | {
        "redis/db_0/lists/l.json": {"format_version": 1, "items": ["b", "a"], "expire_at_ms": None},
        "redis/db_0/sets/s.json": {
            "format_version": 1,
            "members": ["m1", "m3"],
            "expire_at_ms": None,
        },
        "redis/db_0/zsets/z.json": {
            "format_version": 1,
            "members": [{"member": "a", "score": 11.5}, {"member": "b", "score": "-inf"}],
            "expire_at_ms": DEADLINE,
        },
    }
    assert _run(tmp_path, tree) == [
        "redis l.value: expected (b'a', b'b'), got (b'b', b'a')",
        "redis s.value: members missing {b'm2'}, unexpected {b'm3'}",
        "redis z.value.a: expected 11.0, got 11.5",
    ]


def test_a_type_change_is_a_discrepancy(tmp_path: Path) -> None:
    tree = {k: v for k, v in TREE.items() if k != "redis/db_0/lists/l.json"}
    tree["redis/db_0/sets/l.json"] = {
        "format_version": 1,
        "members": ["a", "b"],
        "expire_at_ms": None,
    }
    assert _run(tmp_path, tree) == [
        "redis l.type: expected 'list', got 'set'",
        "redis l.value: expected (b'a', b'b'), got {b'a', b'b'}",
    ]


def test_an_absent_key_that_comes_back_is_reported(tmp_path: Path) -> None:
    assert _run(tmp_path, dict(TREE) | {"redis/db_0/strings/gone.bin": b"x"}) == [
        "redis gone: present, but deleted, purged, dropped, aborted or excluded"
    ]


def test_a_deleted_then_recreated_key_must_be_present(tmp_path: Path) -> None:
    expected = copy.deepcopy(EXPECTED)
    expected["deleted_so_far"]["redis_keys"] = ["h (phase4)", "l"]
    del expected["redis"]["keys"]["l"]
    tree = {k: v for k, v in TREE.items() if k != "redis/db_0/hashes/h.json"}
    assert _run(tmp_path, tree, expected) == [
        "redis h: missing",
        "redis l: present, but deleted, purged, dropped, aborted or excluded",
    ]


def test_marker_keys_are_optional_both_ways(tmp_path: Path) -> None:
    expected = copy.deepcopy(EXPECTED)
    expected["redis"]["keys"]["snapmarker:p1:0001"] = {"type": "string", "value": "1"}
    tree = dict(TREE) | {"redis/db_0/strings/snapmarker%3Ap1%3A0000.bin": b"1"}
    assert _run(tmp_path, tree, expected) == []


def test_a_sha_fallback_name_is_resolved_through_the_keymap(tmp_path: Path) -> None:
    stem = "0123456789abcdef0123456789abcdef__gone"
    keymap = json.dumps({"encoded": stem, "original": "Z29uZQ", "kind": "sha-fallback"}) + "\n"
    tree = dict(TREE) | {f"redis/db_0/strings/{stem}.bin": b"x", "redis/db_0/KEYMAP.jsonl": keymap}
    assert _run(tmp_path, tree) == [
        "redis gone: present, but deleted, purged, dropped, aborted or excluded"
    ]


# --- SQS ---


def _messages(*records: dict[str, Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_deleted_messages_must_be_absent_and_live_ones_present(tmp_path: Path) -> None:
    old = {"message_id": "m0", "body": "old", "md5_of_body": "-"}
    assert _run(tmp_path, dict(TREE) | {"sqs/q/messages.jsonl": _messages(old)}) == [
        "sqs q/m0: present, but deleted, purged, dropped, aborted or excluded",
        "sqs q/m1: missing",
    ]


def test_message_fields_are_compared(tmp_path: Path) -> None:
    message = json.loads(TREE["sqs/q/messages.jsonl"])
    message |= {
        "body": {"base64": "aGk"},  # "hi" in the binary envelope: equal
        "message_attributes": {"blob": {"DataType": "Binary", "BinaryValue": "AP4="}},
        "message_group_id": "g1",
        "message_deduplication_id": "d1",
        "sequence_number": 3,
    }
    assert _run(tmp_path, dict(TREE) | {"sqs/q/messages.jsonl": _messages(message)}) == [
        "sqs q/m1.dedup_id: unexpected 'd1'",
        "sqs q/m1.group_id: expected None, got 'g1'",
        "sqs q/m1.message_attributes.blob: expected ('Binary', b'\\x00\\xff'), "
        "got ('Binary', b'\\x00\\xfe')",
        "sqs q/m1.sequence_number: expected None, got 3",
    ]


def test_a_duplicated_message_is_reported(tmp_path: Path) -> None:
    message = json.loads(TREE["sqs/q/messages.jsonl"])
    assert _run(tmp_path, dict(TREE) | {"sqs/q/messages.jsonl": _messages(message, message)}) == [
        "sqs q/m1 (duplicate #2): unexpected (not in the expected state)"
    ]


def test_queue_attributes_default_like_go_omitempty(tmp_path: Path) -> None:
    queue = dict(TREE["sqs/q/_queue.json"], fifo=True, receive_message_wait_seconds=20)
    assert _run(tmp_path, dict(TREE) | {"sqs/q/_queue.json": queue}) == [
        "sqs q.fifo: expected False, got True",
        "sqs q.receive_message_wait_seconds: expected 0, got 20",
    ]
