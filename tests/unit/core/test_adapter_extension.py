"""A fifth adapter, written in a temporary package, joins through the registry alone.

The toy adapter owns the ``!toy|`` prefix, has one option (``--toy-shout``, recorded in
MANIFEST.json, which its encoder refuses to reverse), writes ``toy/values.txt`` on decode and
reads it back on encode. Nothing outside its package knows it exists.
"""

from __future__ import annotations

import importlib
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import hand_built_fsm

from elastickv_async._adapters.base import AdapterSpec
from elastickv_async._adapters.registry import REGISTRY
from elastickv_async._core.cli import main

TOY_PACKAGE = '''
"""A toy adapter: ``!toy|<key>`` -> one line ``<hex key> <hex value>`` of toy/values.txt."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from elastickv_async._adapters.base import (
    AdapterSpec,
    DecodeContext,
    EncodeContext,
    ManifestField,
    Routed,
    option,
)
from elastickv_async._core.errors import DumpTreeError

PREFIX = b"!toy|"
FILE = "toy/values.txt"


@dataclass(frozen=True, slots=True)
class ToyOptions:
    shout: bool = option(False, flag="toy-shout", help="upper-case every value")


class ToyDecoder:
    def __init__(self, ctx: DecodeContext) -> None:
        self._ctx = ctx
        self._lines: list[str] = []

    async def handle(self, batch: Sequence[Routed]) -> None:
        for _, entry in batch:
            value = entry.value.upper() if self._ctx.adapter_options.shout else entry.value
            self._lines.append(f"{entry.key[len(PREFIX):].hex()} {value.hex()}\\n")

    async def finalize(self) -> dict[str, Any]:
        await self._ctx.writer.write(FILE, "".join(self._lines).encode())
        return {}


class ToyEncoder:
    def __init__(self, ctx: EncodeContext) -> None:
        self._ctx = ctx

    async def records(self) -> AsyncIterator[tuple[bytes, bytes]]:
        text = await anyio.Path(self._ctx.input_root / FILE).read_text()
        for line in text.splitlines():
            key, value = line.split()
            yield PREFIX + bytes.fromhex(key), bytes.fromhex(value)


def manifest_fields(options: ToyOptions) -> Sequence[ManifestField]:
    return (ManifestField("top", "toy_shout", options.shout, 1000),)


def read_manifest(doc: Mapping[str, Any]) -> ToyOptions:
    return ToyOptions(shout=doc.get("toy_shout") is True)


def encode_refusal(options: ToyOptions, full_fidelity: bool) -> DumpTreeError | None:
    if not options.shout:
        return None
    return DumpTreeError("decoded with toy_shout, which is lossy", code="ErrToyShout")


SPEC = AdapterSpec(
    name="toy",
    routed_prefixes=(PREFIX,),
    internal_prefixes=(),
    decoder=ToyDecoder,
    encoder=ToyEncoder,
    decode_options=ToyOptions,
    manifest_fields=manifest_fields,
    read_manifest=read_manifest,
    encode_refusal=encode_refusal,
)
'''

RECORDS = [(b"!toy|a", b"hello"), (b"!toy|b", b"\x00\xff"), (b"!redis|str|k", b"v")]


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AdapterSpec]:
    """The toy adapter, imported from a temporary package and registered for one test."""
    package = tmp_path / "pkg" / "toy_adapter"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(TOY_PACKAGE))
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    spec: AdapterSpec = importlib.import_module("toy_adapter").SPEC
    REGISTRY.register(spec)
    try:
        yield spec
    finally:
        REGISTRY.unregister(spec.name)


def test_toy_adapter_round_trips_through_the_cli(toy: AdapterSpec, tmp_path: Path) -> None:
    """decode (only the toy's records, its generated flag) -> encode --self-test: same bytes."""
    fsm = tmp_path / "in.fsm"
    fsm.write_bytes(hand_built_fsm(77, RECORDS))
    tree = tmp_path / "tree"
    args = ["--input", str(fsm), "--output", str(tree), "--adapter", "toy", "--quiet"]
    assert main(["decode", *args]) == 0
    assert (tree / "toy" / "values.txt").read_text() == "61 68656c6c6f\n62 00ff\n"
    manifest = json.loads((tree / "MANIFEST.json").read_text())
    assert manifest["adapters"] == {"toy": {}}
    assert manifest["toy_shout"] is False

    out = tmp_path / "out.fsm"
    enc = ["--input", str(tree), "--output", str(out), "--adapter", "toy", "--quiet"]
    assert main(["encode", *enc, "--self-test"]) == 0
    assert out.read_bytes() == hand_built_fsm(77, RECORDS[:2])
    info = json.loads(Path(f"{out}.encode_info.json").read_text())
    assert info["adapters_enabled"] == ["toy"] and info["self_test"]["matched"]


def test_toy_option_flag_manifest_and_encode_gate(
    toy: AdapterSpec, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Go spelling of the generated flag sets the option; MANIFEST records it; the
    encoder refuses the tree (exit 2, one line)."""
    fsm = tmp_path / "in.fsm"
    fsm.write_bytes(hand_built_fsm(77, RECORDS))
    tree = tmp_path / "tree"
    args = ["-input", str(fsm), "-output", str(tree), "-adapter", "toy", "--toy-shout=true"]
    assert main(["decode", *args, "--quiet"]) == 0
    assert (tree / "toy" / "values.txt").read_text() == "61 48454c4c4f\n62 00ff\n"
    assert json.loads((tree / "MANIFEST.json").read_text())["toy_shout"] is True
    capsys.readouterr()
    enc = ["--input", str(tree), "--output", str(tmp_path / "o.fsm"), "--adapter", "toy"]
    assert main(["encode", *enc, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "toy_shout" in err[0]


def test_registered_adapter_is_known_everywhere(toy: AdapterSpec) -> None:
    """Selection by name and 'all' include it; a second registration of the name is refused."""
    assert REGISTRY.select("toy") == ("toy",)
    assert REGISTRY.select("all")[-1] == "toy"
    with pytest.raises(ValueError, match="already registered"):
        REGISTRY.register(toy)
