"""What the command's start-up loads, checked in a fresh interpreter's ``sys.modules``.

``elastickv-async --version`` answers from the entry point, which lives inside the package:
importing the package must not load the engine's errors and options (dataclasses, pathlib),
let alone the parser; the public names still resolve on first use.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from support import shared_dir

SHARED = shared_dir()

_ENTRY = """
import json, sys
from elastickv_async._core.entry import main

code = main(["--version"])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_version_loads_neither_the_engine_nor_the_parser() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _ENTRY], capture_output=True, text=True, check=True
    )
    version_line, result_line = done.stdout.splitlines()
    result = json.loads(result_line)
    assert result["code"] == 0
    assert version_line.startswith("elastickv-async ")
    loaded = {
        "elastickv_async._core.errors",
        "elastickv_async._core.options",
        "elastickv_async._core.cli",
        "argparse",
        "dataclasses",
        "pathlib",
    } & set(result["modules"])
    assert loaded == set()


def test_help_loads_neither_the_engine_nor_a_command_s_flags() -> None:
    code = "import json, sys\nfrom elastickv_async._core.entry import main\n" + (
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("usage: elastickv-async")
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "elastickv_async._core.cli" in loaded
    # Loaded only when the commands' flags are built, or a command runs.
    engine = {
        "elastickv_async._core.cluster.cli",
        "elastickv_async._core.restore.command",
        "elastickv_async._adapters.registry",
        "elastickv_async._core.options",
        "elastickv_async._core.report",
        "elastickv_async._core.console",
        "elastickv_async._core.memory",
        "anyio",
        "msgspec",
        "dataclasses",
    }
    assert sorted(engine & loaded) == []


def test_the_public_names_resolve_on_first_use() -> None:
    import elastickv_async
    from elastickv_async._core import errors, options

    assert elastickv_async.UsageError is errors.UsageError
    assert elastickv_async.DecodeOptions is options.DecodeOptions
    assert {"UsageError", "DecodeOptions", "decode_snapshot"} <= set(dir(elastickv_async))


_RUN = """
import gc, json, re, sys
from elastickv_async._core.entry import main

code = main(sys.argv[1:])
gc.unfreeze()
patterns = sorted({repr(p.pattern) for p in gc.get_objects() if isinstance(p, re.Pattern)})
made = sorted(
    f"{name}.{value.__qualname__}"
    for name, module in list(sys.modules.items())
    if name.startswith("elastickv_async")
    for value in list(vars(module).values())
    if isinstance(value, type) and value.__module__ == name
    and "__dataclass_fields__" in vars(value)
)
doc = {"code": code, "modules": sorted(sys.modules), "dataclasses": made, "patterns": patterns}
print(json.dumps(doc))
"""

#: Loaded by no decode or encode that logs no warning: structlog (the logger is built at the
#: first warning) and the version lookup of the ``crc32c`` package's ``__init__``.
_NOT_AT_START = ("structlog", "crc32c", "importlib.metadata", "email")


class _Fresh(NamedTuple):
    """What a run in a fresh interpreter loaded: modules, and our dataclasses among them."""

    modules: set[str]
    stderr: str
    dataclasses: set[str]
    #: The compiled regular expressions alive at the end, as ``repr(pattern.pattern)``.
    patterns: set[str]


def _run_fresh(*argv: str) -> _Fresh:
    done = subprocess.run(
        [sys.executable, "-c", _RUN, *argv], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 0, done.stderr
    return _Fresh(
        set(result["modules"]),
        done.stderr,
        set(result["dataclasses"]),
        set(result["patterns"]),
    )


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[_Fresh, _Fresh]:
    """Modules loaded by a small S3 decode and by the encode of its tree, each in a fresh
    interpreter; the encode must give back the decoded snapshot."""
    if SHARED is None:
        pytest.skip("golden corpus absent")
    case = SHARED / "golden" / "public" / "s3_basic"
    work = tmp_path_factory.mktemp("small-run")
    tree = work / "tree"
    decoded = _run_fresh(
        "decode", "--quiet", "--input", str(case / "input.fsm"), "--output", str(tree)
    )
    assert (tree / "MANIFEST.json").is_file()
    out = work / "out.fsm"
    encoded = _run_fresh("encode", "--quiet", "--input", str(tree), "--output", str(out))
    assert out.read_bytes() == (case / "input.fsm").read_bytes()
    return decoded, encoded


@pytest.fixture(scope="module")
def small_run_modules(small_runs: tuple[_Fresh, _Fresh]) -> tuple[set[str], set[str]]:
    """Modules loaded by the small decode and by the encode of its tree."""
    decoded, encoded = small_runs
    return decoded.modules, encoded.modules


def test_a_clean_decode_and_encode_load_no_logging_library_and_no_package_metadata(
    small_run_modules: tuple[set[str], set[str]],
) -> None:
    decoded, encoded = small_run_modules
    assert "elastickv_async._core.snapshot.footer" in decoded
    assert sorted(set(_NOT_AT_START) & decoded) == []
    # Another adapter's tree layout stays out of an S3 run.
    assert "elastickv_async._adapters.redis.layout" not in decoded
    assert sorted(set(_NOT_AT_START) & encoded) == []


#: Loaded only by the runs that use them, so by no small decode or encode: pickle and the
#: worker protocol (no worker process starts), secrets (run tags come from os.urandom),
#: shlex (completion scripts), the adapters' inventories (inspect), the other commands'
#: flags (only the command's own parser is built), the progress samples (nobody listens).
_NOT_IN_A_SMALL_RUN = (
    "pickle",
    "elastickv_async._core.worker_process",
    "secrets",
    "shlex",
    "elastickv_async._core.completion",
    "elastickv_async._core.cluster.cli",
    "elastickv_async._core.restore.command",
    "elastickv_async._core.progress",
    *(f"elastickv_async._adapters.{name}.inventory" for name in ("dynamodb", "redis", "s3", "sqs")),
)


def test_a_small_decode_and_encode_load_only_what_they_use(
    small_run_modules: tuple[set[str], set[str]],
) -> None:
    decoded, encoded = small_run_modules
    assert "elastickv_async._core.workers" in decoded
    assert sorted(set(_NOT_IN_A_SMALL_RUN) & decoded) == []
    # Only a self-test, or a CHECKSUMS walk whose listing spills, uses the temporary
    # directory (and a decode does not walk).
    assert "tempfile" not in decoded
    assert sorted(set(_NOT_IN_A_SMALL_RUN) & encoded) == []
    assert "tempfile" not in encoded
    # Only decoders write files.
    assert "elastickv_async._core.dump.writer" not in encoded


def _decode_orphans(tmp_path: Path, *extra: str) -> tuple[set[str], str]:
    """Decode the golden case whose S3 chunks are orphans (a warning) in a fresh interpreter."""
    assert SHARED is not None
    case = SHARED / "golden" / "public" / "s3_orphans_flag"
    argv = ["decode", "--quiet", "--input", str(case / "input.fsm")]
    fresh = _run_fresh(*argv, "--output", str(tmp_path / "t"), *extra)
    return fresh.modules, fresh.stderr


@pytest.mark.skipif(SHARED is None, reason="golden corpus absent")
def test_a_run_that_prints_log_lines_loads_structlog(tmp_path: Path) -> None:
    modules, stderr = _decode_orphans(tmp_path, "--log-format", "json")
    assert "structlog" in modules
    assert '"event": "s3_orphan_chunks"' in stderr


@pytest.mark.skipif(SHARED is None, reason="golden corpus absent")
def test_a_run_that_warns_gathers_its_warnings_through_structlog(tmp_path: Path) -> None:
    """The deferred logger hands the first warning to structlog even when nothing is printed."""
    report = tmp_path / "report.json"
    modules, _ = _decode_orphans(tmp_path, "--report", str(report))
    assert "structlog" in modules
    events = [w["event"] for w in json.loads(report.read_text())["warnings"]]
    assert "s3_orphan_chunks" in events


#: The dataclasses a small decode or encode may define: the public types (options, contexts,
#: specs, the exported records), whose ``fields()`` and ``replace()`` callers use. Every
#: other record on the start-up path is a cheaper msgspec Struct: a dataclass generates and
#: compiles its methods as it is defined.
_DATACLASSES_AT_START = {
    *(
        f"elastickv_async._adapters.{name}"
        for name in (
            "base.AdapterSpec",
            "base.DecodeContext",
            "base.EncodeContext",
            "base.NoOptions",
            "dynamodb.options.DynamoDBOptions",
            "redis.options.RedisOptions",
            "s3.options.S3Options",
            "sqs.options.SQSOptions",
        )
    ),
    *(
        f"elastickv_async._core.{name}"
        for name in (
            "options.DecodeOptions",
            "options.EncodeOptions",
            "report.Report",
            "snapshot.entry.SnapshotHeader",
            "encode.api.EncodeResult",
        )
    ),
}


def test_a_small_decode_and_encode_define_no_other_dataclass(
    small_runs: tuple[_Fresh, _Fresh],
) -> None:
    decoded, encoded = small_runs
    assert "elastickv_async._core.options.DecodeOptions" in decoded.dataclasses
    assert sorted(decoded.dataclasses - _DATACLASSES_AT_START) == []
    assert sorted(encoded.dataclasses - _DATACLASSES_AT_START) == []


#: Regular expressions only rare inputs need (a lone surrogate, a Go document to compact,
#: a name read back from a tree, DynamoDB or SQS keys, incomplete uploads,
#: ``--last-commit-ts``): compiled on first use.
_RARE_PATTERNS = {
    repr(pattern)
    for pattern in (
        "[\ud800-\udfff]",
        r'("(?:[^"\\]|\\.)*")|[ \t\n\r]+',
        r"(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2})*",
        rb"[A-Za-z0-9_-]*",
        rb"[0-9]+",
        rb'"generation":\d+',
        r"[0-9a-fA-F]+",
    )
}


def test_a_small_decode_and_encode_compile_no_regular_expression_of_a_rare_input(
    small_runs: tuple[_Fresh, _Fresh],
) -> None:
    decoded, encoded = small_runs
    assert repr(r"[0-9a-fA-F]{32}__") in decoded.patterns
    assert sorted(_RARE_PATTERNS & decoded.patterns) == []
    assert sorted(_RARE_PATTERNS & encoded.patterns) == []


_GC_PROBE = """
import gc, json, sys
from elastickv_async._core import cli
from elastickv_async._core.entry import main

seen = {}
build = cli._build_parser
decode = cli._COMMANDS["decode"]


def probed_build(*args):
    seen.setdefault("parser_collects", []).append(gc.isenabled())
    return build(*args)


async def probed_decode(args, report):
    seen.setdefault("command_collects", []).append(gc.isenabled())
    seen.setdefault("frozen", []).append(gc.get_freeze_count())
    await decode(args, report)


cli._build_parser = probed_build
cli._COMMANDS["decode"] = probed_decode
base, argv = sys.argv[1], sys.argv[2:]
codes = [main([*argv, "--output", base + "-1"])]
seen["collects_after"] = [gc.isenabled()]
gc.disable()
codes.append(main([*argv, "--output", base + "-2"]))
seen["collects_after"].append(gc.isenabled())
print(json.dumps({"codes": codes, **seen}))
"""


@pytest.mark.skipif(SHARED is None, reason="golden corpus absent")
def test_the_collector_waits_for_the_command_and_the_start_up_objects_are_frozen(
    tmp_path: Path,
) -> None:
    assert SHARED is not None
    case = SHARED / "golden" / "public" / "s3_basic"
    argv = ["decode", "--quiet", "--input", str(case / "input.fsm")]
    done = subprocess.run(
        [sys.executable, "-c", _GC_PROBE, str(tmp_path / "t"), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["codes"] == [0, 0]
    assert (tmp_path / "t-1" / "MANIFEST.json").is_file()
    # The parser is built with the collector paused; the command collects (unless the
    # caller had switched the collector off), with the start-up's objects frozen.
    assert seen["parser_collects"] == [False, False]
    assert seen["command_collects"] == [True, False]
    assert all(frozen > 10_000 for frozen in seen["frozen"])
    assert seen["collects_after"] == [True, False]
