"""What the metrics must show for a set of ``stats()`` (one per process),
written from the documented names, independently of trackware.metrics; and a
tracker that gives every counter something to count. Shared with
integrations/metrics/."""

from __future__ import annotations

import collections
import typing as t

import trackware
from trackware.exporters import HTTPExporter
from trackware.testing import InMemoryExporter

Key = tuple[str, tuple[tuple[str, str], ...]]

COUNTERS = {
    "enqueued": "trackware_enqueued_events_total",
    "retried": "trackware_retried_events_total",
    "dead_lettered": "trackware_dead_lettered_events_total",
    "batches": "trackware_exported_batches_total",
}
GAUGES = {
    "queue_depth": "trackware_queue_events",
    "queue_bytes": "trackware_queue_bytes",
    "in_flight": "trackware_in_flight_events",
}
OUTCOMES = ("sent", "rejected", "failed", "not_applicable", "filtered")


def key(name: str, **labels: str) -> Key:
    return name, tuple(sorted(labels.items()))


def prometheus_expected(
    all_stats: t.Iterable[t.Mapping[str, t.Any]],
) -> dict[Key, float]:
    """The Prometheus samples (name, labels) -> value that ``all_stats``,
    summed over the processes, must give (histograms not included)."""
    out: collections.Counter[Key] = collections.Counter()
    circuits: dict[Key, float] = {}
    for stats in all_stats:
        out[key("trackware_tracked_events_total")] += stats["tracked"]
        out[key("trackware_unrouted_events_total")] += stats["unrouted"]
        for reason, n in stats["dropped"].items():
            out[key("trackware_dropped_events_total", reason=reason)] += n
        for dest, figures in stats["destinations"].items():
            for outcome in OUTCOMES:
                name = key(
                    "trackware_events_total",
                    destination=dest,
                    outcome=outcome,
                    reason="",
                )
                out[name] += figures[outcome]
            for reason, n in figures["dropped"].items():
                name = key(
                    "trackware_events_total",
                    destination=dest,
                    outcome="dropped",
                    reason=reason,
                )
                out[name] += n
            for field, name in {**COUNTERS, **GAUGES}.items():
                out[key(name, destination=dest)] += figures[field]
            for state in ("closed", "half_open", "open"):
                k = key("trackware_circuit_state", destination=dest, state=state)
                circuits[k] = max(
                    circuits.get(k, 0), 1 if figures["circuit"] == state else 0
                )
    return {**out, **circuits}


def parsed_samples(text: str) -> dict[Key, float]:
    """Every sample of a scrape (Prometheus text format), by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        key(s.name, **s.labels): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def assert_matches(scraped: dict[Key, float], expected: dict[Key, float]) -> None:
    """Every expected sample is scraped with its value, and every trackware
    counter or gauge scraped that is not expected is 0 (e.g. the spool's)."""
    missing = {k: v for k, v in expected.items() if scraped.get(k) != v}
    assert not missing, {k: (v, scraped.get(k)) for k, v in missing.items()}
    histogram = ("_bucket", "_count", "_sum", "_created")
    extra = {
        k: v
        for k, v in scraped.items()
        if k[0].startswith("trackware_")
        and not k[0].endswith(histogram)
        and k not in expected
        and v != 0
    }
    assert not extra, extra


def busy_tracker(sink: t.Any, dead_letter: str) -> trackware.Tracker:
    """A tracker to ``sink`` (named ``sink``, filtering out ``internal.*``)
    and to memory (``orders``: only ``order.placed``), fast retries."""
    return trackware.Tracker(
        [
            HTTPExporter(sink.url, name="sink"),
            InMemoryExporter(name="orders", events=["order.placed"]),
        ],
        flush_interval=0.01,
        retry=trackware.RetryPolicy(base_delay=0.01, max_delay=0.05),
        filters={"sink": lambda e: not e.name.startswith("internal.")},
        dead_letter=dead_letter,
        register_atexit=False,
    )


def busy_traffic(tracker: trackware.Tracker, sink: t.Any) -> None:
    """Something for every counter: a batch rejected (400), one retried
    (503) then sent, events filtered, not applicable, invalid."""
    sink.script.extend([400])
    for i in range(3):
        tracker.track("offer.viewed", {"i": i})
    assert tracker.flush(10)
    sink.script.extend([503])
    for i in range(2):
        tracker.track("offer.clicked", {"i": i})
    assert tracker.flush(10)
    tracker.track("internal.ping")
    tracker.track("order.placed", {"total": 10})
    tracker.track("")  # invalid: dropped before any destination
    assert tracker.flush(10)
