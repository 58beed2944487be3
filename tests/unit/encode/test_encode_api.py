"""``encode_snapshot`` end to end with fake adapter encoders."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from encode_support import fake_specs, hand_built_fsm, make_tree, use_specs
from support import REPO_ROOT, count_tree_opens, raises_code, shared_dir

from elastickv_async._adapters.base import EncodeContext
from elastickv_async._core.encode import api, selftest
from elastickv_async._core.encode.api import encode_snapshot, parse_last_commit_ts
from elastickv_async._core.errors import (
    ChecksumMismatch,
    DataError,
    DumpTreeError,
    ElasticKVError,
    ManifestError,
    OutputError,
    SelfTestMismatch,
    SnapshotFormatError,
    UsageError,
)
from elastickv_async._core.options import DecodeOptions, EncodeOptions
from elastickv_async._core.report import Report
from elastickv_async._core.runfiles import leftover_owner

pytestmark = pytest.mark.anyio

RECORDS = {
    "redis": [(b"!redis|str|b", b"B"), (b"!redis|str|a", b"A")],
    "sqs": [(b"!sqs|queue|gen|cQ", b"1"), (b"!sqs|msg|data|x", b"\x00SM\x01{}")],
    "dynamodb": [(b"!ddb|meta|table|dA", b"\x00DS\x01")],
}
ALL_RECORDS = [r for recs in RECORDS.values() for r in recs]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _leftovers(directory: Path) -> list[str]:
    return sorted(
        p.name
        for p in directory.iterdir()
        if leftover_owner(p.name) is not None or p.name.endswith(".lock")
    )


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A manifest-only tree (ts 1234) whose fake adapters yield RECORDS."""
    use_specs(monkeypatch, fake_specs(RECORDS))
    return make_tree(tmp_path / "in")


