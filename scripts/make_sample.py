"""Build ``examples/sample.fsm``: a small snapshot touching all four adapters.

The script writes a hand-made dump tree (DynamoDB, S3, Redis, SQS) into a temporary
directory, encodes it with ``elastickv-async``'s encoder, and then appends what a real node's
``fsm-snap/<index>.fsm`` adds around the store stream: an ``EKVTHLC1`` kv-FSM header in front
and a CRC32C footer at the end, so the sample exercises the same reader paths as node files.

Run: ``python scripts/make_sample.py [--output examples/sample.fsm]``.
"""

from __future__ import annotations

import argparse
import struct
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import anyio
import crc32c

from elastickv_async import EncodeOptions, encode_snapshot
from elastickv_async._adapters.registry import REGISTRY
from elastickv_async._core import gojson
from elastickv_async._core.dump.manifest import DecodeManifest

ROOT = Path(__file__).resolve().parent.parent
LAST_COMMIT_TS = 1_795_312_252_565 << 16
HLC_CEILING_MS = 1_795_312_252_565


def _schema(table: str, hash_key: tuple[str, str], range_key: tuple[str, str] | None) -> bytes:
    keys = [hash_key] + ([range_key] if range_key else [])
    return gojson.marshal_indent(
        {
            "format_version": 1,
            "table_name": table,
            "primary_key": {
                "hash_key": {"name": hash_key[0], "type": hash_key[1]},
                "range_key": {"name": range_key[0], "type": range_key[1]} if range_key else {},
            },
            "attribute_definitions": [{"name": name, "type": kind} for name, kind in sorted(keys)],
        }
    )


def _tree() -> dict[str, bytes]:
    """The sample dump tree: relative path -> file content."""
    files: dict[str, bytes] = {}
    files["dynamodb/orders/_schema.json"] = _schema("orders", ("customer", "S"), ("order_id", "S"))
    for customer, order, total, paid in (
        ("alice", "2026-001", "12.50", True),
        ("alice", "2026-002", "3", False),
        ("bob", "2026-001", "99.99", True),
    ):
        item = {
            "customer": {"S": customer},
            "lines": {"L": [{"M": {"qty": {"N": "2"}, "sku": {"S": "A-1"}}}]},
            "order_id": {"S": order},
            "paid": {"BOOL": paid},
            "tags": {"SS": ["gift", "priority"]},
            "total": {"N": total},
        }
        files[f"dynamodb/orders/items/{customer}/{order}.json"] = gojson.marshal_indent(item)

    files["s3/photos/_bucket.json"] = gojson.marshal_indent(
        {"format_version": 1, "name": "photos", "owner": "alice", "region": "us-east-1"}
    )
    for key, body, ctype in (
        ("2026/04/greeting.txt", b"hello world\n", "text/plain"),
        ("2026/04/pixels.bin", bytes(range(256)) * 6144, "application/octet-stream"),
    ):
        files[f"s3/photos/{key}"] = body
        files[f"s3/photos/{key}.elastickv-meta.json"] = gojson.marshal_indent(
            {
                "format_version": 1,
                "size_bytes": len(body),
                "last_modified": "2026-04-29T12:00:00Z",
                "content_type": ctype,
            }
        )

    files["redis/db_0/strings/greeting.bin"] = b"hello from redis"
    files["redis/db_0/strings/session%3Aabc.bin"] = b"token-123"
    files["redis/db_0/strings_ttl.jsonl"] = gojson.encoder_line(
        {"key": "session%3Aabc", "expire_at_ms": 1_900_000_000_000}
    )
    files["redis/db_0/hashes/user%3A1.json"] = gojson.marshal_indent(
        {
            "format_version": 1,
            "fields": [{"name": "email", "value": "a@x.io"}, {"name": "name", "value": "Ann"}],
            "expire_at_ms": None,
        }
    )
    files["redis/db_0/lists/jobs.json"] = gojson.marshal_indent(
        {"format_version": 1, "items": ["j1", "j2", "j3"], "expire_at_ms": None}
    )
    files["redis/db_0/sets/tags.json"] = gojson.marshal_indent(
        {"format_version": 1, "members": ["blue", "red"], "expire_at_ms": None}
    )
    files["redis/db_0/zsets/leaderboard.json"] = gojson.marshal_indent(
        {
            "format_version": 1,
            "members": [
                {"member": "alice", "score": gojson.go_float(10.5)},
                {"member": "bob", "score": gojson.go_float(7.0)},
            ],
            "expire_at_ms": None,
        }
    )
    files["redis/db_0/streams/events.jsonl"] = gojson.encoder_line(
        {"id": "1700000000000-0", "fields": [{"name": "type", "value": "login"}]}
    ) + gojson.encoder_line(
        {"_meta": True, "length": 1, "last_ms": 1700000000000, "last_seq": 0, "expire_at_ms": None}
    )

    files["sqs/jobs/_queue.json"] = gojson.marshal_indent(
        {
            "format_version": 1,
            "name": "jobs",
            "visibility_timeout_seconds": 30,
            "message_retention_seconds": 345600,
            "delay_seconds": 0,
        }
    )
    files["sqs/jobs/messages.jsonl"] = b"".join(
        gojson.encoder_line(
            {
                "message_id": f"m{i}",
                "body": f"job payload {i}",
                "send_timestamp_millis": 1_700_000_000_000 + i,
                "available_at_millis": 1_700_000_000_000 + i,
                "visible_at_millis": 0,
                "receive_count": 0,
                "queue_generation": 1,
            }
        )
        for i in range(3)
    )

    files["MANIFEST.json"] = DecodeManifest(
        adapters=REGISTRY.names(),
        fields=REGISTRY.manifest_fields({}),
        fsm_path="sample.fsm",
        last_commit_ts=LAST_COMMIT_TS,
        elastickv_version="make_sample",
        wall_time=datetime(2026, 11, 1, tzinfo=UTC),
    ).to_json()
    return files


def build(output: Path) -> None:
    """Write the tree, encode it (self-tested), and wrap the stream like a node's file."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        for rel, data in _tree().items():
            path = tree / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        stream_path = Path(tmp) / "stream.fsm"
        anyio.run(encode_snapshot, tree, stream_path, EncodeOptions(self_test=True))
        payload = b"EKVTHLC1" + struct.pack(">Q", HLC_CEILING_MS) + stream_path.read_bytes()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(payload + struct.pack(">I", crc32c.crc32c(payload)))
    print(f"wrote {output} ({output.stat().st_size} bytes)")


def main() -> None:
    """Parse arguments and build the sample."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=ROOT / "examples" / "sample.fsm")
    build(parser.parse_args().output)


if __name__ == "__main__":
    main()
