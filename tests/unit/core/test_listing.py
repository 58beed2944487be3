"""The byte-ordered directory listings the encoders read input directories through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from elastickv_async._core.dump import listing
from elastickv_async._core.dump.tree import DumpTree


@pytest.mark.parametrize("spill", [False, True])
def test_listing_is_in_byte_order_with_its_irregular_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spill: bool
) -> None:
    """The listing gives every name once, in byte order of the names (not code point order:
    a name that is not UTF-8 sorts by its bytes), in chunks, with the entries that are not
    regular files, whether sorted in memory or through spilled runs."""
    if spill:
        monkeypatch.setattr(listing, "_LIST_BATCH", 3)
    raw = [b"a", b"a-", b"a.x", b"b", b"\xc3\xa9", b"\xef\xbf\xbd", b"\xed", b"\xff", b"z"]
    raw += [b"n%03d" % i for i in range(40)]
    directory = tmp_path / "d"
    directory.mkdir()
    for name in raw:
        (directory / os.fsdecode(name)).write_bytes(b"v")
    os.mkdir(directory / "sub")
    os.symlink("a", directory / "link")
    raw += [b"sub", b"link"]
    with DumpTree(tmp_path).open_dir(("d",)) as listed:  # type: ignore[union-attr]
        memory = 512 if spill else 1 << 20
        chunks = list(listing.sorted_listing(listed, tmp_path / "scratch", 4, memory))
    assert all(0 < len(names) <= 4 for names, _odd in chunks)
    assert [os.fsencode(n) for names, _odd in chunks for n in names] == sorted(raw)
    assert {n for _names, odd in chunks for n in odd} == {"sub", "link"}
    assert all(odd <= set(names) for names, odd in chunks)