async def test_output_bytes_and_sidecar(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All adapters' records come out sorted and framed; the sidecar has the reference's fields
    and the two paths exactly as given."""
    out = tmp_path / "OUT.fsm"
    monkeypatch.chdir(tmp_path)
    result = await encode_snapshot("in", "OUT.fsm", EncodeOptions(), force=True)
    expected = hand_built_fsm(1234, ALL_RECORDS)
    assert out.read_bytes() == expected
    assert (result.bytes_written, result.entries, result.last_commit_ts) == (len(expected), 5, 1234)
    assert result.adapters_enabled == ("redis", "dynamodb", "s3", "sqs")
    info = json.loads((tmp_path / "OUT.fsm.encode_info.json").read_text())
    assert list(info) == [
        "format_version", "encoder_version", "encoder_key_format_version", "wall_time_iso",
        "input_root", "output_fsm_path", "output_fsm_sha256", "last_commit_ts",
        "last_commit_ts_overridden", "manifest_last_commit_ts", "adapters_enabled", "self_test",
    ]  # fmt: skip
    assert info["output_fsm_sha256"] == result.sha256
    assert (info["input_root"], info["output_fsm_path"]) == ("in", "OUT.fsm")
    assert info["adapters_enabled"] == ["redis", "dynamodb", "s3", "sqs"]
    assert info["self_test"] == {"ran": False, "matched": False}
    assert not info["last_commit_ts_overridden"]
    assert _mode(out) == 0o600 and _mode(tmp_path / "OUT.fsm.encode_info.json") == 0o600
    assert _leftovers(tmp_path) == []


async def test_sidecar_cluster_id_and_html_escaping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """manifest_cluster_id appears when set; the sidecar escapes <, > and & like Go's Encoder."""
    use_specs(monkeypatch, fake_specs({}))
    make_tree(tmp_path / "a&b", cluster_id="c<1>&")
    monkeypatch.chdir(tmp_path)
    await encode_snapshot(
        Path("a&b"), tmp_path / "o.fsm", EncodeOptions(adapters="redis"), force=True
    )
    text = (tmp_path / "o.fsm.encode_info.json").read_text()
    assert (
        '"manifest_cluster_id": "c\\u003c1\\u003e\\u0026",\n'
        '  "adapters_enabled": [\n    "redis"\n  ],' in text
    )
    assert '"input_root": "a\\u0026b"' in text
    assert text.endswith("}\n")


async def test_contexts_given_to_adapters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only selected adapters run, each with the input root, the manifest and a private scratch."""
    seen: dict[str, EncodeContext] = {}
    use_specs(monkeypatch, fake_specs(RECORDS, seen=seen))
    tree = make_tree(tmp_path / "in")
    result = await encode_snapshot(
        tree, tmp_path / "o.fsm", EncodeOptions(adapters=("sqs", "redis")), force=True
    )
    assert sorted(seen) == ["redis", "sqs"]
    assert result.adapters_enabled == ("redis", "sqs")
    assert seen["sqs"].input_root == tree and seen["sqs"].manifest["last_commit_ts"] == 1234
    assert seen["sqs"].scratch != seen["redis"].scratch
    assert not seen["sqs"].scratch.exists()  # removed after the run
    assert (tmp_path / "o.fsm").read_bytes() == hand_built_fsm(
        1234, RECORDS["redis"] + RECORDS["sqs"]
    )


async def test_spill_path_gives_identical_bytes(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1-byte sort budget spills every batch to scratch; the output bytes are unchanged."""
    big = {
        name: [(f"{name}|{i:05d}".encode()[::-1], os.urandom(i % 50)) for i in range(1500)]
        for name in ("redis", "s3")
    }
    use_specs(monkeypatch, fake_specs(big))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    opts = EncodeOptions(adapters=("redis", "s3"), scratch_root=scratch)
    result = await encode_snapshot(tree, tmp_path / "spill.fsm", opts, sort_budget=1, force=True)
    assert result.report.counters["encode.sort_spills"] > 2
    assert (tmp_path / "spill.fsm").read_bytes() == hand_built_fsm(1234, big["redis"] + big["s3"])
    assert list(scratch.iterdir()) == []


async def test_last_commit_ts_override(tree: Path, tmp_path: Path) -> None:
    """A higher T restamps the header and every key; the sidecar says it was overridden."""
    out = tmp_path / "o.fsm"
    result = await encode_snapshot(tree, out, EncodeOptions(last_commit_ts=987654321), force=True)
    assert out.read_bytes() == hand_built_fsm(987654321, ALL_RECORDS)
    info = json.loads((tmp_path / "o.fsm.encode_info.json").read_text())
    assert (info["last_commit_ts"], info["manifest_last_commit_ts"]) == (987654321, 1234)
    assert info["last_commit_ts_overridden"] and result.last_commit_ts == 987654321
    # Equal to the manifest's is allowed (and still counts as an override, like the reference).
    await encode_snapshot(tree, out, EncodeOptions(last_commit_ts=1234), force=True)
    assert json.loads((tmp_path / "o.fsm.encode_info.json").read_text())[
        "last_commit_ts_overridden"
    ]


async def test_last_commit_ts_floor(tree: Path, tmp_path: Path) -> None:
    """T below the manifest's is a usage error (exit 1: a bad flag value) and writes nothing."""
    with raises_code(UsageError, "ErrLastCommitTSRegression") as info:
        await encode_snapshot(
            tree, tmp_path / "o.fsm", EncodeOptions(last_commit_ts=1233), force=True
        )
    assert info.value.exit_code == 1
    assert _names(tmp_path) == ["in"]


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("987654321", 987654321), ("007", 7), ("0x1F", 31), ("0XfF", 255),
     (" 42\t", 42), ("\u00a012\u3000", 12), ("18446744073709551615", (1 << 64) - 1),
     ("0xFFFFFFFFFFFFFFFF", (1 << 64) - 1)],
)  # fmt: skip
def test_parse_last_commit_ts(text: str, value: int) -> None:
    """Decimal and 0x/0X hex, Go-whitespace trimmed."""
    assert parse_last_commit_ts(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "  ", "100oops", "0xffZZ", "0x", "-1", "+1", "1_000", "1e3", "18446744073709551616",
     "0x10000000000000000", "١٢", "0b11", "\x1c5", "12 34"],
)  # fmt: skip
def test_parse_last_commit_ts_rejects(text: str) -> None:
    """Empty, junk, signs, underscores, non-ASCII digits and overflow are usage errors (exit 1)."""
    with pytest.raises(UsageError) as info:
        parse_last_commit_ts(text)
    assert info.value.exit_code == 1


