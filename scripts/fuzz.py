"""Long mutation fuzzing of snapshots (decode) and dump trees (encode).

    python scripts/fuzz.py [--snapshots N] [--trees N] [--seed S] [--corpus FSM ...]

Snapshots: ``examples/sample.fsm`` plus ``--corpus`` files (e.g. real-node ``.fsm`` files) are
mutated (bit flips, cuts, inserts, copied slices, suspicious lengths; a valid CRC32C footer is
usually recomputed so the mutation reaches the parsers) and decoded. Trees: the sample's
decoded tree gets one to three edits (mutated, removed or renamed files) and is encoded.
The promises checked (``tests/reliability/fuzzlib.py``): only the package's typed errors, no
MANIFEST.json after a refused decode, nothing published after a refused encode, a decoded
tree verifies and encodes, an encoded .fsm decodes. Prints each problem and the counts;
exit 1 when any trial found a problem.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reliability"))

import fuzzlib

from elastickv_async import decode_snapshot

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sample.fsm"


def main() -> int:
    """Parse the counts, run the trials, print the tally."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snapshots", type=int, default=1000)
    parser.add_argument("--trees", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--corpus", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    rng = random.Random(args.seed)
    seeds = [(p.name, p.read_bytes()) for p in [SAMPLE, *args.corpus]]
    counts: Counter[str] = Counter()
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        tree = base / "sample-tree"
        anyio.run(decode_snapshot, SAMPLE, tree)
        work = base / "trial"
        for i in range(args.snapshots + args.trees):
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            if i < args.snapshots:
                name, seed = rng.choice(seeds)
                outcome, problems = fuzzlib.fuzz_snapshot(rng, seed, work)
                kind = f"snapshot {outcome}"
            else:
                name = "tree"
                outcome, problems = fuzzlib.fuzz_tree(rng, tree, work)
                kind = f"tree {outcome}"
            counts[kind] += 1
            if problems:
                counts[f"{kind} with problems"] += 1
                print(f"trial {i} ({name}): {'; '.join(problems)}", flush=True)
    for kind, n in sorted(counts.items()):
        print(f"{kind}: {n}")
    print(f"elapsed: {time.monotonic() - start:.0f}s")
    return 1 if any("problems" in kind or "crashed" in kind for kind in counts) else 0


if __name__ == "__main__":
    sys.exit(main())
