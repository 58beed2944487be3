"""The Redis encoder: dump tree -> store records (REFERENCE_NOTES §6.2, §6.3)."""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pytest
from blockbuster import BlockBuster
from redis_support import (
    U32,
    U64,
    decode_rows,
    encode_tree,
    encode_tree_in_order,
    list_seq,
    wide,
)
from support import REPO_ROOT, produced, raises_code

from elastickv_async._adapters.base import EncodeBatch, EncodeContext
from elastickv_async._adapters.redis import encode as redis_encode
from elastickv_async._adapters.redis.encode import SLICE_BYTES, SLICE_FILES, RedisEncoder
from elastickv_async._adapters.redis.slices import Built, Slice, encode_slice
from elastickv_async._core.cli import main
from elastickv_async._core.dump.tree import DumpTree
from elastickv_async._core.errors import DumpTreeError, UnsafeDumpEntry
from elastickv_async._core.report import Report, make_logger
from elastickv_async._core.workers import Workers

pytestmark = pytest.mark.anyio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

SAMPLE = REPO_ROOT / "examples" / "sample.fsm"


def tree(root: Path, files: dict[str, bytes | str]) -> Path:
    """Write ``files`` (paths relative to ``redis/db_0``) under ``root``."""
    for rel, data in files.items():
        path = root / "redis" / "db_0" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


async def test_missing_redis_dir_yields_nothing(tmp_path: Path) -> None:
    """No ``redis/`` (or no ``db_<n>``) is not an error."""
    assert await encode_tree(tmp_path) == []
    (tmp_path / "redis" / "other").mkdir(parents=True)
    assert await encode_tree(tmp_path) == []


async def test_strings_inline_ttl_and_no_index_row(tmp_path: Path) -> None:
    """Strings become FF 01 flags [ttl] body; a TTL is never also written to !redis|ttl|."""
    tree(
        tmp_path,
        {
            "strings/a.bin": b"plain",
            "strings/b%00.bin": b"\x00\xff",
            "strings/t.bin": b"expiring",
            "strings/zero.bin": b"z",
            "strings/ignored.txt": b"not a value file",
            "strings_ttl.jsonl": '{"key":"t","expire_at_ms":1800000000000}\n'
            '{"key":"zero","expire_at_ms":0}\n{"key":"no-such-file","expire_at_ms":5}\n',
        },
    )
    assert await encode_tree(tmp_path) == [
        (b"!redis|str|a", b"\xff\x01\x00plain"),
        (b"!redis|str|b\x00", b"\xff\x01\x00\x00\xff"),
        (b"!redis|str|t", b"\xff\x01\x01" + U64(1_800_000_000_000) + b"expiring"),
        (b"!redis|str|zero", b"\xff\x01\x00z"),
    ]


async def test_hll_raw_or_enveloped_with_index_row(tmp_path: Path) -> None:
    """HLLs stay raw without a TTL; with one they get FF 02 01 <ms> and a !redis|ttl| row."""
    tree(
        tmp_path,
        {
            "hll/raw.bin": b"sketch1",
            "hll/ttl.bin": b"sketch2",
            "hll_ttl.jsonl": '{"key":"ttl","expire_at_ms":42}\n',
        },
    )
    assert await encode_tree(tmp_path) == [
        (b"!redis|hll|raw", b"sketch1"),
        (b"!redis|hll|ttl", b"\xff\x02\x01" + U64(42) + b"sketch2"),
        (b"!redis|ttl|ttl", U64(42)),
    ]


async def test_collections(tmp_path: Path) -> None:
    """Hash, set and list rows with count/list metas; the TTL is inline and indexed."""
    tree(
        tmp_path,
        {
            "hashes/h.json": '{"format_version":1,"fields":[{"name":"f","value":{"base64":"_w"}},'
            '{"name":"","value":"v"}],"expire_at_ms":7}',
            "sets/s.json": '{"format_version":1,"members":["m",{"base64":"AP8"}],'
            '"expire_at_ms":null}',
            "lists/l.json": '{"format_version":1,"items":["x","y"],"expire_at_ms":9}',
            "lists/empty.json": '{"format_version":1,"items":[]}',
        },
    )
    assert await encode_tree(tmp_path) == sorted(
        [
            (wide(b"!hs|meta|", b"h"), U64(2) + U64(7)),
            (wide(b"!hs|fld|", b"h", b"f"), b"\xff"),
            (wide(b"!hs|fld|", b"h"), b"v"),
            (b"!redis|ttl|h", U64(7)),
            (wide(b"!st|meta|", b"s"), U64(2)),
            (wide(b"!st|mem|", b"s", b"m"), b""),
            (wide(b"!st|mem|", b"s", b"\x00\xff"), b""),
            (b"!lst|meta|l", U64(0) + U64(2) + U64(2) + U64(9)),
            (b"!lst|itm|l" + list_seq(0), b"x"),
            (b"!lst|itm|l" + list_seq(1), b"y"),
            (b"!redis|ttl|l", U64(9)),
            (b"!lst|meta|empty", U64(0) * 3),
        ]
    )