async def test_missing_manifest_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No MANIFEST.json (or no input dir) exits 1, like the reference."""
    use_specs(monkeypatch, fake_specs({}))
    (tmp_path / "in").mkdir()
    for root in (tmp_path / "in", tmp_path / "absent"):
        with pytest.raises(UsageError) as info:
            await encode_snapshot(root, tmp_path / "o.fsm", EncodeOptions(), force=True)
        assert info.value.exit_code == 1


@pytest.mark.skipif(shared_dir() is None, reason="../shared is absent")
async def test_golden_format_version_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Golden enc_err_format_version: format_version 2 -> unsupported, exit 2, no output."""
    use_specs(monkeypatch, fake_specs({}))
    shared = shared_dir()
    assert shared is not None
    with raises_code(ManifestError, "ErrUnsupportedFormatVersion") as info:
        await encode_snapshot(
            shared / "golden/public/enc_err_format_version/input", tmp_path / "o.fsm", force=True
        )
    assert info.value.exit_code == 2
    assert _names(tmp_path) == []


async def test_adapter_not_in_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Selecting an adapter the manifest lists as absent or null is exit 2; a subset is fine."""
    use_specs(monkeypatch, fake_specs({}))
    tree = make_tree(tmp_path / "in", adapters={"redis": {}, "sqs": None})
    with raises_code(DataError, "errAdapterNotInManifest") as info:
        await encode_snapshot(tree, tmp_path / "o.fsm", EncodeOptions(), force=True)
    assert info.value.exit_code == 2
    with raises_code(DataError, "errAdapterNotInManifest"):
        await encode_snapshot(
            tree, tmp_path / "o.fsm", EncodeOptions(adapters=("sqs",)), force=True
        )
    await encode_snapshot(tree, tmp_path / "o.fsm", EncodeOptions(adapters=("redis",)), force=True)


async def test_zero_or_unknown_adapters(tree: Path, tmp_path: Path) -> None:
    """Zero adapters and unknown names are usage errors."""
    for adapters in ((), ("kafka",)):
        with pytest.raises(UsageError):
            await encode_snapshot(
                tree, tmp_path / "o.fsm", EncodeOptions(adapters=adapters), force=True
            )


@pytest.mark.parametrize(
    ("changes", "adapter", "feature"),
    [
        ({"exclusions": {"include_incomplete_uploads": True}}, "s3", "S3IncompleteUploads"),
        ({"exclusions": {"include_orphans": True}}, "s3", "S3Orphans"),
        ({"exclusions": {"preserve_sqs_visibility": True}}, "sqs", "SQSPreserveVisibility"),
        ({"exclusions": {"include_sqs_side_records": True}}, "sqs", "SQSSideRecords"),
    ],
)
async def test_unsupported_layouts_fail_closed(
    changes: dict[str, Any],
    adapter: str,
    feature: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trees decoded with options the encoders cannot reverse are refused (exit 2) unless that
    adapter is deselected."""
    use_specs(monkeypatch, fake_specs({}))
    excl = {"include_incomplete_uploads": False, "include_orphans": False,
            "preserve_sqs_visibility": False, "include_sqs_side_records": False}  # fmt: skip
    if "exclusions" in changes:
        changes = {"exclusions": excl | changes["exclusions"]}
    tree = make_tree(tmp_path / "in", **changes)
    with raises_code(DumpTreeError, f"ErrEncodeUnsupported{feature}") as info:
        await encode_snapshot(tree, tmp_path / "o.fsm", EncodeOptions(), force=True)
    assert info.value.exit_code == 2
    others = tuple(n for n in ("dynamodb", "s3", "redis", "sqs") if n != adapter)
    await encode_snapshot(tree, tmp_path / "o.fsm", EncodeOptions(adapters=others), force=True)


async def test_duplicate_key_across_adapters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same user key from two adapters is exit 2; the old output stays, no temp remains."""
    use_specs(monkeypatch, fake_specs({"redis": [(b"k", b"1")], "s3": [(b"k", b"2")]}))
    tree = make_tree(tmp_path / "in")
    out = tmp_path / "o.fsm"
    out.write_bytes(b"previous")
    with raises_code(DumpTreeError, "ErrEncodeDuplicateKey") as info:
        await encode_snapshot(
            tree, out, EncodeOptions(adapters=("redis", "s3")), sort_budget=1, force=True
        )
    assert info.value.exit_code == 2
    assert out.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []


async def test_key_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An over-limit key from an adapter aborts the run with exit 2."""
    use_specs(monkeypatch, fake_specs({"redis": [(b"k" * ((1 << 20) + 1), b"")]}))
    tree = make_tree(tmp_path / "in")
    with raises_code(DumpTreeError, "ErrEncodeKeyTooLarge"):
        await encode_snapshot(
            tree, tmp_path / "o.fsm", EncodeOptions(adapters=("redis",)), force=True
        )
    assert not (tmp_path / "o.fsm").exists() and _leftovers(tmp_path) == []


