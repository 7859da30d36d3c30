"""signals.export_attempted: one per call of an exporter, retries included,
seen before flush() returns."""

from __future__ import annotations

import typing as t

import trackware
from trackware import signals
from trackware.exporters import HTTPExporter


def test_each_call_of_the_exporter_is_announced(sink: t.Any) -> None:
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url, name="sink")],
        flush_interval=0.01,
        retry=trackware.RetryPolicy(base_delay=0.01, max_delay=0.05),
        register_atexit=False,
        dead_letter=None,
    )
    seen: list[tuple[str, list[str], float]] = []

    def receiver(sender: t.Any, /, **kw: t.Any) -> None:
        assert sender is tracker
        seen.append((kw["destination"], [e.name for e in kw["events"]], kw["duration"]))

    signals.export_attempted.connect(receiver, sender=tracker, weak=False)
    try:
        sink.script.extend([503])  # the first call fails, the retry delivers
        tracker.track("a.one")
        tracker.track("a.two")
        assert tracker.flush(10)
        assert [(d, names) for d, names, _ in seen] == [
            ("sink", ["a.one", "a.two"]),
            ("sink", ["a.one", "a.two"]),
        ]
        assert all(isinstance(s, float) and s >= 0 for _, _, s in seen)
        assert len(seen) == sink.requests == 2
    finally:
        signals.export_attempted.disconnect(receiver)
        tracker.shutdown()
