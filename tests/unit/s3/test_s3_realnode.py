"""S3 state decoded from the real node snapshots equals what the clients wrote (issue #6).

The expected state comes from ``realnode/<snapshot>.expected.json``, read back through the
S3 API by the client before the snapshot was taken.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from support import shared_dir

from elastickv_async._core.options import DecodeOptions
from elastickv_async._core.pipeline import decode_snapshot

pytestmark = pytest.mark.anyio

REALNODE = (shared_dir() or Path("/nonexistent")) / "realnode"
SNAPSHOTS = ["p3_sqs_0000000000000191", "p4_mixed_00000000000001f5"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _expected(stem: str) -> dict[str, Any]:
    path = REALNODE / f"{stem}.expected.json"
    if not path.is_file():
        pytest.skip("realnode snapshots are absent")
    buckets: dict[str, Any] = json.loads(path.read_text())["s3"]["buckets"]
    return buckets


async def _decode(stem: str, out: Path, **options: Any) -> Path:
    opts = DecodeOptions(adapters="s3", adapter_options={"s3": options})
    await decode_snapshot(REALNODE / f"{stem}.fsm", out, opts)
    return out / "s3"


def _bodies(s3: Path) -> set[str]:
    return {
        p.relative_to(s3).as_posix()
        for p in s3.rglob("*")
        if p.is_file() and not p.name.endswith(".elastickv-meta.json") and p.name != "_bucket.json"
    }


@pytest.mark.parametrize("stem", SNAPSHOTS)
async def test_objects_match_the_client_state_and_nothing_else_comes_back(
    stem: str, tmp_path: Path
) -> None:
    expected = _expected(stem)
    s3 = await _decode(stem, tmp_path / "out")
    assert sorted(p.name for p in s3.iterdir()) == sorted(expected)  # dropped bucket absent
    want = {f"{b}/{key}" for b, spec in expected.items() for key in spec["objects"]}
    assert _bodies(s3) == want  # deleted, overwritten, aborted and incomplete objects absent
    for bucket, spec in expected.items():
        for key, obj in spec["objects"].items():
            body = (s3 / bucket / key).read_bytes()
            assert hashlib.sha256(body).hexdigest() == obj["sha256"], key
            sidecar = json.loads((s3 / bucket / f"{key}.elastickv-meta.json").read_bytes())
            assert sidecar["size_bytes"] == obj["size"] == len(body)
            assert sidecar["content_type"] == obj["content_type"]
            # S3 metadata names are case-insensitive; the API returned them capitalised.
            meta = {k.lower(): v for k, v in obj["metadata"].items()}
            assert sidecar.get("user_metadata", {}) == meta


@pytest.mark.parametrize("stem", SNAPSHOTS)
async def test_incomplete_upload_records_only_with_the_flag(stem: str, tmp_path: Path) -> None:
    expected = _expected(stem)
    s3 = await _decode(stem, tmp_path / "out", include_incomplete_uploads=True)
    want = {f"{b}/{key}" for b, spec in expected.items() for key in spec["objects"]}
    for bucket, spec in expected.items():
        uploads = spec.get("incomplete_multipart_uploads") or []
        if not uploads:
            continue
        rel = f"{bucket}/_incomplete_uploads/records.jsonl"
        want.add(rel)
        records = [json.loads(line) for line in (s3 / rel).read_text().splitlines()]
        parts = [json.loads(base64.b64decode(r["value"])) for r in records if "part" in r["prefix"]]
        assert sorted(p["part_no"] for p in parts) == sorted(int(n) for n in uploads[0]["parts"])
        assert sorted(p["size_bytes"] for p in parts) == sorted(
            p["size"] for p in uploads[0]["parts"].values()
        )
        assert [r["prefix"] for r in records].count("!s3|upload|meta|") == len(uploads)
    assert _bodies(s3) == want
