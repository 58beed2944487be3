"""The self-test's tree comparison (REFERENCE_NOTES §6.2 step 4) with the real adapters' rules
(SQS generation rebase, Redis and S3 keyed sidecars as line sets)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from elastickv_async._adapters.registry import REGISTRY
from elastickv_async._core.encode.selftest import diff_trees
from elastickv_async._core.extsort import ExternalSorter

pytestmark = pytest.mark.anyio


async def _diff(a: Path, b: Path, subdirs: list[str], **limits: int) -> list[str]:
    spill = a.parent / "spill"
    spill.mkdir(exist_ok=True)
    comparers = {name: REGISTRY[name].compare for name in subdirs}
    lines = await diff_trees(a, b, comparers, spill, **limits)
    assert not any(spill.iterdir())  # sort scratch cleaned up
    return lines


def _put(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def test_identical_trees(tmp_path: Path) -> None:
    """Same files, same bytes: no lines."""
    for side in ("a", "b"):
        _put(tmp_path / side, "redis/db_0/strings/k.bin", b"v" * 300_000)
        _put(tmp_path / side, "s3/b/x/y.txt", b"")
    assert await _diff(tmp_path / "a", tmp_path / "b", ["redis", "s3"]) == []


async def test_three_kinds_sorted_per_subdir(tmp_path: Path) -> None:
    """Missing in input / bytes differ / missing in scratch; sorted per subdir, subdirs in order."""
    a, b = tmp_path / "a", tmp_path / "b"
    _put(a, "sqs/q/_queue.json", b"{}")
    _put(b, "sqs/q/_queue.json", b"{ }")
    _put(a, "redis/db_0/zz.bin", b"1")
    _put(b, "redis/db_0/aa.bin", b"1")
    _put(a, "redis/db_0/same.bin", b"12")
    _put(b, "redis/db_0/same.bin", b"13")
    _put(b, "redis/db_0/deep/x.bin", b"")
    assert await _diff(a, b, ["redis", "dynamodb", "sqs"]) == [
        "redis/db_0/aa.bin (missing in input)",
        "redis/db_0/deep/x.bin (missing in input)",
        "redis/db_0/same.bin (bytes differ)",
        "redis/db_0/zz.bin (missing in scratch)",
        "sqs/q/_queue.json (bytes differ)",
    ]


async def test_only_enabled_subdirs_and_regular_files(tmp_path: Path) -> None:
    """Other subdirs, symlinks and empty directories are not compared."""
    a, b = tmp_path / "a", tmp_path / "b"
    _put(a, "s3/b/x", b"1")
    _put(a, "dynamodb/t/_schema.json", b"{}")
    _put(b, "dynamodb/t/_schema.json", b"{}")
    (b / "dynamodb" / "t" / "empty").mkdir()
    os.symlink("/etc/hostname", b / "dynamodb" / "t" / "link.json")
    assert await _diff(a, b, ["dynamodb"]) == []


async def test_truncated_at_64(tmp_path: Path) -> None:
    """At 64+ lines: the first 64 in order, then the truncation note; later subdirs skipped."""
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(70):
        _put(a, f"redis/f{i:03d}", b"x")
    _put(a, "sqs/q/_queue.json", b"x")
    (b / "redis").mkdir(parents=True)
    lines = await _diff(a, b, ["redis", "sqs"])
    assert len(lines) == 65
    assert lines[0] == "redis/f000 (missing in scratch)"
    assert lines[63] == "redis/f063 (missing in scratch)"
    assert lines[64] == "... (truncated; first 64 paths shown)"


async def test_exactly_64_also_truncates(tmp_path: Path) -> None:
    """The reference cuts at >= 64, so exactly 64 lines also carry the note."""
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(60):
        _put(a, f"redis/f{i:03d}", b"x")
    for i in range(4):
        _put(a, f"sqs/q{i}/_queue.json", b"x")
    lines = await _diff(a, b, ["redis", "sqs"])
    assert len(lines) == 65 and lines[-1].startswith("... (truncated")
    assert lines[60] == "sqs/q0/_queue.json (missing in scratch)"


async def test_cap_spans_subdirs(tmp_path: Path) -> None:
    """63 lines in the first subdir plus 2 in the next: one from the second, then the note."""
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(63):
        _put(a, f"redis/f{i:03d}", b"x")
    _put(a, "sqs/q/b", b"x")
    _put(a, "sqs/q/a", b"x")
    lines = await _diff(a, b, ["redis", "sqs"])
    assert lines[63] == "sqs/q/a (missing in scratch)"
    assert lines[64] == "... (truncated; first 64 paths shown)"


def _msg(gen: int, body: str = "hi", attrs: str = "") -> bytes:
    return (
        b'{"message_id":"m1","body":"'
        + body.encode()
        + b'",'
        + attrs.encode()
        + b'"send_timestamp_millis":5,"available_at_millis":5,"visible_at_millis":0,'
        + b'"receive_count":0,"queue_generation":'
        + str(gen).encode()
        + b',"message_group_id":"g"}\n'
    )


async def test_sqs_generation_rebased_to_one_is_not_a_difference(tmp_path: Path) -> None:
    """An input queue at generation 7 decodes back at generation 1: no mismatch (§9.2 item 8)."""
    a, b = tmp_path / "a", tmp_path / "b"
    _put(a, "sqs/q/messages.jsonl", _msg(7) + _msg(7, "second"))
    _put(b, "sqs/q/messages.jsonl", _msg(1) + _msg(1, "second"))
    assert await _diff(a, b, ["sqs"]) == []


async def test_sqs_other_differences_still_reported(tmp_path: Path) -> None:
    """Only the generation token is forgiven: a body change, an extra line or gen != 1 differ."""
    cases = [
        (_msg(7), _msg(1, "changed")),
        (_msg(7), _msg(1) + _msg(1)),
        (_msg(7) + _msg(7), _msg(1)),
        (_msg(7), _msg(2)),
        (_msg(1), _msg(7)),
    ]
    for i, (ours, theirs) in enumerate(cases):
        _put(tmp_path / f"a{i}", "sqs/q/messages.jsonl", ours)
        _put(tmp_path / f"b{i}", "sqs/q/messages.jsonl", theirs)
        got = await _diff(tmp_path / f"a{i}", tmp_path / f"b{i}", ["sqs"])
        assert got == ["sqs/q/messages.jsonl (bytes differ)"], i


async def test_sqs_nested_generation_key_is_not_the_field(tmp_path: Path) -> None:
    """A message attribute named queue_generation is left alone; the top-level field is rebased."""
    attrs = '"message_attributes":{"queue_generation":{"DataType":"Number","StringValue":"7"}},'
    a, b = tmp_path / "a", tmp_path / "b"
    _put(a, "sqs/q/messages.jsonl", _msg(7, attrs=attrs))
    _put(b, "sqs/q/messages.jsonl", _msg(1, attrs=attrs))
    assert await _diff(a, b, ["sqs"]) == []


async def test_generation_rule_only_for_sqs_messages(tmp_path: Path) -> None:
    """The same lines elsewhere (another file name or adapter) compare byte for byte."""
    a, b = tmp_path / "a", tmp_path / "b"
    _put(a, "sqs/q/other.jsonl", _msg(7))
    _put(b, "sqs/q/other.jsonl", _msg(1))
    _put(a, "redis/q/messages.jsonl", _msg(7))
    _put(b, "redis/q/messages.jsonl", _msg(1))
    assert await _diff(a, b, ["redis", "sqs"]) == [
        "redis/q/messages.jsonl (bytes differ)",
        "sqs/q/other.jsonl (bytes differ)",
    ]


TTL_A = b'{"key":"new-ttl","expire_at_ms":1900000000000}\n'
TTL_B = b'{"key":"legacy","expire_at_ms":1800000000000}\n'


@pytest.mark.parametrize(
    "rel",
    [
        "redis/db_0/strings_ttl.jsonl",
        "redis/db_0/hll_ttl.jsonl",
        "redis/db_0/KEYMAP.jsonl",
        "s3/bucket/KEYMAP.jsonl",
    ],
)
async def test_keyed_sidecars_compare_as_line_sets(tmp_path: Path, rel: str) -> None:
    """Reordered lines of a keyed sidecar match (golden enc_redis_legacy_formats); others differ."""
    a, b = tmp_path / "a", tmp_path / "b"
    _put(a, rel, TTL_A + TTL_B)
    _put(b, rel, TTL_B + TTL_A)
    assert await _diff(a, b, ["redis", "s3"]) == []
    _put(b, rel, TTL_B + TTL_B)  # same size, different lines
    assert await _diff(a, b, ["redis", "s3"]) == [f"{rel} (bytes differ)"]


async def test_line_sets_only_for_those_files(tmp_path: Path) -> None:
    """Reordered lines elsewhere (a stream, a deeper KEYMAP) still differ."""
    a, b = tmp_path / "a", tmp_path / "b"
    for rel in ("redis/db_0/streams/x.jsonl", "s3/bucket/dir/KEYMAP.jsonl", "redis/KEYMAP.jsonl"):
        _put(a, rel, TTL_A + TTL_B)
        _put(b, rel, TTL_B + TTL_A)
    assert await _diff(a, b, ["redis", "s3"]) == [
        "redis/KEYMAP.jsonl (bytes differ)",
        "redis/db_0/streams/x.jsonl (bytes differ)",
        "s3/bucket/dir/KEYMAP.jsonl (bytes differ)",
    ]


async def test_line_set_spills_for_large_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sidecar larger than its sort's part of the budget (shared by both sides of each of
    the ``jobs`` files compared at once) is compared through spilled runs."""
    budgets: list[int] = []
    spill = ExternalSorter.spill

    def counted(self: ExternalSorter) -> None:
        budgets.append(self._budget)
        spill(self)

    monkeypatch.setattr(ExternalSorter, "spill", counted)
    lines = [b'{"key":"k%05d","expire_at_ms":1}\n' % i for i in range(2000)]
    a, b = tmp_path / "a", tmp_path / "b"
    _put(a, "redis/db_0/strings_ttl.jsonl", b"".join(lines))
    _put(b, "redis/db_0/strings_ttl.jsonl", b"".join(reversed(lines)))
    assert await _diff(a, b, ["redis"]) == []
    assert budgets == []
    assert await _diff(a, b, ["redis"], jobs=4, memory=4 * 2 * 2048) == []
    assert len(budgets) > 20 and set(budgets) == {2048}


async def test_many_files_in_one_directory(tmp_path: Path) -> None:
    """Differences in any batch of a large directory are found, each reported once."""
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(300):
        _put(a, f"dynamodb/t/items/{i:04d}.json", b"same")
        _put(b, f"dynamodb/t/items/{i:04d}.json", b"diff" if i in (7, 250) else b"same")
    assert await _diff(a, b, ["dynamodb"]) == [
        "dynamodb/t/items/0007.json (bytes differ)",
        "dynamodb/t/items/0250.json (bytes differ)",
    ]
