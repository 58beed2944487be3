"""Command line: ``elastickv-async {decode,decode-cluster,encode,inspect,verify,prepare-restore}``.

``decode`` accepts every flag of the reference ``elastickv-snapshot-decode`` (Go's flag
syntax too: ``-input x``, ``--flag=value``, ``--bool=true``), ``encode`` every flag of
``elastickv-snapshot-encode``, ``prepare-restore`` every flag of
``elastickv-snapshot-prepare-restore``. Exit codes: 0 success, 1 usage or environment errors,
2 data errors (bad snapshot, bad dump tree, self-test mismatch), 3 when ``--strict`` is set
and the (complete) run raised warnings, 130 after SIGINT and 143 after SIGTERM (the run is
cancelled and cleans up first). Errors are one line on stderr.
What is printed on stderr (progress, events, the summary) is :mod:`.console`'s business.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from .._version import __version__
from .entry import PROG
from .errors import ElasticKVError, UsageError

# The engine (adapters, options, report, console, anyio) is loaded where it is used:
# --help and a misspelt command need none of it.
if TYPE_CHECKING:
    from .._adapters.base import OptionField
    from .console import Console
    from .options import DecodeOptions, EncodeOptions
    from .report import Report

__all__ = ["main"]

#: The exit code of a ``--strict`` run that raised warnings.
EXIT_WARNINGS: Final = 3

_EXIT_CODES: Final = """exit codes:
  0    success
  1    usage or environment error (bad flag, unwritable output, missing file)
  2    data error (bad snapshot, bad dump tree, checksum or self-test mismatch)
  3    --strict and the run raised warnings (its output is complete)
  130  interrupted by SIGINT (Ctrl-C); 143 terminated by SIGTERM"""

_EXAMPLES: Final = {
    "decode": "elastickv-async decode --input fsm-snap/0000000000000064.fsm --output dump/",
    "decode-cluster": "elastickv-async decode-cluster --input 1=g1.fsm --input 2=g2.fsm "
    "--output cluster-dump/",
    "encode": "elastickv-async encode --input dump/ --output restored.fsm --self-test",
    "encode-cluster": "elastickv-async encode-cluster --input cluster-dump/ --output-dir groups/ "
    "--self-test",
    "inspect": "elastickv-async inspect --input fsm-snap/0000000000000064.fsm --json",
    "verify": "elastickv-async verify --input dump/",
    "completion": "source <(elastickv-async completion bash)",
    "prepare-restore": "elastickv-async prepare-restore --input restored.fsm --data-dir /var/lib/"
    "elastickv/1 --index 100 --peers 1=10.0.0.1:50051",
}


#: The commands, in the order ``--help`` lists them, with the line it gives each.
_COMMAND_HELP: Final = {
    "decode": "decode a .fsm snapshot into a dump tree",
    "decode-cluster": "decode every Raft group's snapshot of a cluster into one dump tree",
    "encode": "encode a dump tree into a .fsm snapshot",
    "encode-cluster": "encode a cluster dump tree into one .fsm per Raft group",
    "inspect": "summarise a .fsm: header, footer, meta keys, an inventory of what each adapter "
    "holds, and counts per key prefix",
    "verify": "check a dump tree against its CHECKSUMS",
    "completion": "print a shell completion script",
    "prepare-restore": "turn an encoded .fsm + encode_info.json into a fresh Raft data directory",
}

#: The parsers a command line needs, by its first word: a command's own (a cluster command
#: copies its single-snapshot twin's flags), none for the list of commands ``--help``
#: prints. ``completion`` describes every command, so it needs them all (it is not here).
_PARSERS_OF: Final[dict[str, frozenset[str]]] = {
    "decode": frozenset({"decode"}),
    "decode-cluster": frozenset({"decode", "decode-cluster"}),
    "encode": frozenset({"encode"}),
    "encode-cluster": frozenset({"encode", "encode-cluster"}),
    "inspect": frozenset({"inspect"}),
    "verify": frozenset({"verify"}),
    "prepare-restore": frozenset({"prepare-restore"}),
    "-h": frozenset(),
    "--help": frozenset(),
}


_TREE_ROOT_FLAG: Final = ("--tree-root",)
_TREE_ROOT_OPTIONS: Final[dict[str, Any]] = {
    "action": "append",
    "default": [],
    "metavar": "ADAPTER=DIR",
    "help": "read ADAPTER's subtree from DIR instead of the root MANIFEST.json records for it "
    "(decode --output-root), e.g. a disk mounted elsewhere now; repeatable",
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout and shows each flag's default when it has a telling one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default in (None, False, "", [], argparse.SUPPRESS)
            or action.nargs == 0
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _normalise_go_flags(argv: Sequence[str], known: set[str], switches: set[str]) -> list[str]:
    """Rewrite Go ``flag`` spellings (``-name``, ``--bool=true``) into argparse's.

    ``known`` are the long flag names, ``switches`` those of them that take no value.
    """
    out: list[str] = []
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            name = arg[1:].split("=", 1)[0]
            if name in known:
                arg = "-" + arg
        if arg.startswith("--") and "=" in arg:
            name, value = arg[2:].split("=", 1)
            if name in switches:
                lowered = value.lower()
                if lowered in ("1", "t", "true"):
                    arg = "--" + name
                elif lowered in ("0", "f", "false"):
                    continue
                else:
                    raise UsageError(f"invalid boolean value {value!r} for --{name}")
        out.append(arg)
    return out


def _settled(argv: Sequence[str], known: set[str], switches: set[str]) -> bool:
    """Whether one command's long flags (``known``, ``switches``) rewrite every Go spelling
    in ``argv`` as the long flags of all commands would (see :func:`_normalise_go_flags`).

    ``-name`` is rewritten when any command has ``--name``, and ``--name=value`` read as a
    switch when any command has that switch: a name the one command lacks needs them all.
    """
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            if arg[1:].split("=", 1)[0] not in known:
                return False
            arg = "-" + arg
        if arg.startswith("--") and "=" in arg and arg[2:].split("=", 1)[0] not in switches:
            return False
    return True


def _build_parser(building: Collection[str] | None = None) -> _Parser:
    """The command line parser; with ``building``, only those commands' parsers get flags.

    The other commands' parsers are still listed (``--help``, a misspelt command's error)
    but empty: building every flag loads every command's modules.
    """
    if building is None:
        building = _COMMAND_HELP.keys()
    parser = _Parser(
        prog=PROG,
        description="Decode elastickv .fsm snapshots into a backup tree and back.",
        epilog=f"{_EXIT_CODES}\n\nexample:\n  {_EXAMPLES['decode']}\n\n"
        f"`{PROG} COMMAND --help` describes a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    common = _Parser(add_help=False)
    common.add_argument(
        "--log-format",
        choices=("console", "json"),
        default=None,
        help="print log events (console key=value, or one JSON object per line)",
    )
    common.add_argument(
        "--report", metavar="FILE", type=Path, help="write the run's report as JSON"
    )
    common.add_argument(
        "--quiet", action="store_true", help="no progress display and no summary line on stderr"
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print every counter of the report after the summary line",
    )
    common.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress display (shown on a terminal, or as events with --log-format json)",
    )
    common.add_argument(
        "--strict",
        action="store_true",
        help=f"exit {EXIT_WARNINGS} when the run raised any warning (its output is still complete)",
    )
    common.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="async backend (asyncio uses uvloop when installed)",
    )

    parsers: dict[str, _Parser] = {}
    for name, line in _COMMAND_HELP.items():
        if name not in building:
            sub.add_parser(name, help=line, add_help=False)
        elif name == "completion":
            parsers[name] = sub.add_parser(
                name,
                help=line,
                description="Print a completion script, e.g. `source <(elastickv-async "
                "completion bash)` in ~/.bashrc, or `elastickv-async completion zsh > "
                "~/.zfunc/_elastickv-async`.",
            )
        else:
            parsers[name] = sub.add_parser(name, parents=[common], help=line)
    if "decode" in building:
        _add_decode_flags(parsers["decode"], parsers.get("decode-cluster"))
    if "encode" in building:
        _add_encode_flags(parsers["encode"], parsers.get("encode-cluster"))
    if "inspect" in building:
        ins = parsers["inspect"]
        ins.add_argument(
            "--input", required=True, help="the .fsm snapshot file, - for standard input"
        )
        ins.add_argument(
            "--depth", type=int, default=2, metavar="N", help="group prefixes up to their N-th '|'"
        )
        ins.add_argument("--json", action="store_true", help="print JSON instead of text")
        ins.add_argument(
            *_MEMORY_FLAG,
            **_memory_options()
            | {"help": "bytes the reader's chunks and the batch being counted may hold"},
        )
    if "verify" in building:
        ver = parsers["verify"]
        ver.add_argument("--input", required=True, help="the dump tree root")
        ver.add_argument(*_TREE_ROOT_FLAG, **_TREE_ROOT_OPTIONS)
    if "completion" in building:
        from .completion import SHELLS

        parsers["completion"].add_argument("shell", choices=SHELLS, help="the shell to complete in")
    if "prepare-restore" in building:
        from .restore.command import add_arguments

        add_arguments(parsers["prepare-restore"])
    for action in sub._choices_actions:
        command_parser = sub.choices[action.dest]
        command_parser.description = (
            command_parser.description or (action.help or "").capitalize() + "."
        )
        example = _EXAMPLES.get(action.dest)
        if example and command_parser.epilog is None:
            command_parser.epilog = f"{_EXIT_CODES}\n\nexample:\n  {example}"
    return parser


def _add_decode_flags(dec: _Parser, cluster: _Parser | None) -> None:
    """``decode``'s flags, and ``decode-cluster``'s when its parser is given."""
    from .._adapters.registry import REGISTRY
    from .dump.manifest import CHECKSUM_ALGORITHM, CHECKSUMS_NONE

    names = ",".join(REGISTRY.names())
    dec.add_argument(
        "--input", help="the .fsm snapshot file, - for standard input (or --input-snap-dir)"
    )
    dec.add_argument("--output", required=True, help="output directory (absent or empty)")
    dec.add_argument("--adapter", default=names, help=f"comma-separated adapters ({names}; 'all')")
    dec.add_argument("--cluster-id", default="", help="recorded as MANIFEST cluster_id")
    dec.add_argument("--scratch-root", type=Path, help="where to spill data that must wait")
    dec.add_argument("--jobs", type=int, default=8, help="concurrent file writes")
    dec.add_argument("--workers", type=int, help=_WORKERS_HELP)
    dec.add_argument("--fsync", action="store_true", help="fsync every written file")
    dec.add_argument(
        "--force",
        action="store_true",
        help="replace the unfinished tree a killed decode left in --output "
        "(a complete tree or other files are never removed)",
    )
    _add_adapter_flags(dec, encode=False)
    dec.add_argument(
        "--full-fidelity",
        action="store_true",
        help="also keep the live state the reference layout drops (bucket creation dates, "
        "queue timestamps, in-flight messages, incomplete uploads) so a restore brings it back",
    )

    dec.add_argument(*_MEMORY_FLAG, **_memory_options())
    if cluster is not None:
        from .cluster.cli import add_decode_cluster

        add_decode_cluster(cluster, dec)
    # After decode-cluster copied decode's flags: a cluster dump has no single snapshot
    # directory and always has CHECKSUMS.
    dec.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="ADAPTER=NAMES",
        help="decode only these comma-separated tables, buckets or queues (exact names) or "
        "keys (globs) of one adapter ("
        + ", ".join(
            f"{spec.name}{' globs' if spec.scope_glob else ''}"
            for spec in REGISTRY
            if spec.scope_unit is not None
        )
        + "); repeatable; only the scoped adapters run unless --adapter names more; "
        "MANIFEST.json records the scope",
    )
    dec.add_argument(
        "--input-snap-dir",
        metavar="DIR",
        type=Path,
        help="a node's fsm-snap/ directory: decode its newest <index>.fsm (the index is "
        "checked against the snapshot's _meta_applied_index)",
    )
    dec.add_argument(
        "--all",
        action="store_true",
        help="with --input-snap-dir: decode every snapshot, oldest first, each into "
        "--output/<index>/",
    )
    dec.add_argument(
        "--dry-run",
        action="store_true",
        help="read the snapshot and print what would be written (adapters, tables, buckets, "
        "queues, key counts, estimated files and bytes); write nothing",
    )
    dec.add_argument(
        "--output-root",
        action="append",
        default=[],
        metavar="ADAPTER=DIR",
        help="write ADAPTER's subtree under DIR (say, another disk) instead of --output; DIR "
        "is claimed like --output and holds that adapter's scratch; repeatable, once per "
        "adapter; MANIFEST.json records the roots, which verify and encode then follow",
    )
    dec.add_argument(
        "--checksums",
        choices=(CHECKSUM_ALGORITHM, CHECKSUMS_NONE),
        default=CHECKSUM_ALGORITHM,
        help="write CHECKSUMS (sha256), or none: MANIFEST.json says so and verify then "
        "checks completeness only",
    )


def _add_encode_flags(enc: _Parser, cluster: _Parser | None) -> None:
    """``encode``'s flags, and ``encode-cluster``'s when its parser is given."""
    from .._adapters.registry import REGISTRY

    names = ",".join(REGISTRY.names())
    enc.add_argument("--input", required=True, help="the dump tree root (holds MANIFEST.json)")
    enc.add_argument("--output", required=True, help="the .fsm file to write")
    enc.add_argument("--adapter", default=names, help=f"comma-separated adapters ({names}; 'all')")
    enc.add_argument("--last-commit-ts", default="", help="decimal or 0x-hex; >= the manifest's")
    enc.add_argument(
        "--self-test",
        action="store_true",
        help="decode the output and compare it with the input before publishing",
    )
    enc.add_argument("--scratch-root", type=Path, help="base directory for self-test scratch")
    enc.add_argument("--workers", type=int, help=_WORKERS_HELP)
    enc.add_argument(
        "--rebase-time",
        action="store_true",
        help="move message send/visibility times and key expiry forward by the time elapsed "
        "since the snapshot",
    )
    enc.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --output (kept until the new file is durable)",
    )
    enc.add_argument(
        "--no-verify-checksums",
        dest="verify_checksums",
        action="store_false",
        help="do not check the input tree against its CHECKSUMS first",
    )
    _add_adapter_flags(enc, encode=True)
    enc.add_argument(*_MEMORY_FLAG, **_memory_options())
    if cluster is not None:
        from .cluster.cli import add_encode_cluster

        add_encode_cluster(cluster, enc)
    # After encode-cluster copied encode's flags: a cluster tree is never split.
    enc.add_argument(*_TREE_ROOT_FLAG, **_TREE_ROOT_OPTIONS)


def _adapter_fields(*, encode: bool) -> list[tuple[str, OptionField]]:
    """Every adapter option of one direction, as ``(adapter name, field)``."""
    from .._adapters.base import option_fields
    from .._adapters.registry import REGISTRY

    return [
        (spec.name, f)
        for spec in REGISTRY
        for f in option_fields(spec.encode_options if encode else spec.decode_options)
    ]


def _dest(adapter: str, f: OptionField) -> str:
    return f"adapter__{adapter}__{f.name}"


def _add_adapter_flags(parser: argparse.ArgumentParser, *, encode: bool) -> None:
    """One flag per field of every adapter's options dataclass (see ``option()``)."""
    for adapter, f in _adapter_fields(encode=encode):
        dest = _dest(adapter, f)
        if f.is_switch:
            parser.add_argument(f"--{f.flag}", dest=dest, action="store_true", help=f.help)
        else:
            metavar = f.flag.rsplit("-", 1)[-1].upper()
            parser.add_argument(
                f"--{f.flag}", dest=dest, default=f.default, metavar=metavar, help=f.help
            )


