"""The error model: a handful of classes, stable codes, one OSError mapping, one CLI line."""

from __future__ import annotations

import ast
import errno
import json
import re
import struct
from pathlib import Path

import pytest
from support import REPO_ROOT

from elastickv_async._core import errors
from elastickv_async._core.cli import main
from elastickv_async._core.errors import (
    AdapterRecordError,
    DataError,
    DumpTreeError,
    ElasticKVError,
    ManifestError,
    OutputError,
    UsageError,
    map_os_errors,
)

SRC = REPO_ROOT / "src" / "elastickv_async"


def _exception_classes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(
            isinstance(base, ast.Name) and base.id.endswith(("Error", "Exception", "Mismatch"))
            for base in node.bases
        )
    ]


def test_every_error_class_lives_in_the_errors_module() -> None:
    """Faults are codes, not classes: no module but ``_core/errors.py`` defines error classes.

    Private control-flow exceptions (``_Name``) and two parsers' ``ValueError`` subclasses,
    caught and turned into ours before they leave the package, are the only others.
    """
    found = {
        f"{path.relative_to(SRC)}:{name}"
        for path in SRC.rglob("*.py")
        if path.name != "errors.py" or path.parent.name != "_core"
        for name in _exception_classes(path)
        if not name.startswith("_")
    }
    assert found == {"_core/gojson_read.py:GoJSONError", "_core/restore/raftstate.py:PeerSpecError"}
    assert len(_exception_classes(SRC / "_core" / "errors.py")) <= 12


def test_every_code_looks_like_a_sentinel() -> None:
    """Each ``code=`` and each adapter code literal is a Go-style sentinel name."""
    codes: set[str] = set()
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        codes.update(re.findall(r'code="([^"]*)"', text))
        codes.update(re.findall(r'(?:record|tree)_error\(\s*"([^"]*)"', text))
    assert len(codes) > 60
    assert all(re.fullmatch(r"[eE]rr[A-Z][A-Za-z0-9]+", code) for code in codes), codes


@pytest.mark.parametrize(
    ("kind", "exit_code", "parent"),
    [
        (UsageError, 1, ElasticKVError),
        (OutputError, 1, ElasticKVError),
        (DataError, 2, ElasticKVError),
        (AdapterRecordError, 2, DataError),
        (ManifestError, 2, DumpTreeError),
    ],
)
def test_exit_codes_follow_the_class(
    kind: type[ElasticKVError], exit_code: int, parent: type[ElasticKVError]
) -> None:
    """Usage and output problems exit 1, data problems 2, whatever the code."""
    assert kind.exit_code == exit_code and issubclass(kind, parent)


def test_fields_name_the_fault_and_escape_the_key() -> None:
    """``str()`` is prefixed with the adapter; ``fields()`` shows the key escaped, one line."""
    exc = AdapterRecordError(
        "malformed key", code="ErrSQSMalformedKey", adapter="sqs", key=b"!sqs|\x00\n\xff"
    )
    assert str(exc) == "sqs: malformed key"
    assert exc.fields() == {
        "error": "AdapterRecordError",
        "code": "ErrSQSMalformedKey",
        "adapter": "sqs",
        "key": "!sqs|\\x00\\n\\xff",
    }
    bare = UsageError("no input")
    assert str(bare) == "no input" and bare.fields() == {"error": "UsageError"}


def test_map_os_errors_names_the_file_and_keeps_the_cause(tmp_path: Path) -> None:
    """An OSError becomes the given class, naming the OS's file; the original is the cause."""
    missing = tmp_path / "nope"
    with (
        pytest.raises(DumpTreeError) as info,
        map_os_errors(DumpTreeError, "cannot read", code="ErrX", adapter="redis"),
    ):
        missing.read_bytes()
    assert str(info.value) == f"redis: cannot read: No such file or directory: {missing}"
    assert info.value.path == str(missing) and info.value.code == "ErrX"
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_map_os_errors_with_a_path_and_passthrough() -> None:
    """A caller's path is kept (no file appended); non-OS errors pass through untouched."""
    with pytest.raises(OutputError) as info, map_os_errors(OutputError, "cannot fsync", path="o"):
        raise OSError(errno.EIO, "Input/output error", "elsewhere")
    assert str(info.value) == "cannot fsync: Input/output error"
    assert info.value.path == "o"
    with pytest.raises(KeyError), map_os_errors(OutputError, "x"):
        raise KeyError("k")


def test_errors_module_exports_what_it_defines() -> None:
    """Every public class of the model is listed in ``__all__``."""
    defined = {n for n in _exception_classes(Path(errors.__file__))}
    assert defined <= set(errors.__all__)


def _bad_sqs_snapshot(path: Path) -> Path:
    key = b"!sqs|msg|data|" + struct.pack(">Q", 1) + b"bQ"
    encoded = key + struct.pack(">Q", 5 ^ (2**64 - 1))
    value = b"\x00" + bytes(8)
    entry = struct.pack("<Q", len(encoded)) + encoded + struct.pack("<Q", len(value)) + value
    path.write_bytes(b"EKVPBBL1" + struct.pack("<Q", 10) + entry)
    return path


def test_cli_error_line_shows_code_and_adapter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A data error is one stderr line: ``prog: error: [code] adapter: message``, exit 2."""
    fsm = _bad_sqs_snapshot(tmp_path / "bad.fsm")
    assert main(["decode", "--input", str(fsm), "--output", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("elastickv-async: error: [ErrSQSMalformedKey] sqs: malformed")


def test_cli_json_error_event_carries_the_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --log-format json the failure is one JSON event with code, adapter and key."""
    fsm = _bad_sqs_snapshot(tmp_path / "bad.fsm")
    argv = ["decode", "--input", str(fsm), "--output", str(tmp_path / "out")]
    assert main([*argv, "--log-format", "json", "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    event = json.loads(lines[-1])
    assert event["event"] == "run_failed" and event["level"] == "error"
    assert event["code"] == "ErrSQSMalformedKey" and event["adapter"] == "sqs"
    assert event["key"] == "!sqs|msg|data|\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01bQ"
    assert event["message"].startswith("sqs: malformed SQS key")
