"""Long fault runs: SIGKILL, failing system calls and full disks against decode and encode.

    python scripts/faults.py [--kills N] [--timed-kills N] [--faults N] [--full-disks N]
        [--seed S] [--workdir DIR]

``--kills`` kills decodes and encodes (half each) at a random system call of theirs (the
child dies as SIGKILL would, without cleanup); ``--timed-kills`` sends a real SIGKILL after a
random delay. Each killed run is checked (no MANIFEST.json on an incomplete tree, no torn
file, the previous .fsm or the new one, a sidecar that matches it or names another file)
and then rerun (``decode --force`` / ``encode``), which must clean up and produce the
reference. ``--faults`` fails one call of ``os.{write,fsync,rename,mkdir,open,link,fchmod,
ftruncate}`` with EIO or ENOSPC at a random position of an in-process decode or encode
(one-line error, exit 1/2, nothing published, the previous pair kept). ``--full-disks`` runs
decode and encode on tmpfs mounts of random sizes (needs root; skipped otherwise).

The promises checked are the README's "Guarantees"; the checks live in
``tests/reliability/faultlib.py``, which the fast tests use too. Prints one line per problem
and the counts at the end; exit 1 when any trial found a problem.
"""

from __future__ import annotations

import argparse
import errno
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reliability"))

import faultlib


def _trials(args: argparse.Namespace, ref: faultlib.Reference, work: Path) -> Counter[str]:
    rng = random.Random(args.seed)
    totals = {
        "decode": faultlib.count_calls(faultlib.decode_args(work / "count-decode")),
        "encode": faultlib.count_calls(faultlib.encode_args(ref, work / "count.fsm")),
    }
    counts: Counter[str] = Counter()

    def record(kind: str, label: str, problems: list[str]) -> None:
        counts[kind] += 1
        if problems:
            counts[f"{kind} with problems"] += 1
            print(f"{kind} {label}: {'; '.join(problems)}", flush=True)

    killers = {"decode": faultlib.kill_decode, "encode": faultlib.kill_encode}
    trial = work / "trial"
    for i in range(args.kills):
        command = ("decode", "encode")[i % 2]
        stop = faultlib.pick(rng, totals[command])
        found = killers[command](ref, faultlib.fresh(trial), stop=stop)
        record(f"kill {command}", f"at call {stop}", found)
    for i in range(args.timed_kills):
        command = ("decode", "encode")[i % 2]
        at = rng.uniform(0.0, 1.5)
        found = killers[command](ref, faultlib.fresh(trial), at=at)
        record(f"timed kill {command}", f"after {at:.3f}s", found)
    faulty = {"decode": faultlib.fault_decode, "encode": faultlib.fault_encode}
    for i in range(args.faults):
        command = ("decode", "encode")[i % 2]
        call = rng.choice(faultlib.FAULT_CALLS)
        err = rng.choice((errno.EIO, errno.ENOSPC))
        nth = rng.randint(1, totals[command] + 20)
        found = faulty[command](ref, faultlib.fresh(trial), call, nth, err)
        record(f"{errno.errorcode[err]} {command}", f"{call} #{nth}", found)
    full = {"decode": faultlib.full_disk_decode, "encode": faultlib.full_disk_encode}
    for _ in range(args.full_disks):
        size = rng.randint(8 << 10, 4 << 20)
        for command, run in full.items():
            with faultlib.tmpfs(work / "disk", size) as disk:
                if disk is None:
                    counts["full disk skipped (no tmpfs)"] += 1
                    continue
                record(f"full disk {command}", f"{size} bytes", run(ref, disk))
    return counts


def main() -> int:
    """Parse the counts, run the trials, print the tally."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--timed-kills", type=int, default=20)
    parser.add_argument("--faults", type=int, default=500)
    parser.add_argument("--full-disks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        ref = faultlib.make_reference(work)
        counts = _trials(args, ref, work)
    for kind, n in sorted(counts.items()):
        print(f"{kind}: {n}")
    print(f"elapsed: {time.monotonic() - start:.0f}s")
    return 1 if any("with problems" in kind for kind in counts) else 0


if __name__ == "__main__":
    sys.exit(main())
