"""The restore comparison itself, on hand-made states (no node needed).

A restore test is only as strict as the way it sorts differences: these pin that a real loss
stays unexplained, that a known kind is recognised only where it applies, and that a
time-dependent allowance covers only a missing name whose deadline may have passed.
"""

from __future__ import annotations

import copy
from typing import Any

from restore_state import Clock, Restore, explain, known_occurrences, restore_expectation
from statecompare import State, expectation_from_json

SNAPSHOT_MS = 1_795_312_289_900
DAY_MS = 86_400_000

DOC: dict[str, Any] = {
    "redis": {
        "keys": {
            "str:plain": {"type": "string", "value": {"utf8": "v"}, "client_expire_at_ms": None},
            "str:ttl": {
                "type": "string",
                "value": {"utf8": "t"},
                "client_expire_at_ms": SNAPSHOT_MS + 60_000,
                "pttl_ms_at_readback": 60_000,
            },
        }
    },
    "s3": {
        "buckets": {
            "b": {
                "objects": {},
                "incomplete_multipart_uploads": [
                    {"key": "mpu.bin", "upload_id": "u1", "parts": {"1": {"size": 5}}}
                ],
            }
        }
    },
    "sqs": {
        "queues": {
            "q": {
                "attributes_at_readback": {
                    "FifoQueue": "false",
                    "ContentBasedDeduplication": "false",
                    "VisibilityTimeout": "30",
                    "MessageRetentionPeriod": "86400",
                    "DelaySeconds": "0",
                    "ReceiveMessageWaitTimeSeconds": "0",
                    "MaximumMessageSize": "262144",
                    "CreatedTimestamp": str(SNAPSHOT_MS // 1000 - 60),
                    "LastModifiedTimestamp": str(SNAPSHOT_MS // 1000 - 60),
                },
                "messages": [
                    {
                        "message_id": "m1",
                        "body": "hello",
                        "md5_of_body": "5d41402abc4b2a76b9719d911017c592",
                        "message_attributes": {},
                        "group_id": None,
                        "sequence_number": None,
                        "dedup_id": None,
                        "receive_count": 1,
                        "state": "in_flight(visibility 600s from 1795312229)",
                    }
                ],
            }
        }
    },
}


def _restored(doc: dict[str, Any]) -> State:
    """What a default-mode restore read back right after the snapshot (nothing expired)."""
    state = expectation_from_json(doc).state
    state["redis"]["str:ttl"]["expire_at_ms"] = SNAPSHOT_MS + 60_000
    state["s3"]["b"]["creation_date"] = 0
    state["sqs"]["q/m1"]["receive_count"] = 1
    return state


def test_a_default_restore_is_fully_explained() -> None:
    """Bucket date, queue timestamps, in-flight receive count and the upload are known kinds."""
    clock = Clock(SNAPSHOT_MS, SNAPSHOT_MS + 1000, SNAPSHOT_MS + 2000)
    expected, may_expire = restore_expectation(DOC, clock)
    assert may_expire == {}
    found = explain(_restored(DOC), expected, may_expire)
    assert found.unexplained == []
    assert found.known == known_occurrences(DOC, may_expire)
    assert found.known["sqs_in_flight_message"] == {"sqs q/m1.receive_count"}


def test_a_lost_or_changed_value_stays_unexplained() -> None:
    """A missing key without a deadline and a changed value are not excused by anything."""
    clock = Clock(SNAPSHOT_MS, SNAPSHOT_MS + 1000, SNAPSHOT_MS + 2000)
    expected, may_expire = restore_expectation(DOC, clock)
    state = _restored(DOC)
    del state["redis"]["str:plain"]
    state["sqs"]["q/m1"]["body"] = b"changed"
    found = explain(state, expected, may_expire)
    assert found.unexplained == [
        "redis str:plain: missing",
        "sqs q/m1.body: expected b'hello', got b'changed'",
    ]


def test_a_fixed_known_difference_is_noticed() -> None:
    """When a later change restores the bucket date, the known kind no longer occurs."""
    clock = Clock(SNAPSHOT_MS, SNAPSHOT_MS + 1000, SNAPSHOT_MS + 2000)
    expected, may_expire = restore_expectation(DOC, clock)
    state = _restored(DOC)
    state["s3"]["b"]["creation_date"] = SNAPSHOT_MS // 1000 - 5
    found = explain(state, expected, may_expire)
    assert found.known != known_occurrences(DOC, may_expire)
    assert found.known["s3_bucket_creation_date"] == set()


def test_time_dependent_losses_need_a_passed_deadline() -> None:
    """Two days later the TTL key and the message may be gone; a day later only the key."""
    later = SNAPSHOT_MS + 2 * DAY_MS
    expected, may_expire = restore_expectation(DOC, Clock(SNAPSHOT_MS, later, later + 1000))
    state = _restored(DOC)
    del state["redis"]["str:ttl"], state["sqs"]["q/m1"]
    found = explain(state, expected, may_expire)
    assert found.unexplained == []
    assert sorted(found.expired) == ["redis str:ttl: missing", "sqs q/m1: missing"]
    assert found.known["sqs_in_flight_message"] == set()
    assert found.known == known_occurrences(DOC, may_expire)

    soon = SNAPSHOT_MS + DAY_MS // 2
    expected, may_expire = restore_expectation(DOC, Clock(SNAPSHOT_MS, soon, soon + 1000))
    state = _restored(copy.deepcopy(DOC))
    del state["sqs"]["q/m1"]
    found = explain(state, expected, may_expire)
    assert found.unexplained == ["sqs q/m1: missing"]


def test_a_rebased_restore_moves_every_deadline() -> None:
    """Two days later, rebased by those two days: nothing may be gone, and the TTL key's
    deadline is expected moved by the shift (the unshifted one is a difference)."""
    later = SNAPSHOT_MS + 2 * DAY_MS
    clock = Clock(SNAPSHOT_MS, later, later + 1000)
    expected, may_expire = restore_expectation(DOC, clock, Restore(shift_ms=2 * DAY_MS))
    assert may_expire == {}
    state = _restored(DOC)
    state["redis"]["str:ttl"]["expire_at_ms"] = SNAPSHOT_MS + 60_000 + 2 * DAY_MS
    assert explain(state, expected, may_expire).unexplained == []
    state["redis"]["str:ttl"]["expire_at_ms"] = SNAPSHOT_MS + 60_000
    assert explain(state, expected, may_expire).unexplained == [
        f"redis str:ttl.expire_at_ms: expected {SNAPSHOT_MS + 60_000 + 2 * DAY_MS}±1000, "
        f"got {SNAPSHOT_MS + 60_000}"
    ]


def _full_fidelity_restored(doc: dict[str, Any]) -> State:
    """What a full-fidelity restore read back: dates, timestamps and the upload kept, the
    in-flight message hidden."""
    state = expectation_from_json(doc, incomplete_uploads=True).state
    state["redis"]["str:ttl"]["expire_at_ms"] = SNAPSHOT_MS + 60_000
    state["s3"]["b"]["creation_date"] = SNAPSHOT_MS // 1000 - 60
    state["sqs"]["q"]["created_timestamp"] = SNAPSHOT_MS // 1000 - 60
    state["sqs"]["q"]["last_modified_timestamp"] = SNAPSHOT_MS // 1000 - 60
    del state["sqs"]["q/m1"]
    state["sqs"]["q"]["not_visible"] = 1
    return state


def test_a_full_fidelity_restore_has_no_known_difference() -> None:
    """Every known kind is gone; the in-flight message counts as not visible."""
    clock = Clock(SNAPSHOT_MS, SNAPSHOT_MS + 1000, SNAPSHOT_MS + 2000)
    expected, may_expire = restore_expectation(DOC, clock, Restore(full_fidelity=True))
    found = explain(_full_fidelity_restored(DOC), expected, may_expire)
    assert found.unexplained == []
    assert all(not names for names in found.known.values())


def test_a_full_fidelity_restore_must_keep_the_message_hidden() -> None:
    """An in-flight message that comes back visible is a difference in full-fidelity mode."""
    clock = Clock(SNAPSHOT_MS, SNAPSHOT_MS + 1000, SNAPSHOT_MS + 2000)
    expected, may_expire = restore_expectation(DOC, clock, Restore(full_fidelity=True))
    state = _full_fidelity_restored(DOC)
    state["sqs"]["q"]["not_visible"] = 0
    state["sqs"]["q/m1"] = _restored(DOC)["sqs"]["q/m1"]
    assert explain(state, expected, may_expire).unexplained == [
        "sqs q.not_visible: expected 1, got 0",
        "sqs q/m1: unexpected (not in the expected state)",
    ]
