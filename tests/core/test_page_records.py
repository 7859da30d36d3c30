"""Page events the integrations record: built and routed by the tracker's intake
thread, in order with everything else, never lost (framework-free: the shared
request engine is driven directly, as the Flask and ASGI integrations drive it).
"""

from __future__ import annotations

import json
import threading
import typing as t

import pytest
from _support import Sink, run_script

import trackware
from trackware import REDACTED
from trackware._validate import check_properties
from trackware.integrations._options import TrackingOptions
from trackware.integrations._request import RequestTracker
from trackware.testing import InMemoryExporter, capture_events

VISITOR = "0123456789abcdef0123456789abcdef"


def make(**kw: t.Any) -> tuple[trackware.Tracker, InMemoryExporter]:
    exporter = InMemoryExporter()
    options: dict[str, t.Any] = {"dead_letter": None, "flush_interval": 60}
    options.update(kw)
    return trackware.Tracker([exporter], register_atexit=False, **options), exporter


def request(
    engine: RequestTracker,
    *,
    path: str = "/offers/7",
    status: int | None = 200,
    route: t.Any = "/offers/<id>",
    endpoint: t.Any = "offers.show",
    blueprint: str | None = "offers",
    referrer: str | None = "https://shop.test/list?q=secret",
    error: BaseException | None = None,
    during: t.Callable[[], None] | None = None,
) -> None:
    """One request through the engine: begin, the view, finish."""
    state = engine.begin(
        "GET",
        path,
        f"tw_vid={engine.cookies.sign('tw_vid', VISITOR)}",
        "Mozilla/5.0",
        referrer=referrer,
    )
    if during is not None:
        during()
    engine.finish(
        state,
        status,
        route=route,
        endpoint=endpoint,
        blueprint=blueprint,
        error=error,
        close=True,
    )


def engine_for(tracker: trackware.Tracker, **kw: t.Any) -> RequestTracker:
    kw.setdefault("cookie_secret", "page-records-test-secret")
    return RequestTracker(TrackingOptions(tracker=tracker, sessions=False, **kw))


def held() -> tuple[trackware.Tracker, InMemoryExporter, RequestTracker]:
    """A tracker whose intake thread is never woken (records wait), its
    exporter and an engine."""
    tracker, mem = make()
    tracker._pages.wake = lambda: None  # type: ignore[method-assign]
    return tracker, mem, engine_for(tracker)


def test_a_recorded_page_is_built_on_the_intake_thread_and_delivered() -> None:
    tracker, mem = make()
    built_on: list[str] = []
    built = threading.Event()
    [original] = tracker._offer_many

    def spy(events: list[trackware.Event]) -> None:
        built_on.append(threading.current_thread().name)
        original(events)
        built.set()

    tracker._offer_many = (spy,)
    engine = engine_for(tracker)
    request(engine)
    # Wait for the build itself (no flush() or stats(): they would build it here).
    assert built.wait(10)
    assert not tracker._pending
    assert built_on == ["trackware-intake"]
    assert tracker.flush(10)
    [event] = mem.events
    assert event.name == "page"
    assert event.anonymous_id == VISITOR
    props = dict(event.properties)
    duration = props.pop("duration")
    assert props == {
        "method": "GET",
        "path": "/offers/7",
        "route": "/offers/<id>",
        "endpoint": "offers.show",
        "blueprint": "offers",
        "status": 200,
        "referrer": "https://shop.test/list",  # never the query string
    }
    assert isinstance(duration, float) and duration >= 0
    # The size estimate stays close to the full computation track() makes.
    full = 96 + len("page") + check_properties(dict(event.properties))
    assert abs(event.size - full) <= full * 0.25
    assert event.context["path"] == "/offers/7"
    tracker.shutdown(1)


def test_every_page_property_is_a_page_key() -> None:
    """Page events skip track()'s per-key redaction pass only because their
    keys are PAGE_KEYS; a key added to a builder must be added there too."""
    from trackware._redact import PAGE_KEYS

    tracker, mem = make()
    engine = engine_for(tracker)
    request(engine, error=KeyError("x"))  # every optional key present
    # The fallback through track() (an odd route value) builds the same keys.
    request(engine, route=("odd",), error=KeyError("x"))
    assert tracker.flush(10)
    fast, slow = mem.events
    assert set(fast.properties) == set(slow.properties) == PAGE_KEYS
    tracker.shutdown(1)


def test_the_intake_thread_builds_without_flush() -> None:
    tracker, mem = make(flush_interval=0.05)
    engine = engine_for(tracker)
    for _ in range(3):
        request(engine)
    assert mem.wait_for(3, timeout=10)  # no flush(): the intake and worker did it
    tracker.shutdown(1)


