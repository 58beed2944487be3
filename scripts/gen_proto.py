"""Compile every ``proto/*.proto`` into ``src/elastickv_async/_proto/`` (modules + .pyi stubs).

Run it after changing a schema: ``python scripts/gen_proto.py``. ``--check`` regenerates into a
temporary directory and exits 1 if the committed modules differ (the test suite runs that).
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
OUT_DIR = ROOT / "src" / "elastickv_async" / "_proto"


def _mypy_plugin() -> str:
    """mypy-protobuf's plugin, found beside this interpreter even when no venv is active."""
    beside = Path(sys.executable).parent / "protoc-gen-mypy"
    found = str(beside) if beside.exists() else shutil.which("protoc-gen-mypy")
    if found is None:
        raise SystemExit("protoc-gen-mypy not found: pip install mypy-protobuf")
    return found


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every schema; return the generated files."""
    protos = sorted(PROTO_DIR.glob("*.proto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    for proto in protos:
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
    return sorted(p for p in out_dir.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare with committed files")
    args = parser.parse_args()
    if not args.check:
        for path in generate(OUT_DIR):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = [
            p.name
            for p in fresh
            if not (OUT_DIR / p.name).exists()
            or not filecmp.cmp(p, OUT_DIR / p.name, shallow=False)
        ]
    if stale:
        print("generated protobuf modules are out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
