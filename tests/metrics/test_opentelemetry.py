"""trackware.metrics.opentelemetry: an in-memory reader sees stats()."""

from __future__ import annotations

import typing as t

from metrics.expect import OUTCOMES, busy_tracker, busy_traffic
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import trackware
import trackware.metrics
from trackware import signals

Points = dict[tuple[str, tuple[tuple[str, t.Any], ...]], t.Any]


def collect(reader: InMemoryMetricReader) -> tuple[Points, dict[str, str]]:
    """Every data point by instrument and attributes, and each unit."""
    points: Points = {}
    units: dict[str, str] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "trackware"
            for metric in scope.metrics:
                units[metric.name] = metric.unit or ""
                for point in metric.data.data_points:
                    attributes = tuple(sorted(point.attributes.items()))
                    points[metric.name, attributes] = point
    return points, units


def expected(stats: t.Mapping[str, t.Any]) -> dict[t.Any, float]:
    """The sums stats() must give, written from the documented names."""
    dest_key = "trackware.destination"
    out: dict[t.Any, float] = {
        ("trackware.tracked", ()): stats["tracked"],
        ("trackware.unrouted", ()): stats["unrouted"],
    }
    for reason, n in stats["dropped"].items():
        out["trackware.dropped", (("trackware.reason", reason),)] = n
    for dest, figures in stats["destinations"].items():
        for outcome in OUTCOMES:
            attrs = ((dest_key, dest), ("trackware.outcome", outcome))
            out["trackware.events", attrs] = figures[outcome]
        for reason, n in figures["dropped"].items():
            attrs = (
                (dest_key, dest),
                ("trackware.outcome", "dropped"),
                ("trackware.reason", reason),
            )
            out["trackware.events", attrs] = n
        for name, field in [
            ("trackware.enqueued", "enqueued"),
            ("trackware.retried", "retried"),
            ("trackware.dead_lettered", "dead_lettered"),
            ("trackware.batches", "batches"),
            ("trackware.queue.depth", "queue_depth"),
            ("trackware.queue.size", "queue_bytes"),
            ("trackware.queue.in_flight", "in_flight"),
        ]:
            out[name, ((dest_key, dest),)] = figures[field]
        for state in ("closed", "half_open", "open"):
            attrs = (("trackware.circuit.state", state), (dest_key, dest))
            out["trackware.circuit.state", attrs] = int(figures["circuit"] == state)
    return out


def test_an_in_memory_reader_sees_stats_and_the_export_attempts(
    sink: t.Any, tmp_path: t.Any
) -> None:
    tracker = busy_tracker(sink, str(tmp_path / "dead.jsonl"))
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = trackware.metrics.opentelemetry(tracker, provider)
    try:
        busy_traffic(tracker, sink)
        stats = tracker.stats()
        points, units = collect(reader)
        want = expected(stats)
        got = {k: points[k].value for k in want if k in points}
        assert got == want
        assert units["trackware.events"] == "{event}"
        assert units["trackware.export.duration"] == "s"
        assert units["trackware.queue.size"] == "By"
        # The histograms: one point per call of the exporter.
        sink_attrs = (("trackware.destination", "sink"),)
        duration = points["trackware.export.duration", sink_attrs]
        assert duration.count == sink.requests
        assert 0 < duration.sum < 60
        size = points["trackware.export.batch.size", sink_attrs]
        figures = stats["destinations"]["sink"]
        assert size.sum == figures["sent"] + figures["rejected"] + figures["retried"]
        assert size.count == sink.requests
        # Cumulative: later events add to the same points.
        tracker.track("order.placed")
        assert tracker.flush(10)
        points, _ = collect(reader)
        orders = (
            ("trackware.destination", "orders"),
            ("trackware.outcome", "sent"),
        )
        assert points["trackware.events", orders].value == 2
    finally:
        metrics.close()
        tracker.shutdown()
    assert not signals.export_attempted.receivers
    # Closed: the callbacks observe nothing any more.
    points, _ = collect(reader)
    assert not [k for k in points if not k[0].startswith("trackware.export.")]
    provider.shutdown()