async def test_zset_member_and_score_index_rows(tmp_path: Path) -> None:
    """Each member gets its 8-byte score and an order-preserving ``!zs|scr|`` index row."""
    tree(
        tmp_path,
        {
            "zsets/z.json": '{"format_version":1,"members":['
            '{"member":"neg","score":-2.5},{"member":"negzero","score":-0.0},'
            '{"member":"one","score":1},{"member":"inf","score":"+inf"},'
            '{"member":"ninf","score":"-inf"}],"expire_at_ms":0}'
        },
    )

    def bits(value: float) -> int:
        return int(struct.unpack(">Q", struct.pack(">d", value))[0])

    index = {
        "neg": U64(bits(-2.5) ^ 0xFFFF_FFFF_FFFF_FFFF),
        "negzero": U64(1 << 63),  # -0 sorts as +0
        "one": U64(bits(1.0) | 1 << 63),
        "inf": U64(bits(float("inf")) | 1 << 63),
        "ninf": U64(bits(float("-inf")) ^ 0xFFFF_FFFF_FFFF_FFFF),
    }
    scores = {"neg": -2.5, "negzero": -0.0, "one": 1.0, "inf": float("inf"), "ninf": -float("inf")}
    expected = [(wide(b"!zs|meta|", b"z"), U64(5))]
    for member, value in scores.items():
        name = member.encode()
        expected.append((wide(b"!zs|mem|", b"z", name), struct.pack(">d", value)))
        expected.append((wide(b"!zs|scr|", b"z", index[member] + name), b""))
    assert await encode_tree(tmp_path) == sorted(expected)


async def test_stream_rows(tmp_path: Path) -> None:
    """Entries keep the ID text as written in their proto; the meta carries a non-zero TTL."""
    tree(
        tmp_path,
        {
            "streams/s.jsonl": '{"_meta":true,"length":2,"last_ms":9,"last_seq":0,'
            '"expire_at_ms":5}\n'
            '{"id":"007-1","fields":[{"name":"k","value":"v"},{"name":"k","value":""}]}\n'
            '{"id":"8-0","fields":[]}\n'
        },
    )
    entry1 = b"\x00RXE\x01" + b"\x0a\x05007-1" + b"\x12\x01k\x12\x01v\x12\x01k\x12\x00"
    entry2 = b"\x00RXE\x01" + b"\x0a\x038-0"
    assert await encode_tree(tmp_path) == sorted(
        [
            (wide(b"!stream|entry|", b"s", U64(7) + U64(1)), entry1),
            (wide(b"!stream|entry|", b"s", U64(8) + U64(0)), entry2),
            (wide(b"!stream|meta|", b"s"), U64(2) + U64(9) + U64(0) + U64(5)),
            (b"!redis|ttl|s", U64(5)),
        ]
    )


async def test_sha_fallback_names_resolve_through_keymap(tmp_path: Path) -> None:
    """A SHA-fallback name needs its KEYMAP record (the last one per name wins)."""
    key = b"K" * 300
    name = hashlib.sha256(key).hexdigest()[:32] + "__" + "K" * 64
    original = base64.urlsafe_b64encode(key).rstrip(b"=").decode()
    tree(
        tmp_path,
        {
            f"strings/{name}.bin": b"v",
            "KEYMAP.jsonl": f'{{"encoded":"{name}","original":"AA","kind":"sha-fallback"}}\n'
            f'{{"encoded":"{name}","original":"{original}","kind":"sha-fallback"}}\n',
        },
    )
    assert await encode_tree(tmp_path) == [(b"!redis|str|" + key, b"\xff\x01\x00v")]
    (tmp_path / "redis/db_0/KEYMAP.jsonl").unlink()
    with raises_code(DumpTreeError, "ErrRedisEncodeMissingKeymap"):
        await encode_tree(tmp_path)


@pytest.mark.parametrize(
    "keymap",
    [
        "\n",
        '{"encoded":"x","original":"AA"}\n',
        '{"encoded":"x","original":null,"kind":"k"}\n',
        '{"encoded":"","original":"AA","kind":"k"}\n',
        '{"encoded":"x","original":"A=","kind":"k"}\n',
        "[1]\n",
    ],
)
async def test_bad_keymap_lines(tmp_path: Path, keymap: str) -> None:
    """Blank lines, missing/null fields, empty names and bad base64 are refused."""
    tree(tmp_path, {"KEYMAP.jsonl": keymap})
    with raises_code(DumpTreeError, "ErrInvalidKeymapRecord"):
        await encode_tree(tmp_path)


@pytest.mark.parametrize(
    ("rel", "data"),
    [
        ("hashes/h.json", '{"format_version":2,"fields":[]}'),
        ("hashes/h.json", '{"format_version":1.0,"fields":[]}'),
        ("hashes/h.json", '{"format_version":1,"fields":[]} {}'),
        ("hashes/h.json", '{"format_version":1,"fields":[{"name":"a"}]}'),
        ("sets/s.json", '{"format_version":1,"members":[{"b64":"AA"}]}'),
        ("sets/s.json", '{"format_version":1,"members":[],"expire_at_ms":-1}'),
        ("lists/l.json", '{"format_version":1,"items":[1]}'),
        ("zsets/z.json", '{"format_version":1,"members":[{"member":"m","score":"inf"}]}'),
        ("zsets/z.json", '{"format_version":1,"members":[{"member":"m","score":NaN}]}'),
        ("streams/s.jsonl", '{"id":"1-0","fields":[]}\n'),
        ("streams/s.jsonl", '{"_meta":true,"length":0}\n{"_meta":true,"length":0}\n'),
        ("streams/s.jsonl", '{"id":"+5-0","fields":[]}\n{"_meta":true,"length":1,"last_ms":9}\n'),
        ("streams/s.jsonl", '{"_meta":true,"length":-1}\n'),
        (
            "streams/s.jsonl",
            '{"id":"1-0","fields":[{"name":{"base64":"_w"},"value":""}]}\n'
            '{"_meta":true,"length":1,"last_ms":1}\n',
        ),
        ("strings_ttl.jsonl", '{"key":"k","expire_at_ms":"soon"}\n'),
    ],
)
async def test_invalid_json_refused(tmp_path: Path, rel: str, data: str) -> None:
    """Bad versions, trailing data, envelopes, scores, malformed stream metas, IDs: refused."""
    tree(tmp_path, {rel: data, "strings/k.bin": b"v"})
    with raises_code(DumpTreeError, "ErrRedisEncodeInvalidJSON"):
        await encode_tree(tmp_path)


