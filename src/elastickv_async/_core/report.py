"""One report per run: every warning, the counters and what the snapshot said about itself.

Adapters log through structlog (``ctx.log.warning("event_name", field=...)``). The run's
logger carries :meth:`Report.collect` as a processor, so each warning lands in the report
exactly once, and is also rendered (console key=value or one JSON object per line) when the
caller asked for log output. No global structlog configuration is touched: two runs in one
process keep separate reports. A run that renders nothing (the default) builds its structlog
logger at its first warning (:class:`DeferredLogger`): most runs log none.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO

import msgspec

if TYPE_CHECKING:
    from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["DeferredLogger", "EventLog", "Report", "WarningSummary", "make_logger"]

_WARNING_LEVELS: Final = frozenset({"warning", "warn", "error", "critical"})


class WarningSummary(msgspec.Struct):
    """All occurrences of one warning event: how many, and the fields of the first few."""

    event: str
    count: int = 0
    examples: list[dict[str, Any]] = msgspec.field(default_factory=list)


@dataclass(slots=True)
class Report:
    """What a decode or encode run found worth telling, gathered in one place."""

    max_examples: int = 20
    warnings: dict[str, WarningSummary] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    snapshot: dict[str, Any] = field(default_factory=dict)

    def collect(self, _logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        """structlog processor: record warnings, pass every event on unchanged."""
        level = str(event_dict.get("level", method)).lower()
        if level in _WARNING_LEVELS:
            name = str(event_dict.get("event", "warning"))
            summary = self.warnings.get(name)
            if summary is None:
                summary = self.warnings[name] = WarningSummary(name)
            summary.count += 1
            if len(summary.examples) < self.max_examples:
                summary.examples.append(
                    {k: _plain(v) for k, v in event_dict.items() if k not in ("event", "level")}
                )
        return event_dict

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        self.counters[name] = self.counters.get(name, 0) + n

    @property
    def warning_count(self) -> int:
        """Total number of warning events."""
        return sum(w.count for w in self.warnings.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (what ``--report FILE`` writes)."""
        return {
            "snapshot": {k: _plain(v) for k, v in self.snapshot.items()},
            "counters": dict(sorted(self.counters.items())),
            "warnings": [
                {"event": w.event, "count": w.count, "examples": w.examples}
                for w in sorted(self.warnings.values(), key=lambda w: w.event)
            ],
        }

    def summary_lines(self) -> list[str]:
        """Human-readable end-of-run summary: counters grouped by prefix, then warnings."""
        groups: dict[str, list[str]] = {}
        for name, value in sorted(self.counters.items()):
            group, _, short = name.rpartition(".")
            groups.setdefault(group or "counts", []).append(f"{short}={value}")
        lines = [f"{group}: {' '.join(items)}" for group, items in groups.items()]
        if not self.warnings:
            lines.append("warnings: none")
        for w in sorted(self.warnings.values(), key=lambda w: w.event):
            first = w.examples[0] if w.examples else {}
            detail = " ".join(f"{k}={v}" for k, v in first.items() if k != "adapter")
            lines.append(
                f"warning {w.event} x{w.count}" + (f" (first: {detail})" if detail else "")
            )
        return lines


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, MutableMapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class EventLog(Protocol):
    """The logger a run hands its adapters: structlog's bound logger, or the part of it used."""

    def bind(self, **fields: Any) -> EventLog: ...

    def debug(self, event: str, *args: Any, **fields: Any) -> Any: ...

    def info(self, event: str, *args: Any, **fields: Any) -> Any: ...

    def warning(self, event: str, *args: Any, **fields: Any) -> Any: ...

    def error(self, event: str, *args: Any, **fields: Any) -> Any: ...


class DeferredLogger:
    """structlog's collect-only logger, built when the first warning or error is logged.

    Most runs never log one, and importing structlog is a noticeable part of a short run's
    start-up. Bound fields are kept until then and bound to the real logger, so every event
    still goes through structlog's pipeline into :meth:`Report.collect`. Debug and info events
    are dropped here, as the collect-only pipeline drops them.
    """

    __slots__ = ("_bound", "_context", "_report")

    def __init__(self, report: Report, context: dict[str, Any] | None = None) -> None:
        self._report = report
        self._context = context or {}
        self._bound: EventLog | None = None

    def bind(self, **fields: Any) -> DeferredLogger:
        """A logger whose events carry ``fields`` too."""
        return DeferredLogger(self._report, {**self._context, **fields})

    def _logger(self) -> EventLog:
        if self._bound is None:
            self._bound = _structlog_logger(self._report, None, None).bind(**self._context)
        return self._bound

    def debug(self, event: str, *args: Any, **fields: Any) -> None:
        """Dropped: only warnings and errors reach the report."""

    def info(self, event: str, *args: Any, **fields: Any) -> None:
        """Dropped: only warnings and errors reach the report."""

    def warning(self, event: str, *args: Any, **fields: Any) -> None:
        """Record a warning in the report."""
        self._logger().warning(event, *args, **fields)

    def error(self, event: str, *args: Any, **fields: Any) -> None:
        """Record an error in the report (counted with the warnings)."""
        self._logger().error(event, *args, **fields)


def make_logger(
    report: Report, *, log_format: str | None = None, stream: TextIO | None = None
) -> EventLog:
    """Build a run's logger: collect into ``report``; render to ``stream`` if ``log_format`` is set.

    ``log_format`` is ``"console"``, ``"json"`` or ``None`` (collect only, print nothing).
    """
    if log_format is None:
        return DeferredLogger(report)
    return _structlog_logger(report, log_format, stream)


def _structlog_logger(report: Report, log_format: str | None, stream: TextIO | None) -> EventLog:
    import structlog

    processors: list[Processor] = [structlog.processors.add_log_level, report.collect]
    if log_format is None:
        processors.append(_drop)
        factory: Any = structlog.ReturnLoggerFactory()
    else:
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
        if log_format == "json":
            processors.append(structlog.processors.JSONRenderer(default=_plain))
        else:
            processors.append(structlog.processors.KeyValueRenderer(key_order=["level", "event"]))
        factory = structlog.PrintLoggerFactory(file=stream or sys.stderr)
    logger: structlog.typing.FilteringBoundLogger = structlog.wrap_logger(
        factory(),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(0),
    )
    return logger


def _drop(_logger: WrappedLogger, _method: str, _event_dict: EventDict) -> EventDict:
    import structlog

    raise structlog.DropEvent
