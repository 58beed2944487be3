"""What the CLI prints on stderr: progress, run events, the end-of-run summary, errors.

Two renderings of the same events. ``console`` (the default) is for people: a one-line
progress display that rewrites itself on a terminal, one summary line at the end, one error
line on failure. ``json`` is for machines: every line is one JSON object carrying
``timestamp``, ``level`` and ``event`` (the README lists the events and their fields).

Nothing here imports the engine, so the CLI can load it before knowing the command.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from .errors import ElasticKVError
    from .progress import Progress
    from .report import Report

__all__ = [
    "Console",
    "ProgressDisplay",
    "human_bytes",
    "human_duration",
    "silence_stdout",
    "timestamp",
    "warnings_phrase",
]

_UNITS: Final = ("B", "kB", "MB", "GB", "TB", "PB")
_BAR_MAX: Final = 24
_BAR_MIN: Final = 8


def timestamp() -> str:
    """Now, as the engine's log lines stamp it (ISO 8601, UTC, ``Z``)."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def human_bytes(n: float) -> str:
    """``n`` bytes in decimal units, three significant digits: ``"3.4 GB"``, ``"512 B"``."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1000 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """``"0.4 s"``, ``"42 s"``, ``"3 min 5 s"``, ``"2 h 7 min"``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def warnings_phrase(report: Report) -> str:
    """``"no warnings"`` or ``"4 warnings: unknown_prefix_entries x4"``."""
    total = report.warning_count
    if not total:
        return "no warnings"
    kinds = ", ".join(f"{w.event} x{w.count}" for w in sorted(report.warnings.values(), key=_ev))
    return f"{total:,} warning{'s' if total != 1 else ''}: {kinds}"


def _ev(summary: Any) -> str:
    return str(summary.event)


