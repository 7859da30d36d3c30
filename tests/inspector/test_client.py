"""The in-app inspector client against a real sidecar and real vendor emulators
(real sockets throughout): what it sends, what it never sends, and that a
stopped, hung or refusing inspector costs the app nothing but counted drops."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import typing as t

import pytest
from _support import Sink, free_port, wait_for

import trackware
from trackware import _inspect, _tap, signals
from trackware.exporters import HTTPExporter
from trackware.exporters.synerise import SyneriseExporter
from trackware.inspector import InspectorServer

FAST = trackware.RetryPolicy(base_delay=0.01, max_delay=0.05, open_for=0.1)


@pytest.fixture
def inspector() -> t.Iterator[InspectorServer]:
    with InspectorServer(port=0) as server:
        yield server


def synerise(url: str, **options: t.Any) -> SyneriseExporter:
    options.setdefault("retry", FAST)
    return SyneriseExporter(
        api_key="test-synerise-api-key",
        base_url=url,
        tracker_key="test-tracker-key-0001",
        actions={"user.logged_in": "user.login"},
        **options,
    )


def outcome(server: InspectorServer, event_id: str, dest: str) -> str | None:
    event = server.state.event(event_id)
    if event is None or dest not in event["outcomes"]:
        return None
    return t.cast("str | None", event["outcomes"][dest]["outcome"])


@pytest.fixture
def make() -> t.Iterator[t.Callable[..., tuple[trackware.Tracker, t.Any]]]:
    made: list[tuple[trackware.Tracker, t.Any]] = []

    def build(
        exporters: list[t.Any], url: str, **options: t.Any
    ) -> tuple[trackware.Tracker, t.Any]:
        client_options = options.pop("client", {})
        options.setdefault("flush_interval", 0.02)
        tracker = trackware.Tracker(
            exporters, retry=FAST, register_atexit=False, **options
        )
        client = _inspect.InspectorClient(tracker, url, **client_options)
        client.start()
        made.append((tracker, client))
        return tracker, client

    yield build
    for tracker, client in made:
        client.close(time.monotonic() + 2)
        tracker.shutdown(timeout=2)


def test_the_event_the_body_as_sent_and_each_outcome_reach_the_inspector(
    emulator: t.Any, inspector: InspectorServer, sink: Sink
) -> None:
    only_orders = HTTPExporter(sink.url, name="orders", events=["order.placed"])
    tracker = trackware.Tracker(
        [synerise(emulator.url), only_orders],
        flush_interval=0.02,
        retry=FAST,
        register_atexit=False,
        filters={"orders": lambda e: e.properties.get("keep", True)},
    )
    client = _inspect.attach(tracker, inspector.url)
    try:
        login = tracker.track("user.logged_in", {"method": "password"}, user_id="c-42")
        skipped = tracker.track("order.placed", {"keep": False}, user_id="c-42")
        assert login is not None and skipped is not None
        assert tracker.flush(10)
        wait_for(lambda: outcome(inspector, login.event_id, "synerise") == "sent")
        event = inspector.state.event(login.event_id)
        assert event is not None
        assert event["name"] == "user.logged_in" and event["user_id"] == "c-42"
        assert event["pid"] == os.getpid()
        assert event["data"]["properties"] == {"method": "password"}
        assert event["outcomes"]["orders"]["outcome"] == "not_applicable"
        # The body exactly as the vendor received it, and its answer.
        batch = emulator.recorded("synerise.batch")[-1]
        exchanges = event["outcomes"]["synerise"]["exchanges"]
        assert [x["request_body"] for x in exchanges] == [batch.body.decode()]
        assert exchanges[0]["status"] == batch.status
        assert outcome(inspector, skipped.event_id, "orders") == "filtered"
        listed = {e["event_id"]: e for e in inspector.state.list_events()}
        assert listed[login.event_id]["outcomes"]["synerise"] == "sent"
    finally:
        client.close(time.monotonic() + 2)
        tracker.shutdown(timeout=2)


def test_a_rejection_carries_the_vendors_answer_and_a_retry_its_reason(
    emulator: t.Any, inspector: InspectorServer, make: t.Any
) -> None:
    tracker, _ = make([synerise(emulator.url)], inspector.url)
    emulator.fault("synerise.batch", status=503, headers={"Retry-After": "0"})
    retried = tracker.track("user.logged_in", {"method": "sso"}, user_id="c-1")
    assert tracker.flush(10)
    emulator.fault(
        "synerise.batch", status=400, body={"error": "Bad Request", "rule": "time"}
    )
    refused = tracker.track("user.logged_in", {"method": "otp"}, user_id="c-2")
    assert tracker.flush(10)
    assert retried is not None and refused is not None

    wait_for(lambda: outcome(inspector, refused.event_id, "synerise") == "rejected")
    slot = t.cast(dict, inspector.state.event(refused.event_id))["outcomes"]["synerise"]
    assert slot["status"] == 400
    assert json.loads(slot["exchanges"][0]["response_body"])["rule"] == "time"

    wait_for(lambda: outcome(inspector, retried.event_id, "synerise") == "sent")
    history = t.cast(dict, inspector.state.event(retried.event_id))["outcomes"][
        "synerise"
    ]["history"]
    kinds = [h["outcome"] for h in history]
    assert "retried" in kinds and kinds[-1] == "sent"
    retry = next(h for h in history if h["outcome"] == "retried")
    assert "503" in (retry["reason"] or "") or retry["status"] == 503


def test_nothing_the_exporters_would_redact_reaches_the_inspector(
    emulator: t.Any, inspector: InspectorServer, make: t.Any
) -> None:
    tracker, client = make([synerise(emulator.url)], inspector.url)
    event = tracker.track(
        "user.logged_in",
        {"method": "password", "password": "hunter2-hunter2"},
        user_id="c-42",
    )
    assert event is not None and tracker.flush(10)
    wait_for(lambda: outcome(inspector, event.event_id, "synerise") == "sent")
    client.close(time.monotonic() + 2)  # everything it had is posted
    login = emulator.recorded("synerise.login")[-1]
    reply = login.reply
    issued = reply.get("token") if isinstance(reply, dict) else None
    assert issued, login.reply
    everything = json.dumps(
        {
            "events": [
                inspector.state.event(e["event_id"])
                for e in inspector.state.list_events()
            ],
            "destinations": inspector.state.destinations(),
        }
    )
    assert "hunter2-hunter2" not in everything
    assert "test-synerise-api-key" not in everything
    assert "test-tracker-key-0001" not in everything
    assert issued not in everything
    assert "authorization" not in everything.lower().replace('"[redacted]"', "")


@pytest.mark.parametrize("failure", ["stopped", "hung", "refusing"])
def test_the_app_keeps_serving_whatever_the_inspector_does(
    failure: str, sink: Sink, make: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    """track() never waits for the inspector: the events reach the vendor,
    the copies the inspector could not take are counted drops, one warning."""
    hold: list[socket.socket] = []
    if failure == "stopped":
        server = InspectorServer(port=0).start()
        url = server.url
        server.stop()
    elif failure == "hung":
        # Accepts connections (the kernel's backlog) and never answers.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        hold.append(listener)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    else:
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused
    caplog.set_level(logging.WARNING, logger="trackware")
    tracker, client = make(
        [HTTPExporter(sink.url)],
        url,
        client={"max_buffer": 50, "timeout": 0.5},
        max_queue_size=100_000,
    )
    count = 2_000
    done = threading.Event()

    def app() -> None:
        for i in range(count):
            tracker.track("page", {"i": i})
        done.set()

    thread = threading.Thread(target=app)
    thread.start()
    assert done.wait(60), "track() blocked on the inspector"
    assert tracker.flush(30)
    assert sink.wait_for(count)
    assert len(set(sink.ids)) == count
    wait_for(lambda: client.stats()["failures"] >= 1)
    stats = client.stats()
    assert stats["posted"] == 0
    # At most the buffer (50) and one POST's worth are still held: every
    # other copy is a counted drop.
    assert sum(stats["dropped"].values()) >= count - 2 * 50
    assert stats["buffered"] <= 50
    warnings = [r for r in caplog.records if "inspector at" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    for s in hold:
        s.close()


def test_off_means_no_receiver_and_no_hook(
    sink: Sink, inspector: InspectorServer
) -> None:
    exporter = HTTPExporter(sink.url)
    tracker = trackware.Tracker([exporter], flush_interval=0.02, register_atexit=False)
    try:
        tracker.track("page", {})
        assert tracker.flush(10)
        assert not _tap.active()
        assert exporter.client.event_hooks == {"request": [], "response": []}
        for signal in (
            signals.event_tracked,
            signals.event_dropped,
            signals.batch_exported,
            signals.export_failed,
        ):
            assert not list(signal.receivers_for(tracker))
        client = _inspect.attach(tracker, inspector.url)
        assert exporter.client.event_hooks["response"] == [_tap.response_hook]
        client.close(time.monotonic() + 2)
        assert not _tap.active()
        assert exporter.client.event_hooks == {"request": [], "response": []}
        assert not list(signals.event_tracked.receivers_for(tracker))
    finally:
        tracker.shutdown(timeout=2)


def test_replay_from_the_page_runs_in_the_app_and_reports_back(
    emulator: t.Any, inspector: InspectorServer, make: t.Any
) -> None:
    dead = trackware.MemoryDeadLetter()
    tracker, client = make([synerise(emulator.url)], inspector.url, dead_letter=dead)
    emulator.fault("synerise.batch", status=400, body={"error": "try later"})
    event = tracker.track("user.logged_in", {"method": "sso"}, user_id="c-9")
    assert event is not None and tracker.flush(10)
    wait_for(lambda: outcome(inspector, event.event_id, "synerise") == "rejected")

    def listed() -> list[dict[str, t.Any]]:
        rows = inspector.state.destinations()["destinations"]
        return [x for r in rows if r["name"] == "synerise" for x in r["dead_letters"]]

    letter = wait_for(listed)[0]
    assert letter["event_id"] == event.event_id
    assert letter["process"] == client.process["id"]
    command = inspector.state.queue_replay(
        letter["process"], "synerise", [letter["key"]]
    )
    result = wait_for(
        lambda: (r := inspector.state.result(command)) and "ok" in r and r
    )
    assert result["ok"], result
    assert [o["outcome"] for o in result["report"]["outcomes"]] == ["delivered"]
    wait_for(lambda: outcome(inspector, event.event_id, "synerise") == "replayed")
    assert dead.list() == []
    assert any(
        event.event_id in r.body.decode() for r in emulator.recorded("synerise.batch")
    )
    wait_for(lambda: not listed())


def test_a_forked_child_reports_as_a_process_of_its_own(
    sink: Sink, inspector: InspectorServer, make: t.Any
) -> None:
    tracker, client = make([HTTPExporter(sink.url)], inspector.url)
    tracker.track("page", {"who": "parent"})
    assert tracker.flush(10)
    pid = os.fork()
    if pid == 0:  # the child: track, deliver, post, leave
        code = 1
        try:
            tracker.track("page", {"who": "child"})
            tracker.flush(10)
            client.close(time.monotonic() + 5)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    def by_pid() -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for summary in inspector.state.list_events():
            event = inspector.state.event(summary["event_id"])
            if event and event["data"]:
                who = event["data"]["properties"].get("who")
                out.setdefault(event["pid"], []).append(who)
        return out if len(out) == 2 else {}

    seen = wait_for(by_pid)
    assert seen == {os.getpid(): ["parent"], pid: ["child"]}


def test_drops_and_dead_letters_are_outcomes_too(
    emulator: t.Any, sink: Sink, inspector: InspectorServer, make: t.Any
) -> None:
    """A full queue's drop, a given-up retry (dead-lettered) and an event
    dropped before routing (sampled) all show, with their reasons."""
    held = HTTPExporter(sink.url, name="held", events=["held"])
    gives_up = synerise(
        emulator.url, retry=trackware.RetryPolicy(max_attempts=2, base_delay=0.01)
    )
    tracker, client = make(
        [held, gives_up],
        inspector.url,
        max_queue_size=2,
        sample_rates={"never": 0.0},
    )
    sink.script.extend([("sleep", 2.0)])  # holds the first batch in flight
    first = tracker.track("held", {"n": 0})
    wait_for(lambda: sink.requests >= 1)
    overflow = [tracker.track("held", {"n": n}) for n in range(1, 5)]
    emulator.fault("synerise.batch", status=503, times=None)
    doomed = tracker.track("user.logged_in", {"method": "sso"}, user_id="c-3")
    tracker.track("never", {})
    assert first is not None and doomed is not None
    assert tracker.flush(15)
    dropped = [e for e in overflow if e is not None][:2]  # drop_oldest: the oldest
    for event in dropped:
        wait_for(lambda e=event: outcome(inspector, e.event_id, "held") == "dropped")
        slot = t.cast(dict, inspector.state.event(event.event_id))["outcomes"]["held"]
        assert slot["reason"] == "queue_full"
    wait_for(lambda: outcome(inspector, doomed.event_id, "synerise") == "dead_lettered")
    slot = t.cast(dict, inspector.state.event(doomed.event_id))["outcomes"]["synerise"]
    assert slot["reason"].startswith("retries_exhausted") and slot["status"] == 503

    def sampled() -> int:
        procs = inspector.state.destinations()["processes"]
        return sum(p["dropped"].get("sampled", 0) for p in procs)

    assert wait_for(sampled) == 1


def test_big_batches_and_big_events_reach_the_inspector_whole(
    sink: Sink, inspector: InspectorServer, make: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's body goes to the inspector once, however many events it
    carries, and a POST too large for the sidecar is split: 400 events of
    30 KB (12 MB, gathered for one post: the client wakes once a second
    here) in one batch all arrive, none counted as dropped."""
    monkeypatch.setattr(_inspect, "INTERVAL", 1.0)
    tracker, client = make(
        [HTTPExporter(sink.url, name="sink", max_batch_size=1000)],
        inspector.url,
        flush_interval=0.5,
        max_batch_bytes=16 << 20,
        max_queue_bytes=32 << 20,
        client={"max_buffer": 2_000},
    )
    padding = "x" * 30_000
    events = [tracker.track("page", {"i": i, "pad": padding}) for i in range(400)]
    assert tracker.flush(30)
    assert sink.requests == 1  # one batch, one body
    ids = [e.event_id for e in events if e is not None]
    wait_for(lambda: all(outcome(inspector, i, "sink") == "sent" for i in ids), 30)
    last = t.cast(dict, inspector.state.event(ids[-1]))["outcomes"]["sink"]
    assert len(last["exchanges"]) == 1 and last["exchanges"][0]["status"] == 200
    assert sum(client.stats()["dropped"].values()) == 0


@pytest.mark.parametrize("url", ["not a url", "ftp://127.0.0.1/", "http://h:99999"])
def test_a_bad_inspector_url_turns_it_off_and_never_fails_the_app(
    url: str, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="trackware")
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)], flush_interval=0.02, register_atexit=False
    )
    try:
        client = _inspect.attach(tracker, url)
        assert client.invalid
        assert not list(signals.event_tracked.receivers_for(tracker))
        assert tracker.track("page", {}) is not None and tracker.flush(10)
        assert sink.wait_for(1)
        assert any("it is off" in r.getMessage() for r in caplog.records)
        client.close()
    finally:
        tracker.shutdown(timeout=2)