async def test_adapter_errors_propagate_unwrapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter's own error surfaces as itself; an OSError becomes a dump-tree error (exit 2)."""
    tree = make_tree(tmp_path / "in")
    use_specs(monkeypatch, fake_specs(RECORDS, errors={"s3": DumpTreeError("bad bucket")}))
    with pytest.raises(DumpTreeError, match="bad bucket"):
        await encode_snapshot(tree, tmp_path / "o.fsm", force=True)
    use_specs(
        monkeypatch, fake_specs(RECORDS, errors={"redis": PermissionError(errno.EACCES, "denied")})
    )
    with raises_code(DumpTreeError, "ErrEncodeAdapterData", match="^redis: .*denied") as info:
        await encode_snapshot(tree, tmp_path / "o.fsm", force=True)
    assert info.value.exit_code == 2
    assert info.value.adapter == "redis"
    assert isinstance(info.value.__cause__, PermissionError)
    assert _names(tmp_path) == ["in"]


async def test_stale_mismatch_removed_and_modes_fixed(tree: Path, tmp_path: Path) -> None:
    """A successful run removes an old mismatch.txt and leaves 0600 files even over 0644 ones."""
    out = tmp_path / "o.fsm"
    for path in (out, tmp_path / "o.fsm.encode_info.json", tmp_path / "o.fsm.mismatch.txt"):
        path.write_bytes(b"old")
        path.chmod(0o644)
    await encode_snapshot(tree, out, force=True)
    assert not (tmp_path / "o.fsm.mismatch.txt").exists()
    assert _mode(out) == 0o600 and _mode(tmp_path / "o.fsm.encode_info.json") == 0o600


# --- sidecar safety ----------------------------------------------------------------------------


async def test_symlinked_sidecar_untouched_and_fsm_rolled_back(tree: Path, tmp_path: Path) -> None:
    """A symlink at the sidecar path is refused (exit 1): its target is untouched, no .fsm stays."""
    target = tmp_path / "victim.txt"
    target.write_bytes(b"precious")
    sidecar = tmp_path / "o.fsm.encode_info.json"
    sidecar.symlink_to(target)
    with pytest.raises(OutputError, match="symlink") as info:
        await encode_snapshot(tree, tmp_path / "o.fsm", force=True)
    assert info.value.exit_code == 1
    assert sidecar.is_symlink() and target.read_bytes() == b"precious"
    assert not (tmp_path / "o.fsm").exists() and _leftovers(tmp_path) == []


async def test_hard_linked_sidecar_untouched(tree: Path, tmp_path: Path) -> None:
    """A hard-linked sidecar is refused; both names keep their bytes; the .fsm is rolled back."""
    other = tmp_path / "other.json"
    other.write_bytes(b"shared inode")
    sidecar = tmp_path / "o.fsm.encode_info.json"
    os.link(other, sidecar)
    with pytest.raises(OutputError, match="hard-linked"):
        await encode_snapshot(tree, tmp_path / "o.fsm", force=True)
    assert sidecar.read_bytes() == b"shared inode" and other.read_bytes() == b"shared inode"
    assert not (tmp_path / "o.fsm").exists()


async def test_directory_and_fifo_sidecars_untouched(tree: Path, tmp_path: Path) -> None:
    """A directory or a reader-less FIFO at the sidecar path is refused without blocking."""
    sidecar = tmp_path / "o.fsm.encode_info.json"
    sidecar.mkdir()
    with pytest.raises(OutputError):
        await encode_snapshot(tree, tmp_path / "o.fsm", force=True)
    assert sidecar.is_dir()
    sidecar.rmdir()
    os.mkfifo(sidecar)
    with pytest.raises(OutputError, match="FIFO"):
        await encode_snapshot(tree, tmp_path / "o.fsm", force=True)
    assert stat.S_ISFIFO(sidecar.lstat().st_mode) and not (tmp_path / "o.fsm").exists()