def silence_stdout() -> None:
    """Point stdout at /dev/null after its reader went away (``... | head``).

    Python flushes stdout once more at exit; without this, that flush reports the broken
    pipe again. Exiting quietly is what coreutils do.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


class _ClusterSample(Protocol):
    groups_done: int
    groups_total: int
    partitions_done: int
    partitions_total: int
    bytes_read: int
    done: bool


class Console:
    """The stderr of one CLI run, rendered as ``console`` text or ``json`` lines."""

    def __init__(
        self,
        command: str,
        *,
        json_lines: bool,
        quiet: bool = False,
        verbose: bool = False,
        stream: IO[str] | None = None,
    ) -> None:
        self.command = command
        self.json = json_lines
        self.quiet = quiet
        self.verbose = verbose
        self.stream = stream if stream is not None else sys.stderr
        self.started_at = timestamp()
        self._t0 = time.monotonic()

    @property
    def duration(self) -> float:
        """Seconds since the run began."""
        return time.monotonic() - self._t0

    def event(self, level: str, event: str, **fields: Any) -> None:
        """One JSON event line (JSON mode only; the console rendering is the caller's)."""
        doc = {"timestamp": timestamp(), "level": level, "event": event} | fields
        self._write(json.dumps(doc, default=str) + "\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    @property
    def _name(self) -> str:
        return self.command.replace("-", "_")

    def started(self, **fields: Any) -> None:
        """``<command>_started`` with the run's input and output (JSON mode)."""
        if self.json:
            given = {k: v for k, v in fields.items() if v is not None}
            self.event("info", f"{self._name}_started", **given)

    def complete(self, report: Report, summary: str, **fields: Any) -> None:
        """The end of a successful run: ``<command>_complete`` or the summary line."""
        if self.json:
            self.event(
                "info",
                f"{self._name}_complete",
                **{k: v for k, v in fields.items() if v is not None},
                duration_s=round(self.duration, 3),
                summary=summary,
                warnings=report.warning_count,
                counters=dict(sorted(report.counters.items())),
            )
            return
        if self.quiet:
            return
        self._write(f"{summary}\n")
        if self.verbose:
            for line in report.summary_lines():
                self._write(f"  {line}\n")

    def failed(self, prog: str, exc: ElasticKVError | OSError, exit_code: int) -> None:
        """The one line of a failed run: ``prog: error: [code] text`` or ``run_failed``."""
        code = getattr(exc, "code", None)
        if self.json:
            fields = exc.fields() if hasattr(exc, "fields") else {}
            self.event(
                "error",
                "run_failed",
                command=self.command,
                message=str(exc),
                **({"code": code} | fields),
                exit_code=exit_code,
                duration_s=round(self.duration, 3),
            )
            return
        prefix = f"[{code}] " if code else ""
        self._write(f"{prog}: error: {prefix}{exc}\n")

    def interrupted(self, prog: str, signal_name: str, exit_code: int) -> None:
        """A run stopped by SIGINT or SIGTERM (after its cleanup)."""
        if self.json:
            self.event(
                "error",
                "run_interrupted",
                command=self.command,
                signal=signal_name,
                exit_code=exit_code,
                duration_s=round(self.duration, 3),
            )
            return
        self._write(f"{prog}: interrupted by {signal_name}\n")

    def progress(self) -> ProgressDisplay | None:
        """The progress display for this run: JSON events, a terminal line, or none."""
        if self.json:
            return ProgressDisplay(self, tty=False)
        if not self.quiet and _isatty(self.stream):
            return ProgressDisplay(self, tty=True)
        return None


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except ValueError:
        return False


def _ratio(done: int, total: int | None) -> float | None:
    if total is None:
        return None
    return min(done / total, 1.0) if total else 1.0


def _amount(n: float, unit: str) -> str:
    return human_bytes(n) if unit == "bytes" else f"{int(n):,} {unit}"


def _rate(rate: float, unit: str) -> str:
    return f"{human_bytes(rate)}/s" if unit == "bytes" else f"{rate:,.0f} {unit}/s"


class ProgressDisplay:
    """Renders progress samples: ``progress`` JSON events, or one self-rewriting line.

    The terminal line is cut to the terminal's width (less one column, so that it never
    wraps) and cleared to the end before each rewrite, so a shorter line leaves nothing
    stale behind. Each finished stage keeps its last line; the next stage starts below.
    """

    def __init__(self, console: Console, *, tty: bool) -> None:
        self._console = console
        self._tty = tty
        self._open_line = False
        self._stage: str | None = None

    def __call__(self, sample: Progress | _ClusterSample) -> None:
        """Show one sample (a :class:`Progress`, or a cluster decode's sample)."""
        fields = _fields(sample)
        if not self._tty:
            self._console.event("info", "progress", command=self._console.command, **fields)
            return
        width = max(shutil.get_terminal_size(fallback=(80, 24)).columns - 1, 10)
        line = _line(fields, width)
        # A stage that ends without a finished sample (a cluster's groups) keeps its line.
        start = "\n" if self._open_line and fields["stage"] != self._stage else ""
        end = "\n" if fields["finished"] else ""
        self._console._write(f"{start}\r{line}\x1b[K{end}")
        self._open_line = not fields["finished"]
        self._stage = fields["stage"]

    def close(self) -> None:
        """Erase an unfinished line (the run stopped in the middle of a stage)."""
        if self._tty and self._open_line:
            self._console._write("\r\x1b[K")
            self._open_line = False


def _fields(sample: Progress | _ClusterSample) -> dict[str, Any]:
    """A sample as the JSON ``progress`` event's fields."""
    from .progress import Progress

    if isinstance(sample, Progress):
        eta = sample.eta
        return {
            "stage": sample.stage,
            "unit": sample.unit,
            "done": sample.done,
            "total": sample.total,
            "files_written": sample.files_written,
            "bytes_written": sample.bytes_written,
            "entries": sample.entries,
            "elapsed_s": round(sample.elapsed, 3),
            "rate": round(sample.rate, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "finished": sample.finished,
        }
    # A cluster decode resolves its groups, then merges the adapters' partitions.
    merging = sample.groups_done >= sample.groups_total and sample.partitions_total > 0
    stage, done, total = (
        ("merge", sample.partitions_done, sample.partitions_total)
        if merging
        else ("groups", sample.groups_done, sample.groups_total)
    )
    return {
        "stage": stage,
        "unit": "partitions" if merging else "groups",
        "done": done,
        "total": total,
        "bytes_read": sample.bytes_read,
        "finished": sample.done,
    }


def _line(fields: Mapping[str, Any], width: int) -> str:
    """The terminal line for one sample, at most ``width`` characters.

    The stage, the percentage and the amount always show; the rate, the ETA and the output
    counters are dropped from the end until the line and a bar of at least ``_BAR_MIN``
    fit; the bar takes what is left, up to ``_BAR_MAX``.
    """
    unit, done, total = fields["unit"], fields["done"], fields["total"]
    ratio = _ratio(done, total)
    head = f"{fields['stage']:<10}"
    if total is None:
        amount = _amount(done, unit)
    elif unit == "bytes":
        amount = f"{human_bytes(done)}/{human_bytes(total)}"
    else:
        amount = f"{done:,}/{total:,} {unit}"
    essential = [f"{ratio * 100:5.1f}%", amount] if ratio is not None else [amount]
    optional: list[str] = []
    if fields.get("elapsed_s", 0) > 0 and fields.get("rate"):
        optional.append(_rate(fields["rate"], unit))
    if fields.get("finished"):
        optional.append(f"in {human_duration(fields.get('elapsed_s', 0.0))}")
    elif fields.get("eta_s") is not None:
        optional.append(f"ETA {human_duration(fields['eta_s'])}")
    if "files_written" in fields and unit != "files":
        optional.append(f"{fields['files_written']:,} files")
    if fields.get("bytes_written"):
        optional.append(f"{human_bytes(fields['bytes_written'])} written")
    bar_room = _BAR_MIN + 3 if ratio is not None else 0

    def text(parts: list[str]) -> str:
        return "  ".join(parts)

    while optional and len(head) + bar_room + len(text(essential + optional)) > width:
        optional.pop()
    body = text(essential + optional)
    room = width - len(head) - len(body) - 3
    if ratio is not None and room >= _BAR_MIN:
        size = min(room, _BAR_MAX)
        filled = int(ratio * size)
        return f"{head}[{'#' * filled}{'.' * (size - filled)}] {body}"[:width]
    return f"{head}{body}"[:width]
