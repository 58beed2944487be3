"""CHECKSUMS format (GNU sha256sum) and tree verification."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from support import raises_code

from elastickv_async._core.dump.checksums import ChecksumLedger, checksum_line, compute_checksums
from elastickv_async._core.dump.verify import verify_tree
from elastickv_async._core.errors import ChecksumMismatch, UnsafeDumpEntry


async def _list(root: Path) -> None:
    # Hashed in a worker thread: async tests fail on any blocking call of the package.
    listing = await anyio.to_thread.run_sync(compute_checksums, root)
    (root / "CHECKSUMS").write_bytes(listing)


def _tree(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "MANIFEST.json").write_bytes(b"{}\n")
    (root / "a" / "b" / "x.json").write_bytes(b"x")
    (root / "a" / "Z").write_bytes(b"z")
    (root / ".hidden").write_bytes(b"h")


def test_lines_are_sorted_bytewise_and_refuse_symlinks(tmp_path: Path) -> None:
    """Every regular file (hidden ones too) is listed, sorted by path bytes; a symlink fails."""
    _tree(tmp_path)
    listing = compute_checksums(tmp_path).decode().splitlines()
    assert [line.split("  ", 1)[1] for line in listing] == [
        ".hidden",
        "MANIFEST.json",
        "a/Z",
        "a/b/x.json",
    ]
    assert listing[2] == hashlib.sha256(b"z").hexdigest() + "  a/Z"
    (tmp_path / "link").symlink_to(tmp_path / "a" / "Z")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="'link': a symlink"):
        compute_checksums(tmp_path)


def test_escaped_form_for_newline_and_backslash() -> None:
    """Names with newline or backslash take GNU's leading-backslash form."""
    digest = "0" * 64
    assert checksum_line(digest, b"a\nb\\c") == b"\\" + b"0" * 64 + b"  a\\nb\\\\c\n"


@pytest.mark.parametrize("limit", [1, 2, 1000])
def test_ledger_listing_matches_walk(tmp_path: Path, limit: int) -> None:
    """The ledger (spilling after `limit` paths) lists exactly what hashing the tree gives,
    with the last digest of a path written twice."""
    tree = tmp_path / "tree"
    tree.mkdir()
    _tree(tree)
    ledger = ChecksumLedger(tmp_path / "spill", limit=limit)
    ledger.record("a/Z", hashlib.sha256(b"an older version").digest())
    for rel in (".hidden", "a/Z", "a/b/x.json"):
        ledger.record(rel, hashlib.sha256((tree / rel).read_bytes()).digest())
    ledger.record("CHECKSUMS", hashlib.sha256(b"never listed").digest())
    manifest = {"MANIFEST.json": hashlib.sha256(b"{}\n").digest()}
    assert b"".join(ledger.listing(manifest)) == compute_checksums(tree)
    ledger.close()
    if limit < 1000:  # runs were spilled, and close() removed them
        assert list((tmp_path / "spill").iterdir()) == []


@pytest.mark.parametrize("limit", [1, 2, 1000])
def test_ledger_record_many_is_record_in_order(tmp_path: Path, limit: int) -> None:
    """A batch recorded at once lists like the same records made one by one: the last digest
    of a path wins, also across a spill in the middle of the batch."""
    tree = tmp_path / "tree"
    tree.mkdir()
    _tree(tree)
    ledger = ChecksumLedger(tmp_path / "spill", limit=limit)
    ledger.record_many(
        [("a/Z", hashlib.sha256(b"an older version").digest())]
        + [(rel, hashlib.sha256((tree / rel).read_bytes()).digest()) for rel in (".hidden", "a/Z")]
    )
    ledger.record_many([])
    ledger.record_many(
        [("a/b/x.json", hashlib.sha256((tree / "a/b/x.json").read_bytes()).digest())]
    )
    manifest = {"MANIFEST.json": hashlib.sha256(b"{}\n").digest()}
    assert b"".join(ledger.listing(manifest)) == compute_checksums(tree)
    ledger.close()


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="sha256sum not installed")
def test_sha256sum_accepts_it(tmp_path: Path) -> None:
    """`sha256sum -c CHECKSUMS` passes in the tree root."""
    _tree(tmp_path)
    (tmp_path / "CHECKSUMS").write_bytes(compute_checksums(tmp_path))
    subprocess.run(["sha256sum", "--quiet", "-c", "CHECKSUMS"], cwd=tmp_path, check=True)


