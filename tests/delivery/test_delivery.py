"""Delivery engine: batching, accounting, retries, faults, isolation, queue policies."""

from __future__ import annotations

import threading
import time
import typing as t

import pytest
from _support import Sink, free_port

import trackware
from trackware import MemoryDeadLetter, RetryPolicy
from trackware.exporters import HTTPExporter
from trackware.testing import InMemoryExporter

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, max_attempts=5)


def settled(dest: dict[str, t.Any]) -> int:
    return (
        dest["sent"]
        + dest["rejected"]
        + dest["failed"]
        + sum(dest["dropped"].values())
        + dest["queue_depth"]
        + dest["in_flight"]
    )


def quiet(request: t.Any, client_address: t.Any) -> None:
    """A server error handler for sinks whose client hangs up on purpose."""


@pytest.fixture
def dead() -> MemoryDeadLetter:
    return MemoryDeadLetter()


def make(
    url: str, dead: MemoryDeadLetter, retry: RetryPolicy = FAST, **kw: t.Any
) -> trackware.Tracker:
    options: dict[str, t.Any] = {"flush_interval": 0.05}
    options.update(kw)
    timeout = options.pop("timeout", 5.0)
    return trackware.Tracker(
        [HTTPExporter(url, timeout=timeout)], dead_letter=dead, retry=retry, **options
    )


@pytest.mark.slow
def test_eight_threads_deliver_exactly_80000_distinct_ids(
    sink: Sink, dead: MemoryDeadLetter
) -> None:
    """8 threads x 10,000 events reach a real HTTP server exactly once each."""
    tracker = make(sink.url, dead, max_queue_size=100_000, max_queue_bytes=1 << 28)

    def work(n: int) -> None:
        for i in range(10_000):
            tracker.track("load.test", {"thread": n, "i": i})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert tracker.flush(timeout=60)
    assert len(sink.ids) == 80_000
    assert len(set(sink.ids)) == 80_000
    stats = tracker.stats()
    assert stats["tracked"] == 80_000
    dest = stats["destinations"]["http"]
    assert dest["sent"] == 80_000 and dest["enqueued"] == 80_000
    assert settled(dest) == 80_000
    tracker.shutdown()


def test_batches_respect_max_batch_size(sink: Sink, dead: MemoryDeadLetter) -> None:
    """No request carries more events than max_batch_size."""
    tracker = make(sink.url, dead, max_batch_size=7)
    for i in range(50):
        tracker.track("e", {"i": i})
    assert tracker.flush(10)
    assert all(len(b["events"]) <= 7 for b in sink.bodies)
    assert sorted(len(b["events"]) for b in sink.bodies)[-1] == 7
    assert len(sink.ids) == 50
    tracker.shutdown()


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried_then_delivered(
    sink: Sink, dead: MemoryDeadLetter, status: int
) -> None:
    """5xx answers are retried and the events arrive once the server recovers."""
    sink.script.extend([status, status])
    tracker = make(sink.url, dead)
    events = [tracker.track("e", {"i": i}) for i in range(10)]
    assert tracker.flush(10)
    assert sorted(sink.ids) == sorted(e.event_id for e in events if e)
    dest = tracker.stats()["destinations"]["http"]
    assert dest["sent"] == 10 and dest["retried"] == 20 and dest["rejected"] == 0
    assert sink.requests == 3
    assert not dead.records
    tracker.shutdown()


def test_429_retry_after_is_a_floor(sink: Sink, dead: MemoryDeadLetter) -> None:
    """A 429 with Retry-After: 1 is retried no sooner than the vendor asked."""
    sink.script.append((429, {"Retry-After": "1"}))
    tracker = make(sink.url, dead)
    tracker.track("e")
    assert tracker.flush(10)
    assert len(sink.ids) == 1 and sink.requests == 2
    assert sink.times[1] - sink.times[0] >= 0.95
    tracker.shutdown()


def test_ratelimit_reset_is_a_floor(sink: Sink, dead: MemoryDeadLetter) -> None:
    """A 429 with RateLimit-Reset (seconds) is honoured like Retry-After."""
    sink.script.append((429, {"RateLimit-Reset": "1", "RateLimit-Remaining": "0"}))
    tracker = make(sink.url, dead)
    tracker.track("e")
    assert tracker.flush(10)
    assert sink.requests == 2
    assert sink.times[1] - sink.times[0] >= 0.95
    tracker.shutdown()


