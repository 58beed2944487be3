"""``decode --full-fidelity`` and ``encode --rebase-time`` on a hand-built snapshot.

The snapshot holds one of each thing the default layout drops: a bucket's creation HLC (at
bucket generation 2), an incomplete multipart upload with its part and chunk, a queue's
created/modified/purged times, an in-flight message (receive count, visible-at, first
receive, receipt token), and a Redis string with a TTL. The expected files and records are
written out from those inputs by hand: the live values, their base64, the restore
generation and the shifted times.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any, Final

import anyio
import pytest
from support import hand_built_fsm, raises_code

from elastickv_async import DecodeOptions, EncodeOptions, decode_snapshot, encode_snapshot
from elastickv_async._adapters.redis.values import (
    decode_string_value,
    encode_string_value,
    shifted_ttl,
)
from elastickv_async._core.cli import main
from elastickv_async._core.errors import DumpTreeError
from elastickv_async._core.snapshot.mvcc import VisibilityResolver
from elastickv_async._core.snapshot.reader import open_snapshot

pytestmark = pytest.mark.anyio

SNAPSHOT_MS: Final = 1_795_312_279_893
TS: Final = SNAPSHOT_MS << 16
SHIFT_MS: Final = 86_400_000
CREATED_HLC: Final = 117_657_584_394_764_303
U64 = struct.Struct(">Q")


def _b64url(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


# --- the live records -------------------------------------------------------------------------

BUCKET_META: Final = (
    b"!s3|bucket|meta|bk\x00\x01",
    b'{"bucket_name":"bk","generation":2,"created_at_hlc":%d,"region":"us-east-1",'
    b'"acl":"private"}' % CREATED_HLC,
)
_UPLOAD: Final = b"bk\x00\x01" + U64.pack(2) + b"obj\x00\x01up1\x00\x01"
UPLOAD_META: Final = (
    b"!s3|upload|meta|" + _UPLOAD,
    b'{"bucket":"bk","object":"obj","generation":2,"upload_id":"up1","created_hlc":5,'
    b'"content_type":"text/plain"}',
)
UPLOAD_PART: Final = (
    b"!s3|upload|part|" + _UPLOAD + U64.pack(1),
    b'{"part_no":1,"etag":"e","size_bytes":5,"chunk_count":1,"chunk_sizes":[5],"part_version":0}',
)
BLOB: Final = (b"!s3|blob|" + _UPLOAD + U64.pack(1) + U64.pack(0), b"hello")

QUEUE: Final = _b64url(b"q1")
QUEUE_META: Final = (
    b"!sqs|queue|meta|" + QUEUE,
    b'\x00SQ\x01{"name":"q1","generation":1,"visibility_timeout_seconds":30,'
    b'"message_retention_seconds":345600,"delay_seconds":0,"receive_message_wait_seconds":0,'
    b'"maximum_message_size":262144,"last_purged_at_millis":1795312200000,'
    b'"created_at_millis":1795312100000,"last_modified_at_millis":1795312200001}',
)
QUEUE_GEN: Final = (b"!sqs|queue|gen|" + QUEUE, b"1")
SENT_MS: Final = 1_795_312_262_203
VISIBLE_MS: Final = 1_795_312_862_225
FIRST_RECEIVE_MS: Final = 1_795_312_262_225
MESSAGE_ID: Final = b"3596a24536b3288b10810f85b22e613e"
MESSAGE: Final = (
    b"!sqs|msg|data|" + QUEUE + U64.pack(1) + _b64url(MESSAGE_ID),
    b'\x00SM\x01{"message_id":"%s","body":"aGk=","md5_of_body":"49f68a5c8493ec2c0bf489821c21fc3b",'
    b'"send_timestamp_millis":%d,"available_at_millis":%d,"visible_at_millis":%d,'
    b'"receive_count":2,"first_receive_millis":%d,"current_receipt_token":"AQID",'
    b'"queue_generation":1}' % (MESSAGE_ID, SENT_MS, SENT_MS, VISIBLE_MS, FIRST_RECEIVE_MS),
)
FIFO: Final = _b64url(b"f.fifo")
FIFO_META: Final = (
    b"!sqs|queue|meta|" + FIFO,
    b'\x00SQ\x01{"name":"f.fifo","generation":1,"is_fifo":true,"visibility_timeout_seconds":30,'
    b'"message_retention_seconds":345600,"delay_seconds":0,"receive_message_wait_seconds":0,'
    b'"maximum_message_size":262144}',
)
FIFO_GEN: Final = (b"!sqs|queue|gen|" + FIFO, b"1")


def _fifo_message(message_id: bytes, sequence: int, receive_count: int, visible: int) -> Any:
    first = b',"first_receive_millis":%d' % FIRST_RECEIVE_MS if receive_count else b""
    return (
        b"!sqs|msg|data|" + FIFO + U64.pack(1) + _b64url(message_id),
        b'\x00SM\x01{"message_id":"%s","body":"aGk=","md5_of_body":"x",'
        b'"send_timestamp_millis":%d,"available_at_millis":%d,"visible_at_millis":%d,'
        b'"receive_count":%d%s,"current_receipt_token":null,"queue_generation":1,'
        b'"message_group_id":"g","message_deduplication_id":"%s","sequence_number":%d}'
        % (
            message_id,
            SENT_MS + sequence,
            SENT_MS + sequence,
            visible,
            receive_count,
            first,
            message_id,
            sequence,
        ),
    )


#: The head of group "g" is in flight (it holds the group's lock); the next one waits.
FIFO_HEAD: Final = _fifo_message(b"ma", 1, 1, VISIBLE_MS)
FIFO_NEXT: Final = _fifo_message(b"mb", 2, 0, SENT_MS + 2)
GROUP_KEY: Final = b"!sqs|msg|group|" + FIFO + U64.pack(1) + _b64url(b"g")
GROUP_LOCK: Final = (
    GROUP_KEY,
    b'{"message_id":"ma","acquired_at_ms":%d,"visible_at_ms":%d}' % (FIRST_RECEIVE_MS, VISIBLE_MS),
)
TTL_MS: Final = SNAPSHOT_MS + 60_000
STRING: Final = (b"!redis|str|k", encode_string_value(b"v", TTL_MS))

RECORDS: Final = (
    BUCKET_META,
    UPLOAD_META,
    UPLOAD_PART,
    BLOB,
    QUEUE_META,
    QUEUE_GEN,
    MESSAGE,
    FIFO_META,
    FIFO_GEN,
    FIFO_HEAD,
    FIFO_NEXT,
    GROUP_LOCK,
    STRING,
)


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    path = tmp_path / "in.fsm"
    path.write_bytes(hand_built_fsm(TS, RECORDS))
    return path


async def _decode(snapshot: Path, out: Path, **options: Any) -> Path:
    await decode_snapshot(snapshot, out, DecodeOptions(**options))
    return out


async def _records(path: Path) -> dict[bytes, bytes]:
    """Every visible record of a ``.fsm``, by key."""
    out: dict[bytes, bytes] = {}
    async with open_snapshot(path) as snap:
        resolver = VisibilityResolver(snap.header.last_commit_ts)
        async for batch in snap.batches(max_entries=512):
            out.update((e.key, e.value) for e in resolver.resolve(batch))
    return out


def _upload_line(key: bytes, value: bytes, prefix: str) -> dict[str, str]:
    return {
        "prefix": prefix,
        "key": base64.b64encode(key).decode(),
        "value": base64.b64encode(value).decode(),
    }


# --- decode -----------------------------------------------------------------------------------


async def test_default_decode_has_none_of_it(snapshot: Path, tmp_path: Path) -> None:
    """The default layout keeps the reference's files: no extra field, file or state."""
    out = await _decode(snapshot, tmp_path / "tree")
    assert "created_at_hlc" not in (out / "s3/bk/_bucket.json").read_text()
    assert not (out / "s3/bk/_incomplete_uploads").exists()
    assert "millis" not in (out / "sqs/q1/_queue.json").read_text()
    message = json.loads((out / "sqs/q1/messages.jsonl").read_bytes())
    assert (message["receive_count"], message["visible_at_millis"]) == (0, 0)
    assert "full_fidelity" not in json.loads((out / "MANIFEST.json").read_bytes())


