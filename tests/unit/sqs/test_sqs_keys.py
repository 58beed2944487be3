"""SQS key layouts: parsing both message-key shapes, side records, malformed keys, builders.

Expected bytes come from the golden corpus (``enc_sqs_htfifo``/``enc_sqs`` expected.fsm,
``sqs_orphan_side`` key_hex values) or from the layout in REFERENCE_NOTES §3.4 by hand.
"""

from __future__ import annotations

import pytest
from support import raises_code

from elastickv_async._adapters.sqs import keys
from elastickv_async._core.errors import AdapterRecordError

GEN1 = b"\x00" * 7 + b"\x01"


def test_classic_message_key() -> None:
    """``<b64 queue><gen><b64 id>``: the queue ends at the generation's first byte."""
    key = b"!sqs|msg|data|am9icw" + GEN1 + b"bTE"  # queue "jobs", id "m1"
    assert keys.message_data_queue(key) == ("am9icw", None)


def test_partitioned_message_key() -> None:
    """``p|<b64 queue>|<u32 partition><gen><b64 id>`` yields the partition."""
    key = b"!sqs|msg|data|p|aHQuZmlmbw|\x00\x00\x00\x03" + GEN1 + b"aDI"
    assert keys.message_data_queue(key) == ("aHQuZmlmbw", 3)


def test_partition_bytes_may_contain_the_terminator() -> None:
    """Partition 0x7c7c7c7c holds '|' bytes; only the first '|' ends the queue segment."""
    key = b"!sqs|msg|data|p|cQ|||||" + GEN1 + b"aWQ"
    assert keys.message_data_queue(key) == ("cQ", 0x7C7C7C7C)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        (b"!sqs|msg|data|" + GEN1 + b"bTE", "empty queue segment"),
        (b"!sqs|msg|data|am9icw", "no generation"),
        (b"!sqs|msg|data|am9icw" + GEN1, "no generation"),  # empty message id
        (b"!sqs|msg|data|am9icw" + GEN1 + b"b", "impossible base64url length"),
        (b"!sqs|msg|data|am9icw" + GEN1 + b"b=E", "not base64url"),
        (b"!sqs|msg|data|a" + GEN1 + b"bTE", "impossible base64url length"),
        (b"!sqs|msg|data|p|aHQuZmlmbw" + b"\x00" * 12 + b"aDI", "terminated by '|'"),
        (b"!sqs|msg|data|p||" + b"\x00" * 12 + b"aDI", "terminated by '|'"),
        (b"!sqs|msg|data|p|aHQ+Zmlmbw|" + b"\x00" * 12 + b"aDI", "not base64url"),
        (b"!sqs|msg|data|p|aHQuZmlmbw|" + b"\x00" * 11, "shorter than partition"),
        (b"!sqs|msg|data|p|aHQuZmlmbw|" + b"\x00" * 12, "no message-id"),
    ],
)
def test_malformed_message_keys(key: bytes, why: str) -> None:
    """Every malformed data key is a typed error naming the key."""
    with raises_code(AdapterRecordError, "ErrSQSMalformedKey", match=why) as info:
        keys.message_data_queue(key)
    assert repr(key[:20])[2:-1] in str(info.value)


def test_side_record_queue_with_trailer() -> None:
    """Classic side keys: queue segment then a binary trailer (key from sqs_orphan_side)."""
    key = bytes.fromhex("217371737c6d73677c62796167657c62476c325a51000000000000000278")
    assert keys.side_record_queue(key, keys.MSG_BYAGE_PREFIX) == "bGl2ZQ"


def test_live_sequence_counter_key_has_no_trailer() -> None:
    """``!sqs|queue|seq|<b64>`` (what the live adapter writes) is accepted (reference aborts)."""
    assert keys.side_record_queue(b"!sqs|queue|seq|cS1maWZvLmZpZm8", keys.QUEUE_SEQ_PREFIX) == (
        "cS1maWZvLmZpZm8"
    )


def test_partitioned_side_record() -> None:
    """Partitioned vis key: the queue comes from between ``p|`` and ``|``."""
    key = b"!sqs|msg|vis|p|aHQuZmlmbw|" + b"\x00\x00\x00\x01" + GEN1 + b"\x00" * 8 + b"aDA"
    assert keys.side_record_queue(key, keys.MSG_VIS_PREFIX) == "aHQuZmlmbw"


