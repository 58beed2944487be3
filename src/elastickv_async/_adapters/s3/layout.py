"""Where S3 objects live in the dump tree, and the names the tree reserves.

An object's body goes to ``s3/<bucket dir>/<object key>`` with ``/`` kept as directories and
its metadata sidecar next to it at ``<path>.elastickv-meta.json`` (REFERENCE_NOTES §3.2).
Keys that cannot sit at their natural path are renamed and recorded in the bucket's
``KEYMAP.jsonl`` as ``{"encoded", "original", "kind"}`` so the encoder restores them exactly:

``s3-leaf-data`` (reference)
    a key that is also a directory of longer keys (``a/b`` beside ``a/b/c``) becomes
    ``a/b.elastickv-leaf-data``.
``meta-suffix-rename`` (reference, ``--rename-collisions``)
    a key ending in the sidecar suffix gets ``.user-data`` appended.
``s3-reserved-name`` (ours)
    a key whose first segment is a dump control name (``_bucket.json``, ``KEYMAP.jsonl``,
    ``_orphans``, ``_incomplete_uploads``) gets ``.user-data`` appended to that segment, so it
    never clobbers (or is skipped as) a dump file.
``s3-dir-marker`` (ours)
    a directory marker ``a/b/`` becomes the file ``a/b/.elastickv-dir-marker``.
``sha-fallback`` (reference kind, which the reference never writes for S3)
    any other key no filesystem can hold as it is (empty, ``.`` or ``..`` segments, a NUL
    byte, a segment over the 255-byte name limit, or a rename target that is taken) becomes
    ``<longest valid directory prefix>/<sha-fallback name of the rest>``, or a SHA-fallback
    name at the bucket root (numbered ``~2``, ``~3``, ... in the unlikely case it is taken).

The reference aborts the whole decode on most of these; here no key aborts except a
reserved-suffix key without ``--rename-collisions``, which the reference also refuses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Iterator
from typing import Final

import msgspec

from ..._core.dump.keymap import KEYMAP_FILE as KEYMAP_NAME
from ..._core.dump.keymap import KIND_SHA_FALLBACK
from ..._core.dump.names import encode_segment, sha_fallback
from ..base import BYTES, LINE_SET, FileComparison
from .errors import record_error
from .uploads import same_after_restore

__all__ = [
    "BUCKET_FILE",
    "DIR_MARKER_NAME",
    "INCOMPLETE_DIR",
    "INCOMPLETE_RECORDS",
    "KEYMAP_FILE",
    "KIND_DIR_MARKER",
    "KIND_LEAF_DATA",
    "KIND_META_RENAME",
    "KIND_RESERVED_NAME",
    "LEAF_SUFFIX",
    "META_SUFFIX",
    "ORPHANS_DIR",
    "RESERVED_ROOT",
    "ROOT",
    "USER_DATA_SUFFIX",
    "Placement",
    "blob_file_name",
    "orphan_dir_name",
    "plan_objects",
    "self_test_comparison",
]

#: The adapter's subtree of the dump.
ROOT: Final = "s3"
META_SUFFIX: Final = b".elastickv-meta.json"
LEAF_SUFFIX: Final = b".elastickv-leaf-data"
USER_DATA_SUFFIX: Final = b".user-data"
DIR_MARKER_NAME: Final = b".elastickv-dir-marker"
BUCKET_FILE: Final = b"_bucket.json"
KEYMAP_FILE: Final = KEYMAP_NAME.encode()
ORPHANS_DIR: Final = b"_orphans"
INCOMPLETE_DIR: Final = b"_incomplete_uploads"
INCOMPLETE_RECORDS: Final = b"records.jsonl"
#: First path segments at the bucket root that belong to the dump, not to user objects.
RESERVED_ROOT: Final = frozenset({BUCKET_FILE, KEYMAP_FILE, ORPHANS_DIR, INCOMPLETE_DIR})

#: KEYMAP kinds of the reference (besides the shared SHA fallback).
KIND_LEAF_DATA: Final = "s3-leaf-data"
KIND_META_RENAME: Final = "meta-suffix-rename"
#: KEYMAP kinds only this project writes, for keys the reference refuses.
KIND_RESERVED_NAME: Final = "s3-reserved-name"
KIND_DIR_MARKER: Final = "s3-dir-marker"

#: The filesystem's limit for one name; a body's name leaves room for the sidecar suffix.
NAME_MAX: Final = 255
_LEAF_MAX: Final = NAME_MAX - len(META_SUFFIX)
#: Segments no filesystem holds as a name.
_DOT_NAMES: Final = frozenset({b"", b".", b".."})


class Placement(msgspec.Struct, frozen=True):
    """An object's bucket-relative body path and, when renamed, its KEYMAP kind."""

    path: bytes
    kind: str | None


