"""The quick path of SQS message rendering agrees with the general one.

:func:`plain_dump_line` renders a plain live message through typed msgspec structs and
:class:`MessageDataQueues` parses data keys with the last key's head remembered; both must
give exactly what the general path gives (``decode_stored_message`` + ``dump_line``,
``message_data_queue``) or step aside. The expected line of the hand-written case is
written by hand from REFERENCE_NOTES §3.4 (field order, omitempty rules).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastickv_async._adapters.sqs import keys
from elastickv_async._adapters.sqs.render import RenderSettings, pack_records, render_messages
from elastickv_async._adapters.sqs.spill import message_key
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
INTEGERS = [
    name
    for name in LIVE_ORDER
    if name not in STRINGS and name not in ("body", "message_attributes", "current_receipt_token")
]


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
    quick = plain_dump_line(value, 3, preserve_visibility=False)
    assert quick == expected
    assert general(value, 3, False) == expected
    # Buffered as it is: no spare capacity behind the line.
    assert quick is not None and sys.getsizeof(quick[0]) == sys.getsizeof(b"") + len(line)


_PLAIN = (
    b'"message_id":"m","body":"eA==","send_timestamp_millis":1,"available_at_millis":1,'
    b'"visible_at_millis":0,"receive_count":0,"queue_generation":1'
)


@pytest.mark.parametrize(
    "document",
    [
        # Another field order, a field the dump always carries missing, a duplicate (the
        # last one counts), JSON whitespace, escapes, U+2028, a control character.
        b'{"body":"eA==","message_id":"m","send_timestamp_millis":1,"available_at_millis":1,'
        b'"visible_at_millis":0,"receive_count":0,"queue_generation":1}',
        b'{"message_id":"m","body":"eA==","send_timestamp_millis":1,"available_at_millis":1,'
        b'"visible_at_millis":0,"queue_generation":1}',
        b"{}",
        b"{" + _PLAIN + b',"message_id":"n","receive_count":1,"receive_count":2}',
        b" \t{ " + _PLAIN.replace(b",", b" ,\n ").replace(b":", b"\r: ") + b" }\n",
        b'{"message_id":"\\u00e9\\ud83d\\ude00\\"\\/","body":"4oCo","sender_id":"\xe2\x80\xa9",'
        b'"md5_of_body":"\\u0001\\u007f\\b","queue_generation":18446744073709551615}',
        b'{"body":"/w==","sequence_number":9223372036854775808,"receive_count":-1}',
    ],
)
def test_plain_variants_take_the_quick_path(document: bytes) -> None:
    """Any field order, missing fields, duplicates and escapes are plain: rendered quickly,
    to the general path's line."""
    for preserve in (False, True):
        quick = plain_dump_line(MAGIC + document, 5, preserve_visibility=preserve)
        assert quick is not None
        assert quick == general(MAGIC + document, 5, preserve)


