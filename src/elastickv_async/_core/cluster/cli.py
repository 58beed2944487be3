"""The ``decode-cluster`` subcommand (registered by the main CLI)."""

from __future__ import annotations

import argparse
from typing import Final

from ..errors import UsageError
from ..report import Report

__all__ = ["add_decode_cluster", "add_encode_cluster", "run_decode_cluster", "run_encode_cluster"]

_OWN: Final = frozenset({"help", "input", "output"})


def add_decode_cluster(parser: argparse.ArgumentParser, decode: argparse.ArgumentParser) -> None:
    """Give ``decode-cluster``'s ``parser`` its own flags plus every flag of ``decode`` but
    ``--input``."""
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="[GROUP=]PATH",
        help="a group's .fsm (repeat per group); the group id defaults to a "
        "group-<g>/fsm-snap/ parent, else the position",
    )
    parser.add_argument(
        "--input-data-dir",
        metavar="DIR",
        help="a node's <raftDataDir>/<raftId>: the newest snapshot of every group-<g>/fsm-snap/",
    )
    parser.add_argument("--output", required=True, help="output directory (absent or empty)")
    parser.add_argument(
        "--routes", metavar="FILE", help="routes.json (default: the default group's catalog)"
    )
    parser.add_argument(
        "--scheduler", metavar="ADDRESS", help="run on this Dask scheduler (tcp://HOST:8786)"
    )
    parser.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="GROUP=WORKER",
        help="with --scheduler: the Dask worker (name, address or host) holding a group's file",
    )
    taken = set(parser._option_string_actions)
    for action in decode._actions:
        if action.dest not in _OWN and not taken & set(action.option_strings):
            parser._add_action(action)


def _pins(values: list[str]) -> dict[int, str]:
    pins: dict[int, str] = {}
    for value in values:
        group, sep, worker = value.partition("=")
        if not sep or not group.isdigit() or not worker:
            raise UsageError(f"--pin wants GROUP=WORKER, not {value!r}")
        pins[int(group)] = worker
    return pins


async def run_decode_cluster(args: argparse.Namespace, report: Report) -> None:
    """Run ``decode-cluster`` with the parsed ``args``."""
    from ..cli import _decode_options
    from .api import decode_cluster

    if not args.input and not args.input_data_dir:
        raise UsageError("decode-cluster needs --input (per group) or --input-data-dir")
    if args.pin and not args.scheduler:
        raise UsageError("--pin needs --scheduler")
    await decode_cluster(
        args.input,
        args.output,
        _decode_options(args),
        data_dir=args.input_data_dir,
        routes=args.routes,
        pins=_pins(args.pin),
        scheduler=args.scheduler,
        log_format=args.log_format,
        progress=args.progress_display,
        report=report,
        force=args.force,
    )


def add_encode_cluster(parser: argparse.ArgumentParser, encode: argparse.ArgumentParser) -> None:
    """Give ``encode-cluster``'s ``parser`` ``encode``'s flags, ``--output-dir`` and
    ``--routes``."""
    parser.add_argument(
        "--output-dir",
        required=True,
        metavar="DIR",
        help="where group-<g>.fsm files go (absent or empty; --force replaces an earlier set)",
    )
    parser.add_argument(
        "--routes", metavar="FILE", help="routes.json (default: the tree's MANIFEST cluster routes)"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace the group files of an earlier encode-cluster"
    )
    taken = set(parser._option_string_actions)
    for action in encode._actions:
        skip = action.dest in ("help", "output", "rebase_time")
        if not skip and not taken & set(action.option_strings):
            parser._add_action(action)


async def run_encode_cluster(args: argparse.Namespace, report: Report) -> None:
    """Run ``encode-cluster`` with the parsed ``args``."""
    from ..cli import encode_options
    from .encode import encode_cluster

    await encode_cluster(
        args.input,
        args.output_dir,
        encode_options(args),
        routes=args.routes,
        force=args.force,
        report=report,
        log_format=args.log_format,
        progress=args.progress_display,
    )
