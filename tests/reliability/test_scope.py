"""``decode --scope``: only the named tables, buckets, queues or Redis keys are dumped.

Every check compares a scoped tree with the full decode of the same snapshot: the scoped
tree must hold exactly the full tree's files of the units in scope.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hostile import SAMPLE_FSM, cli
from support import hand_built_fsm, shared_dir, tree_files

from elastickv_async import DecodeOptions, decode_snapshot, encode_snapshot
from elastickv_async._adapters.redis import keys as redis_keys
from elastickv_async._core.errors import UsageError
from elastickv_async._core.options import EncodeOptions
from elastickv_async._core.report import Report

_U32 = struct.Struct(">I").pack
_U64 = struct.Struct(">Q").pack
_TS = 1 << 20
_DB = "redis/db_0/"
REALNODE = (shared_dir() or Path("/nonexistent")) / "realnode" / "p4_mixed_00000000000001f5.fsm"


def _wide(prefix: bytes, user_key: bytes, suffix: bytes = b"") -> bytes:
    return prefix + _U32(len(user_key)) + user_key + suffix


def _under(files: dict[str, bytes], *roots: str) -> dict[str, bytes]:
    return {p: b for p, b in files.items() if p.startswith(roots)}


def _data(files: dict[str, bytes]) -> dict[str, bytes]:
    """The tree's data files (MANIFEST.json and CHECKSUMS describe the whole run)."""
    return {p: b for p, b in files.items() if p not in ("MANIFEST.json", "CHECKSUMS")}


# --- the Redis user key of every row family ---------------------------------------------------


def test_redis_user_key_of_every_routed_family() -> None:
    key = b"us\xffer"
    rows = {
        redis_keys.STRING: b"!redis|str|" + key,
        redis_keys.HLL: b"!redis|hll|" + key,
        redis_keys.TTL: b"!redis|ttl|" + key,
        redis_keys.HASH_LEGACY: b"!redis|hash|" + key,
        redis_keys.SET_LEGACY: b"!redis|set|" + key,
        redis_keys.STREAM_LEGACY: b"!redis|stream|" + key,
        redis_keys.ZSET_LEGACY: b"!redis|zset|" + key,
        redis_keys.HASH_META: _wide(b"!hs|meta|", key),
        redis_keys.HASH_FIELD: _wide(b"!hs|fld|", key, b"field"),
        redis_keys.HASH_DELTA: _wide(b"!hs|meta|d|", key, b"\x00" * 12),
        redis_keys.LIST_META: b"!lst|meta|" + key,
        redis_keys.LIST_ITEM: b"!lst|itm|" + key + _U64(1 << 63),
        redis_keys.LIST_DELTA: _wide(b"!lst|meta|d|", key, b"\x00" * 12),
        redis_keys.SET_META: _wide(b"!st|meta|", key),
        redis_keys.SET_MEMBER: _wide(b"!st|mem|", key, b"m"),
        redis_keys.SET_DELTA: _wide(b"!st|meta|d|", key, b"\x00" * 12),
        redis_keys.ZSET_META: _wide(b"!zs|meta|", key),
        redis_keys.ZSET_MEMBER: _wide(b"!zs|mem|", key, b"m"),
        redis_keys.ZSET_DELTA: _wide(b"!zs|meta|d|", key, b"\x00" * 12),
        redis_keys.STREAM_META: _wide(b"!stream|meta|", key),
        redis_keys.STREAM_ENTRY: _wide(b"!stream|entry|", key, b"\x00" * 16),
    }
    assert set(rows) == set(redis_keys.ROUTED_PREFIXES)
    for prefix, row in rows.items():
        assert redis_keys.user_key(prefix, row) == key, prefix
    assert redis_keys.user_key(redis_keys.HASH_META, b"!hs|meta|\x00\x00\x00\x09ab") is None
    assert redis_keys.user_key(redis_keys.LIST_ITEM, b"!lst|itm|abc") is None


# --- the library, under every event loop ------------------------------------------------------


def _hash_rows(user_key: bytes, expire_ms: int) -> list[tuple[bytes, bytes]]:
    return [
        (_wide(b"!hs|fld|", user_key, b"f"), b"v-" + user_key),
        (_wide(b"!hs|meta|", user_key), _U64(1)),
        (b"!redis|ttl|" + user_key, _U64(expire_ms)),
    ]


@pytest.fixture
def redis_fsm(tmp_path: Path) -> Path:
    rows = [
        *_hash_rows(b"h:keep", 4_000_000_000_000),
        *_hash_rows(b"h:drop", 4_000_000_000_001),
        *_hash_rows(b"bin\xff", 4_000_000_000_002),
    ]
    path = tmp_path / "redis.fsm"
    path.write_bytes(hand_built_fsm(_TS, rows))
    return path


