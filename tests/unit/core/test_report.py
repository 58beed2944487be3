"""The run report: warnings gathered through structlog, counters, rendering."""

from __future__ import annotations

import io
import json

import pytest

from elastickv_async._core.report import DeferredLogger, EventLog, Report, make_logger


def test_each_warning_is_collected_once_with_its_fields() -> None:
    """Warnings are counted per event, with the first examples' fields; info is not."""
    report = Report(max_examples=2)
    log = make_logger(report).bind(adapter="sqs")
    for i in range(3):
        log.warning("sqs_orphan_messages", encoded_queue=f"q{i}", buffered_messages=i)
    log.info("progress", entries=10)
    summary = report.warnings["sqs_orphan_messages"]
    assert summary.count == 3
    assert summary.examples == [
        {"adapter": "sqs", "encoded_queue": "q0", "buffered_messages": 0},
        {"adapter": "sqs", "encoded_queue": "q1", "buffered_messages": 1},
    ]
    assert "progress" not in report.warnings
    assert report.warning_count == 3


def test_json_rendering_is_one_object_per_line() -> None:
    """--log-format json prints every event as one JSON object on its own line."""
    stream = io.StringIO()
    log = make_logger(Report(), log_format="json", stream=stream)
    log.warning("redis_orphan_ttl", count=2, key=b"\xffbin")
    log.info("done")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["redis_orphan_ttl", "done"]
    assert events[0]["level"] == "warning"
    assert events[0]["key"] == "\\xffbin"


def test_silent_logger_prints_nothing_but_collects(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a log format nothing is rendered, yet the report still gets the warning."""
    report = Report()
    make_logger(report).warning("ddb_orphan_items", buffered_items=1)
    assert capsys.readouterr() == ("", "")
    assert report.warnings["ddb_orphan_items"].count == 1


def test_report_views() -> None:
    """to_dict is JSON-ready and sorted; summary_lines names every warning."""
    report = Report()
    report.count("total", 5)
    report.count("total", 2)
    report.count("mvcc.tombstones", 1)
    report.count("mvcc.expired", 0)
    report.snapshot["footer"] = "valid"
    make_logger(report).warning("b_event", n=1)
    make_logger(report).warning("a_event")
    doc = report.to_dict()
    assert doc["counters"] == {"mvcc.expired": 0, "mvcc.tombstones": 1, "total": 7}
    assert [w["event"] for w in doc["warnings"]] == ["a_event", "b_event"]
    json.dumps(doc)
    lines = report.summary_lines()
    assert lines[:2] == ["mvcc: expired=0 tombstones=1", "counts: total=7"]
    assert lines[-1] == "warning b_event x1 (first: n=1)"


def _log_everything(log: EventLog) -> None:
    bound = log.bind(adapter="s3", bucket="b")
    bound.debug("debugged", n=0)
    bound.info("s3_upload_in_progress", object="k", chunks=2)
    bound.warning("s3_orphan_chunks", object="k", chunks=3, bucket="override")
    bound.bind(object="o").warning("per %s", "object", size=b"\xff")
    log.error("failed", path="p")
    log.warning("s3_orphan_chunks", object="k2")


def test_deferred_logger_reports_what_the_rendering_logger_reports() -> None:
    """Without a log format the structlog pipeline is built at the first warning, and the
    report is the same: the same events, counts, and example fields in the same order."""
    quiet, rendered = Report(), Report()
    silent = make_logger(quiet)
    assert isinstance(silent, DeferredLogger)
    _log_everything(silent)
    stream = io.StringIO()
    _log_everything(make_logger(rendered, log_format="json", stream=stream))
    assert quiet.to_dict() == rendered.to_dict()
    assert [list(w.examples[0]) for w in quiet.warnings.values()] == [
        list(w.examples[0]) for w in rendered.warnings.values()
    ]
    assert set(quiet.warnings) == {"s3_orphan_chunks", "per object", "failed"}
    assert quiet.warnings["s3_orphan_chunks"].count == 2
    assert len(stream.getvalue().splitlines()) == 6
