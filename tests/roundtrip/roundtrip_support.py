"""Running the real encoder and decoder on dump trees, and comparing trees byte for byte."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio.to_thread

from elastickv_async._core.dump.checksums import compute_checksums
from elastickv_async._core.encode.api import encode_snapshot
from elastickv_async._core.extsort import DEFAULT_SORT_BUDGET
from elastickv_async._core.options import DecodeOptions, EncodeOptions
from elastickv_async._core.pipeline import decode_snapshot
from elastickv_async._core.report import Report

__all__ = [
    "RUN_SHAPES",
    "ManifestFacts",
    "RunShape",
    "decode",
    "encode",
    "manifest_facts",
    "read_bytes",
    "read_tree",
    "tree_diff",
    "write_bytes",
    "write_tree",
]

#: Compared structurally, not byte for byte (wall time, source path, scope lists differ).
LOOSE_FILES: Final = frozenset({"MANIFEST.json", "CHECKSUMS"})


@dataclass(frozen=True, slots=True)
class RunShape:
    """Knobs that must not change a result: the encoder's in-memory sort budget (spilled runs
    beyond it) and self-test, the decoder's batch size, channel depth and jobs."""

    name: str
    sort_budget: int
    batch_size: int
    channel_buffer: int
    jobs: int
    self_test: bool = False


#: From "every record spills and travels alone" to the defaults.
RUN_SHAPES: Final = (
    RunShape("tight", 512, 1, 1, 1),
    RunShape("small", 64 << 10, 7, 2, 3, self_test=True),
    RunShape("default", DEFAULT_SORT_BUDGET, 512, 4, 8),
)


def _write_tree(root: Path, files: Mapping[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if "MANIFEST.json" in files and "CHECKSUMS" not in files:
        # A whole tree, as a decode leaves it: encode verifies it against its CHECKSUMS.
        (root / "CHECKSUMS").write_bytes(compute_checksums(root))


async def read_bytes(path: Path) -> bytes:
    """The contents of ``path`` (read in a worker thread)."""
    return await anyio.to_thread.run_sync(path.read_bytes)


async def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (in a worker thread)."""
    await anyio.to_thread.run_sync(path.write_bytes, data)


async def write_tree(root: Path, files: Mapping[str, bytes]) -> None:
    """Create ``root`` holding ``files`` (relative posix path -> bytes), plus CHECKSUMS when
    ``files`` hold a MANIFEST.json but no CHECKSUMS."""
    await anyio.to_thread.run_sync(_write_tree, root, dict(files))


def _read_tree(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


async def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` except MANIFEST.json and CHECKSUMS."""
    files = await anyio.to_thread.run_sync(_read_tree, root)
    return {k: v for k, v in files.items() if k not in LOOSE_FILES}


ManifestFacts = tuple[tuple[str, ...], int | None, dict[str, Any]]


def _manifest_facts(root: Path) -> ManifestFacts:
    doc = json.loads((root / "MANIFEST.json").read_bytes())
    return tuple(sorted(doc["adapters"])), doc.get("last_commit_ts"), doc["exclusions"]


async def manifest_facts(root: Path) -> ManifestFacts:
    """What a round trip must keep of MANIFEST.json: adapter names, last_commit_ts, exclusions."""
    return await anyio.to_thread.run_sync(_manifest_facts, root)


async def encode(tree: Path, output: Path, shape: RunShape = RUN_SHAPES[-1]) -> Report:
    """Encode ``tree`` into ``output`` (all adapters); return the run's report.

    With the shape's self-test the encoder decodes its output and compares it with ``tree``
    (a mismatch raises :class:`~elastickv_async._core.errors.SelfTestMismatch`).
    """
    report = Report()
    result = await encode_snapshot(
        tree,
        output,
        EncodeOptions(jobs=shape.jobs, self_test=shape.self_test, scratch_root=output.parent),
        report=report,
        log_stream=io.StringIO(),
        sort_budget=shape.sort_budget,
    )
    assert result.self_test_matched == shape.self_test
    return report


async def decode(
    snapshot: Path,
    output: Path,
    shape: RunShape = RUN_SHAPES[-1],
    *,
    rename_collisions: bool = False,
) -> Report:
    """Decode ``snapshot`` into the new directory ``output``; return the run's report."""
    report = Report()
    options = DecodeOptions(
        adapter_options={"s3": {"rename_collisions": rename_collisions}},
        batch_size=shape.batch_size,
        channel_buffer=shape.channel_buffer,
        jobs=shape.jobs,
    )
    await decode_snapshot(snapshot, output, options, report=report, log_stream=io.StringIO())
    return report


def _show(data: bytes) -> str:
    return repr(data[:300]) + ("..." if len(data) > 300 else "")


def tree_diff(expected: Mapping[str, bytes], actual: Mapping[str, bytes]) -> str:
    """A readable description of how two trees differ ("" when they are identical)."""
    lines = [
        f"missing {r!r}: {_show(expected[r])}" for r in sorted(expected.keys() - actual.keys())
    ]
    lines += [f"extra {r!r}: {_show(actual[r])}" for r in sorted(actual.keys() - expected.keys())]
    for rel in sorted(expected.keys() & actual.keys()):
        want, got = expected[rel], actual[rel]
        if want != got:
            at = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), None)
            at = min(len(want), len(got)) if at is None else at
            lines.append(
                f"differs {rel!r} at byte {at} (sizes {len(want)} vs {len(got)}):\n"
                f"  expected {_show(want[max(0, at - 80) :])}\n"
                f"  actual   {_show(got[max(0, at - 80) :])}"
            )
    return "\n".join(lines)