async def test_bad_segment_refused(tmp_path: Path) -> None:
    """A file name that is not a valid encoded segment is a data error."""
    tree(tmp_path, {"strings/bad%zz.bin": b"v"})
    with raises_code(DumpTreeError, "ErrInvalidEncodedSegment"):
        await encode_tree(tmp_path)


async def test_symlinked_value_file_refused(tmp_path: Path) -> None:
    """The reference skips a symlinked value file; we refuse it (enc_symlink_redis_skipped)."""
    tree(tmp_path, {"strings/a.bin": b"v"})
    (tmp_path / "secret").write_bytes(b"outside data")
    (tmp_path / "redis/db_0/strings/evil.bin").symlink_to(tmp_path / "secret")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match=r"evil\.bin") as caught:
        await encode_tree(tmp_path)
    assert isinstance(caught.value, DumpTreeError)
    (tmp_path / "redis/db_0/strings/evil.bin").unlink()
    (tmp_path / "redis/db_0/strings/dangling.bin").symlink_to("../../../../nowhere")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry"):
        await encode_tree(tmp_path)


async def test_hard_linked_files_refused(tmp_path: Path) -> None:
    """A value file or sidecar with a second hard link is refused."""
    tree(tmp_path, {"hashes/h.json": '{"format_version":1}'})
    os.link(tmp_path / "redis/db_0/hashes/h.json", tmp_path / "elsewhere")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry"):
        await encode_tree(tmp_path)


async def test_fifo_sidecar_refused(tmp_path: Path) -> None:
    """A FIFO where a sidecar belongs is refused without being opened."""
    tree(tmp_path, {"strings/a.bin": b"v"})
    os.mkfifo(tmp_path / "redis/db_0/strings_ttl.jsonl")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry"):
        await encode_tree(tmp_path)


@pytest.mark.parametrize("link", ["redis", "redis/db_0", "redis/db_0/strings"])
async def test_symlinked_directories_refused(tmp_path: Path, link: str) -> None:
    """``redis/``, ``db_0`` and type directories must be real directories."""
    real = tmp_path / "real"
    tree(real, {"strings/a.bin": b"v"})
    target = real / link
    (tmp_path / "in" / link).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "in" / link).symlink_to(target)
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry", match="symlink"):
        await encode_tree(tmp_path / "in")


@pytest.mark.parametrize(
    ("dbs", "code"),
    [
        (["db_1"], "ErrRedisEncodeMultiDBUnsupported"),
        (["db_0", "db_2"], "ErrRedisEncodeMultiDBUnsupported"),
    ],
)
async def test_other_databases_refused(tmp_path: Path, dbs: list[str], code: str) -> None:
    """Only ``db_0`` can be encoded; ``db_01`` and other names are ignored."""
    for db in [*dbs, "db_01", "db_x"]:
        (tmp_path / "redis" / db).mkdir(parents=True)
    with raises_code(DumpTreeError, code):
        await encode_tree(tmp_path)


async def test_db_entry_that_is_a_file_refused(tmp_path: Path) -> None:
    """``redis/db_0`` as a regular file is refused."""
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "db_0").write_bytes(b"")
    with raises_code(DumpTreeError, "ErrRedisEncodeNotDir"):
        await encode_tree(tmp_path)


async def test_round_trip_reproduces_the_tree(tmp_path: Path) -> None:
    """Decoding the encoder's records gives back the tree it read, byte for byte."""
    long_key = b"L" * 250
    long_name = hashlib.sha256(long_key).hexdigest()[:32] + "__" + "L" * 64
    original = base64.urlsafe_b64encode(long_key).rstrip(b"=").decode()
    files: dict[str, bytes | str] = {
        "strings/s.bin": b"\x00\x01",
        f"strings/{long_name}.bin": b"long",
        "strings_ttl.jsonl": f'{{"key":"{long_name}","expire_at_ms":12}}\n',
        "hll/h.bin": b"sketch",
        "hll_ttl.jsonl": '{"key":"h","expire_at_ms":34}\n',
        "KEYMAP.jsonl": 2
        * f'{{"encoded":"{long_name}","original":"{original}","kind":"sha-fallback"}}\n',
        "hashes/hash.json": '{\n  "format_version": 1,\n  "fields": [\n    {\n      "name": "a",\n'
        '      "value": "b"\n    }\n  ],\n  "expire_at_ms": 56\n}',
        "lists/list.json": '{\n  "format_version": 1,\n  "items": [\n    "x"\n  ],\n'
        '  "expire_at_ms": null\n}',
        "sets/set.json": '{\n  "format_version": 1,\n  "members": [],\n  "expire_at_ms": 78\n}',
        "zsets/zset.json": '{\n  "format_version": 1,\n  "members": [\n    {\n'
        '      "member": "m",\n      "score": "-inf"\n    }\n  ],\n  "expire_at_ms": null\n}',
        "streams/st.jsonl": '{"id":"1-1","fields":[{"name":"k","value":"v"}]}\n'
        '{"_meta":true,"length":1,"last_ms":3,"last_seq":4,"expire_at_ms":90}\n',
    }
    tree(tmp_path / "in", files)
    records = await encode_tree(tmp_path / "in")
    out = await decode_rows(tmp_path / "dec", records, batch=4)
    assert out.files == {
        f"redis/db_0/{rel}": data.encode() if isinstance(data, str) else data
        for rel, data in files.items()
    }