async def test_full_fidelity_decode_writes_the_live_state(snapshot: Path, tmp_path: Path) -> None:
    """Each kept fact lands in its file, with the live value."""
    out = await _decode(snapshot, tmp_path / "tree", full_fidelity=True)
    manifest = json.loads((out / "MANIFEST.json").read_bytes())
    assert manifest["full_fidelity"] is True
    assert manifest["exclusions"]["include_incomplete_uploads"] is True
    assert manifest["exclusions"]["preserve_sqs_visibility"] is True

    bucket = json.loads((out / "s3/bk/_bucket.json").read_bytes())
    assert bucket["created_at_hlc"] == CREATED_HLC
    lines = (out / "s3/bk/_incomplete_uploads/records.jsonl").read_bytes().splitlines()
    assert [json.loads(line) for line in lines] == [
        _upload_line(*UPLOAD_META, "!s3|upload|meta|"),
        _upload_line(*UPLOAD_PART, "!s3|upload|part|"),
        _upload_line(*BLOB, "!s3|blob|"),
    ]

    queue = json.loads((out / "sqs/q1/_queue.json").read_bytes())
    assert (
        queue["created_at_millis"],
        queue["last_modified_at_millis"],
        queue["last_purged_at_millis"],
    ) == (1_795_312_100_000, 1_795_312_200_001, 1_795_312_200_000)
    message = json.loads((out / "sqs/q1/messages.jsonl").read_bytes())
    assert message["receive_count"] == 2
    assert message["visible_at_millis"] == VISIBLE_MS
    assert message["first_receive_millis"] == FIRST_RECEIVE_MS
    assert message["current_receipt_token"] == "AQID"