def _adapter_options(args: argparse.Namespace, *, encode: bool) -> dict[str, dict[str, Any]]:
    """The adapter flags given on the command line, as ``adapter_options``."""
    found: dict[str, dict[str, Any]] = {}
    for adapter, f in _adapter_fields(encode=encode):
        value = getattr(args, _dest(adapter, f))
        if f.choices:
            # An empty value takes the default, as the reference's flag parsing does.
            value = value or f.default
            if value not in f.choices:
                allowed = " or ".join(map(str, f.choices))
                raise UsageError(f"--{f.flag} must be {allowed}, not {value!r}")
        found.setdefault(adapter, {})[f.name] = value
    return found


def _long_flags(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """Every long flag name of ``parser`` and its subcommands, and those that take no value."""
    names: set[str] = set()
    switches: set[str] = set()
    for action in parser._actions:
        longs = {o[2:] for o in action.option_strings if o.startswith("--")}
        names |= longs
        if action.nargs == 0:
            switches |= longs
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                sub_names, sub_switches = _long_flags(subparser)
                names |= sub_names
                switches |= sub_switches
    return names, switches


_WORKERS_HELP: Final = (
    "worker processes for the CPU-bound work (default: one per CPU but one for a large "
    "input; 0: none)"
)


_MEMORY_FLAG: Final = ("--memory-budget",)


def _memory_options() -> dict[str, Any]:
    """``--memory-budget``'s ``add_argument`` options."""
    from .memory import DEFAULT_MEMORY_BUDGET, MIN_MEMORY_BUDGET

    return {
        "metavar": "SIZE",
        "default": f"{DEFAULT_MEMORY_BUDGET >> 20}MiB",
        "help": "bytes the run's buffers (channels, read and write buffers, sorts, spill "
        "buffers, digest ledgers) may hold together, shared among them (bytes, or with KiB, "
        f"MiB, GiB; at least {MIN_MEMORY_BUDGET >> 10}KiB); smaller spills more to scratch, "
        "the output is the same",
    }


def _memory_budget(args: argparse.Namespace) -> int:
    from .memory import parse_size

    return parse_size(args.memory_budget)


def _decode_options(args: argparse.Namespace) -> DecodeOptions:
    from .._adapters.registry import REGISTRY
    from .dump.manifest import CHECKSUM_ALGORITHM
    from .options import DecodeOptions
    from .scope import parse_scope_flag

    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    scope = parse_scope_flag(getattr(args, "scope", []))
    # Scoped with --adapter left at its default: only the scoped adapters run.
    default_adapters = args.adapter == ",".join(REGISTRY.names())
    return DecodeOptions(
        adapters="all" if scope and default_adapters else REGISTRY.select(args.adapter),
        adapter_options=_adapter_options(args, encode=False),
        cluster_id=args.cluster_id,
        scope=scope,
        full_fidelity=getattr(args, "full_fidelity", False),
        scratch_root=args.scratch_root,
        jobs=args.jobs,
        workers=args.workers,
        fsync=args.fsync,
        checksums=getattr(args, "checksums", CHECKSUM_ALGORITHM),
        memory_budget=_memory_budget(args),
    )


async def _decode(args: argparse.Namespace, report: Report) -> None:
    from .dump.roots import parse_root_flags
    from .pipeline import decode_snapshot

    output_roots = parse_root_flags(args.output_root, "--output-root")
    if args.dry_run:
        from .plan import plan_decode

        plan = await plan_decode(
            args.input, _decode_options(args), output=args.output, output_roots=output_roots
        )
        report.snapshot["plan"] = plan.to_dict()
        if args.log_format == "json":
            print(json.dumps(plan.to_dict()))
        else:
            print("\n".join(plan.lines()))
        return
    if args.input_snap_dir is not None:
        from .snapdir import decode_snap_dir, merge_reports

        runs = await decode_snap_dir(
            args.input_snap_dir,
            args.output,
            _decode_options(args),
            every=args.all,
            log_format=args.log_format,
            progress=args.progress_display,
            force=args.force,
            output_roots=output_roots,
        )
        merge_reports(report, runs)
        return
    await decode_snapshot(
        args.input,
        args.output,
        _decode_options(args),
        log_format=args.log_format,
        progress=args.progress_display,
        report=report,
        force=args.force,
        output_roots=output_roots,
    )


def encode_options(args: argparse.Namespace) -> EncodeOptions:
    """The :class:`EncodeOptions` of ``encode``'s flags (``encode-cluster`` shares them)."""
    from .._adapters.registry import REGISTRY
    from .encode.api import parse_last_commit_ts
    from .options import EncodeOptions

    return EncodeOptions(
        adapters="all"
        if args.adapter == ",".join(REGISTRY.names())
        else REGISTRY.select(args.adapter, lower=True),
        adapter_options=_adapter_options(args, encode=True),
        last_commit_ts=parse_last_commit_ts(args.last_commit_ts) if args.last_commit_ts else None,
        self_test=args.self_test,
        scratch_root=args.scratch_root,
        rebase_time=getattr(args, "rebase_time", False),
        verify_checksums=args.verify_checksums,
        workers=args.workers,
        memory_budget=_memory_budget(args),
    )


async def _encode(args: argparse.Namespace, report: Report) -> None:
    from .dump.roots import parse_root_flags
    from .encode.api import encode_snapshot

    await encode_snapshot(
        args.input,
        args.output,
        encode_options(args),
        report=report,
        log_format=args.log_format,
        progress=args.progress_display,
        force=args.force,
        tree_roots=parse_root_flags(args.tree_root, "--tree-root"),
    )


async def _verify(args: argparse.Namespace, report: Report) -> None:
    from .dump.roots import parse_root_flags
    from .dump.verify import verify_tree

    await verify_tree(
        args.input,
        report,
        progress=args.progress_display,
        tree_roots=parse_root_flags(args.tree_root, "--tree-root"),
    )


async def _inspect(args: argparse.Namespace, report: Report) -> None:
    from .inspection import inspect_snapshot

    found = await inspect_snapshot(args.input, depth=args.depth, memory_budget=_memory_budget(args))
    report.snapshot.update(found.to_dict())
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
    else:
        print("\n".join(found.lines()))


async def _decode_cluster(args: argparse.Namespace, report: Report) -> None:
    from .cluster.cli import run_decode_cluster

    await run_decode_cluster(args, report)


async def _encode_cluster(args: argparse.Namespace, report: Report) -> None:
    from .cluster.cli import run_encode_cluster

    await run_encode_cluster(args, report)


async def _prepare_restore(args: argparse.Namespace, report: Report) -> None:
    from .restore.command import run

    await run(args, report)


_COMMANDS: Final = {
    "decode": _decode,
    "decode-cluster": _decode_cluster,
    "encode": _encode,
    "encode-cluster": _encode_cluster,
    "inspect": _inspect,
    "verify": _verify,
    "prepare-restore": _prepare_restore,
}


_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def _run(
    args: argparse.Namespace, report: Report, started: Callable[[], None] | None = None
) -> int | None:
    """Run the command; return the number of the signal that stopped it, if one did.

    SIGINT and SIGTERM cancel the command, whose cleanup (scratch, temp files, locks) then
    runs as it does for any cancellation. ``started`` is called as the event loop starts.
    """
    import anyio

    from .concurrency import task_group

    command = _COMMANDS[args.command]
    stopped_by: list[int] = []

    async def runner() -> None:
        if started is not None:
            started()
        async with task_group() as tg:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(*_STOP_SIGNALS) as signals:
                    async for signum in signals:
                        stopped_by.append(signum)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            await command(args, report)
            tg.cancel_scope.cancel()

    try:
        if args.backend == "trio":
            anyio.run(runner, backend="trio")
        else:
            try:
                import uvloop  # noqa: F401
            except ImportError:
                anyio.run(runner)
            else:
                anyio.run(runner, backend_options={"use_uvloop": True})
    except Exception:
        if not stopped_by:
            raise
    return stopped_by[0] if stopped_by else None


def _preflight(args: argparse.Namespace) -> None:
    """Refuse, before any work, what would only fail at the end of a long run."""
    if args.command == "decode":
        _check_decode_inputs(args)
    if args.report is not None:
        _check_report_path(args.report)
    scratch_root = getattr(args, "scratch_root", None)
    if scratch_root is not None and not scratch_root.is_dir():
        raise UsageError(f"--scratch-root {scratch_root} is not an existing directory")
    if args.backend == "trio":
        try:
            import trio  # noqa: F401
        except ImportError:
            raise UsageError(
                "--backend trio needs the trio package: pip install 'elastickv-async[trio]'"
            ) from None


def _check_decode_inputs(args: argparse.Namespace) -> None:
    if (args.input is None) == (args.input_snap_dir is None):
        raise UsageError("decode needs exactly one of --input and --input-snap-dir")
    if args.all and args.input_snap_dir is None:
        raise UsageError("--all needs --input-snap-dir")
    if args.dry_run and args.input is None:
        raise UsageError("--dry-run needs --input")
    if args.all and args.output_root:
        raise UsageError("--output-root cannot be used with --all (one tree per snapshot)")


def _check_report_path(path: Path) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"--report {path}: directory {parent} does not exist")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise UsageError(f"--report {path} is a directory")
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(f"--report {path} is not a regular file; refusing to replace it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--report {path}: directory {parent} is not writable")


