"""The decode engine end to end: structure, safety and the report."""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import REPO_ROOT, raises_code

from elastickv_async import DecodeOptions, Progress, decode_snapshot
from elastickv_async._adapters.base import Routed
from elastickv_async._core.cli import main
from elastickv_async._core.dump.checksums import compute_checksums
from elastickv_async._core.dump.writer import DumpWriter
from elastickv_async._core.errors import SnapshotFormatError
from elastickv_async._core.meter import ProgressMeter
from elastickv_async._core.pipeline import _DecodeRun
from elastickv_async._core.report import Report, make_logger
from elastickv_async._core.runfiles import leftover_owner
from elastickv_async._core.snapshot.entry import Entry

pytestmark = pytest.mark.anyio
SAMPLE = REPO_ROOT / "examples" / "sample.fsm"


def _entry(key: bytes, ts: int, body: bytes, *, tombstone: bool = False) -> bytes:
    encoded = key + struct.pack(">Q", ts ^ (2**64 - 1))
    value = bytes([1 if tombstone else 0]) + struct.pack("<Q", 0) + body
    return struct.pack("<Q", len(encoded)) + encoded + struct.pack("<Q", len(value)) + value


def _snapshot(path: Path, last_commit_ts: int, entries: list[bytes]) -> Path:
    path.write_bytes(b"EKVPBBL1" + struct.pack("<Q", last_commit_ts) + b"".join(entries))
    return path


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_default_channels_bound_the_values_in_flight_to_64_mib() -> None:
    """With the default batching, the four adapters' channels hold at most 64 MiB of values:
    per adapter the buffered batches, the one being routed, the one in hand and one more
    1 MiB value (a batch closes only after the value that crosses the limit)."""
    options = DecodeOptions()
    per_adapter = (options.channel_buffer + 2) * options.batch_bytes + (1 << 20)
    assert 4 * per_adapter <= 64 << 20


async def test_sample_decodes_without_blocking_the_loop(tmp_path: Path) -> None:
    """A full decode makes no blocking call on the event loop and writes a verifiable tree."""
    out = tmp_path / "out"
    report = await decode_snapshot(SAMPLE, out)
    listing = await anyio.to_thread.run_sync(compute_checksums, out)
    assert (out / "CHECKSUMS").read_bytes() == listing
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["adapters"]["sqs"] == {"queues": ["jobs"]}
    assert manifest["source"]["hlc_ceiling_ms"] == 1_795_312_252_565
    assert report.snapshot["footer"] == "valid"
    assert report.counters["entries.unknown"] == 0
    assert not [p for p in out.rglob("*") if leftover_owner(p.name) is not None]


async def test_failure_leaves_no_manifest_and_no_scratch(tmp_path: Path) -> None:
    """A corrupt footer fails the run: no MANIFEST.json, no scratch or temp files left."""
    data = bytearray(SAMPLE.read_bytes())
    data[-1] ^= 0xFF
    bad = tmp_path / "bad.fsm"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    with raises_code(SnapshotFormatError, "ErrSnapshotChecksumMismatch"):
        await decode_snapshot(bad, out)
    assert not (out / "MANIFEST.json").exists()
    assert not [p for p in out.rglob("*") if leftover_owner(p.name) is not None]


@pytest.mark.parametrize("cancel_at", [1, 2, 3, 5, 8])
async def test_cancellation_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cancel_at: int
) -> None:
    """Cancelling a decode at its Nth file operation leaves no manifest, scratch or temp file."""
    original = DumpWriter._call
    calls = 0
    with anyio.CancelScope() as scope:

        async def cancelling_run(self: DumpWriter, func: Any, *args: object) -> int:
            nonlocal calls
            calls += 1
            if calls == cancel_at:
                scope.cancel()
            return await original(self, func, *args)

        monkeypatch.setattr(DumpWriter, "_call", cancelling_run)
        await decode_snapshot(SAMPLE, tmp_path / "out", DecodeOptions(scratch_root=tmp_path))
    assert scope.cancelled_caught
    out = tmp_path / "out"
    assert not (out / "MANIFEST.json").exists()
    assert not [p for p in out.rglob("*") if leftover_owner(p.name) is not None]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


