"""The quick path of SQS message rendering agrees with the general one.

:func:`plain_dump_line` renders a plain live message straight from its parsed object and
:class:`MessageDataQueues` parses data keys with the last key's head remembered; both must
give exactly what the general path gives (``decode_stored_message`` + ``dump_line``,
``message_data_queue``) or step aside. The expected line of the hand-written case is
written by hand from REFERENCE_NOTES §3.4 (field order, omitempty rules).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastickv_async._adapters.sqs import keys
from elastickv_async._adapters.sqs.render import RenderSettings, render_messages
from elastickv_async._adapters.sqs.values import (
    decode_stored_message,
    dump_line,
    plain_dump_line,
)
from elastickv_async._core.errors import AdapterRecordError
from elastickv_async._core.gojson_read import GoJSONError

MAGIC = b"\x00SM\x01"
GEN1 = (1).to_bytes(8, "big")

#: The live record's fields, in the order Go marshals them.
LIVE_ORDER = (
    "message_id",
    "body",
    "md5_of_body",
    "md5_of_message_attributes",
    "message_attributes",
    "sender_id",
    "send_timestamp_millis",
    "available_at_millis",
    "visible_at_millis",
    "receive_count",
    "first_receive_millis",
    "current_receipt_token",
    "queue_generation",
    "message_group_id",
    "message_deduplication_id",
    "sequence_number",
    "dead_letter_source_arn",
)
STRINGS = {
    "message_id",
    "md5_of_body",
    "md5_of_message_attributes",
    "sender_id",
    "message_group_id",
    "message_deduplication_id",
    "dead_letter_source_arn",
}


def general(
    value: bytes, partition: int | None, preserve: bool
) -> tuple[bytes, int, int, str, int] | None:
    """What the general path renders (``None``: it refuses the value)."""
    try:
        msg = decode_stored_message(value)
    except GoJSONError:
        return None
    if not preserve:
        msg.visible_at_millis = 0
        msg.current_receipt_token = None
        msg.receive_count = 0
        msg.first_receive_millis = 0
    msg.partition = partition
    return (
        dump_line(msg),
        msg.send_timestamp_millis,
        msg.sequence_number,
        msg.message_id,
        msg.queue_generation,
    )


def test_a_go_shaped_message_takes_the_quick_path() -> None:
    """A FIFO message as the live adapter stores it: body decoded and HTML-escaped alone,
    visibility reset, the null token and empty fields dropped, the partition appended."""
    value = MAGIC + (
        b'{"message_id":"m<1>","body":"PGI+JmFtcDs=","md5_of_body":"abc",'
        b'"send_timestamp_millis":1700000000000,"available_at_millis":1700000000005,'
        b'"visible_at_millis":1700000000099,"receive_count":3,"first_receive_millis":7,'
        b'"current_receipt_token":null,"queue_generation":2,"message_group_id":"g",'
        b'"message_deduplication_id":"","sequence_number":12}'
    )
    line = (
        b'{"message_id":"m<1>","body":"\\u003cb\\u003e\\u0026amp;","md5_of_body":"abc",'
        b'"send_timestamp_millis":1700000000000,"available_at_millis":1700000000005,'
        b'"visible_at_millis":0,"receive_count":0,"queue_generation":2,'
        b'"message_group_id":"g","sequence_number":12,"partition":3}\n'
    )
    expected = (line, 1_700_000_000_000, 12, "m<1>", 2)
    assert plain_dump_line(value, 3, preserve_visibility=False) == expected
    assert general(value, 3, False) == expected


@pytest.mark.parametrize(
    "document",
    [
        # Another field order, an unknown field, attributes, a token, a null, -0, a float.
        b'{"body":"eA==","message_id":"m","send_timestamp_millis":1,"available_at_millis":1,'
        b'"visible_at_millis":0,"receive_count":0,"queue_generation":1}',
        b'{"message_id":"m","body":"eA==","send_timestamp_millis":1,"available_at_millis":1,'
        b'"visible_at_millis":0,"receive_count":0,"queue_generation":1,"extra":1}',
        b'{"message_id":"m","body":"eA==","message_attributes":{},"send_timestamp_millis":1,'
        b'"available_at_millis":1,"visible_at_millis":0,"receive_count":0,"queue_generation":1}',
        b'{"message_id":"m","body":"eA==","send_timestamp_millis":1,"available_at_millis":1,'
        b'"visible_at_millis":0,"receive_count":0,"current_receipt_token":"dA==",'
        b'"queue_generation":1}',
        b'{"message_id":null,"body":"eA==","send_timestamp_millis":1,"available_at_millis":1,'
        b'"visible_at_millis":0,"receive_count":0,"queue_generation":1}',
        b'{"message_id":"m","body":"eA==","send_timestamp_millis":1,"available_at_millis":1,'
        b'"visible_at_millis":0,"receive_count":0,"queue_generation":-0}',
        b'{"message_id":"m","body":"eA==","send_timestamp_millis":1.0,"available_at_millis":1,'
        b'"visible_at_millis":0,"receive_count":0,"queue_generation":1}',
        # A field the dump always carries is missing.
        b'{"message_id":"m","body":"eA==","send_timestamp_millis":1,"available_at_millis":1,'
        b'"visible_at_millis":0,"queue_generation":1}',
    ],
)
def test_anything_else_takes_the_general_path(document: bytes) -> None:
    assert plain_dump_line(MAGIC + document, None, preserve_visibility=False) is None


def _rarely(draw: st.DrawFn) -> bool:
    """True about once in 30 draws (hypothesis favours bounds, so the middle is tested)."""
    return draw(st.integers(0, 29)) == 15


def _field(name: str) -> st.SearchStrategy[Any]:
    """Mostly the field's own type, sometimes a wrong or edge value."""
    edge: st.SearchStrategy[Any] = st.sampled_from(
        [None, True, 1.5, "-0", -1, 1 << 63, (1 << 64) - 1, [], {}]
    )
    if name in STRINGS:
        right: st.SearchStrategy[Any] = st.text(max_size=6)
    elif name == "body":
        raw = st.one_of(
            st.binary(max_size=12),
            st.text(alphabet="ab<>&\u2028\u00e9\n", max_size=8).map(str.encode),
        )
        odd = st.sampled_from(["", "eA", "eA=\n=", "é", "@@@@"])
        right = st.composite(
            lambda draw: draw(odd) if _rarely(draw) else base64.b64encode(draw(raw)).decode()
        )()
    elif name == "current_receipt_token":
        right = st.composite(lambda draw: "dA==" if _rarely(draw) else None)()
    elif name == "message_attributes":
        right = st.just({"a": {"DataType": "String"}})
    else:
        right = st.one_of(st.integers(0, 1 << 42), st.integers(-(1 << 63), (1 << 63) - 1))
    return st.composite(lambda draw: draw(edge if _rarely(draw) else right))()