@pytest.mark.anyio
async def test_verify_detects_tampering_and_strays(tmp_path: Path) -> None:
    """verify passes on an intact tree, fails on a changed, missing or unlisted file."""
    _tree(tmp_path)
    await _list(tmp_path)
    report = await verify_tree(tmp_path)
    assert report.counters["verify.files"] == 4
    (tmp_path / "a" / "Z").write_bytes(b"tampered")
    with raises_code(ChecksumMismatch, "ErrChecksumMismatch", match="a/Z: sha256 differs"):
        await verify_tree(tmp_path)
    (tmp_path / "a" / "Z").write_bytes(b"z")
    (tmp_path / "stray").write_bytes(b"s")
    with pytest.raises(ChecksumMismatch, match="stray: not listed"):
        await verify_tree(tmp_path)
    (tmp_path / "stray").unlink()
    (tmp_path / ".hidden").unlink()
    with pytest.raises(ChecksumMismatch, match=r"\.hidden: missing"):
        await verify_tree(tmp_path)


@pytest.mark.anyio
async def test_verify_requires_manifest(tmp_path: Path) -> None:
    """A tree without MANIFEST.json is an incomplete run."""
    (tmp_path / "f").write_bytes(b"f")
    await _list(tmp_path)
    with raises_code(ChecksumMismatch, "ErrChecksumsMissing", match="incomplete"):
        await verify_tree(tmp_path)


def _big_tree(root: Path, files: int) -> None:
    (root / "MANIFEST.json").write_bytes(b"{}\n")
    for i in range(files):
        directory = root / f"d{i % 7}"
        directory.mkdir(exist_ok=True)
        (directory / f"f{i:04d}.json").write_bytes(b"%d" % i)


@pytest.mark.anyio
@pytest.mark.parametrize("limit", [16, 100_000])
async def test_verify_in_bounded_memory_names_the_same_differences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """Both sides of the check spill sorted runs past ``limit`` entries and are compared in
    one merge: with runs on disk (16) or all in memory, the verdict and the five differences
    named (the first in path order) are the same, and the rest are counted."""
    import functools

    from elastickv_async._core.dump import verify

    monkeypatch.setattr(verify, "ChecksumLedger", functools.partial(ChecksumLedger, limit=limit))
    _big_tree(tmp_path, 300)
    await _list(tmp_path)
    assert (await verify_tree(tmp_path)).counters["verify.files"] == 301
    changed = [tmp_path / f"d{i % 7}" / f"f{i:04d}.json" for i in (5, 12, 40, 41, 299)]
    for path in changed:
        path.write_bytes(b"changed")
    (tmp_path / "d3" / "f0003.json").unlink()
    (tmp_path / "d0" / "extra.json").write_bytes(b"e")
    expected = sorted(
        [(str(p.relative_to(tmp_path)), "sha256 differs") for p in changed]
        + [("d3/f0003.json", "missing"), ("d0/extra.json", "not listed")]
    )
    shown = "; ".join(f"{path}: {problem}" for path, problem in expected[:5])
    with raises_code(ChecksumMismatch, "ErrChecksumMismatch") as caught:
        await verify_tree(tmp_path)
    assert str(caught.value) == f"7 file(s) differ from CHECKSUMS: {shown}; and 2 more"


@pytest.mark.anyio
async def test_verify_reads_checksums_in_blocks(tmp_path: Path) -> None:
    """A CHECKSUMS longer than one read block (its lines cut across blocks) is read whole,
    and an empty one is refused before anything is hashed."""
    _big_tree(tmp_path, 15_000)
    await _list(tmp_path)
    assert (tmp_path / "CHECKSUMS").stat().st_size > 1 << 20
    assert (await verify_tree(tmp_path)).counters["verify.files"] == 15_001
    (tmp_path / "CHECKSUMS").write_bytes(b"\n")
    with raises_code(ChecksumMismatch, "ErrChecksumsEmpty"):
        await verify_tree(tmp_path)
