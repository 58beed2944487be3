"""What the command's start-up loads, checked in a fresh interpreter's ``sys.modules``.

``elastickv-async --version`` answers from the entry point, which lives inside the package:
importing the package must not load the engine's errors and options (dataclasses, pathlib),
let alone the parser; the public names still resolve on first use.
"""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_the_public_names_resolve_on_first_use() -> None:
    import elastickv_async
    from elastickv_async._core import errors, options

    assert elastickv_async.UsageError is errors.UsageError
    assert elastickv_async.DecodeOptions is options.DecodeOptions
    assert {"UsageError", "DecodeOptions", "decode_snapshot"} <= set(dir(elastickv_async))
