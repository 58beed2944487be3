"""Run the benchmark suite: the one entry point for the speed and memory figures.

    python scripts/bench.py [--quick] [--json FILE] [--workdir DIR] [--backend asyncio|trio]
        [WORKLOAD ...]

Workloads (default: all, in this order; full size, or about 20x smaller with ``--quick``):

    reader          1M small entries: the reader alone, then reader + MVCC resolver
    dynamodb        100k items of one table, decoded per-item and as jsonl
    sqs             1M messages in one queue
    redis-strings   1M string keys (half with TTLs)
    redis-hashes    100k hashes x 10 fields
    s3              2 GiB in one bucket, one object of 1 GiB
    encode          a tree of 100k DynamoDB items and 64 x 4 MiB S3 objects, encoded
                    without and with --self-test

Each workload generates its input in a child process under its own temporary directory
(below ``--workdir``, removed afterwards), then measures every run in a fresh child: wall time
of the work itself and the child's peak RSS. Rows print as they finish: items, entries,
seconds, items/s, MB/s of input (10^6 bytes), peak RSS (MiB) and the 1-minute load average
before and after (the figures are only comparable on a quiet machine). ``--json`` keeps them.
Finer modes (adapter-only runs, other sizes, --verify) are in the per-area ``bench_*.py``.

    python scripts/bench.py --compare-reference [--quick] [--mix NAME ...] [--runs N]
        [--seed N] [--json FILE] [--workdir DIR] [--backend asyncio|trio]

runs the Go reference decoder and encoder side by side with ours instead (see
``bench_reference.py``): ratios of alternating runs, peak RSS, outputs compared.

    python scripts/bench.py --output-root ADAPTER=DIR [--output-root ...] [--mix NAME]
        [--runs N] [--seed N] [--quick] [--fsync] [--workdir DIR] [--json FILE]

decodes one mix (default ``all``) alternately into one tree under ``--workdir`` and split
with ``decode --output-root`` (see ``bench_multidisk.py``): the speedup of a second disk.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import bench_dynamodb
import bench_encode
import bench_multidisk
import bench_redis
import bench_reference
import bench_s3
import bench_snapshot_reader
import bench_sqs
import benchlib

#: ``--quick`` divides every size by this.
QUICK_FACTOR: Final = 20


@dataclass(frozen=True, slots=True)
class Workload:
    """A named suite entry: what it measures and how to run it at a given scale."""

    summary: str
    run: Callable[[benchlib.Bench, Callable[[int], int]], None]


def _scaled(factor: int) -> Callable[[int], int]:
    return lambda full: max(1, full // factor)


WORKLOADS: Final = {
    "reader": Workload(
        "1M small entries, reader and reader+resolver",
        lambda bench, n: bench_snapshot_reader.run(bench, entries=n(1_000_000)),
    ),
    "dynamodb": Workload(
        "100k items, per-item and jsonl layouts",
        lambda bench, n: bench_dynamodb.run(bench, items=n(100_000)),
    ),
    "sqs": Workload(
        "1M messages in one queue",
        lambda bench, n: bench_sqs.run(bench, messages=n(1_000_000)),
    ),
    "redis-strings": Workload(
        "1M string keys",
        lambda bench, n: bench_redis.run(bench, workload="strings", count=n(1_000_000)),
    ),
    "redis-hashes": Workload(
        "100k hashes x 10 fields",
        lambda bench, n: bench_redis.run(bench, workload="hashes", count=n(100_000), fields=10),
    ),
    "s3": Workload(
        "2 GiB including a 1 GiB object",
        lambda bench, n: bench_s3.run(bench, total_mib=n(2048), big_mib=n(1024)),
    ),
    "encode": Workload(
        "100k DynamoDB items + 64 x 4 MiB objects, with and without --self-test",
        lambda bench, n: bench_encode.run(bench, items=n(100_000), objects=n(64)),
    ),
}


def main() -> None:
    """Parse the flags and run the chosen workloads one after the other."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="\n".join(f"{name:<14} {w.summary}" for name, w in WORKLOADS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "workloads", nargs="*", metavar="WORKLOAD", help="workloads to run (default: all)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"every size divided by {QUICK_FACTOR}"
    )
    compare = parser.add_argument_group("side by side with the reference")
    compare.add_argument(
        "--compare-reference",
        action="store_true",
        help="time our CLI against the Go reference tools instead of the workloads",
    )
    compare.add_argument(
        "--mix",
        action="append",
        choices=list(bench_reference.MIXES),
        help=(
            "mix to compare (repeatable; default: all but mixed-5m, mixed-1m only without --quick)"
        ),
    )
    compare.add_argument(
        "--runs", type=int, default=3, help="alternating runs per side (default: 3)"
    )
    compare.add_argument("--seed", type=int, default=1, help="seed of the generated snapshots")
    multidisk = parser.add_argument_group("multi-disk output (takes --mix, --runs, --seed)")
    multidisk.add_argument(
        "--output-root",
        action="append",
        default=[],
        metavar="ADAPTER=DIR",
        help="decode with ADAPTER's subtree under DIR (another filesystem) and without, "
        "alternately (repeatable)",
    )
    multidisk.add_argument(
        "--fsync", action="store_true", help="multi-disk runs decode with --fsync"
    )
    benchlib.add_common_arguments(parser)
    args = parser.parse_args()
    if args.compare_reference:
        raise SystemExit(_compare_reference(parser, args))
    if args.output_root:
        raise SystemExit(_multidisk(parser, args))
    if args.mix:
        parser.error("--mix needs --compare-reference or --output-root")
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(unknown)} (known: {', '.join(WORKLOADS)})")
    bench = benchlib.bench_from_args(args)
    scale = _scaled(QUICK_FACTOR if args.quick else 1)
    for name in args.workloads or WORKLOADS:
        print(f"== {name}: {WORKLOADS[name].summary}" + (" (quick)" if args.quick else ""))
        WORKLOADS[name].run(bench, scale)
    bench.finish()


def _compare_reference(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.workloads:
        parser.error("--compare-reference takes no WORKLOAD")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    mixes = args.mix or [
        name
        for name in bench_reference.MIXES
        if name not in bench_reference.ON_REQUEST
        and not (args.quick and name in bench_reference.FULL_ONLY)
    ]
    if args.quick and bench_reference.FULL_ONLY & set(mixes):
        parser.error(f"{', '.join(sorted(bench_reference.FULL_ONLY))}: not with --quick")
    bench = benchlib.bench_from_args(args)
    return bench_reference.run(bench, mixes=mixes, quick=args.quick, runs=args.runs, seed=args.seed)


def _multidisk(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.workloads:
        parser.error("--output-root takes no WORKLOAD")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.mix and len(args.mix) > 1:
        parser.error("--output-root takes one --mix")
    roots: dict[str, Path] = {}
    for value in args.output_root:
        name, sep, directory = value.partition("=")
        if not sep or not name or not directory or name in roots:
            parser.error(f"--output-root wants ADAPTER=DIR once per adapter, not {value!r}")
        roots[name] = Path(directory).absolute()
    mix = args.mix[0] if args.mix else "all"
    if args.quick and mix in bench_reference.FULL_ONLY:
        parser.error(f"{mix}: not with --quick")
    return bench_multidisk.run(
        benchlib.bench_from_args(args),
        roots=roots,
        mix_name=mix,
        quick=args.quick,
        runs=args.runs,
        seed=args.seed,
        fsync=args.fsync,
    )


if __name__ == "__main__":
    main()