# --- encode -----------------------------------------------------------------------------------


async def test_full_fidelity_encode_restores_it_and_self_tests(
    snapshot: Path, tmp_path: Path
) -> None:
    """The restored records carry every kept fact; the upload comes back at generation 1."""
    tree = await _decode(snapshot, tmp_path / "tree", full_fidelity=True)
    fsm = tmp_path / "out.fsm"
    result = await encode_snapshot(tree, fsm, EncodeOptions(self_test=True))
    assert result.self_test_matched
    got = await _records(fsm)

    assert json.loads(got[BUCKET_META[0]])["created_at_hlc"] == CREATED_HLC
    restored = b"bk\x00\x01" + U64.pack(1) + b"obj\x00\x01up1\x00\x01"
    meta = UPLOAD_META[1].replace(b'"generation":2', b'"generation":1')
    assert got[b"!s3|upload|meta|" + restored] == meta
    assert got[b"!s3|gc|upload|" + restored] == meta
    assert got[b"!s3|upload|part|" + restored + U64.pack(1)] == UPLOAD_PART[1]
    assert got[b"!s3|blob|" + restored + U64.pack(1) + U64.pack(0)] == b"hello"

    queue = json.loads(got[QUEUE_META[0]][4:])
    assert queue["created_at_millis"] == 1_795_312_100_000
    assert queue["last_modified_at_millis"] == 1_795_312_200_001
    message = json.loads(got[MESSAGE[0]][4:])
    assert message["receive_count"] == 2
    assert message["visible_at_millis"] == VISIBLE_MS
    assert message["current_receipt_token"] == "AQID"
    # The in-flight message is indexed by when it becomes visible again.
    vis = b"!sqs|msg|vis|" + QUEUE + U64.pack(1) + U64.pack(VISIBLE_MS) + _b64url(MESSAGE_ID)
    assert got[vis] == MESSAGE_ID
    # The in-flight FIFO head holds its group's lock again, so "mb" waits behind it.
    assert json.loads(got[GROUP_KEY]) == json.loads(GROUP_LOCK[1])
    assert [k for k in got if k.startswith(b"!sqs|msg|group|")] == [GROUP_KEY]