@pytest.mark.parametrize(
    "document",
    [
        # An unknown field, one in another case, attributes, a token, a null, -0, a float,
        # an exponent, integers out of range, a lone surrogate, invalid UTF-8, a body that
        # is not strict base64, a trailing character, a byte order mark, not an object.
        b"{" + _PLAIN + b',"extra":1}',
        b"{" + _PLAIN.replace(b'"message_id"', b'"Message_ID"') + b"}",
        b"{" + _PLAIN + b',"message_attributes":{}}',
        b"{" + _PLAIN + b',"current_receipt_token":"dA=="}',
        b"{" + _PLAIN + b',"current_receipt_token":null,"message_id":null}',
        b"{" + _PLAIN.replace(b'"queue_generation":1', b'"queue_generation":-0') + b"}",
        b"{" + _PLAIN.replace(b'"send_timestamp_millis":1', b'"send_timestamp_millis":1.0') + b"}",
        b"{" + _PLAIN.replace(b'"receive_count":0', b'"receive_count":1e2') + b"}",
        b"{" + _PLAIN.replace(b'"receive_count":0', b'"receive_count":9223372036854775808') + b"}",
        b"{" + _PLAIN + b',"sequence_number":18446744073709551616}',
        b"{" + _PLAIN + b',"sequence_number":-1}',
        b"{" + _PLAIN.replace(b'"m"', b'"\\ud800m"') + b"}",
        b"{" + _PLAIN.replace(b'"m"', b'"\xffm"') + b"}",
        b"{" + _PLAIN.replace(b'"eA=="', b'"eA==\\n"') + b"}",
        b"{" + _PLAIN.replace(b'"eA=="', b'"eA"') + b"}",
        b"{" + _PLAIN + b"}x",
        b"\xef\xbb\xbf{" + _PLAIN + b"}",
        b"[]",
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
    elif name in ("queue_generation", "sequence_number"):
        right = st.one_of(st.integers(0, 1 << 42), st.integers(0, (1 << 64) - 1))
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


#: Number forms JSON readers treat differently, or that bound Go's integer types.
NUMBERS = [
    b"-0",
    b"0.0",
    b"1e3",
    b"1E0",
    b"01",
    b"-9223372036854775809",
    b"-9223372036854775808",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
]
#: Text put at the start of a string value: escapes (a pair, lone surrogates, separators,
#: controls) and raw bytes (U+2028, invalid UTF-8, an encoded surrogate).
STRING_HEADS = [
    b"\\ud83d\\ude00",
    b"\\ud800",
    b"\\udc00x",
    b"\\u2028",
    b"\\u0000\\u001f",
    b"\\/\\b",
    b"\\u00e9<",
    b"\xe2\x80\xa8",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
]
#: Bodies that are not strict standard base64 (Go's decoder skips line breaks).
BODIES = ["eA=\n=", "eA==\r\n", "eA", "eA==eA==", " eA==", "eA-_", "é", "@@@@"]
#: What may surround the value: JSON whitespace, and what is not.
SURROUNDINGS = [b" ", b"\n\t\r", b"\xef\xbb\xbf", b"\x0c", b"\x00", b"x", b"{}"]


@st.composite
def adversarial_values(draw: st.DrawFn) -> bytes:
    """A plain live value (every field of its type) whose text is then edited where JSON
    readers disagree: a name in another case, a duplicate member, another number form,
    string escapes and bytes, another body, what surrounds the document."""
    record: dict[str, Any] = {}
    for name in LIVE_ORDER:
        if name in STRINGS:
            record[name] = draw(st.text(max_size=4))
        elif name == "body":
            record[name] = base64.b64encode(draw(st.binary(max_size=6))).decode()
        elif name in INTEGERS:
            record[name] = draw(st.integers(0, 1 << 42))
    text = json.dumps(record, separators=(",", ":")).encode()
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(LIVE_ORDER)).encode()
        edit = draw(st.sampled_from(["case", "duplicate", "number", "string", "body", "surround"]))
        if edit == "case":
            text = text.replace(b'"' + field + b'"', b'"' + field.title() + b'"', 1)
        elif edit == "duplicate":
            member = json.dumps({field.decode(): draw(_field(field.decode()))})[1:-1].encode()
            text = text[:-1] + (b"," if len(text) > 2 else b"") + member + b"}"
        elif edit == "number":
            field = draw(st.sampled_from(INTEGERS)).encode()
            number = draw(st.sampled_from(NUMBERS))
            text = re.sub(b'("' + field + b'":)-?[0-9]+', rb"\g<1>" + number, text, count=1)
        elif edit == "string":
            field = draw(st.sampled_from([*sorted(STRINGS), "body"])).encode()
            head = draw(st.sampled_from(STRING_HEADS))
            text = text.replace(b'"' + field + b'":"', b'"' + field + b'":"' + head, 1)
        elif edit == "body":
            body = json.dumps(draw(st.sampled_from(BODIES))).encode()
            template = b'"body":' + body.replace(b"\\", b"\\\\")  # re.sub's escapes
            text = re.sub(b'"body":"[^"]*"', template, text, count=1)
        else:
            around = draw(st.sampled_from(SURROUNDINGS))
            text = around + text if draw(st.booleans()) else text + around
    return MAGIC + text


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(live_values(), adversarial_values()),
    st.one_of(st.none(), st.integers(0, 7)),
    st.booleans(),
)
def test_the_quick_path_renders_what_the_general_path_renders(
    value: bytes, partition: int | None, preserve: bool
) -> None:
    quick = plain_dump_line(value, partition, preserve_visibility=preserve)
    if quick is not None:
        assert quick == general(value, partition, preserve)


#: One plain live value with every field, for the single-edit cases below.
FULL = json.dumps(
    {
        name: "eA==" if name == "body" else "s" if name in STRINGS else 7
        for name in LIVE_ORDER
        if name in STRINGS or name in INTEGERS or name == "body"
    },
    separators=(",", ":"),
).encode()


def _single_edits() -> list[bytes]:
    """``FULL`` with each number form in each integer field, each string head in each string,
    each odd body, each surrounding."""
    out = [
        re.sub(b'("' + name.encode() + b'":)7', rb"\g<1>" + number, FULL)
        for name in INTEGERS
        for number in NUMBERS
    ]
    out += [
        FULL.replace(b'"' + name.encode() + b'":"', b'"' + name.encode() + b'":"' + head)
        for name in [*sorted(STRINGS), "body"]
        for head in STRING_HEADS
    ]
    out += [FULL.replace(b'"eA=="', json.dumps(body).encode()) for body in BODIES]
    out += [around + FULL for around in SURROUNDINGS] + [FULL + around for around in SURROUNDINGS]
    return out