async def test_length_prefix_is_big_endian_u32(tmp_path: Path) -> None:
    """Wide-column keys carry the user key length as a 4-byte big-endian prefix."""
    key = b"k" * 300
    name = hashlib.sha256(key).hexdigest()[:32] + "__" + "k" * 64
    original = base64.urlsafe_b64encode(key).rstrip(b"=").decode()
    tree(
        tmp_path,
        {
            f"sets/{name}.json": '{"format_version":1,"members":[]}',
            "KEYMAP.jsonl": f'{{"encoded":"{name}","original":"{original}","kind":"x"}}\n',
        },
    )
    [(meta_key, _value)] = await encode_tree(tmp_path)
    assert meta_key == b"!st|meta|" + U32(300) + key


@pytest.mark.parametrize(
    ("meta", "event"),
    [
        # Length 3 declared over 1 entry.
        (U64(3) + U64(5) + U64(0), "redis_stream_length_mismatch"),
        # The meta's last ID 4-0 is behind the entry 5-0.
        (U64(1) + U64(4) + U64(0), "redis_stream_last_id_behind"),
    ],
)
async def test_stream_meta_disagreeing_with_entries_restores_as_decoded(
    tmp_path: Path, meta: bytes, event: str
) -> None:
    """A decoded stream whose meta disagrees with its entries encodes back to the same rows."""
    rows = [
        (wide(b"!stream|entry|", b"s", U64(5) + U64(0)), b"\x00RXE\x01" + b"\x0a\x035-0"),
        (wide(b"!stream|meta|", b"s"), meta),
    ]
    decoded = await decode_rows(tmp_path / "dec", rows)
    prefix = "redis/db_0/"
    tree(tmp_path / "tree", {k[len(prefix) :]: v for k, v in decoded.files.items()})
    report = Report()
    ctx = EncodeContext(
        input_root=tmp_path / "tree", log=make_logger(report), report=report, scratch=tmp_path
    )
    assert sorted(await produced(RedisEncoder(ctx))) == sorted(rows)
    assert report.warnings[event].count == 1


def _large_tree(root: Path) -> dict[str, bytes | str]:
    """A tree needing several worker calls: more names than one slice holds, a value file
    larger than a slice's byte budget, TTLs, a KEYMAP name and a stray non-value file."""
    long_key = b"L" * 250
    long_name = hashlib.sha256(long_key).hexdigest()[:32] + "__" + "L" * 64
    original = base64.urlsafe_b64encode(long_key).rstrip(b"=").decode()
    files: dict[str, bytes | str] = {
        f"strings/k%3A{i:05d}.bin": f"value {i}".encode() for i in range(SLICE_FILES * 2 + 7)
    }
    files["strings/big.bin"] = b"B" * (SLICE_BYTES + 1)
    files[f"strings/{long_name}.bin"] = b"long"
    files["strings_ttl.jsonl"] = "".join(
        f'{{"key":"k%3A{i:05d}","expire_at_ms":{1000 + i}}}\n' for i in range(0, 900, 7)
    )
    files["KEYMAP.jsonl"] = (
        f'{{"encoded":"{long_name}","original":"{original}","kind":"sha-fallback"}}\n'
    )
    for i in range(SLICE_FILES + 3):
        files[f"hashes/h{i:04d}.json"] = (
            '{\n  "format_version": 1,\n  "fields": [\n    {\n      "name": "f",\n'
            f'      "value": "{i}"\n    }}\n  ],\n  "expire_at_ms": null\n}}'
        )
    tree(root, files)
    (root / "redis/db_0/hashes/notes.txt").write_bytes(b"not a value file")
    return files


async def test_records_do_not_depend_on_the_worker_processes(tmp_path: Path) -> None:
    """Slices run in worker processes yield what one worker thread yields, in the same order,
    and every value file of the tree comes back when decoded."""
    files = _large_tree(tmp_path / "in")
    in_thread = await encode_tree_in_order(tmp_path / "in", workers=0)
    in_processes = await encode_tree_in_order(tmp_path / "in", workers=2)
    assert in_processes == in_thread
    out = await decode_rows(tmp_path / "dec", in_thread, batch=64)
    assert out.files == {
        f"redis/db_0/{rel}": data.encode() if isinstance(data, str) else data
        for rel, data in files.items()
    }


