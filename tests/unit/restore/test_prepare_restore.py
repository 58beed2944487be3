"""``prepare-restore``: the checks on the payload and its sidecar, and the data directory it builds.

The files are read back here with small independent parsers (etcd's WAL framing and CRC
chain, protobuf wire format, the peers file layout) rather than with the module's encoders.
The byte-for-byte comparison with the reference helper is in ``tests/restore``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import crc32c
import pytest
from support import raises_code

from elastickv_async._core.cli import main
from elastickv_async._core.errors import DataError, OutputError, UsageError
from elastickv_async._core.restore import prepare
from elastickv_async._core.restore.prepare import (
    PrepareRestoreOptions,
    prepare_restore,
)
from elastickv_async._core.restore.raftstate import derive_node_id

# 2026-11-22, logical counter 9: what a node's HLC looks like.
LAST_COMMIT_TS = (1795312289900 << 16) | 9
#: The node id the reference helper wrote for raft id "n1" (read from its peers file).
N1_NODE_ID = 0x08B37B07B558D4C0


def _entry(user_key: bytes, commit_ts: int, body: bytes) -> bytes:
    key = user_key + struct.pack(">Q", commit_ts ^ ((1 << 64) - 1))
    value = b"\x00" + struct.pack("<Q", 0) + body
    return struct.pack("<Q", len(key)) + key + struct.pack("<Q", len(value)) + value


def _payload(last_commit_ts: int = LAST_COMMIT_TS, *, entry_ts: int | None = None) -> bytes:
    ts = last_commit_ts if entry_ts is None else entry_ts
    return (
        b"EKVPBBL1"
        + struct.pack("<Q", last_commit_ts)
        + _entry(b"!redis|str|k", ts, b"v")
        + _entry(b"!redis|str|z", ts - 1, b"w")
    )


def _write_input(
    tmp_path: Path, payload: bytes | None = None, **info_overrides: Any
) -> tuple[Path, bytes]:
    payload = _payload() if payload is None else payload
    fsm = tmp_path / "restore.fsm"
    fsm.write_bytes(payload)
    info: dict[str, Any] = {
        "format_version": 1,
        "encoder_key_format_version": 1,
        "output_fsm_sha256": hashlib.sha256(payload).hexdigest(),
        "manifest_cluster_id": "prod",
        "self_test": {"ran": True, "matched": True},
    }
    info.update(info_overrides)
    info = {k: v for k, v in info.items() if v is not None}
    Path(f"{fsm}.encode_info.json").write_text(json.dumps(info))
    return fsm, payload


def _options(fsm: Path, data_dir: Path, **kw: Any) -> PrepareRestoreOptions:
    defaults: dict[str, Any] = {"index": 1, "peers": "n1=127.0.0.1:7000", "fresh_cluster": True}
    return PrepareRestoreOptions(input=fsm, data_dir=data_dir, **(defaults | kw))


# --- independent readers ---------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Protobuf wire fields in order: (number, int for varints / bytes for length-delimited)."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        if tag & 7 == 0:
            value, pos = _varint(buf, pos)
            out.append((tag >> 3, value))
        else:
            assert tag & 7 == 2
            size, pos = _varint(buf, pos)
            out.append((tag >> 3, buf[pos : pos + size]))
            pos += size
    return out


def _wal_records(wal: bytes) -> Iterator[tuple[int, int, bytes | None]]:
    """(type, crc, data) per record up to the zero tail, checking padding and the CRC chain."""
    pos, chain = 0, 0
    while (field := struct.unpack_from("<Q", wal, pos)[0]) != 0:
        size = field & ((1 << 56) - 1)
        pad = (field >> 56) & 0x7 if field >> 63 else 0
        assert (size + pad) % 8 == 0
        record = dict(_fields(wal[pos + 8 : pos + 8 + size]))
        data = record.get(3)
        assert data is None or isinstance(data, bytes)
        kind, crc = record[1], record[2]
        assert isinstance(kind, int) and isinstance(crc, int)
        if kind != 4:  # the CRC record carries the chain's seed, the others extend it
            chain = crc32c.crc32c(data or b"", value=chain)
        assert crc == chain
        yield kind, crc, data
        pos += 8 + size + pad


# --- the data directory ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_data_directory_layout_and_contents(tmp_path: Path) -> None:
    """fsm-snap file, token, snap file, WAL and peers file say what a node needs to load it."""
    fsm, payload = _write_input(tmp_path)
    data_dir = tmp_path / "raft" / "n1"
    data_dir.parent.mkdir()
    result = await prepare_restore(
        _options(fsm, data_dir, index=7, term=3, peers="n1=127.0.0.1:7000,n2=127.0.0.1:7001")
    )

    names = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*"))
    assert names == [
        "etcd-raft-peers.bin",
        "fsm-snap",
        "fsm-snap/0000000000000007.fsm",
        "snap",
        "snap/0000000000000003-0000000000000007.snap",
        "wal",
        "wal/0000000000000000-0000000000000000.wal",
    ]
    assert not (tmp_path / "raft" / "n1.restore-prep").exists()

    fsm_file = (data_dir / "fsm-snap" / "0000000000000007.fsm").read_bytes()
    ceiling = (LAST_COMMIT_TS >> 16) + 1
    assert fsm_file[:16] == b"EKVTHLC1" + struct.pack(">Q", ceiling)
    assert fsm_file[16:-4] == payload
    crc = crc32c.crc32c(fsm_file[:-4])
    assert fsm_file[-4:] == struct.pack(">I", crc)
    assert result.crc32c == crc
    assert result.payload_sha256 == hashlib.sha256(payload).hexdigest()

    voters = sorted([derive_node_id("n1"), derive_node_id("n2")])
    token = b"EKVT\x01" + struct.pack(">QI", 7, crc)
    snap = dict(
        _fields((data_dir / "snap" / "0000000000000003-0000000000000007.snap").read_bytes())
    )
    raft_snapshot = snap[2]
    assert isinstance(raft_snapshot, bytes) and snap[1] == crc32c.crc32c(raft_snapshot)
    snapshot = dict(_fields(raft_snapshot))
    assert snapshot[1] == token
    meta = _fields(snapshot[2])  # type: ignore[arg-type]
    assert meta == [(1, b"".join(b"\x08" + _uvarint(v) for v in voters)), (2, 7), (3, 3)]

    wal = (data_dir / "wal" / "0000000000000000-0000000000000000.wal").read_bytes()
    assert len(wal) == 64_000_000
    records = list(_wal_records(wal))
    assert [kind for kind, _, _ in records] == [4, 1, 5, 5, 3]
    assert _fields(records[2][2] or b"") == [(1, 0), (2, 0)]
    conf = _fields(records[3][2] or b"")
    assert conf[:2] == [(1, 7), (2, 3)]
    assert _fields(conf[2][1]) == [(1, v) for v in voters]  # type: ignore[arg-type]
    assert _fields(records[4][2] or b"") == [(1, 3), (3, 7)]  # HardState term, commit

    peers = (data_dir / "etcd-raft-peers.bin").read_bytes()
    assert peers[:4] == b"EKVP"
    version, index, count = struct.unpack_from(">IQI", peers, 4)
    assert (version, index, count) == (3, 7, 2)
    pos, seen = 20, []
    for _ in range(count):
        node_id, suffrage = struct.unpack_from(">QB", peers, pos)
        pos += 9
        strings = []
        for _ in range(2):
            (size,) = struct.unpack_from(">I", peers, pos)
            strings.append(peers[pos + 4 : pos + 4 + size].decode())
            pos += 4 + size
        seen.append((node_id, suffrage, *strings))
    assert peers[pos:] == b"\x00" + struct.pack(">I", 0)
    assert sorted(seen) == seen
    assert {(s[2], s[3]) for s in seen} == {("n1", "127.0.0.1:7000"), ("n2", "127.0.0.1:7001")}
    assert all(s[1] == 0 for s in seen)


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def test_node_id_is_the_one_the_node_derives() -> None:
    """Raft id "n1" maps to the node id the reference helper wrote for it."""
    assert derive_node_id("n1") == N1_NODE_ID


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("overrides", "options", "message"),
    [
        ({"output_fsm_sha256": "00" * 32}, {}, "SHA-256"),
        ({"output_fsm_sha256": ""}, {}, "no output_fsm_sha256"),
        ({"encoder_key_format_version": 2}, {}, "key format version 2"),
        ({"format_version": 2}, {}, "unsupported format_version 2"),
        ({"self_test": {"ran": True, "matched": False}}, {}, "self-test did not pass"),
        ({"self_test": None}, {}, "self-test did not pass"),
        ({"manifest_cluster_id": None}, {}, "no manifest_cluster_id"),
        ({}, {"fresh_cluster": False}, "pass --target-cluster-id"),
        ({}, {"fresh_cluster": False, "target_cluster_id": "other"}, "target is 'other'"),
        ({"self_test": "yes"}, {}, "malformed"),
    ],
)
async def test_sidecar_checks_refuse_and_leave_nothing(
    tmp_path: Path, overrides: dict[str, Any], options: dict[str, Any], message: str
) -> None:
    """Each sidecar check fails with ErrRestoreRefused (exit 2) and no directory is created."""
    fsm, _ = _write_input(tmp_path, **overrides)
    with raises_code(DataError, "ErrRestoreRefused", match=message) as caught:
        await prepare_restore(_options(fsm, tmp_path / "n1", **options))
    assert caught.value.exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "restore.fsm",
        "restore.fsm.encode_info.json",
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("overrides", "options"),
    [
        ({"manifest_cluster_id": "prod"}, {"fresh_cluster": False, "target_cluster_id": "prod"}),
        ({"manifest_cluster_id": None}, {"allow_missing_cluster_id": True}),
        ({"self_test": {"ran": False, "matched": False}}, {"allow_unverified_self_test": True}),
    ],
)
async def test_allowances_and_matching_cluster_id(
    tmp_path: Path, overrides: dict[str, Any], options: dict[str, Any]
) -> None:
    """A matching target cluster id, or the explicit allowances, let the restore proceed."""
    fsm, _ = _write_input(tmp_path, **overrides)
    result = await prepare_restore(_options(fsm, tmp_path / "n1", **options))
    assert result.fsm_path.is_file()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"EKVTHLC1" + struct.pack(">Q", 1) + _payload(), "EKVTHLC1 header"),
        (_payload() + b"\x00\x00\x00\x00", "CRC footer or raw store keys"),
        (_payload(entry_ts=LAST_COMMIT_TS + 1), "exceeds the header's last_commit_ts"),
        (_payload()[:-3], "truncated|ends inside"),
        (b"NOTMAGIC" + bytes(8), "magic"),
    ],
)
async def test_payload_checks(tmp_path: Path, payload: bytes, message: str) -> None:
    """Only a well-framed bare encoder stream is accepted."""
    fsm, _ = _write_input(tmp_path, payload)
    with raises_code(DataError, "ErrRestoreRefused", match=message):
        await prepare_restore(_options(fsm, tmp_path / "n1"))
    assert not (tmp_path / "n1").exists()
    assert not (tmp_path / "n1.restore-prep").exists()


@pytest.mark.anyio
async def test_existing_destination_is_refused(tmp_path: Path) -> None:
    """An existing data directory (even a dangling symlink) is never merged into or followed."""
    fsm, _ = _write_input(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "n1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match="already exists"):
        await prepare_restore(_options(fsm, tmp_path / "n1"))
    assert list((tmp_path / "elsewhere").iterdir()) == []
    with pytest.raises(OutputError, match="parent"):
        await prepare_restore(_options(fsm, tmp_path / "missing" / "n1"))
    (tmp_path / "n2.restore-prep").mkdir()
    with pytest.raises(OutputError, match="staging directory"):
        await prepare_restore(_options(fsm, tmp_path / "n2"))


@pytest.mark.anyio
async def test_symlinked_inputs_are_refused(tmp_path: Path) -> None:
    """The payload and the sidecar are opened without following symlinks."""
    fsm, _ = _write_input(tmp_path)
    link = tmp_path / "link.fsm"
    link.symlink_to(fsm)
    os.link(f"{fsm}.encode_info.json", f"{link}.encode_info.json")
    with pytest.raises(UsageError, match="symlink"):
        await prepare_restore(_options(link, tmp_path / "n1"))
    info_link = tmp_path / "info-link.json"
    info_link.symlink_to(f"{fsm}.encode_info.json")
    with pytest.raises(UsageError, match="symlink"):
        await prepare_restore(_options(fsm, tmp_path / "n1", encode_info=info_link))
    assert not (tmp_path / "n1").exists()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"index": 0}, "--index"),
        ({"term": 0}, "--term"),
        ({"peers": " "}, "--peers is required"),
        ({"peers": "n1"}, "not id=host:port"),
        ({"peers": "n1=a:1,n1=b:2"}, "share node id"),
        ({"target_cluster_id": "prod"}, "mutually exclusive"),
    ],
)
async def test_bad_options_are_usage_errors(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    """Flag problems exit 1 before anything is read or written."""
    fsm, _ = _write_input(tmp_path)
    with pytest.raises(UsageError, match=message):
        await prepare_restore(_options(fsm, tmp_path / "n1", **options))


def test_cli_flags_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The reference helper's flags (Go spellings too); errors are one stderr line, exit 1 or 2."""
    fsm, _ = _write_input(tmp_path)
    base = ["prepare-restore", "-input", str(fsm), "--peers=n1=127.0.0.1:7000", "--index", "1"]
    assert main([*base, "--data-dir", str(tmp_path / "a"), "--fresh-cluster=true"]) == 0
    assert (tmp_path / "a" / "fsm-snap" / "0000000000000001.fsm").is_file()
    capsys.readouterr()

    assert main([*base, "--data-dir", str(tmp_path / "b"), "--target-cluster-id", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "target is 'x'" in err

    assert main([*base, "--data-dir", str(tmp_path / "a"), "--fresh-cluster"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err


@pytest.mark.anyio
async def test_a_write_failure_leaves_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error while seeding (here: the peers file) removes the staging directory."""
    fsm, _ = _write_input(tmp_path)
    real = prepare._write_file

    def failing(path: Path, data: bytes, mode: int) -> None:
        if path.name == "etcd-raft-peers.bin":
            raise OSError(28, "No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(prepare, "_write_file", failing)
    with pytest.raises(OutputError, match="No space left"):
        await prepare_restore(_options(fsm, tmp_path / "n1"))
    assert not (tmp_path / "n1").exists()
    assert not (tmp_path / "n1.restore-prep").exists()


@pytest.mark.anyio
async def test_an_unsynced_rename_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the parent directory cannot be fsynced after the rename, the data directory goes."""
    fsm, _ = _write_input(tmp_path)
    real = prepare._fsync_dir

    def failing(path: Path) -> None:
        if path == tmp_path:
            raise OSError(5, "Input/output error")
        real(path)

    monkeypatch.setattr(prepare, "_fsync_dir", failing)
    with pytest.raises(OutputError, match="cannot fsync"):
        await prepare_restore(_options(fsm, tmp_path / "n1"))
    assert not (tmp_path / "n1").exists()
