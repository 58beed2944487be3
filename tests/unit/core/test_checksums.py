"""CHECKSUMS format (GNU sha256sum) and tree verification."""

from __future__ import annotations

import hashlib
import itertools
import shutil
import subprocess
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from support import raises_code

from elastickv_async._core.dump import checksums
from elastickv_async._core.dump import tree as tree_module
from elastickv_async._core.dump import verify as verify_module
from elastickv_async._core.dump.checksums import (
    ChecksumLedger,
    checksum_line,
    compute_checksums,
    walk_digests,
)
from elastickv_async._core.dump.roots import TreeRoots
from elastickv_async._core.dump.tree import DumpTree
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


def test_escaped_names_are_checked_whole_like_plain_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tree whose names need CHECKSUMS' escaped form is checked batch by batch like any
    other (no line of its CHECKSUMS parsed when it matches), and a changed file among them
    is still named."""
    (tmp_path / "MANIFEST.json").write_bytes(b"{}\n")
    (tmp_path / "a").mkdir()
    for name, body in (("x\ny", b"1"), ("b\\c", b"2"), ("plain", b"3")):
        (tmp_path / "a" / name).write_bytes(body)
    (tmp_path / "CHECKSUMS").write_bytes(compute_checksums(tmp_path))
    assert (tmp_path / "CHECKSUMS").read_bytes().count(b"\n\\") == 2

    parse_line = verify_module._parse_line
    parsed: list[int] = []

    def counting(line: bytes, number: int) -> tuple[bytes, bytes]:
        parsed.append(number)
        return parse_line(line, number)

    with monkeypatch.context() as patched:
        patched.setattr(verify_module, "_parse_line", counting)
        assert verify_module.check_tree(DumpTree(tmp_path)) == (4, "sha256")
    assert parsed == [1]  # only the first line, to tell an empty CHECKSUMS
    (tmp_path / "a" / "b\\c").write_bytes(b"changed")
    with raises_code(ChecksumMismatch, "ErrChecksumMismatch", match=r"a/b\\c: sha256 differs"):
        verify_module.check_tree(DumpTree(tmp_path))


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
    assert b"".join(ledger.listing(manifest, block_size=64)) == compute_checksums(tree)
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
    assert b"".join(ledger.listing(manifest, block_size=64)) == compute_checksums(tree)
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
@pytest.mark.parametrize("listing", ["sorted", "shuffled"])
async def test_verify_in_bounded_memory_names_the_same_differences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listing: str
) -> None:
    """A sorted CHECKSUMS is compared with the walk as both are read; a hand-shuffled one is
    first sorted through runs spilled every 16 paths. Either way the verdict and the five
    differences named (the first in path order) are the same, and the rest are counted."""
    import functools
    import random

    from elastickv_async._core.dump import verify

    monkeypatch.setattr(verify, "ChecksumLedger", functools.partial(ChecksumLedger, limit=16))
    _big_tree(tmp_path, 300)
    await _list(tmp_path)
    if listing == "shuffled":
        lines = (tmp_path / "CHECKSUMS").read_bytes().splitlines(keepends=True)
        random.Random(7).shuffle(lines)
        (tmp_path / "CHECKSUMS").write_bytes(b"".join(lines))
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


@pytest.mark.parametrize("spilled", [False, True])
def test_the_walk_gives_paths_in_byte_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spilled: bool
) -> None:
    """Names that sort between a directory's name and its contents (``a-b``, ``a.json`` come
    before ``a/x`` bytewise) and a redirected subtree (read from its own root) all come out
    in the byte order of their full paths, the order of CHECKSUMS, also when each listing
    is sorted through runs of a few names."""
    from elastickv_async._core.dump import checksums

    if spilled:
        monkeypatch.setattr(checksums, "_CHUNK", 2)
    root, elsewhere = tmp_path / "main", tmp_path / "elsewhere"
    for rel in ("a/x", "a/b.c", "a-b", "a.json", "a0", "ab/c", "A", "s3/o", "s3.txt", "z/y/x"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    (elsewhere / "redis" / "k").mkdir(parents=True)
    (elsewhere / "redis" / "k" / "v").write_bytes(b"v")
    (elsewhere / "redis" / "k.bin").write_bytes(b"b")
    tree = DumpTree(TreeRoots(root, {"redis": elsewhere}))
    paths = [path for path, _ in walk_digests(tree, memory=400 if spilled else 1 << 20)]
    assert paths == sorted(paths)
    assert paths == [
        b"A", b"a-b", b"a.json", b"a/b.c", b"a/x", b"a0", b"ab/c",
        b"redis/k.bin", b"redis/k/v", b"s3.txt", b"s3/o", b"z/y/x",
    ]  # fmt: skip


def test_known_digests_stand_for_files_already_read(tmp_path: Path) -> None:
    """A known digest is taken for its file (not read again), so what the caller read is what
    is checked; unknown files are read; a known path that is no longer a regular file gets
    the full check and is refused."""
    _tree(tmp_path)
    read_earlier = hashlib.sha256(b"x as it was read").digest()
    known = iter([(b"a/b/x.json", read_earlier), (b"zzz", b"\0" * 32)])  # zzz: gone since
    digests = dict(walk_digests(DumpTree(tmp_path), known=known))
    assert digests == {
        b".hidden": hashlib.sha256(b"h").digest(),
        b"MANIFEST.json": hashlib.sha256(b"{}\n").digest(),
        b"a/Z": hashlib.sha256(b"z").digest(),
        b"a/b/x.json": read_earlier,
    }
    (tmp_path / "a" / "b" / "x.json").unlink()
    (tmp_path / "a" / "b" / "x.json").symlink_to(tmp_path / "a" / "Z")
    known = iter([(b"a/b/x.json", read_earlier)])
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="a symlink"):
        dict(walk_digests(DumpTree(tmp_path), known=known))


@pytest.mark.parametrize("seed", range(40))
def test_known_digests_are_taken_in_batches_as_one_at_a_time(seed: int) -> None:
    """Known digests asked for in ascending batches give each path its own digest or None,
    whatever the mix: batches that are exactly the next known paths, known paths no file
    has (passed over), files with none, batches larger than what is left."""
    import random

    rng = random.Random(seed)
    universe = sorted({bytes(rng.choices(b"ab/", k=rng.randint(1, 6))) for _ in range(300)})
    known = {p: hashlib.sha256(p).digest() for p in universe if rng.random() < 0.7}
    asked = [p for p in universe if rng.random() < (0.8 if p in known else 0.5)]
    taken = checksums._Known(iter(sorted(known.items())))
    got: list[bytes | None] = []
    start = 0
    while start < len(asked):
        size = rng.choice([1, 2, 5, 17, 64, 400])
        got += taken.take_many(asked[start : start + size])
        start += size
    assert got == [known.get(p) for p in asked]


def test_a_tree_of_small_directories_is_walked_in_full_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files of many small directories share batches (one a directory would make the check
    of a DynamoDB tree, 10k hash directories, compare 10k small batches): every batch but
    the last holds at least a batch's worth, and they give every file in path order."""
    for outer in range(6):
        for inner in range(5):
            directory = tmp_path / f"t{outer}" / f"h{inner}"
            directory.mkdir(parents=True)
            for name in ("a.json", "b.json", "c.json"):
                (directory / name).write_bytes(name.encode())
    (tmp_path / "t3" / "loose").write_bytes(b"l")
    expected = list(walk_digests(DumpTree(tmp_path)))
    assert len(expected) == 91
    assert [len(batch) for batch in checksums.walk_digest_batches(DumpTree(tmp_path))] == [91]
    monkeypatch.setattr(checksums, "_BATCH", 7)
    batches = list(checksums.walk_digest_batches(DumpTree(tmp_path)))
    assert all(len(batch) >= 7 for batch in batches[:-1]) and len(batches) > 5
    assert [entry for batch in batches for entry in batch] == expected