@st.composite
def live_values(draw: st.DrawFn) -> bytes:
    """A live message value, mostly in the live field order with most fields present."""
    record: dict[str, Any] = {}
    for name in LIVE_ORDER:
        present = _rarely(draw) == (name == "message_attributes")
        if present:
            record[name] = draw(_field(name))
    if _rarely(draw):
        names = draw(st.permutations(list(record)))
        record = {name: record[name] for name in names}
    text = json.dumps(record, ensure_ascii=draw(st.booleans()), separators=(",", ":"))
    return MAGIC + text.encode()


@settings(max_examples=600, deadline=None)
@given(live_values(), st.one_of(st.none(), st.integers(0, 7)), st.booleans())
def test_the_quick_path_renders_what_the_general_path_renders(
    value: bytes, partition: int | None, preserve: bool
) -> None:
    quick = plain_dump_line(value, partition, preserve_visibility=preserve)
    if quick is not None:
        assert quick == general(value, partition, preserve)


def test_render_messages_mixes_both_paths_in_order() -> None:
    """One call with quick and general records: each line is the general path's."""
    plain = (
        b'{"message_id":"a","body":"eA==","send_timestamp_millis":5,"available_at_millis":5,'
        b'"visible_at_millis":9,"receive_count":1,"current_receipt_token":null,'
        b'"queue_generation":1}'
    )
    other = b'{"queue_generation":1,"message_id":"b","body":"eQ==","receive_count":1}'
    records = [
        (b"!sqs|msg|data|cQ" + GEN1 + b"YQ", MAGIC + plain),
        (b"!sqs|msg|data|cQ" + GEN1 + b"Yg", MAGIC + other),
        (b"!sqs|msg|data|p|cg|\x00\x00\x00\x02" + GEN1 + b"YQ", MAGIC + plain),
    ]
    got = render_messages(records, RenderSettings(False, 0), 10)
    assert [(queue, [line for _, line in lines]) for queue, lines, _ in got] == [
        ("cQ", [general(MAGIC + plain, None, False)[0], general(MAGIC + other, None, False)[0]]),  # type: ignore[index]
        ("cg", [general(MAGIC + plain, 2, False)[0]]),  # type: ignore[index]
    ]
    # Arrival numbers from 10 keep equal sort fields apart, in snapshot order.
    assert got[0][1][0][0] < got[1][1][0][0]
    # What the records count against the spill budget: their bytes and their objects.
    for _, lines, size in got:
        assert size == sum(len(k) + len(v) for k, v in lines) + 160 * len(lines)


DATA_KEYS = [
    b"!sqs|msg|data|cQ" + GEN1 + b"YQ",
    b"!sqs|msg|data|cQ" + GEN1 + b"Yg",
    b"!sqs|msg|data|cQ" + GEN1,  # the remembered head with no message id
    b"!sqs|msg|data|cQ" + GEN1 + b"Y",  # impossible length
    b"!sqs|msg|data|cQ" + GEN1 + b"Y+Y",  # not base64url
    b"!sqs|msg|data|cQ" + GEN1 + b"YWJj",
    b"!sqs|msg|data|cQ" + (2).to_bytes(8, "big") + b"YQ",
    b"!sqs|msg|data|cQx" + GEN1 + b"YQ",
    b"!sqs|msg|data|p|cg|\x00\x00\x00\x02" + GEN1 + b"YQ",
    b"!sqs|msg|data|p|cg|\x00\x00\x00\x02" + GEN1,
    b"!sqs|msg|data|p|cg|\x00\x00\x00\x02" + GEN1 + b"Yg",
    b"!sqs|msg|data|p|cg|\x00\x00\x00\x03" + GEN1 + b"Yg",
    b"!sqs|msg|data|p|cg|\x00\x00\x00\x03" + GEN1 + b"Y=",
]


def _outcome(parse: Any, key: bytes) -> Any:
    try:
        return parse(key)
    except AdapterRecordError as exc:
        return (exc.code, str(exc))


def test_message_data_queues_agrees_with_message_data_queue() -> None:
    parse = keys.MessageDataQueues()
    expected = [_outcome(keys.message_data_queue, key) for key in DATA_KEYS]
    assert [_outcome(parse, key) for key in DATA_KEYS] == expected
    assert sum(isinstance(result[1], str) for result in expected) == 5  # the malformed ones


def test_spec_loads_on_first_use() -> None:
    """The package loads SPEC lazily (see ``tests/unit/test_worker_imports.py``)."""
    from elastickv_async._adapters import sqs

    assert sqs.SPEC.decoder.__name__ == "SQSDecoder"