@pytest.mark.anyio
async def test_redis_glob_keeps_a_hash_and_its_ttl_together(
    redis_fsm: Path, tmp_path: Path
) -> None:
    await decode_snapshot(redis_fsm, tmp_path / "full")
    full = tree_files(tmp_path / "full")
    hashes = _under(full, _DB + "hashes/")
    assert len(hashes) == 3
    kept_name = _DB + "hashes/h%3Akeep.json"
    assert b"4000000000000" in hashes[kept_name]

    report = await decode_snapshot(
        redis_fsm, tmp_path / "scoped", DecodeOptions(scope={"redis": "h:k*,nothing*"})
    )
    scoped = tree_files(tmp_path / "scoped")
    assert _under(scoped, _DB) == {kept_name: full[kept_name]}
    assert report.counters["entries.out_of_scope"] == 6
    [missing] = report.warnings["scope_name_not_found"].examples
    assert (missing["adapter"], missing["name"]) == ("redis", "nothing*")
    manifest = json.loads(scoped["MANIFEST.json"])
    assert manifest["scope"] == {"redis": ["h:k*", "nothing*"]}
    assert list(manifest["adapters"]) == ["redis"]
    assert "scope" not in json.loads(full["MANIFEST.json"])


@pytest.mark.anyio
async def test_redis_glob_matches_raw_bytes(redis_fsm: Path, tmp_path: Path) -> None:
    # A pattern's undecodable bytes arrive as surrogates (as from the command line).
    pattern = b"bin\xff".decode("utf-8", "surrogateescape")
    await decode_snapshot(redis_fsm, tmp_path / "a", DecodeOptions(scope={"redis": [pattern]}))
    tree = tree_files(tmp_path / "a")
    assert list(_under(tree, _DB)) == [_DB + "hashes/bin%FF.json"]
    # MANIFEST.json is JSON text: the undecodable byte is recorded as U+FFFD.
    assert json.loads(tree["MANIFEST.json"])["scope"] == {"redis": ["bin\ufffd"]}
    # ``?`` stands for one byte, whatever it is.
    await decode_snapshot(redis_fsm, tmp_path / "b", DecodeOptions(scope={"redis": ["bin?"]}))
    assert list(_under(tree_files(tmp_path / "b"), _DB)) == [_DB + "hashes/bin%FF.json"]


@pytest.mark.anyio
async def test_exact_names_give_the_full_decodes_subtrees(tmp_path: Path) -> None:
    await decode_snapshot(SAMPLE_FSM, tmp_path / "full")
    full = tree_files(tmp_path / "full")
    scope = {"dynamodb": ["orders"], "s3": ["photos"], "sqs": ["jobs"]}
    report = await decode_snapshot(SAMPLE_FSM, tmp_path / "scoped", DecodeOptions(scope=scope))
    scoped = tree_files(tmp_path / "scoped")
    expected = _under(full, "dynamodb/orders/", "s3/photos/", "sqs/jobs/")
    # Redis, not scoped, does not run at all.
    assert expected and _under(full, _DB)
    assert _data(scoped) == expected
    assert not report.warnings
    manifest = json.loads(scoped["MANIFEST.json"])
    assert manifest["scope"] == scope
    assert manifest["adapters"] == {
        "dynamodb": {"tables": ["orders"]},
        "s3": {"buckets": ["photos"]},
        "sqs": {"queues": ["jobs"]},
    }


@pytest.mark.anyio
async def test_scoped_tree_encodes_and_passes_the_self_test(tmp_path: Path) -> None:
    scope = {"dynamodb": ["orders"], "redis": ["*"]}
    await decode_snapshot(SAMPLE_FSM, tmp_path / "scoped", DecodeOptions(scope=scope))
    out = tmp_path / "scoped.fsm"
    result = await encode_snapshot(tmp_path / "scoped", out, EncodeOptions(self_test=True))
    assert not result.report.warnings
    info = json.loads(out.with_name("scoped.fsm.encode_info.json").read_bytes())
    assert info["self_test"] == {"ran": True, "matched": True}
    assert info["scope"] == scope
    await decode_snapshot(out, tmp_path / "again")
    assert _data(tree_files(tmp_path / "again")) == _data(tree_files(tmp_path / "scoped"))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("scope", "adapters"),
    [
        ({"nope": "x"}, "all"),
        ({"dynamodb": ""}, "all"),
        ({"dynamodb": []}, "all"),
        ({"dynamodb": "orders"}, "s3"),
    ],
)
async def test_bad_scopes_are_usage_errors(
    scope: dict[str, str | list[str]], adapters: str, tmp_path: Path
) -> None:
    options = DecodeOptions(adapters=adapters, scope=scope)
    with pytest.raises(UsageError):
        await decode_snapshot(SAMPLE_FSM, tmp_path / "out", options, report=Report())
    assert not (tmp_path / "out").exists()