@pytest.mark.parametrize(
    ("prefix", "rest", "why"),
    [
        (keys.MSG_VIS_PREFIX, b"cQ", "no trailer"),
        (keys.QUEUE_TOMBSTONE_PREFIX, b"cQ", "no trailer"),
        (keys.MSG_GROUP_PREFIX, GEN1, "empty queue segment"),
        (keys.QUEUE_SEQ_PREFIX, b"", "empty queue segment"),
        (keys.MSG_DEDUP_PREFIX, b"p|cQ|" + b"\x00" * 11, "shorter than partition"),
    ],
)
def test_malformed_side_record_keys(prefix: bytes, rest: bytes, why: str) -> None:
    """Side keys without a queue segment or trailer are typed errors."""
    with raises_code(AdapterRecordError, "ErrSQSMalformedKey", match=why):
        keys.side_record_queue(prefix + rest, prefix)


def test_queue_key_segment() -> None:
    """Meta and gen keys: the whole rest is the queue segment."""
    assert keys.queue_key_segment(b"!sqs|queue|meta|cS1wdXJnZWQ", keys.QUEUE_META_PREFIX) == (
        "cS1wdXJnZWQ",
        b"q-purged",
    )
    for bad in (b"", b"cS1wd+JnZWQ", b"cS1wdXJnZWQ" + GEN1, b"abcde"):
        with raises_code(AdapterRecordError, "ErrSQSMalformedKey"):
            keys.queue_key_segment(keys.QUEUE_GEN_PREFIX + bad, keys.QUEUE_GEN_PREFIX)


def test_builders_match_golden_keys() -> None:
    """Key builders reproduce keys of the reference encoder's output (enc_sqs*, expected.fsm)."""
    ht, p1 = b"ht.fifo", 1
    assert keys.message_data_key(ht, p1, 1, b"h0") == (
        b"!sqs|msg|data|p|aHQuZmlmbw|\x00\x00\x00\x01" + GEN1 + b"aDA"
    )
    assert keys.message_dedup_key(ht, p1, 1, b"group-0", b"dd0") == (
        b"!sqs|msg|dedup|p|aHQuZmlmbw|\x00\x00\x00\x01" + GEN1 + b"Z3JvdXAtMA|ZGQw"
    )
    assert keys.message_byage_key(b"jobs", None, 1, 1700000000000, b"m1") == (
        b"!sqs|msg|byage|am9icw" + GEN1 + b"\x00\x00\x01\x8b\xcf\xe5h\x00bTE"
    )
    assert keys.message_vis_key(b"jobs", None, 1, -5, b"m1") == (
        b"!sqs|msg|vis|am9icw" + GEN1 + b"\x00" * 8 + b"bTE"
    )
    for name, part, visible, send, msg_id in [
        (b"jobs", None, -5, 1700000000000, b"m1"),
        (ht, p1, 7, -1, b"h0"),
    ]:
        assert keys.message_keys(name, part, 1, visible, send, msg_id) == (
            keys.message_data_key(name, part, 1, msg_id),
            keys.message_vis_key(name, part, 1, visible, msg_id),
            keys.message_byage_key(name, part, 1, send, msg_id),
        )
    assert keys.message_dedup_key(b"orders.fifo", None, 1, b"g1", b"d1") == (
        b"!sqs|msg|dedup|b3JkZXJzLmZpZm8" + GEN1 + b"ZDE"
    )
    assert keys.queue_meta_key(b"jobs") == b"!sqs|queue|meta|am9icw"
    assert keys.queue_gen_key(b"jobs") == b"!sqs|queue|gen|am9icw"
    assert keys.queue_seq_key(b"cbd.fifo") == b"!sqs|queue|seq|Y2JkLmZpZm8"


def test_partition_for_group() -> None:
    """FNV-1a routing: the partitions of sqs_htfifo's groups (count 4), and the 0 cases."""
    assert keys.partition_for_group(4, False, b"group-0") == 1
    assert keys.partition_for_group(4, False, b"group-1") == 2
    assert keys.partition_for_group(4, False, b"group-2") == 3
    assert keys.partition_for_group(4, True, b"group-2") == 0
    assert keys.partition_for_group(4, False, b"") == 0
    assert keys.partition_for_group(1, False, b"group-2") == 0