def test_stats_count_recorded_pages_at_once() -> None:
    tracker, _, engine = held()
    for _ in range(5):
        request(engine)
    assert len(tracker._pending) == 5
    stats = tracker.stats()
    assert stats["tracked"] == 5
    assert stats["destinations"]["memory"]["enqueued"] == 5
    assert not tracker._pending
    tracker.shutdown(1)


def test_events_reach_destinations_in_the_order_they_were_tracked() -> None:
    tracker, mem, engine = held()
    request(engine, during=lambda: tracker.track("in.view"))
    tracker.track("after.first")  # while the page waits: it must follow it
    request(engine, path="/second")
    tracker.track("last")
    assert tracker.flush(10)
    assert mem.names() == ["in.view", "page", "after.first", "page", "last"]
    assert [e.properties.get("path") for e in mem.events if e.name == "page"] == [
        "/offers/7",
        "/second",
    ]
    tracker.shutdown(1)


def test_capture_events_sees_the_page_on_the_request_thread() -> None:
    tracker, _ = make()
    engine = engine_for(tracker)
    with capture_events(tracker) as events:
        request(engine)
        assert events.names() == ["page"]  # no waiting: built synchronously
    assert not tracker._pending
    tracker.shutdown(1)


def test_the_identity_is_the_one_the_request_ended_with() -> None:
    tracker, mem, engine = held()
    scopes: list[trackware.Scope] = []

    def view() -> None:
        trackware.identify("u-1", email="a@b.test")
        scope = trackware.current_scope()
        assert scope is not None
        scopes.append(scope)

    request(engine, during=view)
    scopes[0].user_id = "changed-after-the-request"
    assert tracker.flush(10)
    [event] = mem.events
    assert (event.user_id, event.email) == ("u-1", "a@b.test")
    tracker.shutdown(1)


def test_a_policy_that_redacts_a_page_key_takes_track() -> None:
    tracker, mem = make(redact_keys=["path", "password"])
    assert not tracker.pages_deferred
    engine = engine_for(tracker)
    request(engine, path="/reset/s3cret")
    assert not tracker._pending
    assert tracker.flush(10)
    [event] = mem.events
    assert event.properties["path"] == REDACTED
    assert event.properties["method"] == "GET"
    tracker.shutdown(1)


def test_hooks_and_sampling_run_on_the_request_thread() -> None:
    seen: list[str] = []

    def hook(event: trackware.Event) -> trackware.Event:
        seen.append(threading.current_thread().name)
        return event

    tracker, mem = make(before_send=hook)
    assert not tracker.pages_deferred
    request(engine_for(tracker))
    assert seen == [threading.current_thread().name]
    sampled, _ = make(sample_rates={"page": 0.0})
    assert not sampled.pages_deferred
    request(engine_for(sampled))
    assert sampled.stats()["dropped"] == {"sampled": 1}
    for tr in (tracker, sampled):
        tr.shutdown(1)


def test_odd_values_are_validated_by_track() -> None:
    class Route:
        pass

    tracker, mem = make()
    request(engine_for(tracker), route=Route(), endpoint=None, blueprint=None)
    assert tracker.flush(10)
    assert mem.events == []  # track() refused it, with a counted reason
    assert tracker.stats()["dropped"] == {"invalid": 1}
    request(engine_for(tracker), route=None, endpoint=None, blueprint=None)
    assert tracker.flush(10)
    assert mem.events[0].properties["route"] is None
    tracker.shutdown(1)


def test_errors_and_a_missing_status_are_recorded() -> None:
    tracker, mem = make()
    request(engine_for(tracker), status=None, error=KeyError("x"))
    assert tracker.flush(10)
    [event] = mem.events
    assert event.properties["status"] == 500
    assert event.properties["error"] == "KeyError"
    tracker.shutdown(1)


def test_shutdown_delivers_waiting_records_and_counts_later_ones() -> None:
    tracker, mem, engine = held()
    for _ in range(3):
        request(engine)
    assert len(tracker._pending) == 3
    assert tracker.shutdown(5)
    assert mem.names() == ["page"] * 3
    request(engine)
    assert not tracker._pending
    assert tracker.stats()["dropped"] == {"shutdown": 1}


def test_the_waiting_records_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import trackware._intake as intake

    monkeypatch.setattr(intake, "PENDING_MAX", 10)
    tracker, mem, engine = held()
    most = 0
    for _ in range(95):
        request(engine)
        most = max(most, len(tracker._pending))
    assert most == 10  # caught up on the recording thread, never beyond
    assert tracker.flush(10)
    assert len(mem.events) == 95 == tracker.stats()["tracked"]
    tracker.shutdown(1)


class _Record:
    """A minimal :class:`trackware._intake.PageRecord`."""

    def __init__(self, build: t.Callable[[], trackware.Event | None]) -> None:
        self.build = build