def _prefixes(path: bytes) -> list[bytes]:
    """Every proper directory prefix of ``path`` (``a``, ``a/b`` for ``a/b/c``)."""
    out = []
    head, sep, _ = path.rpartition(b"/")
    while sep:
        out.append(head)
        head, sep, _ = head.rpartition(b"/")
    return out


def _segment_ok(seg: bytes) -> bool:
    return seg not in _DOT_NAMES and b"\x00" not in seg and len(seg) <= NAME_MAX


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _path_ok(path: bytes, *, recorded: bool) -> bool:
    """Whether ``path`` can be a body file (plus sidecar) inside the bucket directory.

    A recorded path must be valid UTF-8, since KEYMAP.jsonl stores it as a JSON string.
    """
    # One loop, no generator: every key is checked once or twice per bucket flush.
    if b"\x00" in path:
        return False
    segs = path.split(b"/")
    for seg in segs:
        if seg in _DOT_NAMES or len(seg) > NAME_MAX:
            return False
    return (
        len(segs[-1]) <= _LEAF_MAX
        and not segs[-1].endswith(META_SUFFIX)
        and segs[0] not in RESERVED_ROOT
        and (not recorded or _utf8(path))
    )


def _map_reserved(key: bytes) -> bytes:
    """``key`` with a reserved first segment renamed: ``_orphans/x`` -> ``_orphans.user-data/x``."""
    first, sep, rest = key.partition(b"/")
    return first + USER_DATA_SUFFIX + sep + rest if first in RESERVED_ROOT else key


class _Occupancy:
    """Files and directories already claimed in one bucket directory."""

    def __init__(self) -> None:
        self.files: set[bytes] = set(RESERVED_ROOT)
        self.dirs: set[bytes] = set()

    def fits(self, path: bytes) -> bool:
        sidecar = path + META_SUFFIX
        if path in self.files or path in self.dirs or sidecar in self.files or sidecar in self.dirs:
            return False
        return not any(p in self.files for p in _prefixes(path))

    def add(self, path: bytes) -> None:
        self.files.add(path)
        self.files.add(path + META_SUFFIX)
        self.dirs.update(_prefixes(path))


def _fallbacks(key: bytes, mapped: bytes) -> Iterator[bytes]:
    """SHA-fallback candidates: under the longest valid directory prefix, then at the root."""
    segs = mapped.split(b"/")
    keep = 0
    while keep < len(segs) - 1 and _segment_ok(segs[keep]) and _utf8(segs[keep]):
        keep += 1
    if keep:
        prefix = b"/".join(segs[:keep])
        rest = b"/".join(segs[keep:])
        yield prefix + b"/" + sha_fallback(rest).encode("ascii")
    name = sha_fallback(key).encode("ascii")
    yield name
    n = 2
    while True:
        yield name + b"~%d" % n
        n += 1


