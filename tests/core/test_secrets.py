"""Credentials never reach logs, reprs, stats or dead letters; logs are rate-limited."""

from __future__ import annotations

import logging
import typing as t

import pytest
from _support import Sink

import trackware
from trackware import JSONLinesDeadLetter, RetryPolicy
from trackware.exporters import HTTPExporter

SECRET = "sk_live_9f8e7d6c5b4a39281706"
SIGNATURE = "sig-77aa11bb22cc33dd"


def test_secret_header_never_appears_anywhere(
    sink: Sink, tmp_path: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A vendor echoing our Authorization header leaks it nowhere we write."""
    caplog.set_level(logging.DEBUG, logger="trackware")
    sink.script.extend([("echo", 500), ("echo", 400)])
    dead = JSONLinesDeadLetter(tmp_path / "dl.jsonl")
    tracker = trackware.Tracker(
        [
            HTTPExporter(
                sink.url,
                headers={"Authorization": f"Bearer {SECRET}"},
                auth=lambda: {"X-Signature": SIGNATURE},
            )
        ],
        dead_letter=dead,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.02),
        flush_interval=0.01,
    )
    tracker.track("e", {"i": 1})
    assert tracker.flush(10)
    records = dead.read()
    assert len(records) == 1 and records[0]["status"] == 400
    # The vendor really did echo it (so the test can fail) ...
    assert "Authorization" in records[0]["response"]
    # ... and nothing we produced contains it.
    texts = [
        caplog.text,
        (tmp_path / "dl.jsonl").read_text(),
        repr(tracker),
        repr(tracker.destinations[0].exporter),
        str(tracker.stats()),
    ]
    for text in texts:
        assert SECRET not in text
        assert SIGNATURE not in text
    assert "***" in records[0]["response"]
    tracker.shutdown()


def test_secret_in_an_exception_message_is_scrubbed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A registered secret inside a logged exception is replaced by ***."""
    caplog.set_level(logging.DEBUG, logger="trackware")
    trackware._log.register_secret(SECRET)
    try:
        raise RuntimeError(f"token {SECRET} rejected")
    except RuntimeError:
        logging.getLogger("trackware").error("failed", exc_info=True)
    assert SECRET not in caplog.text
    assert "***" in caplog.text


def test_repeated_failures_are_logged_rate_limited(
    sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    """Hundreds of rejections produce a handful of log lines, not hundreds."""
    caplog.set_level(logging.WARNING, logger="trackware")
    sink.default_status = 400
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url, max_batch_size=1)],
        dead_letter=None,
        flush_interval=0.0,
    )
    for i in range(200):
        tracker.track("e", {"i": i})
    assert tracker.flush(20)
    assert tracker.stats()["destinations"]["http"]["rejected"] == 200
    rejected_lines = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert 1 <= len(rejected_lines) <= 3
    tracker.shutdown()


def test_redacted_properties_never_reach_the_wire(sink: Sink) -> None:
    """Sensitive property values are replaced before the event is queued."""
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)], dead_letter=None, flush_interval=0.01
    )
    tracker.track(
        "login",
        {"user": "a", "password": "hunter2", "nested": {"card_number": "4111"}},
    )
    assert tracker.flush(10)
    event = sink.bodies[0]["events"][0]
    assert event["properties"]["password"] == trackware.REDACTED
    assert event["properties"]["nested"]["card_number"] == trackware.REDACTED
    assert "hunter2" not in str(sink.bodies) and "4111" not in str(sink.bodies)
    tracker.shutdown()