def test_a_large_directory_is_walked_through_sorted_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory whose listing is over the walk's budget is sorted through spilled runs:
    the same paths and digests in the same order, an irregular entry among them still
    refused, and no run left behind."""
    import tempfile

    from elastickv_async._core.dump import checksums
    from elastickv_async._core.extsort import ExternalSorter

    (tmp_path / "t").mkdir()
    _big_tree(tmp_path / "t", 500)
    expected = list(walk_digests(DumpTree(tmp_path / "t")))
    spills: list[Path] = []

    class Counting(ExternalSorter):
        def spill(self) -> None:
            spills.append(self._dir)
            super().spill()

    monkeypatch.setattr(checksums, "ExternalSorter", Counting)
    monkeypatch.setattr(checksums, "_CHUNK", 5)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert spills == []
    assert list(walk_digests(DumpTree(tmp_path / "t"), memory=2000)) == expected
    assert len(spills) > 20
    assert list((tmp_path / "tmp").iterdir()) == []
    (tmp_path / "t" / "d3" / "f0100.json").symlink_to("f0003.json")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="a symlink"):
        list(walk_digests(DumpTree(tmp_path / "t"), memory=2000))


def test_a_walk_whose_listings_fit_makes_no_spill_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk makes its temporary directory only when a listing spills: none for listings
    within its memory, one (removed at the end, as when the walk is left early) for a
    listing past it."""
    import tempfile

    (tmp_path / "t").mkdir()
    _big_tree(tmp_path / "t", 200)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    made: list[str] = []
    mkdtemp = tempfile.mkdtemp

    def counting(*args: object, **kwargs: object) -> str:
        made.append(mkdtemp(*args, **kwargs))  # type: ignore[call-overload]
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", counting)
    expected = list(walk_digests(DumpTree(tmp_path / "t")))
    assert made == []
    monkeypatch.setattr(checksums, "_CHUNK", 5)
    assert list(walk_digests(DumpTree(tmp_path / "t"), memory=2000)) == expected
    assert len(made) == 1 and list((tmp_path / "tmp").iterdir()) == []
    walk = walk_digests(DumpTree(tmp_path / "t"), memory=2000)
    assert [path for path, _ in itertools.islice(walk, 2)] == [b"MANIFEST.json", b"d0/f0000.json"]
    assert len(made) == 2 and list((tmp_path / "tmp").iterdir()) != []
    walk.close()
    assert list((tmp_path / "tmp").iterdir()) == []


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