def test_single_edits_render_what_the_general_path_renders() -> None:
    """Every single edit of a plain value: the quick path steps aside or agrees."""
    edits = _single_edits()
    quick_count = 0
    for document in edits:
        for preserve in (False, True):
            quick = plain_dump_line(MAGIC + document, 1, preserve_visibility=preserve)
            if quick is not None:
                quick_count += 1
                assert quick == general(MAGIC + document, 1, preserve), document
    # Both outcomes occur: the edits include plain values (whitespace, valid escapes).
    assert 0 < quick_count < 2 * len(edits)


def unpack(run: bytes) -> list[tuple[bytes, bytes]]:
    return msgspec.msgpack.decode(run, type=list[tuple[bytes, bytes]])


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
    runs = [(queue, gen, unpack(run), count) for queue, gen, run, count in got]

    def expected(value: bytes, partition: int | None) -> bytes:
        rendered = general(value, partition, False)
        assert rendered is not None
        return rendered[0]

    assert [(queue, gen, [line for _, line in run], count) for queue, gen, run, count in runs] == [
        # Sorted by send time: "b" (no send time) before "a" (5).
        ("cQ", 1, [expected(MAGIC + other, None), expected(MAGIC + plain, None)], 2),
        ("cg", 1, [expected(MAGIC + plain, 2)], 1),
    ]
    # Arrival numbers from 10 keep equal sort fields apart, in snapshot order.
    assert runs[0][2][1][0] == message_key(5, 0, b"a", 10)
    assert runs[0][2][1][0] < runs[1][2][0][0] == message_key(5, 0, b"a", 12)


def test_runs_are_split_by_generation() -> None:
    """A chunk with two generations of one queue gives one run per generation."""
    one = b'{"message_id":"a","body":"eA==","queue_generation":1}'
    two = b'{"message_id":"b","body":"eA==","queue_generation":2}'
    records = [(b"!sqs|msg|data|cQ" + GEN1 + b"YQ", MAGIC + one)]
    records += [(b"!sqs|msg|data|cQ" + (2).to_bytes(8, "big") + b"Yg", MAGIC + two)]
    got = render_messages(records, RenderSettings(False, 0), 0)
    assert [(queue, gen, count) for queue, gen, _, count in got] == [("cQ", 1, 1), ("cQ", 2, 1)]


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


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(DATA_KEYS), max_size=12))
def test_batch_key_parse_agrees_with_one_key_at_a_time(data_keys: list[bytes]) -> None:
    """``message_data_queues`` gives each key's queue, or ``None`` when any key is malformed."""
    expected = [_outcome(keys.message_data_queue, key) for key in data_keys]
    got = keys.message_data_queues(data_keys)
    if any(isinstance(result[1], str) for result in expected):
        assert got is None
    else:
        assert got == expected


def one_at_a_time(
    records: list[tuple[bytes, bytes]], preserve: bool, first: int
) -> list[tuple[str, int, list[tuple[bytes, bytes]]]] | str:
    """What rendering must give, from the per-record general functions: per queue and
    generation (in order of first appearance) the sorted ``(sort key, line)`` of each
    message; or the code of the first record that fails (key or value)."""
    groups: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
    for arrival, (key, value) in enumerate(records, first):
        try:
            encoded, partition = keys.message_data_queue(key)
        except AdapterRecordError as exc:
            return str(exc.code)
        rendered = general(value, partition, preserve)
        if rendered is None:
            return "ErrSQSInvalidMessage"
        line, send_ms, sequence, message_id, generation = rendered
        sort_key = message_key(send_ms, sequence, message_id.encode(), arrival)
        groups.setdefault((encoded, generation), []).append((sort_key, line))
    return [(queue, gen, sorted(run)) for (queue, gen), run in groups.items()]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(DATA_KEYS),
            st.one_of(live_values(), adversarial_values(), st.just(MAGIC + FULL)),
        ),
        max_size=10,
    ),
    st.booleans(),
    st.integers(0, 1000),
)
def test_a_chunk_renders_what_each_record_renders(
    records: list[tuple[bytes, bytes]], preserve: bool, first: int
) -> None:
    """Quick and general records mixed, queues and generations interleaved: each run is
    what the per-record general path gives, sorted; or the chunk fails as its first
    failing record does. The same whether the chunk comes as a list or packed (as it
    crosses to a worker process)."""
    expected = one_at_a_time(records, preserve, first)
    for chunk in (records, pack_records(records)):
        if isinstance(expected, str):
            with pytest.raises(AdapterRecordError) as failed:
                render_messages(chunk, RenderSettings(preserve, 0), first)
            assert failed.value.code == expected
            continue
        got = render_messages(chunk, RenderSettings(preserve, 0), first)
        assert [(queue, gen, unpack(run), count) for queue, gen, run, count in got] == [
            (queue, gen, run, len(run)) for queue, gen, run in expected
        ]


def test_spec_loads_on_first_use() -> None:
    """The package loads SPEC lazily (see ``tests/unit/test_worker_imports.py``)."""
    from elastickv_async._adapters import sqs

    assert sqs.SPEC.name == "sqs"