async def test_a_slice_stopped_by_its_byte_budget_hands_the_rest_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that reaches the byte budget returns early; the names it left are encoded
    by the next call, none twice."""
    _large_tree(tmp_path / "in")
    expected = await encode_tree(tmp_path / "in")
    monkeypatch.setattr(redis_encode, "SLICE_BYTES", 64)
    assert await encode_tree(tmp_path / "in") == expected


@pytest.mark.parametrize("workers", [0, 2])
async def test_errors_inside_a_worker_arrive_typed_with_the_file(
    tmp_path: Path, workers: int
) -> None:
    """A bad document or an unsafe entry met in a worker process is raised here as itself,
    naming the file."""
    tree(tmp_path, {"strings/a.bin": b"v", "hashes/bad.json": "{"})
    with raises_code(DumpTreeError, "ErrRedisEncodeInvalidJSON") as caught:
        await encode_tree(tmp_path, workers=workers)
    assert caught.value.path == "redis/db_0/hashes/bad.json"
    (tmp_path / "redis/db_0/hashes/bad.json").unlink()
    (tmp_path / "redis/db_0/strings/evil.bin").symlink_to(tmp_path / "redis/db_0/strings/a.bin")
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry") as unsafe:
        await encode_tree(tmp_path, workers=workers)
    assert unsafe.value.path == "redis/db_0/strings/evil.bin"


@pytest.mark.skipif(not SAMPLE.is_file(), reason="examples/sample.fsm is absent")
def test_cli_reports_an_error_from_a_worker_process_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``encode --workers 2`` on a tree with a broken hash document: exit 2, one line on
    stderr naming the code and the key's file, no output."""
    source = tmp_path / "tree"
    quiet = ["--quiet", "--no-progress"]
    assert main(["decode", *quiet, "--input", str(SAMPLE), "--output", str(source)]) == 0
    (source / "CHECKSUMS").unlink()  # the JSON check, not the checksum check, must fire
    (source / "redis/db_0/hashes/user%3A1.json").write_bytes(b"[1]")
    capsys.readouterr()
    out = tmp_path / "out.fsm"
    argv = ["encode", *quiet, "--input", str(source), "--output", str(out), "--workers", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "[ErrRedisEncodeInvalidJSON]" in err[0] and "hashes user%3A1:" in err[0]
    assert not out.exists()


async def test_listing_and_sidecar_sorted_through_runs_restore_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A type directory and its TTL sidecar larger than their part of the encoder's memory
    share go through spilled runs; the records are those of an in-memory sort, and decode
    back to the same tree."""
    from elastickv_async._core.dump import listing
    from elastickv_async._core.extsort import ExternalSorter

    files = _large_tree(tmp_path / "in")
    in_memory = await encode_tree(tmp_path / "in")
    spills: list[str] = []
    spill = ExternalSorter.spill

    def counting(self: ExternalSorter) -> None:
        spills.append(self._dir.name)
        spill(self)

    monkeypatch.setattr(ExternalSorter, "spill", counting)
    monkeypatch.setattr(listing, "_LIST_BATCH", 8)
    spilled = await encode_tree(tmp_path / "in", memory=16 * 512)
    assert spills.count("names-strings") > 10 and spills.count("ttl-strings") > 0
    assert spilled == in_memory
    out = await decode_rows(tmp_path / "dec", spilled, batch=64)
    assert out.files == {
        f"redis/db_0/{rel}": data.encode() if isinstance(data, str) else data
        for rel, data in files.items()
    }


@pytest.mark.parametrize("memory", [None, 16])
@pytest.mark.parametrize("spelling", ["decoder", "spaced"])
async def test_ttl_sidecar_in_any_order_last_line_wins(
    tmp_path: Path, memory: int | None, spelling: str
) -> None:
    """Sidecar lines in any order, a name given twice (the last line wins, a zero included),
    lines for names without a value file, names whose file-name order differs from their
    key order ("a-" sorts before "a." as a file name): each value gets the TTL its name's
    last line gives, whether the lines are the decoder's or spelled otherwise, in memory or
    spilled through runs."""
    import json
    import random

    names = ["a", "a-", "a.x", "b", "c%3A1", "c%3A2", "d", "e"]
    lines = [
        ("d", 40),
        ("a-", 11),
        ("ghost", 99),
        ("a", 10),
        ("c%3A2", 32),
        ("e", 50),
        ("a.x", 12),
        ("c%3A1", 31),
        ("d", 41),
        ("e", 0),
        ("zz-ghost", 7),
    ]
    random.Random(3).shuffle(lines)
    separator = ", " if spelling == "spaced" else ","
    sidecar = "".join(
        json.dumps({"key": key, "expire_at_ms": ttl}, separators=(separator, ":")) + "\n"
        for key, ttl in lines
    )
    tree(
        tmp_path, {**{f"strings/{n}.bin": n.encode() for n in names}, "strings_ttl.jsonl": sidecar}
    )
    last = dict(lines)  # the last line of a name wins
    expected = sorted(
        (
            b"!redis|str|" + name.replace("%3A", ":").encode(),
            (b"\xff\x01\x01" + U64(last[name]) if last.get(name) else b"\xff\x01\x00")
            + name.encode(),
        )
        for name in names
    )
    assert await encode_tree(tmp_path, memory=memory) == expected


async def test_a_bad_sidecar_line_fails_before_any_value_file(tmp_path: Path) -> None:
    """The whole sidecar is read before the directory's value files: a bad line after good
    ones is the error, not an unsafe value file met first."""
    sidecar = '{"key":"a","expire_at_ms":1}\n{"key":"b","expire_at_ms":2}\n{"key":"c"\n'
    tree(tmp_path, {"strings/a.bin": b"v", "strings_ttl.jsonl": sidecar})
    (tmp_path / "redis/db_0/strings/0evil.bin").symlink_to(tmp_path / "redis/db_0/strings/a.bin")
    with raises_code(DumpTreeError, "ErrRedisEncodeInvalidJSON"):
        await encode_tree(tmp_path)
    (tmp_path / "redis/db_0/strings_ttl.jsonl").write_text(sidecar.rpartition('{"key":"c"')[0])
    with raises_code(UnsafeDumpEntry, "ErrUnsafeDumpEntry"):
        await encode_tree(tmp_path)


class _InlineTree(DumpTree):
    """Runs the encoder's blocking steps on the event loop: nothing is left in a thread
    when every task waits. With ``settle``, each step first lets every other task run
    until it waits (the worker processes' start among them)."""

    settle = False

    async def run(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
        if self.settle:
            await anyio.wait_all_tasks_blocked()
        await anyio.lowlevel.checkpoint()
        return func(*args)


class _InlineWorkers(Workers):
    """One "worker process" that runs each call on the event loop and names what it built."""

    def __init__(self) -> None:
        super().__init__(1)
        self.built: list[str] = []

    async def run(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
        await anyio.lowlevel.checkpoint()
        for arg in args:
            if isinstance(arg, Slice):
                self.built += arg.names
        return func(*args)


def _inline(blockbuster: BlockBuster | None) -> None:
    # The inline fakes read the tree on the event loop on purpose.
    if blockbuster is not None:
        blockbuster.deactivate()


def _context(root: Path, workers: Workers, *, settle: bool = False) -> EncodeContext:
    report = Report()
    ctx = EncodeContext(input_root=root, log=make_logger(report), report=report, scratch=root)
    ctx.tree = _InlineTree(root)
    ctx.tree.settle = settle
    ctx.workers = workers
    return ctx


async def test_the_thread_lane_builds_while_the_worker_processes_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process still starting holds no slice: the thread lane builds them (here
    the worker starts only once three are done, which it would never see if it held one),
    and the records still come in slice order."""
    names = [f"k{i}" for i in range(4)]
    tree(tmp_path, {f"strings/{n}.bin": n.encode() for n in names})
    monkeypatch.setattr(redis_encode, "SLICE_FILES", 1)
    three_done = anyio.Event()
    done: list[str] = []

    def counted(job: Slice) -> Built:
        built = encode_slice(job)
        done.extend(job.names)
        if len(done) == 3:
            anyio.from_thread.run_sync(three_done.set)
        return built

    class SlowStart(Workers):
        async def run(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
            await three_done.wait()
            return await anyio.to_thread.run_sync(func, *args)

    monkeypatch.setattr(redis_encode, "encode_slice", counted)
    report = Report()
    ctx = EncodeContext(
        input_root=tmp_path, log=make_logger(report), report=report, scratch=tmp_path
    )
    ctx.workers = SlowStart(1)
    with anyio.fail_after(60):  # a deadlock guard, not a timing
        records = await produced(RedisEncoder(ctx))
    assert sorted(done) == [f"{n}.bin" for n in names]
    assert [key for key, _ in records] == [b"!redis|str|" + n.encode() for n in names]


async def test_once_the_worker_processes_are_up_only_they_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blockbuster: BlockBuster | None
) -> None:
    """Beside running worker processes the thread lane builds nothing (it would hold the GIL
    the core's sort needs): every slice goes to a worker."""
    _inline(blockbuster)
    names = [f"k{i:02d}" for i in range(12)]
    tree(tmp_path, {f"strings/{n}.bin": n.encode() for n in names})
    monkeypatch.setattr(redis_encode, "SLICE_FILES", 2)
    workers = _InlineWorkers()
    records = await produced(RedisEncoder(_context(tmp_path, workers, settle=True)))
    assert workers.built == [f"{n}.bin" for n in names]
    assert [key for key, _ in records] == [b"!redis|str|" + n.encode() for n in names]


async def test_a_worker_process_is_offered_its_next_call_while_it_runs_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two lanes call each worker process: a call that returns only once another call is
    waiting beside it (which one lane per process would never make) lets the encode end."""
    names = [f"k{i:02d}" for i in range(6)]
    tree(tmp_path, {f"strings/{n}.bin": n.encode() for n in names})
    monkeypatch.setattr(redis_encode, "SLICE_FILES", 1)
    calling: list[int] = []
    two = anyio.Event()

    class Pipelined(Workers):
        async def run(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
            if not args:  # the start-up call
                return func(*args)
            calling.append(1)
            if len(calling) == 2:
                two.set()
            await two.wait()
            try:
                return await anyio.to_thread.run_sync(func, *args)
            finally:
                calling.pop()

    report = Report()
    ctx = EncodeContext(
        input_root=tmp_path, log=make_logger(report), report=report, scratch=tmp_path
    )
    ctx.workers = Pipelined(1)
    with anyio.fail_after(60):  # a deadlock guard, not a timing
        records = await produced(RedisEncoder(ctx))
    assert [key for key, _ in records] == [b"!redis|str|" + n.encode() for n in names]


async def test_the_slices_out_at_once_stay_within_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blockbuster: BlockBuster | None
) -> None:
    """While the core holds the first slice's records, the lanes build only the slices of
    the window (two per lane) and the planner is asked for no more: what is buffered does not
    grow with the directory. Every record still arrives once, in order."""
    _inline(blockbuster)
    names = [f"k{i:02d}" for i in range(20)]
    tree(tmp_path, {f"strings/{n}.bin": n.encode() for n in names})
    monkeypatch.setattr(redis_encode, "SLICE_FILES", 1)
    taken: list[int] = []
    take = redis_encode._Planner.take

    def counting(self: Any, count: int) -> list[Slice]:
        jobs = take(self, count)
        taken.append(len(jobs))
        return jobs

    monkeypatch.setattr(redis_encode._Planner, "take", counting)
    workers = _InlineWorkers()
    out: list[tuple[bytes, bytes]] = []
    out_when_stalled: list[int] = []

    async def send(batch: EncodeBatch) -> None:
        if not out_when_stalled:
            # Every other task waits: the feeder for a permit, the lanes for a slice.
            await anyio.wait_all_tasks_blocked()
            out_when_stalled.append(sum(taken))
        out.extend(cast(list[tuple[bytes, bytes]], batch))

    await RedisEncoder(_context(tmp_path, workers)).produce(send)
    assert out_when_stalled == [2 * 2]
    assert [key for key, _ in out] == [b"!redis|str|" + n.encode() for n in names]


def test_plain_names_decode_in_one_batch_as_decode_segment_does() -> None:
    """A slice's plain names are decoded at once to the keys decode_segment gives (escapes
    in either case, an escaped "%" or "/" included, empty names too); a slice holding any
    other name (SHA fallback, b64. form, too long, not percent-encoded) is left to
    decode_segment."""
    from elastickv_async._adapters.redis.slices import _plain_keys
    from elastickv_async._core.dump.names import decode_segment, encode_segment

    raw = [b"a", b"", b"k:1", b"%41", b"\x00\xff/\\", bytes(range(0, 256, 5)), b"x" * 80]
    plain = [encode_segment(key) for key in raw] + ["mixed%3a%7E", "%2525"]
    keys = _plain_keys(plain)
    assert keys == [decode_segment(s) for s in plain]
    assert keys[: len(raw)] == raw
    # Without a key holding a "/", the slice is decoded whole and cut at the separators.
    slashless = [s for s in plain if "%2f" not in s.lower()]
    assert len(slashless) == len(plain) - 1
    assert _plain_keys(slashless) == [decode_segment(s) for s in slashless]
    assert _plain_keys(["a", "", "%2f", "b"]) == [b"a", b"", b"/", b"b"]
    sha = encode_segment(b"L" * 300)
    for odd in [sha, "b64.AAE", "a" * 241, "bad%zz", "sp ace", "new\nline", "pct%4"]:
        assert _plain_keys([*plain, odd]) is None
    assert _plain_keys([]) is None


_DOCS = [
    '{"format_version":1,"fields":[{"name":"a","value":"b"},{"name":"\\u00e9","value":""}]}',
    '{"format_version":1,"members":["x","y\\n"],"items":["i"],"expire_at_ms":0}',
    '{"format_version":1,"items":["x","x"],"expire_at_ms":18446744073709551615}',
    '{"format_version":1,"format_version":2,"fields":[]}',
    '{"format_version":2,"format_version":1,"members":[]}',
    '{"format_version":1,"fields":[{"name":"a","name":"c","value":"b","extra":1}]}',
    '{"format_version":1,"fields":[{"name":{"base64":"AAE"},"value":"v"}]}',
    '{"format_version":1,"items":[{"base64":"_-8"}],"expire_at_ms":null}',
    '{"format_version":1,"fields":null,"members":null,"items":null}',
    '{"format_version":1,"expire_at_ms":-0}',
    '{"format_version":-0}',
    '{"format_version":1,"items":["-0"],"expire_at_ms":5}',
    '{"format_version":1.0}',
    '{"format_version":1,"expire_at_ms":18446744073709551616}',
    '{"format_version":1,"expire_at_ms":-1}',
    '{"format_version":1,"expire_at_ms":1e3}',
    '{"format_version":1,"fields":[{"name":"a"}]}',
    '{"format_version":1,"members":["\\ud800"],"items":["\\ud800"]}',
    '{"Format_Version":1}',
    "null",
    "[]",
    '{"format_version":1} x',
]


@pytest.mark.parametrize("kind", ["hashes", "sets", "lists"])
@pytest.mark.parametrize(
    "doc", [*_DOCS, b'{"format_version":1,"members":["\xff"],"items":["\xff"]}']
)
def test_plain_collection_decode_agrees_with_the_go_rules_reader(
    monkeypatch: pytest.MonkeyPatch, kind: str, doc: str | bytes
) -> None:
    """The typed decode of a collection file gives what the Go-rules reader gives, and any
    document it does not take (envelopes, invalid UTF-8, -0, out-of-range or mistyped
    numbers, duplicates aside) gets the reader's result or error."""
    from elastickv_async._adapters.redis import layout

    data = doc.encode() if isinstance(doc, str) else doc

    def parse() -> layout.Collection | str:
        try:
            return layout.parse_collection(data, kind, "x")
        except DumpTreeError as exc:
            return f"{exc.code}: {exc}"

    fast = parse()
    if doc == _DOCS[0] and kind == "hashes":
        assert layout._plain_collection(data, kind) == fast  # the typed decode took it
    monkeypatch.setattr(layout, "_PLAIN_DECODERS", {})
    assert fast == parse()


def test_simple_slices_give_the_general_loops_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A strings or HLL slice of plain regular names (read in one loop) gives the records,
    count and budget stop the general per-name loop gives."""
    from elastickv_async._adapters.redis import slices

    files: dict[str, bytes | str] = {f"strings/s%3A{i:03d}.bin": b"v" * i for i in range(50)}
    files |= {f"hll/h{i:02d}.bin": b"sketch%d" % i for i in range(20)}
    root = tree(tmp_path, files)
    jobs = [
        Slice(
            str(root),
            "strings",
            [f"s%3A{i:03d}.bin" for i in range(50)],
            frozenset(),
            {},
            {"s%3A007": 70, "s%3A010": 0},
            0,
            budget,
        )
        for budget in (1 << 20, 300)
    ] + [
        Slice(
            str(root),
            "hll",
            [f"h{i:02d}.bin" for i in range(20)],
            frozenset(),
            {},
            {"h03": 3},
            0,
            1 << 20,
        )
    ]
    taken = []
    simple = slices._simple_slice

    def counted(job: Slice, *args: object) -> Built:
        taken.append(job.directory)
        return simple(job, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(slices, "_simple_slice", counted)
    fast = [encode_slice(job) for job in jobs]
    assert taken == ["strings", "strings", "hll"]
    monkeypatch.setattr(slices, "_SIMPLE", {})
    assert fast == [encode_slice(job) for job in jobs]
    assert fast[1].done < 50


async def test_many_long_names_resolve_through_a_keymap_sorted_per_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KEYMAP records past their part of the encoder's memory share (a sixteenth) are not
    held by name: each type directory merge-joins them, sorted by file name through spilled
    runs, with what it lists. The records are those of the held KEYMAP, the last record of a
    name wins, and a record without a value file is ignored."""
    import json
    import random

    from elastickv_async._adapters.redis.streams import bounded_keymap
    from elastickv_async._core.dump.tree import TreeDir
    from elastickv_async._core.extsort import ExternalSorter

    files: dict[str, bytes | str] = {}
    lines: list[str] = []
    strings: dict[bytes, bytes] = {}
    for i in range(300):
        key = b"K%03d:" % i + b"x" * 300
        name = hashlib.sha256(key).hexdigest()[:32] + "__" + "K" * 64
        original = base64.urlsafe_b64encode(key).rstrip(b"=").decode()
        if i % 3:
            files[f"strings/{name}.bin"] = strings[key] = b"v%d" % i
        else:
            files[f"hashes/{name}.json"] = (
                f'{{"format_version":1,"fields":[{{"name":"f","value":"{i}"}}]}}'
            )
        stale = {"encoded": name, "original": "AA", "kind": "sha-fallback"}
        record = {"encoded": name, "original": original, "kind": "sha-fallback"}
        lines += [json.dumps(stale), json.dumps(record)] if i % 5 == 0 else [json.dumps(record)]
    ghost = {"encoded": "0" * 32 + "__ghost", "original": "AA", "kind": "sha-fallback"}
    lines.insert(7, json.dumps(ghost))
    random.Random(5).shuffle(lines)
    lines.sort(key=lambda line: '"AA"' not in line)  # each stale line before its name's last
    files["KEYMAP.jsonl"] = "".join(line + "\n" for line in lines)
    tree(tmp_path, files)

    held = await encode_tree(tmp_path)
    spills: list[str] = []
    spill = ExternalSorter.spill

    def counting(self: ExternalSorter) -> None:
        spills.append(self._dir.name)
        spill(self)

    kept: list[dict[str, bytes] | None] = []

    def spying(db: TreeDir, memory: int) -> dict[str, bytes] | None:
        kept.append(bounded_keymap(db, memory))
        return kept[-1]

    monkeypatch.setattr(ExternalSorter, "spill", counting)
    monkeypatch.setattr(redis_encode, "bounded_keymap", spying)
    assert await encode_tree(tmp_path, memory=16 * 4096) == held
    assert kept == [None]
    assert spills.count("keymap-strings") > 5 and spills.count("keymap-hashes") > 5
    got = dict(held)
    assert len(got) > 300
    assert all(
        got[b"!redis|str|" + key] == b"\xff\x01\x00" + value for key, value in strings.items()
    )
    kept.clear()
    assert await encode_tree(tmp_path, memory=64 << 20) == held
    assert kept and kept[0] is not None and len(kept[0]) == 301


async def test_each_part_of_the_encoder_takes_its_bytes_of_the_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoder's share is cut in sixteenths: KEYMAP's records one, a round's slices one
    (shared by the round's slices), the TTL sidecar at most seven and the names fourteen less
    what the TTLs hold."""
    from elastickv_async._adapters.redis import streams
    from elastickv_async._core.dump import listing as listing_module
    from elastickv_async._core.extsort import ExternalSorter

    _large_tree(tmp_path)
    memory = 16 * 100_000
    budgets: dict[str, int] = {}
    ttl_held: list[int] = []
    init, merged = ExternalSorter.__init__, ExternalSorter.merged

    def recording(self: ExternalSorter, spill_dir: Path, budget: int, **kwargs: Any) -> None:
        budgets[spill_dir.name] = budget
        init(self, spill_dir, budget, **kwargs)

    def merging(self: ExternalSorter) -> Iterator[tuple[bytes, bytes]]:
        if self._dir.name == "ttl-strings":
            ttl_held.append(self.buffered)
        return merged(self)

    listed: dict[str, int] = {}
    sorted_listing = listing_module.sorted_listing

    def listing(directory: Any, scratch: Path, chunk: int, memory: int) -> Any:
        listed[scratch.name] = memory
        return sorted_listing(directory, scratch, chunk, memory)

    keymaps: list[int] = []
    bounded_keymap = streams.bounded_keymap

    def keymap(db: Any, memory: int) -> Any:
        keymaps.append(memory)
        return bounded_keymap(db, memory)

    slices: list[int] = []

    def encoding(job: Slice) -> Built:
        slices.append(job.budget)
        return encode_slice(job)

    monkeypatch.setattr(ExternalSorter, "__init__", recording)
    monkeypatch.setattr(ExternalSorter, "merged", merging)
    monkeypatch.setattr(redis_encode, "sorted_listing", listing)
    monkeypatch.setattr(redis_encode, "bounded_keymap", keymap)
    monkeypatch.setattr(redis_encode, "encode_slice", encoding)
    await encode_tree(tmp_path, memory=memory)
    sixteenth = memory // 16
    assert budgets["ttl-strings"] == 7 * sixteenth
    assert ttl_held and 0 < ttl_held[0] < 7 * sixteenth
    assert listed == {
        "names-strings": 14 * sixteenth - ttl_held[0],
        "names-hashes": 14 * sixteenth,
    }
    assert keymaps == [sixteenth]
    # workers=0: one lane (the thread), two slices per round.
    assert set(slices) == {sixteenth // 2}
