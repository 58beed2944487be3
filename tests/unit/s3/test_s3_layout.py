"""Where object keys land in a bucket directory (issue #7's collision and odd-key rules)."""

from __future__ import annotations

import hashlib

import pytest
from support import raises_code

from elastickv_async._adapters.s3 import layout
from elastickv_async._adapters.s3.layout import (
    Placement,
    blob_file_name,
    orphan_dir_name,
    plan_objects,
)
from elastickv_async._core.errors import AdapterRecordError


def _plan(
    keys: list[bytes], *, rename: bool = False, extra: tuple[bytes, ...] = ()
) -> dict[bytes, Placement]:
    return plan_objects(set(keys) | set(extra), keys, rename_collisions=rename)


def _sha_name(raw: bytes, hint: str) -> bytes:
    """The reference's SHA-fallback file name, computed independently (REFERENCE_NOTES §4.2)."""
    return (hashlib.sha256(raw).hexdigest()[:32] + "__" + hint).encode()


def test_natural_paths_keep_slashes_as_directories() -> None:
    plan = _plan([b"a/b/c.txt", b"special !$&'()*+,;=@.txt", "ü/ñ.txt".encode()])
    assert {k: p.path for k, p in plan.items()} == {k: k for k in plan}
    assert all(p.kind is None for p in plan.values())


def test_file_vs_directory_collision_renames_the_shorter_key() -> None:
    plan = _plan([b"path/to", b"path/to/sub", b"path/to/other/deeper"])
    assert plan[b"path/to"] == Placement(b"path/to.elastickv-leaf-data", "s3-leaf-data")
    assert plan[b"path/to/sub"] == Placement(b"path/to/sub", None)


def test_objects_without_manifest_still_claim_their_directories() -> None:
    # As in the reference, an orphan "a/b" forces a manifest object "a" aside.
    assert _plan([b"a"], extra=(b"a/b",))[b"a"].kind == "s3-leaf-data"


def test_reserved_suffix_needs_rename_collisions() -> None:
    with raises_code(AdapterRecordError, "ErrS3MetaSuffixCollision"):
        _plan([b"evil.elastickv-meta.json"])
    plan = _plan([b"evil.elastickv-meta.json"], rename=True)
    assert plan[b"evil.elastickv-meta.json"] == Placement(
        b"evil.elastickv-meta.json.user-data", "meta-suffix-rename"
    )


def test_reserved_root_names_never_clobber_dump_files() -> None:
    plan = _plan(
        [
            b"_bucket.json",
            b"KEYMAP.jsonl",
            b"_orphans/x/y",
            b"_incomplete_uploads",
            b"sub/_bucket.json",
        ]
    )
    assert plan[b"_bucket.json"] == Placement(b"_bucket.json.user-data", "s3-reserved-name")
    assert plan[b"KEYMAP.jsonl"] == Placement(b"KEYMAP.jsonl.user-data", "s3-reserved-name")
    assert plan[b"_orphans/x/y"] == Placement(b"_orphans.user-data/x/y", "s3-reserved-name")
    assert plan[b"_incomplete_uploads"].path == b"_incomplete_uploads.user-data"
    assert plan[b"sub/_bucket.json"] == Placement(
        b"sub/_bucket.json", None
    )  # only the root is reserved


def test_directory_markers_become_marker_files() -> None:
    plan = _plan([b"folder/", b"folder/x", b"a/b/"])
    assert plan[b"folder/"] == Placement(b"folder/.elastickv-dir-marker", "s3-dir-marker")
    assert plan[b"a/b/"] == Placement(b"a/b/.elastickv-dir-marker", "s3-dir-marker")
    assert plan[b"folder/x"].kind is None


def test_empty_and_dot_segments_fall_back_under_their_valid_prefix() -> None:
    plan = _plan([b"a//b", b"logs/./x", b"../etc/passwd", b"/abs", b""])
    assert plan[b"a//b"] == Placement(b"a/" + _sha_name(b"/b", "%2Fb"), "sha-fallback")
    assert plan[b"logs/./x"] == Placement(b"logs/" + _sha_name(b"./x", ".%2Fx"), "sha-fallback")
    assert plan[b"../etc/passwd"].path == _sha_name(b"../etc/passwd", "..%2Fetc%2Fpasswd")
    assert plan[b"/abs"].path == _sha_name(b"/abs", "%2Fabs")
    assert plan[b""].path == _sha_name(b"", "")


