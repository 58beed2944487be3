"""Multi-disk output: ``decode --output-root ADAPTER=DIR`` splits a tree over several roots;
``verify`` and ``encode`` follow the roots MANIFEST.json records, or ``--tree-root``."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
from hostile import SAMPLE_FSM, cli, header_below_data, listing, pausing_cli
from support import tree_files

from elastickv_async import (
    ChecksumMismatch,
    DecodeOptions,
    EncodeOptions,
    UsageError,
    decode_snapshot,
    encode_snapshot,
    verify_tree,
)
from elastickv_async._adapters.base import DecodeContext
from elastickv_async._adapters.registry import REGISTRY
from elastickv_async._core.dump.checksums import compute_checksums
from elastickv_async._core.pipeline import INCOMPLETE_MARKER

#: Every adapter but sqs gets a root of its own; sqs stays in the main output.
SPLIT = ("dynamodb", "s3", "redis")


def _roots(base: Path) -> dict[str, Path]:
    return {name: base / f"disk-{name}" for name in SPLIT}


def _reassemble(main: Path, roots: dict[str, Path], target: Path) -> Path:
    """A copy of the split tree made whole: each redirected subtree moved back under main."""
    shutil.copytree(main, target)
    for name, root in roots.items():
        shutil.copytree(root / name, target / name)
    return target


def _without(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in keys}


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``examples/sample.fsm`` decoded into one root."""
    out = tmp_path_factory.mktemp("whole") / "tree"
    anyio.run(decode_snapshot, SAMPLE_FSM, out)
    return out


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """``examples/sample.fsm`` decoded with three of its four adapters on roots of their own."""
    base = tmp_path_factory.mktemp("split")
    roots = _roots(base)
    anyio.run(lambda: decode_snapshot(SAMPLE_FSM, base / "main", output_roots=roots))
    return base / "main", roots


def _split_copy(split: tuple[Path, dict[str, Path]], base: Path) -> tuple[Path, dict[str, Path]]:
    """A private copy of the split tree (its MANIFEST.json still names the originals)."""
    main, roots = split
    copies = {name: base / f"copy-{name}" for name in roots}
    for name, root in roots.items():
        shutil.copytree(root, copies[name])
    return shutil.copytree(main, base / "main"), copies


@pytest.mark.anyio
async def test_split_decode_reassembles_to_the_unsplit_tree(tmp_path: Path, whole: Path) -> None:
    """Each adapter's files land in its own root, byte for byte the files of an unsplit
    decode; the main root holds the rest; nothing of the run is left behind anywhere."""
    roots = _roots(tmp_path)
    main = tmp_path / "main"
    await decode_snapshot(SAMPLE_FSM, main, output_roots=roots)
    expected = tree_files(whole)
    for name, root in roots.items():
        assert os.listdir(root) == [name]
        assert tree_files(root) == {k: v for k, v in expected.items() if k.startswith(f"{name}/")}
    in_main = tree_files(main)
    assert sorted(in_main) == sorted(k for k in expected if k.split("/")[0] not in roots), (
        "the main root holds sqs/, CHECKSUMS and MANIFEST.json only"
    )
    for rel, data in in_main.items():
        if rel not in ("MANIFEST.json", "CHECKSUMS"):
            assert data == expected[rel]
    assert not [p for p in listing(tmp_path) if "elastickv-async" in p]


def test_manifest_records_the_roots_and_checksums_stay_logical(
    tmp_path: Path, whole: Path, split: tuple[Path, dict[str, Path]]
) -> None:
    """MANIFEST.json gains only ``output_roots`` (absolute); CHECKSUMS lists logical paths
    and is exactly the CHECKSUMS of the tree made whole."""
    main, roots = split
    ours = json.loads((main / "MANIFEST.json").read_bytes())
    theirs = json.loads((whole / "MANIFEST.json").read_bytes())
    assert ours["output_roots"] == {name: str(path.absolute()) for name, path in roots.items()}
    assert all(os.path.isabs(path) for path in ours["output_roots"].values())
    assert "output_roots" not in theirs
    volatile = ("output_roots", "wall_time_iso")
    assert _without(ours, *volatile) == _without(theirs, *volatile)
    reassembled = _reassemble(main, roots, tmp_path / "whole")
    assert (main / "CHECKSUMS").read_bytes() == compute_checksums(reassembled)
    manifest_line = b"  MANIFEST.json\n"
    logical = (main / "CHECKSUMS").read_bytes().splitlines(True)
    unsplit = (whole / "CHECKSUMS").read_bytes().splitlines(True)
    assert [x for x in logical if not x.endswith(manifest_line)] == [
        x for x in unsplit if not x.endswith(manifest_line)
    ]