# --- injected failures ---------------------------------------------------------------------------


def _failing_fsync(monkeypatch: pytest.MonkeyPatch, *, directories: bool) -> None:
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode) == directories:
            raise OSError(errno.EIO, "injected fsync failure")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


async def test_temp_fsync_failure_publishes_nothing(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync of the temp file fails: the old output and sidecar stay, the temp is removed."""
    out = tmp_path / "o.fsm"
    out.write_bytes(b"previous")
    _failing_fsync(monkeypatch, directories=False)
    with pytest.raises(OutputError, match="injected") as info:
        await encode_snapshot(tree, out, force=True)
    assert info.value.exit_code == 1
    assert out.read_bytes() == b"previous" and _leftovers(tmp_path) == []


async def test_rename_failure_publishes_nothing(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rename fails: exit 1, the old output stays, the temp is removed, no sidecar is written."""
    out = tmp_path / "o.fsm"
    out.write_bytes(b"previous")

    def rename(src: Any, dst: Any) -> None:
        raise OSError(errno.EXDEV, "injected rename failure")

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OutputError) as info:
        await encode_snapshot(tree, out, force=True)
    assert info.value.exit_code == 1
    assert out.read_bytes() == b"previous" and _leftovers(tmp_path) == []
    assert not (tmp_path / "o.fsm.encode_info.json").exists()


async def test_directory_fsync_failure_rolls_back(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename happened but the directory fsync failed: the published .fsm is removed."""
    _failing_fsync(monkeypatch, directories=True)
    with pytest.raises(OutputError, match="fsync"):
        await encode_snapshot(tree, tmp_path / "o.fsm", force=True)
    assert not (tmp_path / "o.fsm").exists() and _leftovers(tmp_path) == []
    assert not (tmp_path / "o.fsm.encode_info.json").exists()


async def test_sidecar_write_failure_rolls_back_both(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sidecar was opened (ours) but its fsync failed: .fsm and sidecar are both removed."""
    real = os.fsync
    calls = []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:  # temp file, directory after rename, then the sidecar
            raise OSError(errno.ENOSPC, "injected")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OutputError):
        await encode_snapshot(tree, tmp_path / "o.fsm", force=True)
    assert _names(tmp_path) == ["in"]


# --- self-test ---------------------------------------------------------------------------------


def _head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(8)


def _write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def _fake_decoder(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes], ts: int | None = None,
                  error: ElasticKVError | None = None) -> list[DecodeOptions]:  # fmt: skip
    """Replace the self-test's decoder: it writes ``files`` and reports header ``ts``."""
    calls: list[DecodeOptions] = []

    async def decode(
        fsm: Path, out: Path, options: DecodeOptions, *, report: Report, progress: Any = None
    ) -> Report:
        calls.append(options)
        # In a worker thread: the self-test calls this fake on the event loop.
        assert await anyio.to_thread.run_sync(_head, fsm) == b"EKVPBBL1"
        if error is not None:
            raise error
        await anyio.to_thread.run_sync(_write_files, out, files)
        report.snapshot["last_commit_ts"] = ts if ts is not None else 1234
        return report

    monkeypatch.setattr(selftest, "decode_snapshot", decode)
    return calls


