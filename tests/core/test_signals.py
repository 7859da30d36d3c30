"""The signal bus: trackware's own namespace, documented payloads, bridges."""

from __future__ import annotations

import gc
import logging
import typing as t

import blinker
import pytest
from _support import Sink

import trackware
from trackware import MemoryDeadLetter, RetryPolicy, signals
from trackware.exporters import HTTPExporter
from trackware.testing import InMemoryExporter

SIGNALS = [
    "action",
    "event_tracked",
    "event_dropped",
    "batch_exported",
    "export_failed",
]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[t.Any, dict[str, t.Any]]] = []

    def __call__(self, sender: t.Any, /, **kwargs: t.Any) -> None:
        self.calls.append((sender, kwargs))


@pytest.fixture
def tracker() -> t.Iterator[trackware.Tracker]:
    tr = trackware.Tracker([InMemoryExporter()], dead_letter=None, flush_interval=60)
    trackware.set_tracker(tr)
    yield tr
    tr.shutdown(timeout=1)


def test_signals_live_in_a_private_namespace() -> None:
    """None of trackware's signals is blinker's global signal of that name."""
    for attr in SIGNALS:
        sig = getattr(signals, attr)
        assert isinstance(sig, blinker.NamedSignal)
        assert sig is not blinker.signal(sig.name)
        assert sig.__doc__ or attr == "action"
    assert set(SIGNALS) <= set(signals.__all__)


def test_event_tracked_carries_the_event(tracker: trackware.Tracker) -> None:
    rec = Recorder()
    signals.event_tracked.connect(rec, sender=tracker)
    try:
        event = tracker.track("e", {"a": 1})
    finally:
        signals.event_tracked.disconnect(rec)
    assert rec.calls == [(tracker, {"event": event})]


def test_event_dropped_carries_event_reason_destination_detail(
    tracker: trackware.Tracker,
) -> None:
    rec = Recorder()
    signals.event_dropped.connect(rec, sender=tracker)
    hooked = trackware.Tracker(
        [InMemoryExporter()], dead_letter=None, before_send=lambda e: None
    )
    signals.event_dropped.connect(rec, sender=hooked)
    try:
        tracker.track("e", {"bad": {1}})
        dropped = hooked.track("e")
    finally:
        signals.event_dropped.disconnect(rec)
        hooked.shutdown(timeout=1)
    assert dropped is None
    (s1, invalid), (s2, by_hook) = rec.calls
    assert s1 is tracker and s2 is hooked
    assert set(invalid) == {"event", "reason", "destination", "detail"}
    assert invalid["reason"] == "invalid" and invalid["event"] is None
    assert "unsupported type set" in invalid["detail"]
    assert by_hook["reason"] == "before_send" and by_hook["event"].name == "e"
    assert by_hook["destination"] is None


def test_queue_full_drops_are_announced_per_destination() -> None:
    rec = Recorder()
    tracker = trackware.Tracker(
        [InMemoryExporter()], dead_letter=None, max_queue_size=2, flush_interval=60
    )
    tracker.destinations[0]._start = lambda: None  # type: ignore[method-assign]
    signals.event_dropped.connect(rec, sender=tracker)
    try:
        events = [tracker.track("e", {"i": i}) for i in range(3)]
    finally:
        signals.event_dropped.disconnect(rec)
    assert len(rec.calls) == 1
    kw = rec.calls[0][1]
    assert kw["reason"] == "queue_full" and kw["destination"] == "memory"
    assert kw["event"] is events[0] and kw["detail"] is None
    tracker.shutdown(timeout=0)


def test_batch_exported_and_export_failed(sink: Sink) -> None:
    """The worker announces deliveries and failures with the documented kwargs."""
    exported, failed = Recorder(), Recorder()
    sink.script.extend([503, 400])
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)],
        dead_letter=MemoryDeadLetter(),
        retry=RetryPolicy(base_delay=0.01, max_delay=0.02),
        flush_interval=60,
    )
    signals.batch_exported.connect(exported, sender=tracker)
    signals.export_failed.connect(failed, sender=tracker)
    try:
        first = tracker.track("first")
        assert tracker.flush(10)  # 503, then 400: rejected
        second = tracker.track("second")
        assert tracker.flush(10)  # delivered
    finally:
        signals.batch_exported.disconnect(exported)
        signals.export_failed.disconnect(failed)
        tracker.shutdown()
    retry, final = (kw for _, kw in failed.calls)
    assert retry["destination"] == "http" and retry["events"] == [first]
    assert retry["status"] == 503 and retry["final"] is False
    assert "503" in retry["reason"]
    assert final["status"] == 400 and final["final"] is True
    assert final["events"] == [first]
    assert exported.calls == [(tracker, {"destination": "http", "events": [second]})]