def test_400_is_rejected_dead_lettered_with_body_not_retried(
    sink: Sink, dead: MemoryDeadLetter
) -> None:
    """A 400 is final: dead-lettered with the vendor's body, never retried."""
    sink.script.append(400)
    tracker = make(sink.url, dead)
    for i in range(3):
        tracker.track("e", {"i": i})
    assert tracker.flush(10)
    assert sink.requests == 1 and sink.ids == []
    dest = tracker.stats()["destinations"]["http"]
    assert dest["rejected"] == 3 and dest["retried"] == 0 and dest["dead_lettered"] == 3
    records = dead.read()
    assert len(records) == 3
    assert records[0]["status"] == 400
    assert "scripted 400" in records[0]["response"]
    assert records[0]["destination"] == "http"
    assert settled(dest) == 3
    tracker.shutdown()


def test_connection_refused_is_retried_until_the_server_is_up(
    dead: MemoryDeadLetter,
) -> None:
    """Events wait through connection refusals and arrive once a server listens."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/events"
    policy = RetryPolicy(base_delay=0.01, max_delay=0.05, open_for=0.05)
    tracker = make(url, dead, retry=policy)
    events = [tracker.track("e", {"i": i}) for i in range(5)]
    assert tracker.flush(0.5) is False
    dest = tracker.stats()["destinations"]["http"]
    assert dest["retried"] > 0 and "connection" in (dest["last_error"] or "")
    assert settled(dest) == 5
    server = Sink(port)
    try:
        assert tracker.flush(10)
        assert sorted(server.ids) == sorted(e.event_id for e in events if e)
    finally:
        server.stop()
        tracker.shutdown()


def test_read_timeout_is_retried(sink: Sink, dead: MemoryDeadLetter) -> None:
    """A response slower than the timeout is retried; every event arrives."""
    sink.script.append(("sleep", 1.0))
    tracker = make(sink.url, dead, timeout=0.2)
    events = [tracker.track("e", {"i": i}) for i in range(4)]
    assert tracker.flush(10)
    assert set(sink.ids) >= {e.event_id for e in events if e}
    dest = tracker.stats()["destinations"]["http"]
    assert dest["retried"] == 4 and "timeout" in (dest["last_error"] or "")
    tracker.shutdown()


@pytest.mark.parametrize("action", ["drop", "partial"])
def test_connection_closed_mid_response_is_retried(
    sink: Sink, dead: MemoryDeadLetter, action: str
) -> None:
    """A connection closed before (or in the middle of) the response is retried."""
    sink.script.append(action)
    tracker = make(sink.url, dead)
    events = [tracker.track("e", {"i": i}) for i in range(3)]
    assert tracker.flush(10)
    assert sorted(sink.ids) == sorted(e.event_id for e in events if e)
    assert tracker.stats()["destinations"]["http"]["retried"] == 3
    tracker.shutdown()


def test_retries_exhausted_go_to_the_dead_letter(
    sink: Sink, dead: MemoryDeadLetter
) -> None:
    """After max_attempts the batch is dead-lettered with the vendor's last answer."""
    sink.default_status = 503
    policy = RetryPolicy(
        base_delay=0.01, max_delay=0.02, max_attempts=3, failure_threshold=100
    )
    tracker = make(sink.url, dead, retry=policy)
    tracker.track("e")
    tracker.track("e")
    assert tracker.flush(10)
    dest = tracker.stats()["destinations"]["http"]
    assert dest["failed"] == 2 and dest["dead_lettered"] == 2
    assert sink.requests == 3
    record = dead.read()[0]
    assert record["reason"].startswith("retries_exhausted")
    assert record["status"] == 503 and "scripted 503" in record["response"]
    assert record["attempts"] == 3
    tracker.shutdown()


