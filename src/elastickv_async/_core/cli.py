"""Command line: ``elastickv-async {decode,decode-cluster,encode,inspect,verify,prepare-restore}``.

``decode`` accepts every flag of the reference ``elastickv-snapshot-decode`` (Go's flag
syntax too: ``-input x``, ``--flag=value``, ``--bool=true``), ``encode`` every flag of
``elastickv-snapshot-encode``, ``prepare-restore`` every flag of
``elastickv-snapshot-prepare-restore``. Exit codes: 0 success, 1 usage or environment errors,
2 data errors (bad snapshot, bad dump tree, self-test mismatch), 130 after SIGINT and 143
after SIGTERM (the run is cancelled and cleans up first). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Final, NoReturn

import anyio

from .._adapters.base import OptionField, option_fields
from .._adapters.registry import REGISTRY
from .._version import __version__
from .cluster.cli import add_decode_cluster, run_decode_cluster
from .completion import SHELLS, completion_script
from .concurrency import task_group
from .dump.writer import write_file_atomic
from .errors import ElasticKVError, UsageError
from .options import DecodeOptions, EncodeOptions
from .pipeline import Progress
from .report import Report
from .restore import command as restore_command

__all__ = ["main"]

PROG: Final = "elastickv-async"


class _Parser(argparse.ArgumentParser):
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


def _build_parser() -> _Parser:
    parser = _Parser(
        prog=PROG, description="Decode elastickv .fsm snapshots into a backup tree and back."
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
    common.add_argument("--quiet", action="store_true", help="no summary on stderr")
    common.add_argument("--no-progress", action="store_true", help="no progress display")
    common.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="async backend (asyncio uses uvloop when installed)",
    )

    names = ",".join(REGISTRY.names())
    dec = sub.add_parser("decode", parents=[common], help="decode a .fsm snapshot into a dump tree")
    dec.add_argument("--input", required=True, help="the .fsm snapshot file")
    dec.add_argument("--output", required=True, help="output directory (absent or empty)")
    dec.add_argument("--adapter", default=names, help=f"comma-separated adapters ({names}; 'all')")
    dec.add_argument("--cluster-id", default="", help="recorded as MANIFEST cluster_id")
    dec.add_argument("--scratch-root", type=Path, help="where to spill data that must wait")
    dec.add_argument("--jobs", type=int, default=8, help="concurrent file writes")
    dec.add_argument("--fsync", action="store_true", help="fsync every written file")
    dec.add_argument(
        "--force",
        action="store_true",
        help="replace the unfinished tree a killed decode left in --output "
        "(a complete tree or other files are never removed)",
    )
    _add_adapter_flags(dec, encode=False)

    add_decode_cluster(sub, common, dec)
    # After decode-cluster copied decode's flags: a cluster dump has no full-fidelity mode.
    dec.add_argument(
        "--full-fidelity",
        action="store_true",
        help="also keep the live state the reference layout drops (bucket creation dates, "
        "queue timestamps, in-flight messages, incomplete uploads) so a restore brings it back",
    )

    enc = sub.add_parser("encode", parents=[common], help="encode a dump tree into a .fsm snapshot")
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
    enc.add_argument(
        "--rebase-time",
        action="store_true",
        help="move message send/visibility times and key expiry forward by the time elapsed "
        "since the snapshot",
    )
    _add_adapter_flags(enc, encode=True)

    ins = sub.add_parser(
        "inspect", parents=[common], help="summarise a .fsm (header, footer, meta keys, prefixes)"
    )
    ins.add_argument("--input", required=True, help="the .fsm snapshot file")
    ins.add_argument("--depth", type=int, default=2, help="'|'-separated prefix depth")
    ins.add_argument("--json", action="store_true", help="print JSON instead of text")

    ver = sub.add_parser("verify", parents=[common], help="check a dump tree against its CHECKSUMS")
    ver.add_argument("--input", required=True, help="the dump tree root")

    comp = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script, e.g. `source <(elastickv-async completion bash)` "
        "in ~/.bashrc, or `elastickv-async completion zsh > ~/.zfunc/_elastickv-async`.",
    )
    comp.add_argument("shell", choices=SHELLS, help="the shell to complete in")

    restore_command.add_parser(sub, common)
    return parser


def _adapter_fields(*, encode: bool) -> list[tuple[str, OptionField]]:
    """Every adapter option of one direction, as ``(adapter name, field)``."""
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
            parser.add_argument(f"--{f.flag}", dest=dest, default=f.default, help=f.help)


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


class _ProgressDisplay:
    """A one-line bar on a terminal, or JSON progress events in JSON log mode."""

    def __init__(self, stream: IO[str], *, json_events: bool) -> None:
        self._stream = stream
        self._json = json_events
        self._start = time.monotonic()

    def __call__(self, sample: Progress) -> None:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        if self._json:
            event = {
                "event": "progress",
                "level": "info",
                "bytes_read": sample.bytes_read,
                "total_bytes": sample.total_bytes,
                "entries": sample.entries,
                "done": sample.done,
            }
            self._stream.write(json.dumps(event) + "\n")
            return
        frac = sample.bytes_read / sample.total_bytes if sample.total_bytes else 1.0
        width = 30
        filled = int(frac * width)
        rate = sample.bytes_read / elapsed / 1e6
        self._stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {frac * 100:5.1f}% "
            f"{sample.bytes_read / 1e6:,.1f}/{sample.total_bytes / 1e6:,.1f} MB "
            f"{sample.entries:,} entries {rate:,.1f} MB/s"
        )
        if sample.done:
            self._stream.write("\n")
        self._stream.flush()


def _progress_for(args: argparse.Namespace) -> _ProgressDisplay | None:
    if args.no_progress:
        return None
    if args.log_format == "json":
        return _ProgressDisplay(sys.stderr, json_events=True)
    if sys.stderr.isatty() and not args.quiet:
        return _ProgressDisplay(sys.stderr, json_events=False)
    return None


def _decode_options(args: argparse.Namespace) -> DecodeOptions:
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    return DecodeOptions(
        adapters=REGISTRY.select(args.adapter),
        adapter_options=_adapter_options(args, encode=False),
        cluster_id=args.cluster_id,
        full_fidelity=getattr(args, "full_fidelity", False),
        scratch_root=args.scratch_root,
        jobs=args.jobs,
        fsync=args.fsync,
    )


async def _decode(args: argparse.Namespace, report: Report) -> None:
    from .pipeline import decode_snapshot

    await decode_snapshot(
        args.input,
        args.output,
        _decode_options(args),
        log_format=args.log_format,
        progress=_progress_for(args),
        report=report,
        force=args.force,
    )


async def _encode(args: argparse.Namespace, report: Report) -> None:
    from .encode.api import encode_snapshot, parse_last_commit_ts

    options = EncodeOptions(
        adapters=REGISTRY.select(args.adapter, lower=True),
        adapter_options=_adapter_options(args, encode=True),
        last_commit_ts=parse_last_commit_ts(args.last_commit_ts) if args.last_commit_ts else None,
        self_test=args.self_test,
        scratch_root=args.scratch_root,
        rebase_time=args.rebase_time,
    )
    await encode_snapshot(
        args.input, args.output, options, report=report, log_format=args.log_format
    )


async def _verify(args: argparse.Namespace, report: Report) -> None:
    from .dump.verify import verify_tree

    await verify_tree(args.input, report)


async def _inspect(args: argparse.Namespace, report: Report) -> None:
    from .inspection import inspect_snapshot

    found = await inspect_snapshot(args.input, depth=args.depth)
    report.snapshot.update(found.to_dict())
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
    else:
        print("\n".join(found.lines()))


_COMMANDS: Final = {
    "decode": _decode,
    "decode-cluster": run_decode_cluster,
    "encode": _encode,
    "inspect": _inspect,
    "verify": _verify,
    "prepare-restore": restore_command.run,
}


_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def _run(args: argparse.Namespace, report: Report) -> int | None:
    """Run the command; return the number of the signal that stopped it, if one did.

    SIGINT and SIGTERM cancel the command, whose cleanup (scratch, temp files, locks) then
    runs as it does for any cancellation.
    """
    command = _COMMANDS[args.command]
    stopped_by: list[int] = []

    async def runner() -> None:
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


def _write_report(
    path: Path, report: Report, command: str, exit_code: int, error: str | None
) -> None:
    doc: dict[str, Any] = {
        "tool": PROG,
        "version": __version__,
        "command": command,
        "exit_code": exit_code,
        "error": error,
    }
    doc |= report.to_dict()
    write_file_atomic(path, (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode())


def _error_line(exc: ElasticKVError, *, json_event: bool) -> str:
    """The one stderr line for a failed run: ``prog: error: [code] text``, or a JSON event."""
    if json_event:
        event = {"level": "error", "event": "run_failed", "message": str(exc), **exc.fields()}
        return json.dumps(event)
    code = f"[{exc.code}] " if exc.code else ""
    return f"{PROG}: error: {code}{exc}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``elastickv-async`` command; returns the exit code."""
    raw = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        args = parser.parse_args(_normalise_go_flags(raw, *_long_flags(parser)))
    except UsageError as exc:
        print(_error_line(exc, json_event=False), file=sys.stderr)
        return exc.exit_code
    if args.command == "completion":
        sys.stdout.write(completion_script(parser, args.shell))
        return 0
    json_event = args.log_format == "json"
    try:
        _preflight(args)
    except UsageError as exc:
        print(_error_line(exc, json_event=json_event), file=sys.stderr)
        return exc.exit_code
    report = Report()
    code = 0
    error: str | None = None
    stopped_by: int | None = None
    try:
        stopped_by = _run(args, report)
    except ElasticKVError as exc:
        error, code = str(exc), exc.exit_code
        print(_error_line(exc, json_event=json_event), file=sys.stderr)
    except OSError as exc:
        error, code = str(exc), 1
        print(f"{PROG}: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        stopped_by = signal.SIGINT  # before or after the event loop ran
    if stopped_by is not None:
        error = f"interrupted by {signal.Signals(stopped_by).name}"
        code = 128 + stopped_by
        print(f"{PROG}: {error}", file=sys.stderr)
    if args.report is not None:
        try:
            _write_report(args.report, report, args.command, code, error)
        except ElasticKVError as exc:
            print(_error_line(exc, json_event=json_event), file=sys.stderr)
            code = code or exc.exit_code
    if not args.quiet and code == 0 and args.command not in ("inspect", "prepare-restore"):
        for line in report.summary_lines():
            print(f"{PROG}: {line}", file=sys.stderr)
    return code
