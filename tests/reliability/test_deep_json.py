"""Deeply nested JSON with ``\\u`` escapes, in every reader that parses dump or snapshot JSON.

Go's ``encoding/json`` accepts nesting up to 10000 levels and ignores unknown fields, so a
700-deep unknown member must not stop a decode or an encode; nesting past what the parser
can hold must be a typed data error, never a ``RecursionError``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import anyio
import pytest
from hostile import b64url, copy_tree, deep_json, sample_tree, snapshot

from elastickv_async import DataError, EncodeOptions, decode_snapshot, encode_snapshot
from elastickv_async._core import gojson_read

DEPTH = 700


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_tree(tmp_path_factory.mktemp("sample"))


def _deep_member(doc: dict[str, object], depth: int = DEPTH) -> bytes:
    text = json.dumps(doc)
    return (text[:-1] + ', "deep": ' + deep_json(depth) + "}").encode()


def test_readers_accept_deep_escaped_values() -> None:
    doc = b'{"a": "\\ud800", "deep": ' + deep_json(DEPTH).encode() + b"}"
    plain = gojson_read.loads(doc)
    assert plain["a"] == "\ufffd"
    innermost = plain["deep"]
    for _ in range(DEPTH):
        innermost = innermost[0]
    assert innermost == "\ufffd"
    assert gojson_read.object_items(gojson_read.parse_tree(doc))[0] == ("a", "\ufffd")
    assert [v["a"] for v, _ in gojson_read.iter_values(doc + b"\n" + doc)] == ["\ufffd"] * 2


def test_readers_refuse_what_the_parser_cannot_hold() -> None:
    doc = deep_json(20_000).encode()
    for read in (gojson_read.loads, gojson_read.parse_tree):
        with pytest.raises(gojson_read.GoJSONError, match="nested too deeply"):
            read(doc)


def _decode(tmp_path: Path, records: list[tuple[bytes, bytes]]) -> Path:
    fsm = tmp_path / "deep.fsm"
    fsm.write_bytes(snapshot(records))
    out = tmp_path / "out"
    anyio.run(decode_snapshot, fsm, out)
    return out


def test_decode_sqs_queue_meta_and_message(tmp_path: Path) -> None:
    queue = b"q"
    message = {"message_id": "m", "body": base64.b64encode(b"hi").decode(), "queue_generation": 1}
    out = _decode(
        tmp_path,
        [
            (b"!sqs|queue|meta|" + b64url(queue), b"\x00SQ\x01" + _deep_member({"name": "q"})),
            (
                b"!sqs|msg|data|" + b64url(queue) + (1).to_bytes(8, "big") + b64url(b"m"),
                b"\x00SM\x01" + _deep_member(message),
            ),
        ],
    )
    assert json.loads((out / "sqs/q/_queue.json").read_text())["name"] == "q"
    assert json.loads((out / "sqs/q/messages.jsonl").read_text())["message_id"] == "m"


def _seg(raw: bytes) -> bytes:
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def test_decode_s3_bucket_meta_and_manifest(tmp_path: Path) -> None:
    bucket, obj, body = b"b", b"k", b"hello"
    u64 = (1).to_bytes(8, "big")
    part = {"part_no": 1, "chunk_count": 1, "chunk_sizes": [5], "size_bytes": 5}
    head = {"upload_id": "u", "parts": [part], "size_bytes": 5}
    out = _decode(
        tmp_path,
        [
            (
                b"!s3|bucket|meta|" + _seg(bucket),
                _deep_member({"bucket_name": "b", "generation": 1}),
            ),
            (b"!s3|obj|head|" + _seg(bucket) + u64 + _seg(obj), _deep_member(head)),
            (
                b"!s3|blob|" + _seg(bucket) + u64 + _seg(obj) + _seg(b"u") + u64 + bytes(8),
                body,
            ),
        ],
    )
    assert (out / "s3/b/k").read_bytes() == body


def _encode(tree: Path, tmp_path: Path) -> None:
    # The tree was edited after decoding: its CHECKSUMS no longer match on purpose.
    anyio.run(encode_snapshot, tree, tmp_path / "out.fsm", EncodeOptions(verify_checksums=False))


@pytest.mark.parametrize(
    "rel",
    [
        "s3/photos/_bucket.json",
        "s3/photos/2026/04/greeting.txt.elastickv-meta.json",
        "sqs/jobs/_queue.json",
    ],
)
def test_encode_accepts_deep_unknown_members(sample: Path, tmp_path: Path, rel: str) -> None:
    tree = copy_tree(sample, tmp_path / "tree")
    path = tree / rel
    path.write_bytes(_deep_member(json.loads(path.read_bytes())))
    _encode(tree, tmp_path)
    assert (tmp_path / "out.fsm").stat().st_size > 0


def test_encode_keymap_too_deep_is_a_data_error(sample: Path, tmp_path: Path) -> None:
    tree = copy_tree(sample, tmp_path / "tree")
    (tree / "s3/photos/KEYMAP.jsonl").write_text('{"encoded": ' + deep_json(20_000) + "}\n")
    with pytest.raises(DataError, match="nested too deeply"):
        _encode(tree, tmp_path)


def test_encode_keymap_deep_escaped_member(sample: Path, tmp_path: Path) -> None:
    tree = copy_tree(sample, tmp_path / "tree")
    line = '{"encoded": "x", "original": "eA", "kind": "s3-leaf-data", "deep": '
    (tree / "s3/photos/KEYMAP.jsonl").write_text(line + deep_json(DEPTH) + "}\n")
    # Parsed without a RecursionError; the record itself names no object file.
    with pytest.raises(DataError) as caught:
        _encode(tree, tmp_path)
    assert "nested" not in str(caught.value)