@pytest.mark.anyio
async def test_adapter_scratch_lives_on_its_roots_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redirected adapter spills inside its own root (so a finished scratch file is renamed
    into place, never copied); the others spill in the main output."""
    seen: dict[str, Path] = {}

    def recording(**kwargs: Any) -> Any:
        ctx = DecodeContext(**kwargs)
        seen[ctx.scratch.name] = ctx.scratch
        return ctx

    monkeypatch.setattr("elastickv_async._core.pipeline.DecodeContext", recording)
    roots = _roots(tmp_path)
    main = tmp_path / "main"
    await decode_snapshot(SAMPLE_FSM, main, output_roots=roots)
    assert sorted(seen) == sorted(REGISTRY.names())
    for name, scratch in seen.items():
        assert scratch.parent.parent == roots.get(name, main)


@pytest.mark.anyio
async def test_verify_follows_the_recorded_roots(
    tmp_path: Path, split: tuple[Path, dict[str, Path]]
) -> None:
    """verify checks the files of every root; a changed or added file in a redirected root
    fails it, naming the file by its logical path."""
    main, roots = split
    report = await verify_tree(main)
    assert report.counters["verify.files"] == len(tree_files(main)) - 1 + sum(
        len(tree_files(root)) for root in roots.values()
    )
    main, copies = _split_copy(split, tmp_path)
    # Point the copy's redirected roots at the copies (the MANIFEST names the originals).
    await verify_tree(main, tree_roots=copies)
    victim = next(p for p in sorted((copies["redis"] / "redis").rglob("*")) if p.is_file())
    rel = victim.relative_to(copies["redis"]).as_posix()
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(ChecksumMismatch, match=f"{rel}: sha256 differs"):
        await verify_tree(main, tree_roots=copies)
    victim.unlink()
    with pytest.raises(ChecksumMismatch, match=f"{rel}: missing"):
        await verify_tree(main, tree_roots=copies)
    (copies["s3"] / "s3" / "stray.txt").write_text("not listed")
    with pytest.raises(ChecksumMismatch, match=r"s3/stray\.txt: not listed"):
        await verify_tree(main, tree_roots=copies)


@pytest.mark.anyio
async def test_a_redirected_subtree_left_in_the_main_root_fails_verify(
    tmp_path: Path, split: tuple[Path, dict[str, Path]]
) -> None:
    """The main root may not hold a second copy of a redirected subtree."""
    main, copies = _split_copy(split, tmp_path)
    shutil.copytree(copies["dynamodb"] / "dynamodb", main / "dynamodb")
    with pytest.raises(ChecksumMismatch, match="holds dynamodb/, but"):
        await verify_tree(main, tree_roots=copies)


@pytest.mark.anyio
async def test_a_missing_recorded_root_is_a_usage_error_until_overridden(
    tmp_path: Path,
) -> None:
    """A recorded root that is gone names the adapter and the flag that points elsewhere."""
    roots = _roots(tmp_path)
    main = tmp_path / "main"
    await decode_snapshot(SAMPLE_FSM, main, output_roots=roots)
    await anyio.Path(roots["s3"]).rename(tmp_path / "moved")
    with pytest.raises(UsageError, match=r"s3's subtree root .* --tree-root s3=DIR"):
        await verify_tree(main)
    with pytest.raises(UsageError, match=r"s3's subtree root"):
        await encode_snapshot(main, tmp_path / "out.fsm")
    assert not (tmp_path / "out.fsm").exists()
    with pytest.raises(UsageError, match="--tree-root names unknown adapter"):
        await verify_tree(main, tree_roots={"nope": tmp_path})
    with pytest.raises(UsageError, match=r"s3's subtree root .*\(--tree-root\) is not"):
        await verify_tree(main, tree_roots={"s3": tmp_path / "gone"})
    await verify_tree(main, tree_roots={"s3": tmp_path / "moved"})


@pytest.mark.anyio
async def test_encode_of_a_split_tree_equals_encode_of_the_whole(
    tmp_path: Path, whole: Path, split: tuple[Path, dict[str, Path]]
) -> None:
    """The same .fsm bytes from the split tree (self-test included) as from the unsplit one,
    also when the redirected roots were moved and are given with ``tree_roots``."""
    unsplit = await encode_snapshot(whole, tmp_path / "whole.fsm")
    main, _ = split
    result = await encode_snapshot(main, tmp_path / "split.fsm", EncodeOptions(self_test=True))
    assert result.self_test_matched
    assert result.report.counters["encode.files_verified"] > len(tree_files(main))
    assert (tmp_path / "split.fsm").read_bytes() == (tmp_path / "whole.fsm").read_bytes()
    assert result.sha256 == unsplit.sha256
    moved_main, copies = _split_copy(split, tmp_path / "moved")
    moved = await encode_snapshot(
        moved_main, tmp_path / "moved.fsm", EncodeOptions(self_test=True), tree_roots=copies
    )
    assert moved.sha256 == unsplit.sha256


def test_cli_split_decode_verify_encode(
    tmp_path: Path, whole: Path, split: tuple[Path, dict[str, Path]]
) -> None:
    """The flags end to end: decode --output-root, verify and encode --tree-root."""
    flags = [f"--output-root={name}={path}" for name, path in _roots(tmp_path).items()]
    main = tmp_path / "main"
    done = cli("decode", "--input", SAMPLE_FSM, "--output", main, "--quiet", *flags)
    assert done.returncode == 0, done.stderr
    assert cli("verify", "--input", main, "--quiet").returncode == 0
    shutil.move(tmp_path / "disk-redis", tmp_path / "elsewhere")
    refused = cli("verify", "--input", main)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "--tree-root redis=DIR" in refused.stderr
    override = ["--tree-root", f"redis={tmp_path / 'elsewhere'}"]
    assert cli("verify", "--input", main, "--quiet", *override).returncode == 0
    fsm = tmp_path / "out.fsm"
    encoded = cli("encode", "--input", main, "--output", fsm, "--quiet", *override)
    assert encoded.returncode == 0, encoded.stderr
    whole_fsm = tmp_path / "whole.fsm"
    assert cli("encode", "--input", whole, "--output", whole_fsm, "--quiet").returncode == 0
    assert fsm.read_bytes() == whole_fsm.read_bytes()


def _refused(tmp_path: Path, *flags: str | os.PathLike[str]) -> str:
    before = listing(tmp_path)
    done = cli("decode", "--input", SAMPLE_FSM, "--output", tmp_path / "out", *flags)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    # Nothing is written: at most the output directory itself is made, and left empty.
    after = listing(tmp_path)
    assert set(after) - set(before) <= {"out"}
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")
    return done.stderr


def test_cli_refuses_bad_output_roots(tmp_path: Path) -> None:
    """Unknown or repeated adapters, a root inside or around the output or another root, a
    non-empty root, a symlinked root: usage errors of one line, and nothing written."""
    elsewhere = tmp_path / "elsewhere"
    assert "unknown adapter(s) nosql" in _refused(tmp_path, "--output-root", f"nosql={elsewhere}")
    assert "'redis' twice" in _refused(
        tmp_path, "--output-root", f"redis={elsewhere}", "--output-root", f"redis={tmp_path / 'b'}"
    )
    assert "ADAPTER=DIR" in _refused(tmp_path, "--output-root", "redis")
    inside = _refused(tmp_path, "--output-root", f"redis={tmp_path / 'out' / 'r'}")
    assert "must not be inside the output" in inside
    assert "must not contain the output" in _refused(tmp_path, "--output-root", f"redis={tmp_path}")
    nested = _refused(
        tmp_path, "--output-root", f"redis={elsewhere}", "--output-root", f"sqs={elsewhere}/q"
    )
    assert "must not be inside --output-root redis=" in nested
    same = _refused(
        tmp_path, "--output-root", f"redis={elsewhere}", "--output-root", f"sqs={elsewhere}"
    )
    assert "is the same directory as --output-root redis=" in same
    assert "not selected: redis" in _refused(
        tmp_path, "--adapter", "sqs", "--output-root", f"redis={elsewhere}"
    )
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    assert f"{busy} is not empty" in _refused(tmp_path, "--output-root", f"redis={busy}")
    assert (busy / "mine.txt").read_text() == "keep"
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    symlinked = _refused(tmp_path, "--output-root", f"redis={tmp_path / 'link'}")
    assert "is a symlink" in symlinked
    assert os.listdir(target) == []


def test_scratch_root_may_not_be_an_output_root(tmp_path: Path) -> None:
    """The run's scratch must not be put into a redirected adapter's root."""
    root = tmp_path / "root"
    root.mkdir()
    stderr = _refused(tmp_path, "--scratch-root", root, "--output-root", f"redis={root}")
    assert "--scratch-root must not be --output-root redis=" in stderr
    assert os.listdir(root) == []


def test_dry_run_names_the_roots_and_writes_nothing(tmp_path: Path) -> None:
    """The plan says where a redirected adapter would go; no root is created."""
    root = tmp_path / "disk"
    done = cli(
        "decode", "--input", SAMPLE_FSM, "--output", tmp_path / "out", "--dry-run",
        "--output-root", f"redis={root}", "--log-format", "json", "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout.splitlines()[0])
    assert plan["output_roots"] == {"redis": str(root)}
    text = cli(
        "decode", "--input", SAMPLE_FSM, "--output", tmp_path / "out", "--dry-run",
        "--output-root", f"redis={root}", "--quiet",
    )  # fmt: skip
    assert f"(into {root}/redis/)" in text.stdout
    assert listing(tmp_path) == []


def test_a_killed_split_decode_leaves_no_manifest_and_force_recovers(
    tmp_path: Path, whole: Path
) -> None:
    """A decode killed mid-run leaves every root marked unfinished and no MANIFEST.json; a
    rerun needs --force, which replaces the unfinished trees in all roots."""
    roots = _roots(tmp_path)
    flags = [f"--output-root={name}={path}" for name, path in roots.items()]
    main = tmp_path / "main"
    args: list[str | os.PathLike[str]] = [
        "decode", "--input", SAMPLE_FSM, "--output", main, "--quiet", *flags
    ]  # fmt: skip
    child = pausing_cli(*args)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert not (main / "MANIFEST.json").exists()
    for place in (main, *roots.values()):
        assert (place / INCOMPLETE_MARKER).exists()
    refused = cli(*args)
    assert refused.returncode == 1
    assert "--force" in refused.stderr
    done = cli(*args, "--force")
    assert done.returncode == 0, done.stderr
    assert not [p for p in listing(tmp_path) if "elastickv-async" in p]
    assert cli("verify", "--input", main, "--quiet").returncode == 0
    reassembled = _reassemble(main, roots, tmp_path / "whole")
    assert listing(reassembled) == listing(whole)


def test_force_on_a_split_run_spares_complete_roots(tmp_path: Path) -> None:
    """--force never clears a root that holds anything but an unfinished run's tree: the
    output, already claimed, is left as found (no marker)."""
    roots = _roots(tmp_path)
    anyio.run(lambda: decode_snapshot(SAMPLE_FSM, tmp_path / "first", output_roots=roots))
    before = {name: listing(root) for name, root in roots.items()}
    with pytest.raises(UsageError, match="is not empty"):
        anyio.run(
            lambda: decode_snapshot(SAMPLE_FSM, tmp_path / "second", output_roots=roots, force=True)
        )
    assert {name: listing(root) for name, root in roots.items()} == before
    assert os.listdir(tmp_path / "second") == []


@pytest.mark.anyio
async def test_a_rerun_after_a_header_below_its_data_clears_the_redirected_roots(
    tmp_path: Path,
) -> None:
    """The decode that starts over empties every root, not only the output."""
    fsm = tmp_path / "s.fsm"
    fsm.write_bytes(header_below_data())
    root = tmp_path / "disk"
    whole = tmp_path / "whole"
    options = DecodeOptions(adapters=("redis",))
    await decode_snapshot(fsm, whole, options)
    report = await decode_snapshot(fsm, tmp_path / "main", options, output_roots={"redis": root})
    assert "mvcc_header_below_data" in report.warnings
    expected = {k: v for k, v in tree_files(whole).items() if k.startswith("redis/")}
    assert tree_files(root) == expected
    await verify_tree(tmp_path / "main")


@pytest.mark.anyio
async def test_a_tree_made_whole_again_verifies_with_tree_roots_at_the_main_root(
    tmp_path: Path, split: tuple[Path, dict[str, Path]]
) -> None:
    """Subtrees moved back under the main root: ``--tree-root ADAPTER=<main>`` says so, and
    the unchanged CHECKSUMS and MANIFEST.json verify."""
    main, roots = split
    whole = _reassemble(main, roots, tmp_path / "whole")
    back = dict.fromkeys(roots, whole)
    report = await verify_tree(whole, tree_roots=back)
    assert report.counters["verify.files"] == len(tree_files(whole)) - 1
    partly = dict.fromkeys(["dynamodb"], whole)
    with pytest.raises(ChecksumMismatch, match="holds s3/, but"):
        await verify_tree(whole, tree_roots=partly)


def test_snap_dir_decode_takes_output_roots_but_not_with_all(tmp_path: Path) -> None:
    """--input-snap-dir decodes its newest snapshot split like --input; --all, which makes
    one tree per snapshot, refuses roots that can hold only one."""
    snaps = tmp_path / "fsm-snap"
    snaps.mkdir()
    shutil.copyfile(SAMPLE_FSM, snaps / "0000000000000064.fsm")
    root = tmp_path / "disk"
    flags: list[str | os.PathLike[str]] = [
        "--input-snap-dir", snaps, "--output-root", f"redis={root}", "--quiet"
    ]  # fmt: skip
    refused = cli("decode", "--output", tmp_path / "all", "--all", *flags)
    assert refused.returncode == 1
    assert "--output-root cannot be used with --all" in refused.stderr
    assert not root.exists()
    done = cli("decode", "--output", tmp_path / "newest", *flags)
    assert done.returncode == 0, done.stderr
    assert os.listdir(root) == ["redis"]
    assert cli("verify", "--input", tmp_path / "newest", "--quiet").returncode == 0