def _error_doc(exc: BaseException, exit_code: int) -> dict[str, Any]:
    """The report's ``error``: message, code, exit code, and where it happened when known."""
    fields = exc.fields() if isinstance(exc, ElasticKVError) else {"error": type(exc).__name__}
    return {"message": str(exc), "code": getattr(exc, "code", None), "exit_code": exit_code} | {
        k: v for k, v in fields.items() if k != "code"
    }


def _options_doc(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags, as the report records them (adapter flags as ``adapter.field``)."""
    doc: dict[str, Any] = {}
    for name, value in sorted(vars(args).items()):
        if name in ("command", "progress_display"):
            continue
        if name.startswith("adapter__"):
            name = name.removeprefix("adapter__").replace("__", ".")
        doc[name] = os.fspath(value) if isinstance(value, Path) else value
    return doc


def _write_report(
    path: Path,
    report: Report,
    args: argparse.Namespace,
    console: Console,
    exit_code: int,
    error: dict[str, Any] | None,
) -> None:
    doc: dict[str, Any] = {
        "tool": PROG,
        "version": __version__,
        "command": args.command,
        "exit_code": exit_code,
        "error": error,
        "input": _plain_path(getattr(args, "input", None)),
        "output": _plain_path(getattr(args, "output", None)),
        "started_at": console.started_at,
        "duration_s": round(console.duration, 3),
        "options": _options_doc(args),
    }
    doc |= report.to_dict()
    from .dump.writer import write_file_atomic

    write_file_atomic(path, (json.dumps(doc, indent=2, default=str) + "\n").encode())


def _plain_path(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain_path(v) for v in value]
    return os.fspath(value) if isinstance(value, Path) else value


def _summary(args: argparse.Namespace, report: Report, duration: float) -> str:
    """The one human line that ends a successful run."""
    from .console import human_bytes, human_duration, warnings_phrase
    from .dump.manifest import CHECKSUMS_NONE

    counters = report.counters
    took = human_duration(duration)
    warned = warnings_phrase(report)
    if getattr(args, "dry_run", False):
        return f"Dry run of {args.input} in {took}: nothing written; {warned}"
    if args.command in ("decode", "decode-cluster"):
        files = counters.get("output.files_written", 0)
        size = human_bytes(counters.get("output.bytes_written", 0))
        return f"Wrote {files:,} files ({size}) to {args.output} in {took}; {warned}"
    if args.command == "encode":
        entries = counters.get("encode.entries", 0)
        size = human_bytes(counters.get("encode.bytes_written", 0))
        tested = "; self-test passed" if args.self_test else ""
        return f"Wrote {entries:,} entries ({size}) to {args.output} in {took}{tested}; {warned}"
    if args.command == "encode-cluster":
        groups = counters.get("encode.groups", 0)
        entries = counters.get("encode.entries", 0)
        size = human_bytes(counters.get("encode.bytes_written", 0))
        tested = "; self-test passed" if args.self_test else ""
        return (
            f"Wrote {groups} group snapshots ({entries:,} entries, {size}) to "
            f"{args.output_dir} in {took}{tested}; {warned}"
        )
    if args.command == "verify":
        files = counters.get("verify.files", 0)
        if report.snapshot.get("checksums") == CHECKSUMS_NONE:
            return (
                f"Checked {files:,} files of {args.input} in {took}: complete; decoded with "
                f"--checksums none, so their content was not verified; {warned}"
            )
        scope = report.snapshot.get("scope")
        if scope:
            named = " ".join(f"{name}={','.join(names)}" for name, names in scope.items())
            warned = f"scoped backup ({named}), not a full one; {warned}"
        return f"Verified {files:,} files of {args.input} in {took}: intact; {warned}"
    if args.command == "prepare-restore":
        facts = report.snapshot
        return (
            f"Prepared {facts.get('data_dir')} for restore in {took}: {facts.get('snap')}, "
            f"{human_bytes(facts.get('payload_bytes', 0))} payload, crc32c {facts.get('crc32c')}"
            f"; {warned}"
        )
    return f"Done in {took}; {warned}"


#: Commands whose result is their standard output: no summary line after it.
_QUIET_COMMANDS: Final = frozenset({"inspect"})


def main(argv: Sequence[str] | None = None, *, started: Callable[[], None] | None = None) -> int:
    """Entry point of the ``elastickv-async`` command; returns the exit code.

    ``started`` is called once the start-up is over, as the command's event loop starts
    (:func:`elastickv_async._core.entry.main` resumes the garbage collector there).
    """
    raw = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(raw, started)
    except BrokenPipeError:
        from .console import silence_stdout

        # Our reader (``| head``) is gone: stop quietly, as coreutils do.
        silence_stdout()
        return 128 + signal.SIGPIPE


def _main(raw: list[str], started: Callable[[], None] | None) -> int:
    # A command line that starts with its command (or --help) needs only that command's
    # parser, unless it spells a flag the Go way that only every command's flags can settle.
    # A bare command line prints what --help prints.
    building = _PARSERS_OF.get(raw[0] if raw else "--help")
    parser = _build_parser(building)
    flags = _long_flags(parser)
    if building is not None and not _settled(raw, *flags):
        parser = _build_parser()
        flags = _long_flags(parser)
    if not raw:
        # Like git: a bare command prints what it can do, on stderr, and fails.
        parser.print_help(sys.stderr)
        return 1
    try:
        args = parser.parse_args(_normalise_go_flags(raw, *flags))
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.command == "completion":
        from .completion import completion_script

        sys.stdout.write(completion_script(parser, args.shell))
        return 0
    from .console import Console, human_duration
    from .report import Report

    console = Console(
        args.command,
        json_lines=args.log_format == "json",
        quiet=args.quiet,
        verbose=args.verbose,
    )
    try:
        _preflight(args)
    except UsageError as exc:
        console.failed(PROG, exc, exc.exit_code)
        return exc.exit_code
    display = None if args.no_progress else console.progress()
    args.progress_display = display
    paths = {
        "input": _plain_path(getattr(args, "input", None)),
        "output": _plain_path(getattr(args, "output", None)),
    }
    console.started(**paths)
    report = Report()
    code = 0
    error: dict[str, Any] | None = None
    stopped_by: int | None = None
    try:
        stopped_by = _run(args, report, started)
    except BrokenPipeError:
        raise
    except (ElasticKVError, OSError) as exc:
        code = exc.exit_code if isinstance(exc, ElasticKVError) else 1
        error = _error_doc(exc, code)
        if display is not None:
            display.close()
        console.failed(PROG, exc, code)
    except KeyboardInterrupt:
        stopped_by = signal.SIGINT  # before or after the event loop ran
    if stopped_by is not None:
        name = signal.Signals(stopped_by).name
        code = 128 + stopped_by
        error = {"message": f"interrupted by {name}", "code": None, "exit_code": code}
        if display is not None:
            display.close()
        console.interrupted(PROG, name, code)
    strict_failure = code == 0 and args.strict and report.warning_count > 0
    if strict_failure:
        code = EXIT_WARNINGS
        message = f"{report.warning_count:,} warning(s) raised and --strict is set"
        error = {"message": message, "code": "errStrictWarnings", "exit_code": code}
    if args.report is not None:
        try:
            _write_report(args.report, report, args, console, code, error)
        except ElasticKVError as exc:
            console.failed(PROG, exc, exc.exit_code)
            code = code or exc.exit_code
    if code in (0, EXIT_WARNINGS) and args.command not in _QUIET_COMMANDS:
        console.complete(report, _summary(args, report, console.duration), **paths)
    elif code == 0 and console.json:
        took = human_duration(console.duration)
        console.complete(report, f"{args.command} done in {took}", **paths)
    if strict_failure and error is not None:
        console.failed(PROG, ElasticKVError(error["message"], code=error["code"]), code)
    return code
