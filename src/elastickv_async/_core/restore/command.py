"""The ``prepare-restore`` subcommand: the reference helper's flags, our implementation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..report import Report, make_logger

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Give ``prepare-restore``'s parser the flags of ``elastickv-snapshot-prepare-restore``."""
    p.add_argument("--input", required=True, help="encoded .fsm payload (from encode)")
    p.add_argument(
        "--encode-info",
        type=Path,
        help="the encode info sidecar (default <input>.encode_info.json)",
    )
    p.add_argument(
        "--data-dir",
        required=True,
        type=Path,
        help="the node's <raftDataDir>/<raftId> (or .../group-<g>) to create; must not exist",
    )
    p.add_argument("--index", type=int, required=True, help="Raft index of the snapshot (> 0)")
    p.add_argument("--term", type=int, default=1, help="Raft term of the snapshot")
    p.add_argument("--peers", required=True, help="Raft voters: id=host:port,...")
    p.add_argument("--target-cluster-id", default="", help="cluster id the payload must come from")
    p.add_argument(
        "--fresh-cluster", action="store_true", help="restore into a new cluster (any cluster id)"
    )
    p.add_argument(
        "--allow-missing-cluster-id",
        action="store_true",
        help="accept an encode info without manifest_cluster_id",
    )
    p.add_argument(
        "--allow-unverified-self-test",
        action="store_true",
        help="accept an encode info whose self-test did not run or match",
    )


async def run(args: argparse.Namespace, report: Report) -> None:
    """Prepare the data directory and record what was written in the report."""
    # Loaded here: a listing of every command's flags (completion, --help) builds this
    # one's, only this one needs the Raft state writer (and its CRC32C, whose package looks
    # its own version up on import).
    from .prepare import PrepareRestoreOptions, describe, prepare_restore

    result = await prepare_restore(
        PrepareRestoreOptions(
            input=Path(args.input),
            data_dir=args.data_dir,
            index=args.index,
            term=args.term,
            peers=args.peers,
            encode_info=args.encode_info,
            target_cluster_id=args.target_cluster_id,
            fresh_cluster=args.fresh_cluster,
            allow_missing_cluster_id=args.allow_missing_cluster_id,
            allow_unverified_self_test=args.allow_unverified_self_test,
        )
    )
    fields = describe(result)
    # The CLI's summary line (or *_complete event) reports these.
    report.snapshot.update(fields)
    if result.scope:
        log = make_logger(report, log_format=args.log_format, stream=sys.stderr)
        log.warning(
            "scoped_restore",
            scope=result.scope,
            hint="the payload was encoded from a scoped backup: the node restores only that scope",
        )
