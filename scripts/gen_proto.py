"""Compile every ``proto/<adapter>_*.proto`` into its adapter's package (modules + .pyi stubs).

``proto/dynamodb_internal.proto`` becomes ``src/elastickv_async/_adapters/dynamodb/
dynamodb_internal_pb2.py``: the schemas describe one adapter's stored values each. Run it after
changing a schema: ``python scripts/gen_proto.py``. ``--check`` regenerates into a temporary
directory and exits 1 if the committed modules differ (the test suite runs that).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
ADAPTERS_DIR = ROOT / "src" / "elastickv_async" / "_adapters"


def _mypy_plugin() -> str:
    """mypy-protobuf's plugin, found beside this interpreter even when no venv is active."""
    beside = Path(sys.executable).parent / "protoc-gen-mypy"
    found = str(beside) if beside.exists() else shutil.which("protoc-gen-mypy")
    if found is None:
        raise SystemExit("protoc-gen-mypy not found: pip install mypy-protobuf")
    return found


def _adapter(proto: Path) -> str:
    """The adapter a schema belongs to: its file name up to the first ``_``."""
    return proto.stem.split("_", 1)[0]


def generate(proto: Path, out_dir: Path) -> list[Path]:
    """Run protoc on one schema into ``out_dir``; return the generated files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={_mypy_plugin()}",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        str(proto),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {proto.name}")
    stem = f"{proto.stem}_pb2"
    return sorted(p for p in out_dir.iterdir() if p.name in (f"{stem}.py", f"{stem}.pyi"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare with committed files")
    args = parser.parse_args()
    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not args.check:
        for proto in protos:
            for path in generate(proto, ADAPTERS_DIR / _adapter(proto)):
                print(f"wrote {path.relative_to(ROOT)}")
        return 0
    stale = []
    for proto in protos:
        committed = ADAPTERS_DIR / _adapter(proto)
        with tempfile.TemporaryDirectory() as tmp:
            stale += [
                p.name
                for p in generate(proto, Path(tmp))
                if not (committed / p.name).exists()
                or not filecmp.cmp(p, committed / p.name, shallow=False)
            ]
    if stale:
        print("generated protobuf modules are out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
