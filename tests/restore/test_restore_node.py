"""End to end: real node snapshot -> decode -> encode --self-test -> prepare-restore -> a real node.

For every snapshot in ``realnode/`` (written by a real node), in default and in
full-fidelity mode, and with both restore helpers (the reference
``elastickv-snapshot-prepare-restore`` and ``elastickv-async prepare-restore``), a fresh
``elastickv`` node is started on the prepared data directory and its whole state is read
back with redis-py and boto3 and compared with the snapshot's ``expected.json``. The encode
rebases times (``--rebase-time``), so no message or TTL key may be missing. In default mode
every difference must be one of ``restore_state.KNOWN``, each occurring exactly where it
applies; in full-fidelity mode there must be none. Then a write through each API must work.

The commands are the ones the README's "Restoring to a node" section shows. Skipped when the
shared folder or its ``elastickv-bin/`` is absent.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import boto3
import pytest
from botocore.config import Config
from restore_node import Node, free_ports, unpack
from restore_state import (
    KNOWN,
    Clock,
    Endpoints,
    Restore,
    explain,
    known_occurrences,
    load_doc,
    read_node,
    restore_expectation,
)
from support import shared_dir

SHARED: Final = shared_dir()
BIN_DIR: Final = SHARED / "elastickv-bin" if SHARED else None
SNAPSHOTS: Final = sorted((SHARED / "realnode").glob("*.fsm")) if SHARED else []
CLUSTER_ID: Final = "restore-test"
DEFAULT: Final = "default"
FULL: Final = "full-fidelity"
_CREDENTIALS: Final = {
    "region_name": "us-east-1",
    "aws_access_key_id": "restore-test",
    "aws_secret_access_key": "restore-test",
}

pytestmark = pytest.mark.skipif(
    BIN_DIR is None or not (BIN_DIR / "elastickv.xz").is_file() or not SNAPSHOTS,
    reason="needs ../shared/elastickv-bin/ and ../shared/realnode/",
)


def _elastickv_async(*args: str | Path) -> None:
    """Run the CLI as the README does; fail the test with its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "elastickv_async", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The node and the reference restore helper, unpacked once per module."""
    assert BIN_DIR is not None
    return unpack(BIN_DIR, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path, str], tuple[Path, int]]:
    """Decode a node snapshot in a mode and encode it again with --self-test --rebase-time
    (once per snapshot and mode); the .fsm and the shift its encode_info.json records."""
    cache: dict[tuple[Path, str], tuple[Path, int]] = {}

    def encode(snapshot: Path, mode: str) -> tuple[Path, int]:
        if (snapshot, mode) not in cache:
            work = tmp_path_factory.mktemp(f"{snapshot.stem}-{mode}")
            tree, fsm = work / "tree", work / "restore.fsm"
            flags = ["--full-fidelity"] if mode == FULL else []
            _elastickv_async(
                "decode", "--input", snapshot, "--output", tree, "--cluster-id", CLUSTER_ID, *flags
            )
            _elastickv_async(
                "encode", "--input", tree, "--output", fsm, "--self-test", "--rebase-time"
            )
            info = json.loads(fsm.with_name(fsm.name + ".encode_info.json").read_bytes())
            assert info["self_test"] == {"ran": True, "matched": True}
            cache[(snapshot, mode)] = fsm, info["time_rebase"]["shift_ms"]
        return cache[(snapshot, mode)]

    return encode


def _hlc_ceiling_ms(snapshot: Path) -> int:
    """The snapshot's kv-FSM header ceiling: no write in it is later than this."""
    with snapshot.open("rb") as f:
        header = f.read(16)
    assert header[:8] == b"EKVTHLC1"
    ceiling: int = struct.unpack(">Q", header[8:])[0]
    return ceiling