def test_over_long_segments_fall_back() -> None:
    long = b"x" * 304  # the real bucket's 304-byte segment
    plan = _plan([b"dir/" + long + b"/leaf", b"dir/" + b"y" * 250])
    assert plan[b"dir/" + long + b"/leaf"].path == b"dir/" + _sha_name(long + b"/leaf", "x" * 64)
    # 250 bytes fit a name but not the 20-byte sidecar suffix beside it.
    assert plan[b"dir/" + b"y" * 250].path == b"dir/" + _sha_name(b"y" * 250, "y" * 64)
    assert plan[b"dir/" + b"y" * 250].kind == "sha-fallback"


def test_a_leaf_data_target_that_is_a_real_key_falls_back() -> None:
    keys = [b"a", b"a/b", b"a.elastickv-leaf-data"]
    plan = _plan(keys)
    assert plan[b"a.elastickv-leaf-data"] == Placement(b"a.elastickv-leaf-data", None)
    assert plan[b"a"] == Placement(_sha_name(b"a", "a"), "sha-fallback")


def test_taken_fallback_names_are_numbered() -> None:
    taken = _sha_name(b"//x", "%2F%2Fx")
    plan = _plan([b"//x", taken])
    assert plan[taken] == Placement(taken, None)
    assert plan[b"//x"] == Placement(taken + b"~2", "sha-fallback")


def test_no_two_paths_collide_and_no_file_is_a_directory() -> None:
    keys = [
        b"a", b"a/", b"a/b", b"a//b", b"a/b/", b"a/b.elastickv-meta.json",
        b"a/.elastickv-dir-marker", b"_orphans", b"_orphans/a", b"_orphans.user-data",
        b"x.elastickv-meta.json/y", b"x",
    ]  # fmt: skip
    plan = _plan(keys, rename=True)
    paths = [p.path for p in plan.values()]
    files = set(paths) | {p + b".elastickv-meta.json" for p in paths}
    assert len(files) == 2 * len(keys)
    for path in paths:
        parts = path.split(b"/")
        assert not any(b"/".join(parts[:i]) in files for i in range(1, len(parts)))
        assert parts[0] not in (
            b"_bucket.json",
            b"KEYMAP.jsonl",
            b"_orphans",
            b"_incomplete_uploads",
        )


def test_orphan_directory_names() -> None:
    assert orphan_dir_name(b"lost.bin") == "lost.bin"
    assert orphan_dir_name(b"a/b") == "a%2Fb"
    assert orphan_dir_name(b"..") == "%2E%2E"
    assert orphan_dir_name(b"") == hashlib.sha256(b"").hexdigest()[:32] + "__"


def test_orphan_chunk_file_names() -> None:
    # Golden s3_orphans_flag: u-x, part 1, chunk 1, version 0.
    assert blob_file_name(b"u-x", 1, 1, 0) == (
        "u-x_0000000000000001_0000000000000001_0000000000000000.bin"
    )
    long = blob_file_name(b"u" * 240, 1, 0, 0)
    assert long == hashlib.sha256(b"u" * 240).hexdigest()[:32] + (
        "_0000000000000001_0000000000000000_0000000000000000.bin"
    )


def test_a_plain_key_s_path_is_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key kept at its own path is checked once: the check that admits it also admits
    the placement, which KEYMAP does not record."""
    checked: list[bytes] = []
    path_ok = layout._path_ok

    def counting(path: bytes, *, recorded: bool) -> bool:
        checked.append(path)
        return path_ok(path, recorded=recorded)

    monkeypatch.setattr(layout, "_path_ok", counting)
    keys = [b"a/b.txt", b"a/c.txt", b"d"]
    assert {k: p.path for k, p in _plan(keys).items()} == {k: k for k in keys}
    assert sorted(checked) == sorted(keys)
