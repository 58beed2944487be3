"""The reader and resolver on real node snapshots and on the golden corpus inputs."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import crc32c
import pytest
from support import raises_code, shared_dir

from elastickv_async._core.errors import SnapshotFormatError
from elastickv_async._core.snapshot.entry import Entry
from elastickv_async._core.snapshot.mvcc import VisibilityResolver
from elastickv_async._core.snapshot.reader import SnapshotStats, open_snapshot

pytestmark = pytest.mark.anyio

SHARED = shared_dir()
needs_shared = pytest.mark.skipif(SHARED is None, reason="../shared corpus not available")


def realnode_files() -> list[Path]:
    """Every .fsm under shared/realnode (empty when the corpus is absent)."""
    return sorted((SHARED / "realnode").rglob("*.fsm")) if SHARED else []


def golden_inputs() -> list[Path]:
    """Every public golden decode input."""
    return sorted((SHARED / "golden" / "public").glob("*/input.fsm")) if SHARED else []


async def read_and_resolve(path: Path) -> tuple[list[Entry], list[Entry], SnapshotStats, int]:
    """Raw entries, visible entries, reader stats and the header's last_commit_ts."""
    raw: list[Entry] = []
    visible: list[Entry] = []
    async with open_snapshot(path, chunk_size=1 << 20) as snap:
        resolver = VisibilityResolver(snap.header.last_commit_ts)
        async for batch in snap.batches():
            raw += batch
            visible += resolver.resolve(batch)
    return raw, visible, snap.stats, snap.header.last_commit_ts


@needs_shared
@pytest.mark.parametrize("path", realnode_files(), ids=lambda p: p.name)
async def test_realnode_snapshot(path: Path) -> None:
    """A node's file: v1 header, valid footer, meta keys, one visible version per key."""
    data = await anyio.Path(path).read_bytes()
    raw, visible, stats, last_commit_ts = await read_and_resolve(path)
    assert data.startswith(b"EKVTHLC1")
    assert stats.footer == "valid"
    assert stats.total_bytes == stats.bytes_read == len(data)
    assert stats.payload_crc32c == crc32c.crc32c(data[:-4]) == int.from_bytes(data[-4:], "big")
    assert len({e.key for e in visible}) == len(visible)
    assert not any(e.tombstone for e in visible)
    assert all(e.commit_ts <= last_commit_ts for e in visible)
    assert not any(e.key.startswith(b"_meta_") for e in raw)
    expected = path.with_name(path.name.removesuffix(".fsm") + ".expected.json")
    if await anyio.Path(expected).exists():
        snapshot = json.loads(await anyio.Path(expected).read_text())["snapshot"]
        assert stats.total_bytes == snapshot["size"]
        assert stats.meta["_meta_applied_index"] == snapshot["raft_index"]
        assert stats.meta["_meta_last_commit_ts"] == last_commit_ts


GOLDEN_ERRORS: dict[str, str] = {
    "global_bad_magic": "ErrSnapshotBadMagic",
    "global_encrypted_entry": "ErrSnapshotEncryptedEntry",
    "global_oversize_key_len": "ErrSnapshotKeyTooLarge",
    "global_reserved_flag_bits": "ErrSnapshotEncryptedReserved",
    "global_short_key": "ErrSnapshotShortKey",
    "global_short_value": "ErrSnapshotShortValue",
    "global_truncated_mid_entry": "ErrSnapshotTruncated",
    "realsnap_footer_bad_crc": "ErrSnapshotChecksumMismatch",
}


@needs_shared
@pytest.mark.parametrize("path", golden_inputs(), ids=lambda p: p.parent.name)
async def test_golden_input(path: Path) -> None:
    """Reader-level golden errors raise their typed error; every other input reads cleanly."""
    case = path.parent.name
    if case in GOLDEN_ERRORS:
        with raises_code(SnapshotFormatError, GOLDEN_ERRORS[case]):
            await read_and_resolve(path)
        return
    raw, visible, stats, _ = await read_and_resolve(path)
    assert stats.bytes_read == stats.total_bytes
    assert len({e.key for e in visible}) == len(visible)
    if case.startswith(("realsnap_meta", "realsnap_footer_meta")):
        assert set(stats.meta) >= {"_meta_applied_index", "_meta_last_commit_ts"}
    if case.startswith("realsnap_footer"):
        assert stats.footer == "valid"
    if case == "realsnap_future_version":
        # The only version of !redis|str|temp is newer than last_commit_ts.
        assert b"!redis|str|temp" in {e.key for e in raw}
        assert b"!redis|str|temp" not in {e.key for e in visible}
