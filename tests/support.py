"""Helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from elastickv_async._adapters.base import (
    BatchEncodeAdapter,
    DecodeContext,
    EncodeBatch,
    EncodeContext,
)
from elastickv_async._adapters.registry import REGISTRY
from elastickv_async._core.dump.writer import DumpWriter
from elastickv_async._core.errors import ElasticKVError
from elastickv_async._core.options import DecodeOptions
from elastickv_async._core.report import Report, make_logger
from elastickv_async._core.snapshot.entry import SnapshotHeader

REPO_ROOT = Path(__file__).resolve().parent.parent

E = TypeVar("E", bound=ElasticKVError)


@contextlib.contextmanager
def raises_code(
    kind: type[E], code: str, *, match: str | None = None
) -> Iterator[pytest.ExceptionInfo[E]]:
    """``pytest.raises(kind, match=match)`` that also asserts the error's stable ``code``."""
    with pytest.raises(kind, match=match) as info:
        yield info
    assert info.value.code == code, f"code {info.value.code!r}, expected {code!r}: {info.value}"


def shared_dir() -> Path | None:
    """The shared corpus (``$ELASTICKV_SHARED`` or ``../shared``), or ``None`` when absent."""
    override = os.environ.get("ELASTICKV_SHARED")
    candidate = Path(override) if override else REPO_ROOT.parent / "shared"
    return candidate if candidate.is_dir() else None


def decode_context(
    base: Path,
    adapter: str,
    *,
    header: SnapshotHeader | None = None,
    now_ms: int = 0,
    **options: Any,
) -> DecodeContext:
    """An adapter's decode context writing to ``base/out``, scratch in ``base/scratch``.

    ``options`` are :class:`DecodeOptions` fields or fields of the adapter's own options.
    """
    (base / "out").mkdir(parents=True, exist_ok=True)
    (base / "scratch").mkdir(exist_ok=True)
    report = Report()
    core = {f.name for f in dataclasses.fields(DecodeOptions)}
    own = {k: v for k, v in options.items() if k not in core}
    return DecodeContext(
        options=DecodeOptions(**{k: v for k, v in options.items() if k in core}),
        writer=DumpWriter(base / "out"),
        log=make_logger(report).bind(adapter=adapter),
        report=report,
        header=header if header is not None else SnapshotHeader(last_commit_ts=1),
        scratch=base / "scratch",
        now_ms=now_ms,
        adapter_options=REGISTRY[adapter].resolve_options(own),
    )


def encode_context(
    root: Path, scratch: Path, adapter: str, decoded_with: Mapping[str, Any] | None = None
) -> EncodeContext:
    """An adapter's encode context for the dump tree at ``root``, decoded with the adapter's
    options ``decoded_with`` (field names to values; default: the defaults)."""
    report = Report()
    spec = REGISTRY[adapter]
    return EncodeContext(
        input_root=root,
        log=make_logger(report).bind(adapter=adapter),
        report=report,
        scratch=scratch,
        adapter_options=spec.resolve_options(None, encode=True),
        decoded_with=spec.resolve_options(decoded_with),
    )


def tree_files(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by slash path, with its bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def run_independent_files(root: Path) -> dict[str, bytes]:
    """:func:`tree_files` of a decoded tree without what differs from run to run: MANIFEST.json
    (wall time) and its line in CHECKSUMS."""
    files = tree_files(root)
    del files["MANIFEST.json"]
    lines = files["CHECKSUMS"].splitlines(keepends=True)
    files["CHECKSUMS"] = b"".join(line for line in lines if not line.endswith(b" MANIFEST.json\n"))
    return files


def hand_built_fsm(ts: int, records: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The snapshot bytes written out longhand from the format description (§1.1, §6.1)."""
    out = b"EKVPBBL1" + struct.pack("<Q", ts)
    suffix = struct.pack(">Q", (1 << 64) - 1 - ts)
    entries = sorted((k + suffix, b"\x00" + b"\x00" * 8 + v) for k, v in records)
    for key, value in entries:
        out += struct.pack("<Q", len(key)) + key + struct.pack("<Q", len(value)) + value
    return out


class DigestLog:
    """A digest recorder for ``recording_reads``: the last digest of each path, and how many
    digests were recorded in all."""

    def __init__(self) -> None:
        self.digests: dict[str, bytes] = {}
        self.records = 0

    def record(self, rel: str, digest: bytes) -> None:
        self.digests[rel] = digest
        self.records += 1

    def record_many(self, digests: Iterable[tuple[str, bytes]]) -> None:
        for rel, digest in digests:
            self.record(rel, digest)


def count_tree_opens(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many times each tree file (by slash path) is opened through the tree reader from
    now on (``TreeDir.open_file``, and ``TreeDir.read_listed`` and ``read_listed_many``
    through the read they share), in this process."""
    from elastickv_async._core.dump.tree import TreeDir

    opened: dict[str, int] = {}
    open_file, read_listed = TreeDir.open_file, TreeDir._read_listed

    def counting(self: TreeDir, entry: Any) -> Any:
        rel = self.path(entry.name)
        opened[rel] = opened.get(rel, 0) + 1
        return open_file(self, entry)

    def counting_listed(self: TreeDir, name: str, limit: int | None) -> bytes | None:
        rel = self.path(name)
        opened[rel] = opened.get(rel, 0) + 1
        return read_listed(self, name, limit)

    monkeypatch.setattr(TreeDir, "open_file", counting)
    monkeypatch.setattr(TreeDir, "_read_listed", counting_listed)
    return opened


async def produced(encoder: BatchEncodeAdapter) -> list[tuple[bytes, bytes]]:
    """Every record ``encoder`` sends, in the order it sends them."""
    out: list[tuple[bytes, bytes]] = []

    async def send(batch: EncodeBatch) -> None:
        out.extend(cast(list[tuple[bytes, bytes]], batch))

    await encoder.produce(send)
    return out