async def test_default_tree_encodes_visibility_zeroed(snapshot: Path, tmp_path: Path) -> None:
    """Without full fidelity a restore keeps today's behaviour: creation HLC 0, no upload,
    the message visible at its available time with receive count 0."""
    tree = await _decode(snapshot, tmp_path / "tree")
    fsm = tmp_path / "out.fsm"
    await encode_snapshot(tree, fsm, EncodeOptions(self_test=True))
    got = await _records(fsm)
    assert json.loads(got[BUCKET_META[0]])["created_at_hlc"] == 0
    assert not any(k.startswith((b"!s3|upload|", b"!s3|gc|", b"!sqs|msg|group|")) for k in got)
    assert json.loads(got[MESSAGE[0]][4:])["receive_count"] == 0
    vis = b"!sqs|msg|vis|" + QUEUE + U64.pack(1) + U64.pack(SENT_MS) + _b64url(MESSAGE_ID)
    assert vis in got


@pytest.mark.parametrize(
    ("flag", "code"),
    [
        ("include_incomplete_uploads", "ErrEncodeUnsupportedS3IncompleteUploads"),
        ("preserve_visibility", "ErrEncodeUnsupportedSQSPreserveVisibility"),
    ],
)
async def test_the_options_alone_are_still_refused(
    snapshot: Path, tmp_path: Path, flag: str, code: str
) -> None:
    """Only a full-fidelity tree has what a restore of that state needs."""
    adapter = "s3" if flag.startswith("include") else "sqs"
    tree = await _decode(snapshot, tmp_path / "tree", adapter_options={adapter: {flag: True}})
    with raises_code(DumpTreeError, code):
        await encode_snapshot(tree, tmp_path / "out.fsm")


# --- rebase -----------------------------------------------------------------------------------


async def test_rebase_time_shifts_deadlines_and_records_the_shift(
    snapshot: Path, tmp_path: Path
) -> None:
    """Send, visibility and expiry times move by now - snapshot; creation times do not."""
    tree = await _decode(snapshot, tmp_path / "tree", full_fidelity=True)
    fsm = tmp_path / "out.fsm"
    options = EncodeOptions(self_test=True, rebase_time=True, now_ms=SNAPSHOT_MS + SHIFT_MS)
    result = await encode_snapshot(tree, fsm, options)
    assert result.self_test_matched
    got = await _records(fsm)

    message = json.loads(got[MESSAGE[0]][4:])
    assert message["send_timestamp_millis"] == SENT_MS + SHIFT_MS
    assert message["available_at_millis"] == SENT_MS + SHIFT_MS
    assert message["visible_at_millis"] == VISIBLE_MS + SHIFT_MS
    assert message["first_receive_millis"] == FIRST_RECEIVE_MS + SHIFT_MS
    vis_time = U64.pack(VISIBLE_MS + SHIFT_MS)
    assert b"!sqs|msg|vis|" + QUEUE + U64.pack(1) + vis_time + _b64url(MESSAGE_ID) in got
    age_time = U64.pack(SENT_MS + SHIFT_MS)
    assert b"!sqs|msg|byage|" + QUEUE + U64.pack(1) + age_time + _b64url(MESSAGE_ID) in got
    assert decode_string_value(got[STRING[0]]).ttl_ms == TTL_MS + SHIFT_MS
    assert json.loads(got[QUEUE_META[0]][4:])["created_at_millis"] == 1_795_312_100_000
    assert json.loads(got[BUCKET_META[0]])["created_at_hlc"] == CREATED_HLC

    info = json.loads(await anyio.Path(f"{fsm}.encode_info.json").read_bytes())
    assert info["time_rebase"] == {
        "snapshot_ms": SNAPSHOT_MS,
        "now_ms": SNAPSHOT_MS + SHIFT_MS,
        "shift_ms": SHIFT_MS,
    }