def test_circuit_opens_keeps_events_queued_and_recovers(
    sink: Sink, dead: MemoryDeadLetter
) -> None:
    """An open circuit stops sending but keeps events; they flow after recovery."""
    sink.default_status = 503
    policy = RetryPolicy(
        base_delay=0.01,
        max_delay=0.02,
        max_attempts=None,
        failure_threshold=2,
        open_for=0.2,
        max_open_for=0.4,
    )
    tracker = make(sink.url, dead, retry=policy)
    first = [tracker.track("e", {"i": i}) for i in range(5)]
    assert tracker.flush(1.0) is False
    more = [tracker.track("e", {"i": i}) for i in range(5, 10)]
    dest = tracker.stats()["destinations"]["http"]
    assert dest["circuit"] in ("open", "half_open")
    assert dest["dropped"] == {} and dest["failed"] == 0
    assert settled(dest) == 10
    sink.default_status = 200
    assert tracker.flush(10)
    assert sorted(sink.ids) == sorted(e.event_id for e in first + more if e)
    assert tracker.stats()["destinations"]["http"]["circuit"] == "closed"
    tracker.shutdown()


def test_failing_destination_does_not_delay_a_healthy_one(
    sink: Sink, dead: MemoryDeadLetter
) -> None:
    """While one destination hangs on a slow vendor, the other delivers."""
    slow = Sink()
    slow.server.handle_error = quiet  # type: ignore[method-assign]
    slow.script.extend([("sleep", 3.0)] * 3)
    try:
        tracker = trackware.Tracker(
            [
                HTTPExporter(slow.url, name="slow", timeout=10.0),
                HTTPExporter(sink.url, name="healthy"),
            ],
            dead_letter=dead,
            retry=FAST,
            flush_interval=0.05,
        )
        events = [tracker.track("e", {"i": i}) for i in range(20)]
        assert slow.wait_requests(1, timeout=10)  # the slow vendor is now hanging
        assert tracker.flush(10, destinations=["healthy"])
        # The slow vendor still holds its batch: isolation, not luck.
        stats = tracker.stats()["destinations"]
        assert stats["slow"]["sent"] == 0 and stats["slow"]["in_flight"] > 0
        assert stats["healthy"]["sent"] == 20
        assert sorted(sink.ids) == sorted(e.event_id for e in events if e)
        tracker.shutdown(timeout=0.1)
    finally:
        slow.stop()


def test_drop_oldest_keeps_the_newest(dead: MemoryDeadLetter) -> None:
    """With drop_oldest, a full queue evicts the oldest events and counts them."""
    port = free_port()
    tracker = trackware.Tracker(
        [HTTPExporter(f"http://127.0.0.1:{port}/x")],
        max_queue_size=10,
        flush_interval=60,
        max_batch_size=1000,
        dead_letter=dead,
    )
    events = [tracker.track("e", {"i": i}) for i in range(25)]
    dest = tracker.stats()["destinations"]["http"]
    assert dest["dropped"]["queue_full"] == 15
    assert dest["queue_depth"] == 10
    kept = [e.event_id for e in events[-10:] if e]
    queue = tracker.destinations[0].queue
    assert [ev.event_id for ev in list(queue._items)] == kept  # type: ignore[attr-defined]
    assert settled(dest) == 25
    tracker.shutdown(timeout=0)


def test_drop_newest_refuses_new_events(dead: MemoryDeadLetter) -> None:
    """With drop_newest, the queue keeps its first events and counts the rest."""
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        max_queue_size=5,
        flush_interval=60,
        queue_full_policy="drop_newest",
        dead_letter=dead,
    )
    tracker.destinations[0]._start = lambda: None  # type: ignore[method-assign]
    events = [tracker.track("e", {"i": i}) for i in range(8)]
    dest = tracker.stats()["destinations"]["memory"]
    assert dest["dropped"] == {"queue_full": 3} and dest["queue_depth"] == 5
    queue = tracker.destinations[0].queue
    firsts = [e.event_id for e in events[:5] if e]
    assert [ev.event_id for ev in list(queue._items)] == firsts  # type: ignore[attr-defined]
    assert settled(dest) == 8
    tracker.shutdown(timeout=0)


def test_block_policy_waits_for_space(dead: MemoryDeadLetter) -> None:
    """With block, track() waits for the worker to make room instead of dropping."""
    exporter = InMemoryExporter(max_batch_size=2)
    tracker = trackware.Tracker(
        [exporter],
        max_queue_size=2,
        flush_interval=0.0,
        queue_full_policy="block",
        block_timeout=5.0,
        dead_letter=dead,
    )
    for i in range(200):
        tracker.track("e", {"i": i})
    assert tracker.flush(10)
    dest = tracker.stats()["destinations"]["memory"]
    assert dest["dropped"] == {} and dest["sent"] == 200
    assert len(exporter.events) == 200
    tracker.shutdown()