async def test_self_test_match_publishes(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scratch equals input: published, sidecar ran/matched, decode options from the manifest."""
    (tree / "redis" / "db_0").mkdir(parents=True)
    (tree / "redis" / "db_0" / "k.bin").write_bytes(b"v")
    calls = _fake_decoder(monkeypatch, {"redis/db_0/k.bin": b"v"})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = await encode_snapshot(
        tree, tmp_path / "o.fsm", EncodeOptions(self_test=True, scratch_root=scratch), force=True
    )
    assert result.self_test_ran and result.self_test_matched
    assert json.loads((tmp_path / "o.fsm.encode_info.json").read_text())["self_test"] == {
        "ran": True,
        "matched": True,
    }
    assert (tmp_path / "o.fsm").read_bytes() == hand_built_fsm(1234, ALL_RECORDS)
    assert calls[0].adapters == ("dynamodb", "s3", "redis", "sqs")
    adapter_options = calls[0].adapter_options
    assert not adapter_options["s3"].rename_collisions
    assert adapter_options["dynamodb"].layout == "per-item"
    assert adapter_options["redis"].keep_expired
    assert list(scratch.iterdir()) == []


async def test_self_test_mismatch_publishes_nothing(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A difference: exit 2, old .fsm removed, mismatch.txt (0600) lists it, matched=false."""
    (tree / "sqs" / "q").mkdir(parents=True)
    (tree / "sqs" / "q" / "_queue.json").write_bytes(b"{}")
    _fake_decoder(monkeypatch, {"sqs/q/_queue.json": b"{ }", "redis/extra.bin": b""})
    out = tmp_path / "o.fsm"
    out.write_bytes(b"previous good snapshot")
    with pytest.raises(SelfTestMismatch) as info:
        await encode_snapshot(
            tree, out, EncodeOptions(self_test=True, scratch_root=tmp_path), force=True
        )
    assert info.value.exit_code == 2
    assert not out.exists() and _leftovers(tmp_path) == []
    mismatch = tmp_path / "o.fsm.mismatch.txt"
    assert (
        mismatch.read_text()
        == "redis/extra.bin (missing in input)\nsqs/q/_queue.json (bytes differ)\n"
    )
    assert _mode(mismatch) == 0o600
    info_doc = json.loads((tmp_path / "o.fsm.encode_info.json").read_text())
    assert info_doc["self_test"] == {"ran": True, "matched": False}
    assert len(info_doc["output_fsm_sha256"]) == 64
    assert not any(n.endswith(".selftest") for n in _names(tmp_path))


async def test_self_test_rejected_fsm_and_header(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decoder data error or a wrong header timestamp is a mismatch with the reference's text."""

    _fake_decoder(monkeypatch, {}, error=SnapshotFormatError("cut", code="ErrSnapshotTruncated"))
    with pytest.raises(SelfTestMismatch):
        await encode_snapshot(
            tree,
            tmp_path / "o.fsm",
            EncodeOptions(self_test=True, scratch_root=tmp_path),
            force=True,
        )
    text = (tmp_path / "o.fsm.mismatch.txt").read_text()
    assert text == "self-test failed: DecodeSnapshot rejected the produced .fsm: cut"
    _fake_decoder(monkeypatch, {}, ts=99)
    with pytest.raises(SelfTestMismatch):
        await encode_snapshot(
            tree,
            tmp_path / "o.fsm",
            EncodeOptions(self_test=True, scratch_root=tmp_path),
            force=True,
        )
    text = (tmp_path / "o.fsm.mismatch.txt").read_text()
    assert text == "self-test failed: header.LastCommitTS mismatch (want 1234, got 99)\n"
    assert not (tmp_path / "o.fsm").exists()


async def test_self_test_infrastructure_error_is_not_a_mismatch(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A usage/output problem of the self-test decode propagates (exit 1); nothing is written."""
    _fake_decoder(monkeypatch, {}, error=OutputError("scratch full"))
    with pytest.raises(OutputError):
        await encode_snapshot(
            tree,
            tmp_path / "o.fsm",
            EncodeOptions(self_test=True, scratch_root=tmp_path),
            force=True,
        )
    assert _names(tmp_path) == ["in"]


async def test_mismatch_keeps_symlinked_sidecar(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On mismatch, symlinked mismatch.txt/sidecar are not written through (only warnings)."""
    _fake_decoder(monkeypatch, {"redis/x": b""})
    target = tmp_path / "victim"
    target.write_bytes(b"keep")
    (tmp_path / "o.fsm.mismatch.txt").symlink_to(target)  # removed as stale first: a symlink
    (tmp_path / "o.fsm.encode_info.json").symlink_to(target)
    report = Report()
    with pytest.raises(SelfTestMismatch):
        await encode_snapshot(
            tree,
            tmp_path / "o.fsm",
            EncodeOptions(self_test=True, scratch_root=tmp_path),
            report=report,
            force=True,
        )
    assert target.read_bytes() == b"keep"
    assert (tmp_path / "o.fsm.encode_info.json").is_symlink()
    assert (tmp_path / "o.fsm.mismatch.txt").read_text() == "redis/x (missing in input)\n"
    assert "encode_sidecar_failed" in report.warnings


def test_api_reexported() -> None:
    """The package and the encode subpackage expose the same callable."""
    import elastickv_async
    import elastickv_async._core.encode as encode_pkg

    assert elastickv_async.encode_snapshot is api.encode_snapshot is encode_pkg.encode_snapshot


async def test_self_test_decodes_like_the_producer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The self-test decode gets the selected adapters and rename_s3_collisions from MANIFEST."""
    use_specs(monkeypatch, fake_specs({}))
    excl = {"include_incomplete_uploads": False, "include_orphans": False,
            "preserve_sqs_visibility": False, "include_sqs_side_records": False,
            "rename_s3_collisions": True}  # fmt: skip
    tree = make_tree(tmp_path / "in", exclusions=excl)
    calls = _fake_decoder(monkeypatch, {})
    opts = EncodeOptions(adapters=("s3", "redis"), self_test=True, scratch_root=tmp_path, jobs=3)
    await encode_snapshot(tree, tmp_path / "o.fsm", opts, force=True)
    assert calls[0].adapters == ("s3", "redis")
    assert calls[0].adapter_options["s3"].rename_collisions
    assert calls[0].jobs == 3


async def test_outputs_inside_an_adapter_subtree_refused(tree: Path, tmp_path: Path) -> None:
    """An output or scratch root inside a walked adapter subtree is a usage error."""
    (tree / "s3" / "bucket").mkdir(parents=True)
    with pytest.raises(UsageError, match="--output"):
        await encode_snapshot(tree, tree / "s3" / "bucket" / "o.fsm", force=True)
    with pytest.raises(UsageError, match="--scratch-root"):
        await encode_snapshot(
            tree, tmp_path / "o.fsm", EncodeOptions(scratch_root=tree / "s3"), force=True
        )
    # Next to the subtrees (the tree root itself) is fine.
    await encode_snapshot(tree, tree / "o.fsm", force=True)


_SAMPLE = REPO_ROOT / "examples" / "sample.fsm"


@pytest.mark.skipif(not _SAMPLE.is_file(), reason="examples/sample.fsm is absent")
@pytest.mark.parametrize("workers", [0, 1])
async def test_the_checksums_check_reads_no_file_the_encoders_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """The encoders' reads record each file's digest, and the check against CHECKSUMS takes
    those instead of reading the files again: every file of the adapters' subtrees is opened
    once in this process (workers=0), or not at all when the encoders read in a worker
    process; a large S3 body, read by the chunk when the snapshot is written, is opened once
    per chunk and not by the check. A changed file or body is still found."""
    from elastickv_async._core.pipeline import decode_snapshot

    tree = tmp_path / "tree"
    await decode_snapshot(_SAMPLE, tree)
    opened = count_tree_opens(monkeypatch)
    await encode_snapshot(tree, tmp_path / "out.fsm", EncodeOptions(workers=workers))
    deferred = "s3/photos/2026/04/pixels.bin"  # 1.5 MiB: two chunks
    data_files = [
        str(p.relative_to(tree))
        for p in tree.rglob("*")
        # MANIFEST.json and CHECKSUMS are the run's own
        if p.is_file() and p.parent != tree and str(p.relative_to(tree)) != deferred
    ]
    assert len(data_files) > 15
    assert opened[deferred] == 2
    if workers == 0:
        assert {rel: opened.get(rel, 0) for rel in data_files} == dict.fromkeys(data_files, 1)
    else:
        # Redis values and DynamoDB items are read in the worker process.
        assert max(opened.get(rel, 0) for rel in data_files) == 1
        assert any(rel.startswith("redis/") and rel not in opened for rel in data_files)
    body = (tree / deferred).read_bytes()
    (tree / deferred).write_bytes(body[:-1] + bytes([body[-1] ^ 1]))  # in place, same size
    with raises_code(ChecksumMismatch, "ErrChecksumMismatch", match=deferred):
        await encode_snapshot(tree, tmp_path / "body.fsm", EncodeOptions(workers=workers))
    (tree / deferred).write_bytes(body)
    victim = tree / sorted(data_files)[-1]
    victim.write_bytes(victim.read_bytes() + b" ")
    with raises_code(ChecksumMismatch, "ErrChecksumMismatch", match=sorted(data_files)[-1]):
        await encode_snapshot(tree, tmp_path / "again.fsm", EncodeOptions(workers=workers))