async def test_scratch_root_outside_output(tmp_path: Path) -> None:
    """--scratch-root puts scratch elsewhere and removes it; the output root is refused."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "out"
    await decode_snapshot(SAMPLE, out, DecodeOptions(scratch_root=scratch))
    assert list(scratch.iterdir()) == []
    assert "s3/photos/2026/04/pixels.bin" in _files(out)
    with pytest.raises(Exception, match="scratch-root"):
        await decode_snapshot(
            SAMPLE, tmp_path / "out2", DecodeOptions(scratch_root=tmp_path / "out2")
        )


async def test_versions_newer_than_the_header_are_ignored(tmp_path: Path) -> None:
    """With a key straddling last_commit_ts, newer versions are ignored, even a lone one."""
    fsm = _snapshot(
        tmp_path / "s.fsm",
        5000,
        [
            _entry(b"!redis|str|config", 9000, b"\xff\x01\x00v3"),
            _entry(b"!redis|str|config", 5000, b"\xff\x01\x00v2"),
            _entry(b"!redis|str|temp", 9000, b"\xff\x01\x00later"),
        ],
    )
    out = tmp_path / "out"
    report = await decode_snapshot(fsm, out, DecodeOptions(adapters=("redis",)))
    assert (out / "redis/db_0/strings/config.bin").read_bytes() == b"v2"
    assert not (out / "redis/db_0/strings/temp.bin").exists()
    assert report.counters["mvcc.future_versions"] == 2
    assert "mvcc_header_below_data" not in report.warnings


async def test_header_below_all_history_is_decoded_newest_wins(tmp_path: Path) -> None:
    """When no key straddles the header's timestamp, the header is not trusted (and warned)."""
    fsm = _snapshot(
        tmp_path / "s.fsm",
        60,
        [
            _entry(b"!redis|str|a", 7000, b"\xff\x01\x00A"),
            _entry(b"!redis|str|b", 7000, b"\xff\x01\x00B"),
        ],
    )
    out = tmp_path / "out"
    report = await decode_snapshot(fsm, out, DecodeOptions(adapters=("redis",)))
    assert _files(out / "redis/db_0/strings") == ["a.bin", "b.bin"]
    assert report.warnings["mvcc_header_below_data"].count == 1
    assert report.counters["entries.total"] == 2


async def test_unknown_prefixes_are_warned_once_per_family(tmp_path: Path) -> None:
    """Keys matching no route are counted and reported per prefix family."""
    fsm = _snapshot(
        tmp_path / "s.fsm",
        100,
        [_entry(b"!mystery|x|" + bytes([i]), 50, b"") for i in range(5)],
    )
    report = await decode_snapshot(fsm, tmp_path / "out")
    warning = report.warnings["unknown_prefix_entries"]
    assert warning.count == 1
    assert warning.examples[0]["prefix"] == "!mystery|x|"
    assert warning.examples[0]["count"] == 5


async def test_progress_shows_every_stage(tmp_path: Path) -> None:
    """Each stage (read, flush, checksums) starts and ends with a sample, in order; the read
    stage ends at the file's size and the last sample counts every file the tree holds."""
    samples: list[Progress] = []
    out = tmp_path / "out"
    await decode_snapshot(SAMPLE, out, progress=samples.append)
    finished = [s for s in samples if s.finished]
    assert [s.stage for s in finished] == ["read", "flush", "checksums"]
    assert samples[0].stage == "read" and not samples[0].finished
    read = finished[0]
    assert read.unit == "bytes" and read.done == read.total == SAMPLE.stat().st_size
    assert read.entries > 0
    # The last sample counts CHECKSUMS; the writer does not write MANIFEST.json.
    files = [p for p in out.rglob("*") if p.is_file() and p.name != "MANIFEST.json"]
    assert finished[-1].files_written == len(files)
    assert finished[-1].bytes_written == sum(p.stat().st_size for p in files)
    assert finished[-1].total == len(files) - 1  # the files CHECKSUMS lists