def plan_objects(
    all_keys: Collection[bytes], placed: Iterable[bytes], *, rename_collisions: bool
) -> dict[bytes, Placement]:
    """Choose the body path of every key in ``placed`` (the objects that have a manifest).

    ``all_keys`` are all objects of the bucket's active generation, with or without a
    manifest (``placed`` among them): like the reference, every one of them claims its parent
    directories. Paths
    never collide with each other, with their sidecars or with the dump's own files.
    Raises ``ErrS3MetaSuffixCollision`` for a reserved-suffix key without
    ``rename_collisions``.
    """
    mapped_of = {k: _map_reserved(k) for k in all_keys}
    mapped_all = set(mapped_of.values())
    dir_prefixes: set[bytes] = set()
    for mapped in mapped_all:
        if b"/" in mapped:
            dir_prefixes.update(_prefixes(mapped))

    tentative: dict[bytes, Placement] = {}
    deferred: dict[bytes, Placement | None] = {}  # key -> preferred derived placement
    for key in sorted(placed):
        mapped = mapped_of[key]
        reserved_kind = KIND_RESERVED_NAME if mapped != key else None
        if key.endswith(META_SUFFIX):
            if not rename_collisions:
                raise record_error(
                    "ErrS3MetaSuffixCollision",
                    f"object key {key[:200]!r} ends in the reserved suffix "
                    f"{META_SUFFIX.decode()!r} (decode with --rename-collisions to rename it)",
                )
            choice = Placement(mapped + USER_DATA_SUFFIX, KIND_META_RENAME)
        elif _path_ok(mapped, recorded=False):
            if mapped in dir_prefixes:
                choice = Placement(mapped + LEAF_SUFFIX, KIND_LEAF_DATA)
            else:
                choice = Placement(mapped, reserved_kind)
        else:
            marker = mapped[:-1] + b"/" + DIR_MARKER_NAME if mapped.endswith(b"/") else b""
            deferred[key] = Placement(marker, KIND_DIR_MARKER) if marker else None
            continue
        if choice.kind is None:  # the path checked just above, and recorded nowhere
            tentative[key] = choice
            continue
        taken = choice.kind in (KIND_META_RENAME, KIND_LEAF_DATA) and choice.path in mapped_all
        if taken or not _path_ok(choice.path, recorded=True):
            deferred[key] = None
        else:
            tentative[key] = choice

    # The reference's own renames cannot collide among themselves except through a target
    # that is some other key's directory or sidecar, or that another key also maps to.
    dirs: set[bytes] = set()
    for choice in tentative.values():
        if b"/" in choice.path:
            dirs.update(_prefixes(choice.path))
    owner: dict[bytes, bytes] = {}
    for key in sorted(tentative, key=lambda k: (tentative[k].kind is not None, k)):
        path = tentative[key].path
        if path in dirs or path + META_SUFFIX in dirs or path in owner:
            deferred[key] = None
        else:
            owner[path] = key
    occupied = _Occupancy()
    result: dict[bytes, Placement] = {}
    for path, key in owner.items():
        occupied.add(path)
        result[key] = tentative[key]

    for key in sorted(deferred):
        chosen = next(
            c
            for c in _candidates(key, deferred[key])
            if _path_ok(c.path, recorded=True) and occupied.fits(c.path)
        )
        occupied.add(chosen.path)
        result[key] = chosen
    return result


def _candidates(key: bytes, preferred: Placement | None) -> Iterator[Placement]:
    """The preferred derived placement, then the endless SHA-fallback candidates."""
    if preferred is not None:
        yield preferred
    for path in _fallbacks(key, _map_reserved(key)):
        yield Placement(path, KIND_SHA_FALLBACK)


def orphan_dir_name(obj: bytes) -> str:
    """``_orphans/<name>/``: the encoded object key; dot names escaped, an empty key hashed."""
    name = encode_segment(obj)
    if name in (".", ".."):
        return "%2E" * len(name)
    return name or sha_fallback(obj)


def blob_file_name(upload_id: bytes, part_no: int, chunk_no: int, part_version: int) -> str:
    """The reference's per-chunk file name: ``<upload>_<part>_<chunk>_<version>.bin`` (hex16).

    An upload ID too long for that to fit a file name is replaced by a hash of it (the
    reference fails there).
    """
    numbers = f"_{part_no:016x}_{chunk_no:016x}_{part_version:016x}.bin"
    upload = encode_segment(upload_id)
    if len(upload) + len(numbers) > NAME_MAX:
        upload = hashlib.sha256(upload_id).hexdigest()[:32]
    return upload + numbers


#: Incomplete uploads come back at generation 1, like every restored bucket.
_UPLOAD_RECORDS: Final = FileComparison(lines_match=same_after_restore)


def self_test_comparison(path: str) -> FileComparison:
    """How the self-test compares ``path`` (inside ``s3/``).

    A bucket's KEYMAP is a set of records keyed by name; a KEYMAP written in Go map order
    comes back in another order after a round trip, so it is compared as a set of lines.
    """
    parts = path.split("/")
    if len(parts) == 2 and parts[1] == KEYMAP_NAME:
        return LINE_SET
    if parts[1:] == [INCOMPLETE_DIR.decode(), INCOMPLETE_RECORDS.decode()]:
        return _UPLOAD_RECORDS
    return BYTES