def test_byte_bound_limits_the_queue(dead: MemoryDeadLetter) -> None:
    """The queue's byte bound drops events even when the count bound is not hit."""
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        max_queue_size=1000,
        max_queue_bytes=20_000,
        flush_interval=60,
        dead_letter=dead,
    )
    tracker.destinations[0]._start = lambda: None  # type: ignore[method-assign]
    for i in range(100):
        tracker.track("e", {"blob": "x" * 1000, "i": i})
    dest = tracker.stats()["destinations"]["memory"]
    assert dest["queue_bytes"] <= 20_000
    assert dest["dropped"]["queue_full"] > 0
    assert settled(dest) == 100
    tracker.shutdown(timeout=0)


def test_an_event_larger_than_the_queue_drops_only_itself(
    dead: MemoryDeadLetter,
) -> None:
    """An oversized event is refused; it does not evict the queue to make room."""
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        max_queue_bytes=5_000,
        flush_interval=60,
        dead_letter=dead,
    )
    tracker.destinations[0]._start = lambda: None  # type: ignore[method-assign]
    small = [tracker.track("e", {"i": i}) for i in range(10)]
    tracker.track("huge", {"blob": "x" * 10_000})
    dest = tracker.stats()["destinations"]["memory"]
    assert dest["dropped"] == {"queue_full": 1} and dest["queue_depth"] == 10
    queue = tracker.destinations[0].queue
    assert [ev.event_id for ev in list(queue._items)] == [  # type: ignore[attr-defined]
        e.event_id for e in small if e
    ]
    assert settled(dest) == 11
    tracker.shutdown(timeout=0)


def test_flush_covers_only_events_queued_before_the_call(
    sink: Sink, dead: MemoryDeadLetter
) -> None:
    """flush() returns True as soon as earlier events settle."""
    tracker = make(sink.url, dead)
    early = tracker.track("early")
    assert tracker.flush(10)
    assert early is not None and early.event_id in sink.ids
    tracker.shutdown()


def test_shutdown_dead_letters_what_cannot_be_delivered(
    dead: MemoryDeadLetter,
) -> None:
    """Events still queued when the shutdown budget ends are kept, not lost."""
    port = free_port()
    policy = RetryPolicy(base_delay=5, max_delay=5)
    tracker = make(f"http://127.0.0.1:{port}/x", dead, retry=policy)
    for i in range(30):
        tracker.track("e", {"i": i})
    assert tracker.shutdown(timeout=0.5) is False
    dest = tracker.stats()["destinations"]["http"]
    assert dest["queue_depth"] == 0 and dest["in_flight"] == 0
    assert dest["dropped"]["shutdown"] == 30
    assert len(dead.records) == 30
    assert all(r.reason.startswith("shutdown") for r in dead.records)
    assert settled(dest) == 30
    assert tracker.track("late") is None
    assert tracker.stats()["dropped"]["shutdown"] == 1
    assert tracker.shutdown() is True  # idempotent


def test_exporter_exception_is_retried_not_raised(dead: MemoryDeadLetter) -> None:
    """An exporter that raises is treated as a retryable failure."""
    calls: list[int] = []

    class Flaky(InMemoryExporter):
        def export(
            self, events: t.Sequence[trackware.Event], /
        ) -> trackware.ExportResult:
            calls.append(len(events))
            if len(calls) == 1:
                raise RuntimeError("boom")
            return super().export(events)

    exporter = Flaky()
    tracker = trackware.Tracker(
        [exporter], dead_letter=dead, retry=FAST, flush_interval=0.01
    )
    tracker.track("e")
    assert tracker.flush(10)
    assert len(exporter.events) == 1 and len(calls) == 2
    tracker.shutdown()


def test_tls_verification_cannot_be_disabled() -> None:
    """verify=False is refused with a ConfigurationError naming the fix."""
    with pytest.raises(trackware.ConfigurationError, match="CA bundle"):
        HTTPExporter("https://example.com/x", verify=False)