# --- the command line -------------------------------------------------------------------------


def test_cli_scope_flags_merge_and_verify_reports_the_scope(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = cli(
        "decode", "--input", SAMPLE_FSM, "--output", out, "--quiet",
        "--scope", "dynamodb=orders", "--scope", "dynamodb=ghost", "--scope", "sqs=jobs",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "MANIFEST.json").read_bytes())
    assert manifest["scope"] == {"dynamodb": ["orders", "ghost"], "sqs": ["jobs"]}
    assert sorted(p.name for p in out.iterdir()) == [
        "CHECKSUMS", "MANIFEST.json", "dynamodb", "sqs",
    ]  # fmt: skip
    verified = cli("verify", "--input", out)
    assert verified.returncode == 0, verified.stderr
    assert "scoped backup (dynamodb=orders,ghost sqs=jobs)" in verified.stdout + verified.stderr
    strict = cli(
        "decode", "--input", SAMPLE_FSM, "--output", tmp_path / "strict", "--quiet", "--strict",
        "--scope", "s3=ghost",
    )  # fmt: skip
    assert strict.returncode == 3


@pytest.mark.parametrize(
    "flags",
    [
        ["--scope", "nope=x"],
        ["--scope", "dynamodb="],
        ["--scope", "dynamodb"],
        ["--scope", "redis=a", "--adapter", "s3"],
    ],
)
def test_cli_bad_scope_exits_1(flags: list[str], tmp_path: Path) -> None:
    done = cli("decode", "--input", SAMPLE_FSM, "--output", tmp_path / "out", *flags)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_scoped_encode_self_test_and_prepare_restore_warns(tmp_path: Path) -> None:
    tree, fsm = tmp_path / "tree", tmp_path / "t.fsm"
    done = cli("decode", "--input", SAMPLE_FSM, "--output", tree, "--scope", "s3=photos")
    assert done.returncode == 0, done.stderr
    enc = cli("encode", "--input", tree, "--output", fsm, "--self-test")
    assert enc.returncode == 0, enc.stderr
    assert json.loads(fsm.with_name("t.fsm.encode_info.json").read_bytes())["scope"] == {
        "s3": ["photos"]
    }
    prep = cli(
        "prepare-restore", "--input", fsm, "--data-dir", tmp_path / "node",
        "--index", "10", "--term", "2", "--peers", "n1=127.0.0.1:50051",
        "--allow-missing-cluster-id", "--log-format", "json",
    )  # fmt: skip
    assert prep.returncode == 0, prep.stderr
    events = [json.loads(line) for line in (prep.stdout + prep.stderr).splitlines()]
    [warned] = [e for e in events if e["event"] == "scoped_restore"]
    assert warned["level"] == "warning"
    assert warned["scope"] == {"s3": ["photos"]}
    assert "restores only that scope" in warned["hint"]


# --- a real node's snapshot -------------------------------------------------------------------


@pytest.mark.skipif(not REALNODE.is_file(), reason=f"no {REALNODE}")
@pytest.mark.parametrize(
    ("adapter", "name", "subtree"),
    [
        ("dynamodb", "users", "dynamodb/users/"),
        ("s3", "bucket-a", "s3/bucket-a/"),
        ("sqs", "q-fifo.fifo", "sqs/q-fifo.fifo/"),
        ("redis", "hash:*", "redis/db_0/hashes/"),
    ],
)
def test_realnode_scope_is_that_subset_of_the_full_decode(
    adapter: str, name: str, subtree: str, tmp_path: Path
) -> None:
    full, scoped = tmp_path / "full", tmp_path / "scoped"
    assert cli("decode", "--input", REALNODE, "--output", full, "--quiet").returncode == 0
    done = cli(
        "decode", "--input", REALNODE, "--output", scoped, "--quiet",
        "--scope", f"{adapter}={name}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = _under(tree_files(full), subtree)
    assert expected
    assert _data(tree_files(scoped)) == expected


def test_cli_dry_run_plans_only_the_scope(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = cli(
        "decode", "--input", SAMPLE_FSM, "--output", out, "--dry-run", "--log-format", "json",
        "--scope", "s3=photos", "--scope", "redis=nothing*",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert set(plan["adapters"]) == {"s3", "redis"}
    assert list(plan["adapters"]["s3"]["units"]) == ["photos"]
    assert plan["adapters"]["redis"]["keys"] == 0
    assert not out.exists()
