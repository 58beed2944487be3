"""Round-trip properties of the encoder and decoder over random data of all four adapters
(issue #5).

1. tree -> encode -> decode gives back the same tree, byte for byte;
2. snapshot -> decode -> encode -> decode is a fixpoint, for snapshots that carry a live
   node's history and framing (older versions, tombstones, expired and future versions,
   internal and raw meta rows, kv header, CRC32C footer) and, in half of the examples, rows
   in layouts only a live node writes (roundtrip_live). Since none of the history is visible
   at the header's last_commit_ts, the first decode also gives back the source tree.

Both run with several work shapes (sort spills, batch sizes, jobs) that must not change a byte.
Inputs left out because of a known defect are marked ``BUG``/``NOT A FIXPOINT`` where the
strategy leaves them out (roundtrip_trees._SCORES, roundtrip_live._legacy_string).
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from roundtrip_live import (
    META_SUFFIX_KEYS,
    ODD_S3_KEYS,
    REDIS_LIVE_KINDS,
    ddb_migrating_table,
    redis_live_rows,
    s3_bucket_names,
    s3_odd_objects,
)
from roundtrip_stream import Version, add_history, frame, hlc_v1_header, hlc_v2_header, read_stream
from roundtrip_support import (
    RUN_SHAPES,
    RunShape,
    decode,
    encode,
    manifest_facts,
    read_bytes,
    read_tree,
    tree_diff,
    write_bytes,
    write_tree,
)
from roundtrip_trees import TTL_FLOOR_MS, DumpTree, dump_trees, manifest_json, segment

from elastickv_async import DecodeOptions, EncodeOptions, decode_snapshot, encode_snapshot
from elastickv_async._adapters.registry import REGISTRY

pytestmark = pytest.mark.anyio

#: ROUNDTRIP_EXAMPLES raises the example count for a deeper (non-CI) search.
_SETTINGS = settings(
    max_examples=int(os.environ.get("ROUNDTRIP_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_EXCLUSIONS = {
    "include_incomplete_uploads": False,
    "include_orphans": False,
    "preserve_sqs_visibility": False,
    "include_sqs_side_records": False,
}


@pytest.fixture
def anyio_backend() -> str:
    """One event loop is enough here: the backends are covered by the unit tests."""
    return "asyncio"


def _assert_same(expected: dict[str, bytes], actual: dict[str, bytes], what: str) -> None:
    diff = tree_diff(expected, actual)
    assert not diff, f"{what}:\n{diff}"


def _no_warnings(report_warnings: Mapping[str, object], what: str) -> None:
    assert not report_warnings, f"{what} warned: {sorted(report_warnings)}"


_SHAPES = st.sampled_from(RUN_SHAPES)


@_SETTINGS
@given(tree=dump_trees(), shape=_SHAPES)
async def test_tree_encode_decode_is_identity(tree: DumpTree, shape: RunShape) -> None:
    """A canonical tree survives encode -> decode byte for byte; MANIFEST keeps its facts."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = dict(tree.files) | {
            "MANIFEST.json": manifest_json(tree.last_commit_ts, REGISTRY.names())
        }
        await write_tree(root / "in", files)
        encoded = await encode(root / "in", root / "out.fsm", shape)
        _no_warnings(encoded.warnings, "encode")
        decoded = await decode(root / "out.fsm", root / "back", shape)
        _no_warnings(decoded.warnings, "decode")
        _assert_same(tree.files, await read_tree(root / "back"), tree.summary())
        assert await manifest_facts(root / "back") == (
            tuple(sorted(REGISTRY.names())),
            tree.last_commit_ts,
            _EXCLUSIONS,
        )


_HEADERS = st.sampled_from(["none", "v1", "v1", "v2"])
#: Derived files a live-layout extra may legitimately change (its own names and TTL lines).
_SHARED_REDIS_FILES = frozenset(
    f"redis/db_0/{name}" for name in ("strings_ttl.jsonl", "hll_ttl.jsonl", "KEYMAP.jsonl")
)


def _live_extras(
    rng: random.Random, versions: list[Version], ts: int, rename: bool
) -> tuple[list[Version], str, set[str]]:
    """Redis keys in live-only layouts, S3 objects with odd keys and multipart/offloaded
    bodies, and a DynamoDB table caught mid-migration, all visible at ``ts``. Returns them, a
    description, and the S3 bucket directories they touch (where the placement of the tree's
    own keys may change)."""
    kinds = [rng.choice(REDIS_LIVE_KINDS) for _ in range(rng.randint(1, 4))]
    rows = redis_live_rows(rng, kinds, TTL_FLOOR_MS)
    buckets = s3_bucket_names([v.user_key for v in versions])
    new_bucket = not buckets or rng.random() < 0.3
    bucket = b"odd-keys" if new_bucket else rng.choice(buckets)
    odd = rng.sample(ODD_S3_KEYS, rng.randint(1, 5))
    if rename:
        odd += META_SUFFIX_KEYS
    rows += s3_odd_objects(rng, bucket, odd, new_bucket)
    rows += ddb_migrating_table(rng, "live-migrating")
    existing = {v.user_key for v in versions}
    extras = [Version(k, b, ts) for k, b in rows if k not in existing]
    return extras, f"redis={kinds} s3 {bucket!r}<-{odd}", {f"s3/{segment(bucket)}/"}


