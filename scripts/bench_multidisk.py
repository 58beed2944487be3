"""Multi-disk output: the same decode with every subtree on one filesystem, and with some
adapters' subtrees on other filesystems (``decode --output-root``), alternately.

    python scripts/bench.py --output-root ADAPTER=DIR [--output-root ...] [--mix NAME]
        [--runs N] [--seed N] [--quick] [--fsync] [--workdir DIR] [--json FILE]

The snapshot is one of ``bench_reference.MIXES`` (default ``all``), generated under
``--workdir``, where the one-filesystem decode also writes its tree (put ``--workdir`` on the
main disk). Each ``DIR`` is a directory on another filesystem; every run writes a fresh
subdirectory of it. Both layouts run ``--runs`` times, alternating who goes first; the table
shows the minimum and the median wall time and the peak RSS. Before timing, one split tree is
checked: ``verify`` must pass and its CHECKSUMS must equal the one-filesystem tree's but for
the MANIFEST.json line. Every tree is removed only after the last run: a run that follows the
deletion of a large tree pays for it in inode allocation on ext4 without a journal (see
``bench_reference._measure``), more for the layout that keeps more files on that disk.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import benchlib
from bench_reference import MIXES, QUICK_FACTOR, Run, our_cli, prepare, run_child

__all__ = ["run"]


def _checksums_but_manifest(tree: Path) -> list[bytes]:
    lines = (tree / "CHECKSUMS").read_bytes().splitlines()
    return [line for line in lines if not line.endswith(b"  MANIFEST.json")]


def _filesystem(path: Path) -> str:
    """``df``'s view of the filesystem holding ``path`` (type and mount point)."""
    done = subprocess.run(
        ["df", "--output=fstype,target", str(path)], capture_output=True, text=True, check=False
    )
    rows = done.stdout.split("\n")[1:2]
    return " ".join(rows[0].split()) if rows and rows[0] else "?"


def _row(name: str, runs: list[Run], base: float) -> str:
    best = min(r.seconds for r in runs)
    median = statistics.median(r.seconds for r in runs)
    rss = max(r.peak_rss_kib for r in runs) / 1024
    return f"| {name} | {best:.2f} | {median:.2f} | {base / best:.2f} | {rss:.0f} |"


#: A layout: given a run's label, the decode's argv and the directories it writes.
Layout = Callable[[str], tuple[list[str], list[Path]]]


def _alternate(
    layouts: dict[str, Layout], runs: int, log: Path, written: list[Path]
) -> dict[str, list[Run]]:
    """Run every layout ``runs`` times, alternating which goes first; each run's outputs
    are added to ``written``, for the caller to remove once every run is done."""
    timed: dict[str, list[Run]] = {name: [] for name in layouts}
    order = list(layouts)
    for i in range(runs):
        for name in order if i % 2 == 0 else order[::-1]:
            argv, outputs = layouts[name](str(i))
            written.extend(outputs)
            timed[name].append(run_child(argv, log))
            print(f"  run {i + 1} {name}: {timed[name][-1].seconds:.2f}s", flush=True)
    return timed


def run(
    bench: benchlib.Bench,
    *,
    roots: dict[str, Path],
    mix_name: str,
    quick: bool,
    runs: int,
    seed: int,
    fsync: bool,
) -> int:
    """Measure both layouts on ``mix_name``; print the table; the exit status."""
    mix = MIXES[mix_name].scaled(QUICK_FACTOR) if quick else MIXES[mix_name]
    for root in roots.values():
        if not root.is_dir():
            raise SystemExit(f"--output-root directory {root} does not exist")
    cli = str(our_cli())
    flags = ["--quiet", "--no-progress", "--backend", bench.backend]
    if fsync:
        flags.append("--fsync")
    print(f"== {mix_name}: {mix.summary}" + (" (quick)" if quick else ""), flush=True)
    with bench.workspace(f"multidisk-{mix_name}") as work:
        fsm = work / "input.fsm"
        what = f"{mix_name} snapshot"
        made = bench.prepare(what, prepare, fsm=str(fsm), mix=asdict(mix), seed=seed)
        print(f"  {made['entries']:,} entries, {made['bytes'] / 1e6:,.1f} MB", flush=True)
        places = {"main": work, **{f"{name} root": path for name, path in roots.items()}}
        for what, path in places.items():
            print(f"  {what}: {path} ({_filesystem(path)})", flush=True)
        decode = [cli, "decode", *flags, "--input", str(fsm), "--output"]

        def one(label: str) -> tuple[list[str], list[Path]]:
            out = work / f"one-{label}"
            return [*decode, str(out)], [out]

        def split(label: str) -> tuple[list[str], list[Path]]:
            out = work / f"split-{label}"
            dirs = {name: root / f"split-{os.getpid()}-{label}" for name, root in roots.items()}
            extra = [f"--output-root={name}={path}" for name, path in dirs.items()]
            return [*decode, str(out), *extra], [out, *dirs.values()]

        layouts: dict[str, Layout] = {"one filesystem": one, "split": split}
        written: list[Path] = []
        try:
            # Not timed: the split tree must be the one-filesystem tree, redistributed.
            checks = {}
            for name, layout in layouts.items():
                argv, outputs = layout("check")
                written.extend(outputs)
                run_child(argv, work / "check.log")
                checks[name] = outputs
            run_child(
                [cli, "verify", "--quiet", "--input", str(checks["split"][0])], work / "v.log"
            )
            same = _checksums_but_manifest(checks["split"][0]) == _checksums_but_manifest(
                checks["one filesystem"][0]
            )
            print(
                f"  split tree verified; CHECKSUMS {'identical' if same else 'DIFFER'}", flush=True
            )
            if not same:
                return 1
            timed = _alternate(layouts, runs, work / "run.log", written)
        finally:
            for path in written:
                shutil.rmtree(path, ignore_errors=True)

    base = min(r.seconds for r in timed["one filesystem"])
    load = os.getloadavg()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    redirected = ", ".join(f"{name} -> {_filesystem(path)}" for name, path in roots.items())
    print(
        f"\n{bench.command}\n{when}, {runs} alternating runs per layout; split: {redirected}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs\n"
    )
    print("| layout | best s | median s | speedup (best) | peak RSS MiB |\n|---|---|---|---|---|")
    for name, measured in timed.items():
        print(_row(name, measured, base))
    if bench.json_path is not None:
        doc = {
            "command": bench.command,
            "date": when,
            "mix": mix_name,
            "entries": made["entries"],
            "roots": {name: str(path) for name, path in roots.items()},
            "runs": {name: [asdict(r) for r in measured] for name, measured in timed.items()},
        }
        bench.json_path.write_text(json.dumps(doc, indent=2) + "\n")
    return 0