def test_cli_report_and_json_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--report writes the run's JSON report; --log-format json prints JSON lines on stderr."""
    fsm = _snapshot(tmp_path / "s.fsm", 100, [_entry(b"!mystery|x|1", 50, b"")])
    report_path = tmp_path / "report.json"
    code = main(
        [
            "decode",
            "--input",
            str(fsm),
            "--output",
            str(tmp_path / "out"),
            "--report",
            str(report_path),
            "--log-format",
            "json",
        ]
    )
    assert code == 0
    report: dict[str, Any] = json.loads(report_path.read_text())
    assert report["exit_code"] == 0
    assert [w["event"] for w in report["warnings"]] == ["unknown_prefix_entries"]
    events = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    assert any(e["event"] == "unknown_prefix_entries" for e in events)
    assert any(e["event"] == "progress" and e["done"] for e in events)


async def test_jsonl_layout_round_trips(tmp_path: Path) -> None:
    """A DynamoDB JSONL dump encodes back to the same snapshot as its per-item twin."""
    from elastickv_async import EncodeOptions, encode_snapshot

    per_item, jsonl = tmp_path / "per-item", tmp_path / "jsonl"
    await decode_snapshot(SAMPLE, per_item)
    await decode_snapshot(
        SAMPLE, jsonl, DecodeOptions(adapter_options={"dynamodb": {"layout": "jsonl"}})
    )
    assert any(p.suffix == ".jsonl" for p in (jsonl / "dynamodb").rglob("*"))
    a, b = tmp_path / "a.fsm", tmp_path / "b.fsm"
    await encode_snapshot(per_item, a, EncodeOptions(self_test=True))
    await encode_snapshot(jsonl, b, EncodeOptions(self_test=True))
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("batch_bytes", [1, 10, 1 << 20])
async def test_batches_close_at_the_entry_or_byte_limit(tmp_path: Path, batch_bytes: int) -> None:
    """An adapter's batches close at ``batch_size`` entries or at the entry whose value
    brings them to ``batch_bytes``, whatever runs of one route the router finds; internal
    and unknown keys between them are counted, not sent."""
    options = DecodeOptions(adapters="sqs", batch_size=4, workers=0)
    report = Report()
    run = _DecodeRun(
        None, "", tmp_path, tmp_path, options, report, make_logger(report), ProgressMeter(None)
    )
    await run._setup()
    run.batch_bytes = batch_bytes
    names = [b"!sqs|msg|data|%03d" % i for i in range(23)]
    names += [b"!txn|lock|%03d" % i for i in range(5)] + [b"!zz|%d" % i for i in range(3)]
    entries = [Entry(key, b"v" * (i % 7), 1, 0, False) for i, key in enumerate(sorted(names))]

    async def batches() -> AsyncIterator[list[Entry]]:
        for start in range(0, len(entries), 6):
            yield entries[start : start + 6]

    send, receive = anyio.create_memory_object_stream[list[Routed]](100)
    await run._produce(batches(), {"sqs": send})
    async with receive:
        got = [[entry.key for _, entry in batch] async for batch in receive]
    expected: list[list[bytes]] = [[]]
    size = 0
    for entry in entries:
        if entry.key.startswith(b"!sqs|msg|data|"):
            expected[-1].append(entry.key)
            size += len(entry.value)
            if len(expected[-1]) == 4 or size >= batch_bytes:
                expected.append([])
                size = 0
    assert got == [batch for batch in expected if batch]
    assert run.counters == {"total": 0, "internal": 5, "unknown": 3, "sqs": 23} | {
        name: 0 for name in run.counters if name not in ("total", "internal", "unknown", "sqs")
    }
    assert run.unknown_families == {b"!zz|0": 1, b"!zz|1": 1, b"!zz|2": 1}
