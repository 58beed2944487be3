"""SQS decode and encode in worker processes: the same bytes as in-process, the same typed
errors, whatever the number of processes."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from support import run_independent_files

from elastickv_async._adapters.sqs.decode import RENDER_CHUNK
from elastickv_async._core.cli import main
from elastickv_async._core.encode.api import encode_snapshot
from elastickv_async._core.errors import AdapterRecordError
from elastickv_async._core.options import DecodeOptions, EncodeOptions
from elastickv_async._core.pipeline import decode_snapshot

pytestmark = pytest.mark.anyio

TS = 1 << 40


def _fsm(records: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Snapshot bytes as in ``support.hand_built_fsm``, joined once (thousands of records)."""
    suffix = struct.pack(">Q", (1 << 64) - 1 - TS)
    parts = [b"EKVPBBL1", struct.pack("<Q", TS)]
    for key, value in sorted((k + suffix, b"\x00" * 9 + v) for k, v in records):
        parts += [struct.pack("<Q", len(key)), key, struct.pack("<Q", len(value)), value]
    return b"".join(parts)


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _meta(name: str, **fields: Any) -> tuple[bytes, bytes]:
    value = {"name": name, "generation": 1, **fields}
    return b"!sqs|queue|meta|" + _b64(name.encode()), b"\x00SQ\x01" + json.dumps(value).encode()


def _message(queue: str, i: int, **fields: Any) -> tuple[bytes, bytes]:
    msg_id = f"m{i:05d}"
    value = {
        "message_id": msg_id,
        "body": base64.b64encode(b"body %d <&>" % i).decode(),
        "md5_of_body": "0" * 32,
        "send_timestamp_millis": 1_700_000_000_000 + i % 97,
        "available_at_millis": 1_700_000_000_000 + i % 97,
        "visible_at_millis": i % 3,
        "receive_count": i % 2,
        "current_receipt_token": None,
        "queue_generation": 1,
        **fields,
    }
    key = b"!sqs|msg|data|" + _b64(queue.encode()) + (1).to_bytes(8, "big") + _b64(msg_id.encode())
    return key, b"\x00SM\x01" + json.dumps(value).encode()


def _varied(i: int) -> dict[str, Any]:
    """Every few messages a shape off the plain path: attributes, a token, nulls, bad UTF-8."""
    shape = i % 5
    if shape == 1:
        return {"message_attributes": {"k": {"DataType": "String", "StringValue": "v <1>"}}}
    if shape == 2:
        return {"current_receipt_token": base64.b64encode(b"tok%d" % i).decode()}
    if shape == 3:
        return {"sender_id": None, "first_receive_millis": 5}
    if shape == 4:
        return {"body": base64.b64encode(b"\xff\xfe%d" % i).decode()}
    return {}


def _snapshot(path: Path) -> int:
    """Three queues (one FIFO) with more messages than two worker calls hold; the count."""
    records = [_meta("plain"), _meta("other"), _meta("f.fifo", is_fifo=True)]
    count = 2 * RENDER_CHUNK + 300
    for i in range(count):
        queue = ("plain", "other", "f.fifo")[i % 3]
        fifo = {"message_group_id": "g", "sequence_number": i + 1} if queue == "f.fifo" else {}
        records.append(_message(queue, i, **fifo, **_varied(i)))
    path.write_bytes(_fsm(records))
    return count


async def test_decode_and_encode_are_the_same_with_and_without_processes(tmp_path: Path) -> None:
    source = tmp_path / "in.fsm"
    count = _snapshot(source)
    # Visibility kept, so that the settings sent to the workers matter.
    adapter_options = {"sqs": {"preserve_visibility": True}}
    trees = {}
    for workers in (0, 2):
        tree = tmp_path / f"tree-{workers}"
        options = DecodeOptions(
            workers=workers, adapter_options=adapter_options, full_fidelity=True
        )
        await decode_snapshot(source, tree, options)
        trees[workers] = run_independent_files(tree)
    assert trees[0] == trees[2]
    lines = [
        json.loads(line)
        for name, data in trees[0].items()
        if name.endswith("messages.jsonl")
        for line in data.splitlines()
    ]
    assert len(lines) == count
    assert {line["message_id"] for line in lines} == {f"m{i:05d}" for i in range(count)}
    assert any("message_attributes" in line for line in lines)
    assert any(isinstance(line["body"], dict) for line in lines)
    with_token = next(line for line in lines if line["message_id"] == "m00002")
    assert "current_receipt_token" in with_token

    outputs = []
    for workers in (0, 2):
        out = tmp_path / f"out-{workers}.fsm"
        await encode_snapshot(tmp_path / "tree-0", out, EncodeOptions(workers=workers))
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def _with_bad_message(path: Path) -> bytes:
    records = [_meta("q")] + [_message("q", i) for i in range(RENDER_CHUNK + 10)]
    bad_key, _ = _message("q", RENDER_CHUNK + 5)
    records = [r for r in records if r[0] != bad_key]
    records.append((bad_key, b'\x00SM\x01{"message_id":"x","send_timestamp_millis":"5"}'))
    path.write_bytes(_fsm(records))
    return bad_key


async def test_a_bad_message_found_in_a_worker_process_is_typed(tmp_path: Path) -> None:
    source = tmp_path / "in.fsm"
    bad_key = _with_bad_message(source)
    with pytest.raises(AdapterRecordError) as caught:
        await decode_snapshot(source, tmp_path / "out", DecodeOptions(workers=2))
    assert caught.value.code == "ErrSQSInvalidMessage"
    assert caught.value.adapter == "sqs"
    assert "send_timestamp_millis" in str(caught.value)
    assert _b64(b"m%05d" % (RENDER_CHUNK + 5)).decode() in str(caught.value)
    assert bad_key.startswith(b"!sqs|msg|data|")


def test_the_cli_reports_it_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.fsm"
    _with_bad_message(source)
    out = tmp_path / "out"
    argv = ["decode", "--quiet", "--input", str(source), "--output", str(out), "--workers", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "invalid SQS message" in err[0] and "send_timestamp_millis" in err[0]
    assert not out.exists() or not any(out.rglob("messages.jsonl"))


def test_worker_processes_under_python_dash_m(tmp_path: Path) -> None:
    """``python -m elastickv_async``: the worker processes load ``__main__`` again, which must
    neither fail (relative import) nor run the command a second time."""
    source = tmp_path / "in.fsm"
    _snapshot(source)
    out = tmp_path / "out"
    argv = ["decode", "--quiet", "--input", str(source), "--output", str(out), "--workers", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "elastickv_async", *argv], capture_output=True, text=True
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert sorted(p.parent.name for p in out.rglob("messages.jsonl")) == [
        "f.fifo",
        "other",
        "plain",
    ]
