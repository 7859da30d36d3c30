"""The local exporters: JSON lines files and the console."""

from __future__ import annotations

import io
import json
import os
import stat
import typing as t

import trackware
from trackware import MemoryDeadLetter, RetryPolicy
from trackware.exporters import ConsoleExporter, JSONLinesExporter


def test_jsonlines_exporter_appends_one_event_per_line(tmp_path: t.Any) -> None:
    path = tmp_path / "out" / "events.jsonl"
    tracker = trackware.Tracker(
        [JSONLinesExporter(path, fsync=True)], dead_letter=None, flush_interval=60
    )
    events = [tracker.track("e", {"i": i, "name": "é"}) for i in range(25)]
    assert tracker.flush(5)
    tracker.track("later")
    tracker.shutdown()
    lines = path.read_text("utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["event_id"] for r in records[:25]] == [e.event_id for e in events if e]
    assert records[0]["properties"] == {"i": 0, "name": "é"}
    assert records[-1]["name"] == "later" and len(records) == 26
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_jsonlines_write_failure_is_retried_then_dead_lettered(
    tmp_path: t.Any,
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    dead = MemoryDeadLetter()
    tracker = trackware.Tracker(
        [JSONLinesExporter(blocker / "events.jsonl")],
        dead_letter=dead,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.02, max_attempts=2),
        flush_interval=60,
    )
    tracker.track("e")
    assert tracker.flush(5)
    dest = tracker.stats()["destinations"]["jsonl"]
    assert dest["failed"] == 1 and dest["retried"] == 1
    assert dead.records[0].reason.startswith("retries_exhausted: write failed")
    tracker.shutdown()


def test_console_exporter_prints_json_lines() -> None:
    stream = io.StringIO()
    tracker = trackware.Tracker(
        [ConsoleExporter(stream, events=["shown"])], dead_letter=None
    )
    tracker.track("shown", {"a": 1})
    tracker.track("hidden")
    assert tracker.flush(5)
    tracker.shutdown()
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["properties"] == {"a": 1}
    assert repr(JSONLinesExporter("x.jsonl")) == (
        "<JSONLinesExporter name='jsonl' path='x.jsonl'>"
    )