@pytest.mark.parametrize("failure", ["503", "refused"])
def test_failing_destination_does_not_hold_back_a_healthy_one(
    sink: Sink, dead: MemoryDeadLetter, failure: str
) -> None:
    """One vendor failing (5xx or refusing connections) while the other delivers."""
    down = Sink() if failure == "503" else None
    if down is not None:
        down.default_status = 503
        down_url = down.url
    else:
        down_url = f"http://127.0.0.1:{free_port()}/events"
    policy = RetryPolicy(base_delay=0.05, max_delay=0.2, max_attempts=None)
    try:
        tracker = trackware.Tracker(
            [
                HTTPExporter(down_url, name="down", timeout=5.0),
                HTTPExporter(sink.url, name="up"),
            ],
            dead_letter=dead,
            retry=policy,
            flush_interval=0.05,
        )
        events = [tracker.track("e", {"i": i}) for i in range(20)]
        assert tracker.flush(10, destinations=["up"])
        assert sorted(sink.ids) == sorted(e.event_id for e in events if e)
        stats = tracker.stats()["destinations"]
        assert stats["up"]["sent"] == 20 and stats["up"]["retried"] == 0
        assert stats["down"]["sent"] == 0
        assert stats["down"]["queue_depth"] + stats["down"]["in_flight"] == 20
        assert settled(stats["down"]) == 20
        assert tracker.flush(0.2, destinations=["down"]) is False
        # The down destination keeps retrying (waited for, not timed: a
        # loaded machine may take longer than the flush above to get there).
        deadline = time.monotonic() + 30
        while not tracker.stats()["destinations"]["down"]["retried"]:
            assert time.monotonic() < deadline, "the down destination never retried"
            time.sleep(0.01)
        assert tracker.stats()["destinations"]["down"]["retried"] > 0
        tracker.shutdown(timeout=0.1)
        # A request still under way at the deadline settles right after it.
        worker = tracker.destinations[0]._thread
        assert worker is not None
        worker.join(10)
        final = tracker.stats()["destinations"]["down"]
        assert final["dropped"] == {"shutdown": 20} and len(dead.records) == 20
    finally:
        if down is not None:
            down.stop()


def test_event_ids_are_stable_across_retries_and_dead_letters(
    sink: Sink, dead: MemoryDeadLetter
) -> None:
    """Every attempt and the dead letter carry the event_id track() returned."""
    attempts: list[list[str]] = []

    def on_failed(sender: t.Any, /, **kw: t.Any) -> None:
        attempts.append([e.event_id for e in kw["events"]])

    sink.script.extend([503, 502, 400])
    tracker = make(sink.url, dead)
    trackware.signals.export_failed.connect(on_failed, sender=tracker)
    try:
        events = [tracker.track("e", {"i": i}) for i in range(3)]
        ids = [e.event_id for e in events if e]
        assert tracker.flush(10)
    finally:
        trackware.signals.export_failed.disconnect(on_failed)
    assert attempts == [ids, ids, ids]
    assert [r["event"]["event_id"] for r in dead.read()] == ids
    assert [r.event.event_id for r in dead.records] == ids
    tracker.shutdown()


def test_shutdown_takes_over_a_hung_request(dead: MemoryDeadLetter) -> None:
    """A batch stuck in a slow request at shutdown is dead-lettered and counted
    once, even when the request completes afterwards."""
    slow = Sink()
    slow.server.handle_error = quiet  # type: ignore[method-assign]
    slow.script.append(("sleep", 1.0))
    try:
        tracker = make(slow.url, dead, timeout=10.0)
        events = [tracker.track("e", {"i": i}) for i in range(5)]
        assert slow.wait_requests(1, timeout=10)
        assert tracker.shutdown(timeout=0.2) is False
        dest = tracker.stats()["destinations"]["http"]
        assert dest["dropped"] == {"shutdown": 5} and dest["in_flight"] == 0
        assert settled(dest) == 5
        assert [r.event.event_id for r in dead.records] == [
            e.event_id for e in events if e
        ]
        assert "in flight" in dead.records[0].reason
        worker = tracker.destinations[0]._thread
        assert worker is not None
        worker.join(10)  # the request completed; nothing is counted twice
        after = tracker.stats()["destinations"]["http"]
        assert after["sent"] == 0 and after["dropped"] == {"shutdown": 5}
        assert settled(after) == 5 and len(dead.records) == 5
    finally:
        slow.stop()