def _prepare(helper: str, binaries: dict[str, Path], fsm: Path, data_dir: Path, peers: str) -> None:
    flags: list[str | Path] = [
        "--input", fsm,
        "--data-dir", data_dir,
        "--index", "1",
        "--term", "1",
        "--peers", peers,
        "--target-cluster-id", CLUSTER_ID,
    ]  # fmt: skip
    if helper == "python":
        _elastickv_async("prepare-restore", *flags)
        return
    done = subprocess.run(
        [binaries["elastickv-snapshot-prepare-restore"], *map(str, flags)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _probe_writes(node: Node) -> None:
    """A restored node takes new writes on every API (and reads them back)."""
    with node.redis() as client:
        assert client.set("restore-test:probe", b"written after restore")
        assert client.get("restore-test:probe") == b"written after restore"
    ddb = boto3.client("dynamodb", endpoint_url=node.endpoint("dynamo"), **_CREDENTIALS)
    tables = ddb.list_tables()["TableNames"]
    name = f"restore_probe_{len(tables)}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName=name, Item={"pk": {"S": "probe"}, "n": {"N": "1"}})
    assert ddb.get_item(TableName=name, Key={"pk": {"S": "probe"}})["Item"]["n"] == {"N": "1"}
    s3 = boto3.client(
        "s3",
        endpoint_url=node.endpoint("s3"),
        config=Config(s3={"addressing_style": "path"}),
        **_CREDENTIALS,
    )
    s3.create_bucket(Bucket="restore-probe")
    s3.put_object(Bucket="restore-probe", Key="k", Body=b"probe body")
    assert s3.get_object(Bucket="restore-probe", Key="k")["Body"].read() == b"probe body"
    sqs = boto3.client("sqs", endpoint_url=node.endpoint("sqs"), **_CREDENTIALS)
    url = sqs.create_queue(QueueName="restore-probe")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="probe message")
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in got] == ["probe message"]


@pytest.mark.parametrize("mode", [DEFAULT, FULL])
@pytest.mark.parametrize("helper", ["reference", "python"])
@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=lambda p: p.stem)
def test_restored_node_serves_the_snapshot_state(
    snapshot: Path,
    helper: str,
    mode: str,
    binaries: dict[str, Path],
    encoded: Callable[[Path, str], tuple[Path, int]],
    tmp_path: Path,
) -> None:
    """The node serves exactly the expected state: in default mode but for the named known
    differences, each where it applies; in full-fidelity mode with none of them.

    Times are rebased, so every SQS message and TTL key of the snapshot comes back and is
    compared (the snapshots are older than any retention period or TTL in them).
    """
    fsm, shift_ms = encoded(snapshot, mode)
    full = mode == FULL
    doc = load_doc(snapshot.with_suffix(".expected.json"))
    raft_data_dir = tmp_path / "raft"
    raft_data_dir.mkdir()
    node = Node(
        binary=binaries["elastickv"],
        raft_data_dir=raft_data_dir,
        raft_id="n1",
        raft_port=free_ports(1)[0],
        log_path=tmp_path / "node.log",
    )
    _prepare(helper, binaries, fsm, raft_data_dir / "n1", f"n1={node.raft_address}")

    restored_ms = time.time_ns() // 1_000_000
    with node:
        with node.redis() as client:
            endpoints = Endpoints(
                client, node.endpoint("dynamo"), node.endpoint("s3"), node.endpoint("sqs")
            )
            state = read_node(endpoints, doc, time.time_ns() // 1_000_000, not_visible=full)
        read_ms = time.time_ns() // 1_000_000
        _probe_writes(node)

    clock = Clock(_hlc_ceiling_ms(snapshot), restored_ms, read_ms)
    expectation, may_expire = restore_expectation(doc, clock, Restore(shift_ms, full))
    assert may_expire == {}, "rebased: no deadline may pass during the test"
    found = explain(state, expectation, may_expire)
    assert found.unexplained == [], "\n".join(found.unexplained)
    if full:
        assert all(not names for names in found.known.values()), found.known
    else:
        assert found.known == known_occurrences(doc, may_expire)
    assert found.expired == {}
    # The node's WAL segments are preallocated (64 MB each): kept only when the test fails.
    shutil.rmtree(raft_data_dir)


def test_known_differences_have_reasons() -> None:
    """Each declared known difference says why it happens."""
    assert set(KNOWN) == {
        "s3_bucket_creation_date",
        "sqs_queue_timestamps",
        "sqs_in_flight_message",
        "s3_incomplete_upload",
    }
    assert all(kind.reason for kind in KNOWN.values())