@pytest.mark.parametrize("ceiling_ms", [0, SNAPSHOT_MS + 5_000])
async def test_rebase_takes_the_hlc_ceiling_when_the_node_wrote_one(
    tmp_path: Path, ceiling_ms: int
) -> None:
    """A node's header ceiling is the snapshot time; a zero ceiling (a node that never set
    one) falls back to the physical part of last_commit_ts."""
    node_file = tmp_path / "0000000000000041.fsm"
    node_file.write_bytes(b"EKVTHLC1" + U64.pack(ceiling_ms) + hand_built_fsm(TS, RECORDS))
    tree = await _decode(node_file, tmp_path / "tree")
    fsm = tmp_path / "out.fsm"
    now_ms = SNAPSHOT_MS + SHIFT_MS
    await encode_snapshot(tree, fsm, EncodeOptions(rebase_time=True, now_ms=now_ms))
    info = json.loads(await anyio.Path(f"{fsm}.encode_info.json").read_bytes())
    assert info["time_rebase"]["snapshot_ms"] == (ceiling_ms or SNAPSHOT_MS)


async def test_no_rebase_by_default(snapshot: Path, tmp_path: Path) -> None:
    """Times are written as dumped and the sidecar has no rebase section."""
    tree = await _decode(snapshot, tmp_path / "tree", full_fidelity=True)
    fsm = tmp_path / "out.fsm"
    await encode_snapshot(tree, fsm, EncodeOptions(now_ms=SNAPSHOT_MS + SHIFT_MS))
    got = await _records(fsm)
    assert json.loads(got[MESSAGE[0]][4:])["send_timestamp_millis"] == SENT_MS
    assert decode_string_value(got[STRING[0]]).ttl_ms == TTL_MS
    info = json.loads(await anyio.Path(f"{fsm}.encode_info.json").read_bytes())
    assert "time_rebase" not in info


# --- command line -----------------------------------------------------------------------------


def test_cli_flags(snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``decode --full-fidelity`` and ``encode --rebase-time`` reach the runs; decode-cluster
    has no full-fidelity mode."""
    tree, fsm = tmp_path / "tree", tmp_path / "out.fsm"
    assert main(["decode", "--input", str(snapshot), "--output", str(tree), "--full-fidelity"]) == 0
    assert json.loads((tree / "MANIFEST.json").read_bytes())["full_fidelity"] is True
    argv = ["encode", "--input", str(tree), "--output", str(fsm), "--self-test", "--rebase-time"]
    assert main(argv) == 0
    info = json.loads(Path(f"{fsm}.encode_info.json").read_bytes())
    assert info["self_test"]["matched"] is True
    assert info["time_rebase"]["shift_ms"] == info["time_rebase"]["now_ms"] - SNAPSHOT_MS
    # decode-cluster offers the mode too (its tree is checked in tests/cluster).
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["decode-cluster", "--help"])
    assert "--full-fidelity" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("deadline", "shift", "expected"),
    [
        (None, 5, None),
        (0, 5, 0),
        (1_000, 5, 1_005),
        ((1 << 63) - 1, 5, (1 << 63) - 1),  # "never" stays never
        ((1 << 63) - 3, 5, (1 << 63) - 1),  # kept within int64
        (3, -5, 1),  # still a deadline (long past), not "no TTL"
    ],
)
def test_shifted_ttl_bounds(deadline: int | None, shift: int, expected: int | None) -> None:
    """A Redis deadline moves by the shift within the server's int64 milliseconds."""
    assert shifted_ttl(deadline, shift) == expected