def test_record_page_builds_a_typed_record_on_the_intake_thread() -> None:
    tracker, mem = make()
    built_on: list[str] = []
    built = threading.Event()

    def build() -> trackware.Event:
        built_on.append(threading.current_thread().name)
        built.set()
        return trackware.Event("viewed", {"path": "/x"})

    assert tracker.pages_deferred
    tracker.record_page(_Record(build))
    assert built.wait(10)  # no flush(): it would build the record here
    assert tracker.flush(10)
    assert built_on == ["trackware-intake"]
    assert mem.names() == ["viewed"]
    assert tracker.stats()["tracked"] == 1
    tracker.record_page(_Record(lambda: None))  # tracked through track() itself
    assert tracker.flush(10)
    assert tracker.stats()["tracked"] == 1
    tracker.shutdown(1)


def test_a_failing_typed_record_is_counted_not_raised() -> None:
    tracker, mem = make()

    def broken() -> trackware.Event:
        raise RuntimeError("boom")

    tracker.record_page(_Record(broken))
    assert tracker.flush(10)
    assert tracker.stats()["dropped"] == {"internal_error": 1}
    assert mem.events == []
    tracker.shutdown(1)


_SCRIPT_HEAD = """
    import json, os, sys
    import trackware
    from trackware.exporters import HTTPExporter
    from trackware.integrations._options import TrackingOptions
    from trackware.integrations._request import RequestTracker

    tracker = trackware.Tracker(
        [HTTPExporter(sys.argv[1])], flush_interval=0.05, dead_letter=None
    )
    tracker._pages.wake = lambda: None  # records wait: the worst case
    engine = RequestTracker(
        TrackingOptions(tracker=tracker, sessions=False, cookie_secret="test-secret")
    )

    def page(path):
        state = engine.begin("GET", path, None, None)
        engine.finish(state, 200, route=None, endpoint=None, close=True)
"""


@pytest.mark.slow
def test_records_waiting_at_exit_are_delivered(sink: Sink) -> None:
    proc = run_script(
        _SCRIPT_HEAD
        + """
    for i in range(500):
        page(f"/p/{i}")
    assert len(tracker._pending) == 500
    """,
        sink.url,
    )
    assert proc.returncode == 0, proc.stderr
    assert sink.wait_for(500, timeout=30)
    assert len(sink.ids) == 500 == len(set(sink.ids))


@pytest.mark.slow
def test_a_forked_child_does_not_send_the_parents_records(sink: Sink) -> None:
    proc = run_script(
        _SCRIPT_HEAD
        + """
    for i in range(200):
        page(f"/parent/{i}")
    pid = os.fork()
    if pid == 0:
        assert not tracker._pending  # the parent's records stay the parent's
        for i in range(100):
            page(f"/child/{i}")
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert tracker.flush(30)
    print(json.dumps(tracker.stats()["tracked"]))
    """,
        sink.url,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == 200
    assert sink.wait_for(300, timeout=30)
    assert len(sink.ids) == 300 == len(set(sink.ids))
    paths = [body["properties"]["path"] for body in _events(sink)]
    assert sum(p.startswith("/parent/") for p in paths) == 200
    assert sum(p.startswith("/child/") for p in paths) == 100


@pytest.mark.slow
def test_a_record_after_a_fork_reaches_the_childs_fresh_intake() -> None:
    """A tracker not registered for exit is made fresh by its first event
    after a fork: a page recorded then goes to the fresh intake, not lost."""
    proc = run_script(
        """
        import os, sys, trackware
        from trackware.testing import InMemoryExporter

        class Record:
            def build(self):
                return trackware.Event("viewed", {"path": "/child"})

        mem = InMemoryExporter()
        tracker = trackware.Tracker(
            [mem], dead_letter=None, register_atexit=False, flush_interval=0.05
        )
        tracker.track("before.fork")
        assert tracker.flush(10)
        pid = os.fork()
        if pid == 0:
            tracker.record_page(Record())
            ok = tracker.flush(10)
            names = [e.name for e in mem.events]
            os._exit(0 if ok and names == ["before.fork", "viewed"] else 1)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    assert proc.returncode == 0, proc.stderr


def _events(sink: Sink) -> list[dict[str, t.Any]]:
    """What the sink received (HTTPExporter posts ``{"events": [...]}``)."""
    return [event for body in sink.bodies for event in body["events"]]


def test_events_tracked_behind_waiting_records_are_bounded_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import trackware._intake as intake

    monkeypatch.setattr(intake, "PENDING_MAX", 10)
    tracker, mem, engine = held()
    request(engine)  # one record waits: what track() builds queues behind it
    most = 0
    for i in range(100):
        tracker.track("clicked", {"i": i})
        most = max(most, len(tracker._pending))
    assert most == 10
    assert tracker.flush(10)
    assert mem.names() == ["page"] + ["clicked"] * 100
    tracker.shutdown(1)
