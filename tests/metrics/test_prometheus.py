"""trackware.metrics.prometheus in one process: a scrape shows stats()."""

from __future__ import annotations

import typing as t

import pytest
from metrics.expect import (
    assert_matches,
    busy_tracker,
    busy_traffic,
    key,
    parsed_samples,
    prometheus_expected,
)
from prometheus_client import CollectorRegistry, generate_latest

import trackware
import trackware.metrics
from trackware import signals


def scrape(registry: CollectorRegistry) -> dict[t.Any, float]:
    return parsed_samples(generate_latest(registry).decode())


def test_a_scrape_shows_stats_and_the_export_attempts(
    sink: t.Any, tmp_path: t.Any
) -> None:
    tracker = busy_tracker(sink, str(tmp_path / "dead.jsonl"))
    registry = CollectorRegistry()
    metrics = trackware.metrics.prometheus(tracker, registry)
    assert not metrics.multiprocess
    try:
        busy_traffic(tracker, sink)
        stats = tracker.stats()
        scraped = scrape(registry)
        assert_matches(scraped, prometheus_expected([stats]))
        # Every outcome the traffic was built to produce is there, non-zero.
        events = "trackware_events_total"
        for dest, outcome in [
            ("sink", "sent"),
            ("sink", "rejected"),
            ("sink", "filtered"),
            ("orders", "sent"),
            ("orders", "not_applicable"),
        ]:
            labels = {"destination": dest, "outcome": outcome, "reason": ""}
            assert scraped[key(events, **labels)] > 0, (dest, outcome)
        assert scraped[key("trackware_dropped_events_total", reason="invalid")] == 1
        assert scraped[key("trackware_retried_events_total", destination="sink")] == 2
        # One observation per call of the exporter: the sink saw one request
        # per call (400, 503, then the deliveries), the memory one none.
        duration = "trackware_export_duration_seconds_count"
        assert scraped[key(duration, destination="sink")] == sink.requests
        size = "trackware_export_batch_events_sum"
        sink_figures = stats["destinations"]["sink"]
        attempted = sink_figures["sent"] + sink_figures["rejected"]
        attempted += sink_figures["retried"]  # the 503 batch went out twice
        assert scraped[key(size, destination="sink")] == attempted
        assert scraped[key(size, destination="orders")] == 1
        # Later events show at the next scrape: read at scrape time.
        tracker.track("offer.viewed")
        assert tracker.flush(10)
        assert_matches(scrape(registry), prometheus_expected([tracker.stats()]))
    finally:
        metrics.close()
        tracker.shutdown()


def test_close_unregisters_and_disconnects(sink: t.Any, tmp_path: t.Any) -> None:
    tracker = busy_tracker(sink, str(tmp_path / "dead.jsonl"))
    registry = CollectorRegistry()
    assert not signals.export_attempted.receivers  # nothing until asked
    metrics = trackware.metrics.prometheus(tracker, registry)
    assert signals.export_attempted.receivers
    with pytest.raises(trackware.ConfigurationError, match="one tracker per registry"):
        trackware.metrics.prometheus(tracker, registry)
    metrics.close()
    metrics.close()
    assert not signals.export_attempted.receivers
    assert not [k for k in scrape(registry) if k[0].startswith("trackware_")]
    # The registry takes trackware's metrics again.
    trackware.metrics.prometheus(tracker, registry).close()
    tracker.shutdown()


def test_multiprocess_needs_prometheus_client_in_that_mode(sink: t.Any) -> None:
    tracker = trackware.Tracker(
        [trackware.exporters.HTTPExporter(sink.url)], register_atexit=False
    )
    with pytest.raises(trackware.ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR"):
        trackware.metrics.prometheus(tracker, CollectorRegistry(), multiprocess=True)
    tracker.shutdown()


def test_a_failing_stats_costs_the_scrape_nothing_but_trackware_figures(
    sink: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(trackware.Tracker):
        def stats(self) -> t.Any:
            raise RuntimeError("boom")

    tracker = Broken(
        [trackware.exporters.HTTPExporter(sink.url)], register_atexit=False
    )
    registry = CollectorRegistry()
    metrics = trackware.metrics.prometheus(tracker, registry)
    text = generate_latest(registry).decode()  # does not raise
    assert "trackware_events_total" not in text
    assert "reading stats() for Prometheus failed" in caplog.text
    metrics.close()
    tracker.shutdown()