@_SETTINGS
@given(
    tree=dump_trees(allow_big_bodies=False),
    seed=st.integers(0, 2**32 - 1),
    header_kind=_HEADERS,
    footer=st.booleans(),
    live=st.booleans(),
    rename=st.booleans(),
    shape=_SHAPES,
)
async def test_noisy_snapshot_decode_encode_decode_is_fixpoint(
    tree: DumpTree,
    seed: int,
    header_kind: str,
    footer: bool,
    live: bool,
    rename: bool,
    shape: RunShape,
) -> None:
    """decode(S) == decode(encode(decode(S))) for a node-like snapshot S of a random tree;
    decode(S) is that tree when S adds only invisible history, and keeps the tree's files
    (outside what the live-layout extras share) when it also holds such extras."""
    # The history is drawn from a seeded generator: it takes too many draws for Hypothesis'
    # own random (which would shrink it); the seed is in the failing example.
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = dict(tree.files) | {
            "MANIFEST.json": manifest_json(tree.last_commit_ts, REGISTRY.names())
        }
        await write_tree(root / "tree", files)
        await encode(root / "tree", root / "clean.fsm")
        last_commit_ts, versions = read_stream(await read_bytes(root / "clean.fsm"))
        assert last_commit_ts == tree.last_commit_ts

        extras: list[Version] = []
        touched: set[str] = set()
        what = f"{tree.summary()} {shape.name} header={header_kind} footer={footer} rename={rename}"
        if live:
            extras, described, touched = _live_extras(rng, versions, last_commit_ts, rename)
            what += f" live: {described}"
        ceiling = None
        header = b""
        if header_kind != "none":  # a node's snapshot: its HLC ceiling is at or after the data
            ceiling = (last_commit_ts >> 16) + rng.randrange(0, 10**6)
            header = (
                hlc_v1_header(ceiling)
                if header_kind == "v1"
                else hlc_v2_header(ceiling, rng.randrange(1 << 32), rng.randbytes(rng.randrange(9)))
            )
        now_ms = ceiling if ceiling is not None else last_commit_ts >> 16
        records, noise = add_history(rng, versions + extras, last_commit_ts, now_ms)
        noisy = root / "0000000000000123.fsm"
        await write_bytes(noisy, frame(last_commit_ts, records, header=header, footer=footer))
        what += f" {noise}"

        first = await decode(noisy, root / "a", shape, rename_collisions=rename)
        _no_warnings(first.warnings, f"decode of the noisy snapshot ({what})")
        tree_a = await read_tree(root / "a")
        if live:
            kept = {
                rel: data
                for rel, data in tree.files.items()
                if rel not in _SHARED_REDIS_FILES and not rel.startswith(tuple(touched))
            }
            _assert_same(kept, {r: tree_a[r] for r in kept if r in tree_a}, f"tree kept ({what})")
        else:
            _assert_same(tree.files, tree_a, f"noisy decode vs source tree ({what})")

        await encode(root / "a", root / "a.fsm", shape)
        await decode(root / "a.fsm", root / "b", shape, rename_collisions=rename)
        _assert_same(tree_a, await read_tree(root / "b"), f"fixpoint ({what})")
        facts_a = await manifest_facts(root / "a")
        assert facts_a == await manifest_facts(root / "b")
        assert facts_a[1] == last_commit_ts


@settings(_SETTINGS, max_examples=min(_SETTINGS.max_examples, 15))
@given(tree=dump_trees(allow_big_bodies=False), shift_ms=st.integers(-(10**9), 10**12))
async def test_full_fidelity_rebased_round_trip_is_a_fixpoint(
    tree: DumpTree, shift_ms: int
) -> None:
    """A full-fidelity tree encoded with --rebase-time passes the self-test, and decoding
    the result with the opposite shift gives the tree back byte for byte."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = dict(tree.files) | {
            "MANIFEST.json": manifest_json(tree.last_commit_ts, REGISTRY.names())
        }
        await write_tree(root / "tree", files)
        await encode(root / "tree", root / "clean.fsm")
        await decode_snapshot(
            root / "clean.fsm",
            root / "full",
            DecodeOptions(full_fidelity=True),
            log_stream=io.StringIO(),
        )
        full = await read_tree(root / "full")
        rebase = EncodeOptions(
            self_test=True,
            rebase_time=True,
            now_ms=(tree.last_commit_ts >> 16) + shift_ms,
            scratch_root=root,
        )
        result = await encode_snapshot(
            root / "full", root / "rebased.fsm", rebase, log_stream=io.StringIO()
        )
        assert result.self_test_matched, tree.summary()
        await decode_snapshot(
            root / "rebased.fsm",
            root / "back",
            DecodeOptions(full_fidelity=True, time_shift_ms=shift_ms),
            log_stream=io.StringIO(),
        )
        back = await read_tree(root / "back")
        _assert_same(full, back, f"{tree.summary()} shift={shift_ms}")