def _checksums_lines(root: Path) -> list[bytes]:
    return (root / "CHECKSUMS").read_bytes().splitlines()


@pytest.mark.anyio
async def test_verify_parses_the_lines_after_the_first_that_differs(tmp_path: Path) -> None:
    """Lines are compared whole with the walk's until one differs in any way; from there
    they are parsed: another spelling (binary marker, blank lines, no final newline) still
    verifies, a malformed line is named by its number in the file, and a line that repeats
    an agreeing path counts as unsorted (the whole listing is then sorted and verified)."""
    _big_tree(tmp_path, 40)
    await _list(tmp_path)
    lines = _checksums_lines(tmp_path)
    # Agreeing lines first, then sha256sum's binary spelling, blank lines and no newline.
    respelled = [*lines[:10], b"", lines[10].replace(b"  ", b" *", 1), *lines[11:]]
    (tmp_path / "CHECKSUMS").write_bytes(b"\n".join(respelled))
    assert (await verify_tree(tmp_path)).counters["verify.files"] == 41
    # Line 13 of the file (after a blank line 11) is malformed.
    broken = [*lines[:10], b"", lines[10], b"not a checksum line", *lines[11:]]
    (tmp_path / "CHECKSUMS").write_bytes(b"\n".join(broken) + b"\n")
    with raises_code(ChecksumMismatch, "ErrChecksumsMalformedLine", match="line 13 "):
        await verify_tree(tmp_path)
    # A path listed again after the lines that agreed: not in order, so sorted first (the
    # later line of a path wins), which here leaves an intact tree.
    (tmp_path / "CHECKSUMS").write_bytes(b"\n".join([*lines[:20], lines[5], *lines[20:]]))
    assert (await verify_tree(tmp_path)).counters["verify.files"] == 41
    # The same repeat with another digest: the later line wins and names the file.
    wrong = b"0" * 64 + lines[5][64:]
    (tmp_path / "CHECKSUMS").write_bytes(b"\n".join([*lines[:20], wrong, *lines[20:]]))
    path = lines[5][66:].decode()
    with raises_code(ChecksumMismatch, "ErrChecksumMismatch", match=f"{path}: sha256 differs"):
        await verify_tree(tmp_path)


@pytest.mark.anyio
@pytest.mark.parametrize("at", [0, 3, 4, 17, 40])
@pytest.mark.parametrize("block", [None, 100])
async def test_verify_compares_whole_batches_then_lines_from_the_batch_that_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int, block: int | None
) -> None:
    """The walk's files are compared a batch at a time with the bytes of CHECKSUMS; from the
    first batch that differs, line by line: whichever batch the difference falls in (batches
    of 4 here), a respelled line still verifies, a malformed one is named by its number and
    a wrong digest by its path; also when CHECKSUMS is read in blocks shorter than a batch's
    lines, so that batches start and end inside blocks. Every CHECKSUMS here is in order: none
    is taken for an unsorted one (which would be sorted and verified whole)."""
    monkeypatch.setattr(checksums, "_BATCH", 4)
    if block is not None:
        monkeypatch.setattr(tree_module, "_READ_BLOCK", block)

    def unsorted(*args: object, **kwargs: object) -> None:
        raise AssertionError("an ordered CHECKSUMS was sorted again")

    monkeypatch.setattr(verify_module, "ChecksumLedger", unsorted)
    _big_tree(tmp_path, 40)
    await _list(tmp_path)
    lines = _checksums_lines(tmp_path)
    assert (await verify_tree(tmp_path)).counters["verify.files"] == 41
    respelled = [*lines[:at], b"", lines[at].replace(b"  ", b" *", 1), *lines[at + 1 :]]
    (tmp_path / "CHECKSUMS").write_bytes(b"\n".join(respelled))
    assert (await verify_tree(tmp_path)).counters["verify.files"] == 41
    broken = [*lines[:at], b"not a checksum line", *lines[at:]]
    (tmp_path / "CHECKSUMS").write_bytes(b"\n".join(broken) + b"\n")
    with raises_code(ChecksumMismatch, "ErrChecksumsMalformedLine", match=f"line {at + 1} "):
        await verify_tree(tmp_path)
    wrong = [*lines[:at], b"0" * 64 + lines[at][64:], *lines[at + 1 :]]
    (tmp_path / "CHECKSUMS").write_bytes(b"\n".join(wrong) + b"\n")
    path = lines[at][66:].decode()
    with raises_code(ChecksumMismatch, "ErrChecksumMismatch", match=f"{path}: sha256 differs"):
        await verify_tree(tmp_path)