def test_a_broken_receiver_never_breaks_the_sender(
    tracker: trackware.Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    """A receiver that raises is logged; the others still run; track() works."""
    caplog.set_level(logging.ERROR, logger="trackware")
    after = Recorder()

    def broken(sender: t.Any, /, **kwargs: t.Any) -> None:
        raise RuntimeError("receiver bug")

    signals.event_tracked.connect(broken, sender=tracker)
    signals.event_tracked.connect(after, sender=tracker)
    try:
        event = tracker.track("e")
    finally:
        signals.event_tracked.disconnect(broken)
        signals.event_tracked.disconnect(after)
    assert event is not None and len(after.calls) == 1
    assert tracker.stats()["tracked"] == 1
    assert "receiver" in caplog.text


def test_action_tracks_through_the_current_tracker(tracker: trackware.Tracker) -> None:
    exporter = tracker.destinations[0].exporter
    assert isinstance(exporter, InMemoryExporter)
    signals.action.send(
        "checkout", name="offer.viewed", properties={"offer_id": "o-1"}, user_id="c-1"
    )
    signals.action.send(None, name="plain")
    assert tracker.flush(5)
    viewed, plain = exporter.events
    assert viewed.name == "offer.viewed" and viewed.user_id == "c-1"
    assert viewed.properties == {"offer_id": "o-1"}
    assert viewed.context == {"sender": "checkout"}
    assert plain.context == {}


def test_action_with_bad_arguments_is_counted_not_raised(
    tracker: trackware.Tracker,
) -> None:
    signals.action.send("app", name="e", colour="red")
    signals.action.send("app")  # no name
    assert tracker.stats()["dropped"] == {"invalid": 2}


def test_action_internal_receiver_is_a_strong_reference(
    tracker: trackware.Tracker,
) -> None:
    gc.collect()
    signals.action.send(None, name="still.connected")
    assert tracker.stats()["tracked"] == 1


def test_bridge_tracks_any_blinker_signal(tracker: trackware.Tracker) -> None:
    """An app's own signal becomes events; properties come from a callable."""
    ns = blinker.Namespace()
    order_placed = ns.signal("order-placed")
    bridge = tracker.bridge(
        order_placed,
        "order.placed",
        properties=lambda sender, **kw: (
            None if kw.get("test") else {"total": kw["total"], "by": sender}
        ),
    )
    gc.collect()  # the bridge's receiver is a closure: it must survive this
    order_placed.send("shop", total=12)
    order_placed.send("shop", total=1, test=True)  # None: skipped
    exporter = tracker.destinations[0].exporter
    assert isinstance(exporter, InMemoryExporter)
    assert tracker.flush(5)
    assert [(e.name, e.properties) for e in exporter.events] == [
        ("order.placed", {"total": 12, "by": "shop"})
    ]
    bridge.disconnect()
    order_placed.send("shop", total=3)
    assert tracker.stats()["tracked"] == 1


def test_bridge_with_static_properties_and_sender_filter(
    tracker: trackware.Tracker,
) -> None:
    sig = blinker.Namespace().signal("s")
    tracker.bridge(sig, "login", properties={"method": "sso"}, sender="web")
    sig.send("web")
    sig.send("cli")
    exporter = tracker.destinations[0].exporter
    assert isinstance(exporter, InMemoryExporter)
    assert tracker.flush(5)
    assert [e.properties for e in exporter.events] == [{"method": "sso"}]


def test_a_failing_bridge_never_breaks_the_apps_signal(
    tracker: trackware.Tracker,
) -> None:
    """A raising properties callable is counted; the app's other receivers run."""
    sig = blinker.Namespace().signal("s")
    app_receiver = Recorder()
    sig.connect(app_receiver)

    def bad(sender: t.Any, **kw: t.Any) -> dict[str, t.Any]:
        raise KeyError("total")

    tracker.bridge(sig, "order", properties=bad)
    sig.send("x")  # must not raise
    assert len(app_receiver.calls) == 1
    assert tracker.stats()["dropped"] == {"hook_error": 1}
    # Invalid properties are dropped and counted too, never raised.
    tracker.bridge(sig, "order2", properties=lambda s, **kw: {"x": object()})
    sig.send("x")
    assert tracker.stats()["dropped"] == {"hook_error": 2, "invalid": 1}


def test_module_bridge_follows_the_current_tracker() -> None:
    sig = blinker.Namespace().signal("s")
    first = trackware.Tracker([InMemoryExporter()], dead_letter=None)
    second = trackware.Tracker([InMemoryExporter()], dead_letter=None)
    handle = trackware.bridge(sig, "ping")
    try:
        trackware.set_tracker(first)
        sig.send()
        trackware.set_tracker(second)
        sig.send()
    finally:
        handle.disconnect()
    assert first.stats()["tracked"] == 1 and second.stats()["tracked"] == 1
    first.shutdown(timeout=1)
    second.shutdown(timeout=1)


def test_shutdown_disconnects_a_trackers_bridges() -> None:
    sig = blinker.Namespace().signal("s")
    tracker = trackware.Tracker([InMemoryExporter()], dead_letter=None)
    tracker.bridge(sig, "ping")
    assert bool(sig.receivers)
    tracker.shutdown(timeout=1)
    assert not sig.receivers


def test_bridge_refuses_what_is_not_a_signal(tracker: trackware.Tracker) -> None:
    with pytest.raises(trackware.ConfigurationError, match="blinker signal"):
        tracker.bridge(object(), "x")  # type: ignore[arg-type]
    with pytest.raises(trackware.ConfigurationError, match="event name"):
        tracker.bridge(blinker.Namespace().signal("s"), "")
