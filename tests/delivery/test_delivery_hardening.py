"""Delivery hardening: one bad event never stalls or sinks its destination, and
shutdown() really ends sending.

* An event an exporter cannot encode is rejected alone (never retried); its
  batch-mates are delivered.
* A batch waiting for a retry does not hold back the destination's other
  events, and a batch that keeps failing while other batches succeed is
  retried in halves until the poison event is alone.
* After shutdown() returns nothing more leaves the process, and every event is
  in exactly one outcome (sent or dead-lettered).
"""

from __future__ import annotations

import http.server
import json
import pathlib
import threading
import time
import typing as t
import uuid

import pytest

import trackware
from trackware import MemoryDeadLetter, RetryPolicy
from trackware._event import Event
from trackware.exporters import BaseExporter, HTTPExporter
from trackware.exporters._http import BaseHTTPExporter, HTTPRequest
from trackware.exporters.yotpo import CustomEventExporter
from trackware.testing import InMemoryExporter
from trackware.testing.emulators import EmulatorServer
from trackware.testing.emulators._yotpo import YotpoAPI

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, max_attempts=5)


def wait_until(predicate: t.Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class MarkerSink:
    """A real HTTP server that answers 500 to any request whose body contains
    ``POISON`` (a vendor failing on one event's content) and 200 otherwise,
    recording each answer in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered: list[str] = []  # event ids, in arrival order
        self.answers: list[tuple[int, list[str]]] = []  # (status, event ids)
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: t.Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ids = [e["event_id"] for e in json.loads(body)["events"]]
                status = 500 if b"POISON" in body else 200
                with sink.lock:
                    sink.answers.append((status, ids))
                    if status == 200:
                        sink.delivered.extend(ids)
                out = b'{"ok":true}' if status == 200 else b'{"error":"poison"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}
        )
        self.thread.daemon = True
        self.thread.start()

    def failures(self) -> int:
        with self.lock:
            return sum(1 for status, _ in self.answers if status != 200)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def marker_sink() -> t.Iterator[MarkerSink]:
    server = MarkerSink()
    try:
        yield server
    finally:
        server.stop()


# --- 1a: an event that cannot be encoded costs itself only ----------------------------


class ShopExporter(BaseHTTPExporter):
    """A vendor exporter as an app might write one on BaseHTTPExporter: one
    POST per batch, with a mapping that has bugs for unusual events (an int
    ``sku`` has no ``.upper()``; ``tags`` become a set, which JSON cannot
    carry)."""

    def build_requests(
        self, events: t.Sequence[Event]
    ) -> tuple[list[HTTPRequest], trackware.ExportResult]:
        items = []
        for event in events:
            item = dict(event.to_dict())
            if "sku" in event.properties:
                item["sku"] = event.properties["sku"].upper()
            if "tags" in event.properties:
                item["tags"] = set(event.properties["tags"])
            items.append(item)
        request = HTTPRequest(list(events), "POST", "/events", json={"events": items})
        return [request], trackware.ExportResult()


def test_http_base_rejects_an_event_it_cannot_map_or_encode_and_sends_the_rest(
    sink: t.Any,
) -> None:
    """BaseHTTPExporter maps and encodes a batch before sending: an event whose
    mapping raises, or whose body JSON cannot encode, is rejected alone at once
    (never retried) and its eight batch-mates go out in the same attempt."""
    dead = MemoryDeadLetter()
    base = sink.url.rsplit("/", 1)[0]
    tracker = trackware.Tracker(
        [ShopExporter(base_url=base, name="shop")],
        dead_letter=dead,
        retry=FAST,
        flush_interval=60,  # one batch, sent by flush()
        register_atexit=False,
    )
    good = [tracker.track("e", {"i": i, "sku": "ab"}) for i in range(4)]
    unmappable = tracker.track("e", {"sku": 12})
    good += [tracker.track("e", {"i": i}) for i in range(4, 6)]
    unencodable = tracker.track("e", {"tags": ["a", "b"]})
    good += [tracker.track("e", {"i": i}) for i in range(6, 8)]
    assert unmappable is not None and unencodable is not None
    assert tracker.flush(10)
    assert sorted(sink.ids) == sorted(e.event_id for e in good if e)
    dest = tracker.stats()["destinations"]["shop"]
    assert dest["sent"] == 8 and dest["rejected"] == 2
    assert dest["retried"] == 0 and dest["failed"] == 0
    reasons = {r.event.event_id: r.reason for r in dead.records}
    assert reasons[unmappable.event_id].startswith("mapping error: AttributeError")
    assert reasons[unencodable.event_id].startswith("could not encode: TypeError")
    assert len(reasons) == 2
    tracker.shutdown()


class LegacyFileExporter(BaseExporter):
    """An exporter as an app might write one for a legacy consumer: each batch
    appended to a Latin-1 file as JSON lines. It raises UnicodeEncodeError for
    an event with text Latin-1 has no byte for, as third-party code does."""

    def __init__(self, path: pathlib.Path) -> None:
        super().__init__(name="file", max_batch_size=100)
        self.path = path

    def export(self, events: t.Sequence[Event], /) -> trackware.ExportResult:
        lines = [json.dumps(e.to_dict(), ensure_ascii=False) for e in events]
        data = "".join(line + "\n" for line in lines).encode("latin-1")
        with self.path.open("ab") as f:
            f.write(data)
        return trackware.ExportResult.success(events)


def test_exporter_that_raises_for_one_event_is_bisected(tmp_path: pathlib.Path) -> None:
    """An exporter whose export() raises an encoding error for one event does
    not make its batch retryable: the worker exports the batch in halves, the
    events that export are written, and the one that raises alone is rejected
    and dead-lettered without a retry."""
    dead = MemoryDeadLetter()
    path = tmp_path / "events.jsonl"
    tracker = trackware.Tracker(
        [LegacyFileExporter(path)],
        dead_letter=dead,
        retry=FAST,
        flush_interval=60,
        register_atexit=False,
    )
    good = [tracker.track("e", {"i": i, "text": "café"}) for i in range(7)]
    bad = tracker.track("e", {"text": "snow \u2603"})
    good += [tracker.track("e", {"i": i}) for i in range(7, 12)]
    assert bad is not None
    assert tracker.flush(10)
    text = path.read_text(encoding="latin-1")
    written = [json.loads(line)["event_id"] for line in text.splitlines()]
    assert sorted(written) == sorted(e.event_id for e in good if e)
    dest = tracker.stats()["destinations"]["file"]
    assert dest["sent"] == 12 and dest["rejected"] == 1 and dest["retried"] == 0
    assert [r.event.event_id for r in dead.records] == [bad.event_id]
    reason = dead.records[0].reason
    assert reason.startswith("could not encode: UnicodeEncodeError")
    assert reason.isascii()  # it names the character, escaped
    tracker.shutdown()


def test_an_exporter_failing_for_every_event_is_not_split_forever() -> None:
    """An exception that is not about one event (both halves raise it) keeps the
    batch together and retryable; it is not exported event by event."""
    calls: list[int] = []

    class Down(InMemoryExporter):
        def export(
            self, events: t.Sequence[trackware.Event], /
        ) -> trackware.ExportResult:
            calls.append(len(events))
            if len(calls) <= 3:
                raise ConnectionError("vendor unreachable")
            return super().export(events)

    exporter = Down()
    dead = MemoryDeadLetter()
    tracker = trackware.Tracker(
        [exporter], dead_letter=dead, retry=FAST, flush_interval=60
    )
    for i in range(16):
        tracker.track("e", {"i": i})
    assert tracker.flush(10)
    # The whole batch, then its two halves (both raise: not one event's fault),
    # then the retry of the whole batch.
    assert calls == [16, 8, 8, 16]
    assert len(exporter.events) == 16 and not dead.records
    tracker.shutdown()


# --- 1b: no head-of-line blocking; a poison batch is narrowed down ---------------


def test_a_retrying_batch_does_not_hold_back_other_events_and_the_poison_is_isolated(
    marker_sink: MarkerSink,
) -> None:
    """While the batch holding the poison event waits for its retries, events
    tracked after it are delivered; the poison batch is retried in halves, so in
    the end every good event is delivered and only the poison event is
    dead-lettered."""
    dead = MemoryDeadLetter()
    policy = RetryPolicy(
        base_delay=0.1, max_delay=0.3, max_attempts=12, failure_threshold=5
    )
    tracker = trackware.Tracker(
        [HTTPExporter(marker_sink.url)],
        dead_letter=dead,
        retry=policy,
        flush_interval=0.02,
        register_atexit=False,
    )
    first = [tracker.track("e", {"i": i}) for i in range(4)]
    poison = tracker.track("e", {"note": "POISON"})
    first += [tracker.track("e", {"i": i}) for i in range(4, 8)]
    assert wait_until(lambda: marker_sink.failures() >= 1)
    later = [tracker.track("later", {"i": i}) for i in range(5)]
    later_ids = {e.event_id for e in later if e}
    assert tracker.flush(30)
    good_ids = {e.event_id for e in first + later if e}
    assert poison is not None
    with marker_sink.lock:
        assert sorted(marker_sink.delivered) == sorted(good_ids)
        answers = list(marker_sink.answers)
    # The later events went out between the poison batch's failures: no
    # head-of-line blocking.
    last_failure = max(i for i, (status, _) in enumerate(answers) if status != 200)
    later_at = [
        i for i, (s, ids) in enumerate(answers) if s == 200 and later_ids & set(ids)
    ]
    assert later_at and min(later_at) < last_failure
    # Only the poison event ended in the dead letter, after its retries.
    assert [r.event.event_id for r in dead.records] == [poison.event_id]
    assert dead.records[0].reason.startswith("retries_exhausted")
    assert answers[last_failure][1] == [poison.event_id]
    dest = tracker.stats()["destinations"]["http"]
    assert dest["sent"] == len(good_ids) and dest["failed"] == 1
    assert dest["circuit"] == "closed"
    tracker.shutdown()


def test_a_vendor_down_still_opens_the_circuit_and_bounds_waiting_batches() -> None:
    """With every request failing, new batches stop once the circuit opens, and
    no more than a bounded number of batches wait for a retry; nothing is lost."""
    dead = MemoryDeadLetter()
    policy = RetryPolicy(
        base_delay=5.0, max_delay=5.0, max_attempts=None, failure_threshold=3
    )
    tracker = trackware.Tracker(
        [HTTPExporter("http://127.0.0.1:9/unreachable", timeout=1.0)],
        dead_letter=dead,
        retry=policy,
        flush_interval=0.01,
        max_batch_size=2,
        register_atexit=False,
    )
    for i in range(40):
        tracker.track("e", {"i": i})
    assert wait_until(
        lambda: tracker.stats()["destinations"]["http"]["circuit"] == "open"
    )
    dest = tracker.stats()["destinations"]["http"]
    # Three failed attempts opened the circuit: at most three batches of two
    # wait for a retry; the rest stays queued, nothing is dropped.
    assert 2 <= dest["in_flight"] <= 6
    assert dest["in_flight"] + dest["queue_depth"] == 40
    assert dest["sent"] == 0 and dest["dropped"] == {} and dest["failed"] == 0
    assert tracker.shutdown(timeout=0.2) is False
    final = tracker.stats()["destinations"]["http"]
    assert final["dropped"] == {"shutdown": 40} and len(dead.records) == 40


def test_a_vendor_pause_holds_every_batch_of_the_destination(sink: t.Any) -> None:
    """A 429 with Retry-After pauses the whole destination: events tracked while
    the first batch waits are not sent before the pause is over either."""
    dead = MemoryDeadLetter()
    sink.script.append((429, {"Retry-After": "1"}))
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)],
        dead_letter=dead,
        retry=FAST,
        flush_interval=0.01,
        register_atexit=False,
    )
    first = tracker.track("e")
    assert sink.wait_requests(1)
    later = tracker.track("later")
    assert tracker.flush(10)
    assert first is not None and later is not None
    assert sorted(sink.ids) == sorted([first.event_id, later.event_id])
    # Nothing reached the vendor during the second it asked for.
    assert all(when - sink.times[0] >= 0.95 for when in sink.times[1:])
    assert not dead.records
    tracker.shutdown()


# --- 2: shutdown really ends sending --------------------------------------------------

YOTPO_SECRET = "yotpo-sk-5f4e3d2c1b0a99887766"


@pytest.fixture
def yotpo_store() -> str:
    return f"store-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def yotpo(yotpo_store: str) -> t.Iterator[tuple[EmulatorServer, YotpoAPI]]:
    api = YotpoAPI(stores={yotpo_store: YOTPO_SECRET})
    with EmulatorServer([api]) as server:
        yield server, api


def test_nothing_leaves_after_shutdown_returns_and_each_event_has_one_outcome(
    yotpo: tuple[EmulatorServer, YotpoAPI], yotpo_store: str
) -> None:
    """Yotpo paced at 5 requests/s with a backlog: after shutdown(timeout) returns
    the emulator gets no further request, and every event is either delivered
    or dead-lettered, never both."""
    emu, api = yotpo
    exporter = CustomEventExporter(
        yotpo_store, YOTPO_SECRET, all_events=True, base_url=emu.url
    )
    dead = MemoryDeadLetter()
    tracker = trackware.Tracker(
        [exporter],
        dead_letter=dead,
        retry=FAST,
        flush_interval=0.01,
        register_atexit=False,
    )
    tracked = [tracker.track("e", {"i": i}, user_id="u") for i in range(30)]
    tracked_ids = {e.event_id for e in tracked if e}
    # The worker is in the middle of a batch of 10, pacing its requests.
    assert emu.wait_for(lambda: len(emu.recorded("yotpo.event")) >= 2)
    worker = tracker.destinations[0]._thread
    assert worker is not None
    assert tracker.shutdown(timeout=0.3) is False
    after = len(emu.recorded("yotpo.event"))
    # Nothing more reaches Yotpo: not the rest of the batch, not anything else.
    assert not emu.wait_for(
        lambda: len(emu.recorded("yotpo.event")) > after, timeout=2.0
    )
    worker.join(10)
    assert not worker.is_alive()
    assert len(emu.recorded("yotpo.event")) == after
    delivered = {e["id"] for e in api.events}
    lettered = [r.event.event_id for r in dead.records]
    assert len(lettered) == len(set(lettered))
    assert delivered.isdisjoint(lettered)
    assert delivered | set(lettered) == tracked_ids
    dest = tracker.stats()["destinations"][exporter.name]
    assert dest["sent"] == len(delivered)
    assert dest["dead_lettered"] == len(lettered) == dest["dropped"]["shutdown"]


def test_a_closed_exporter_does_not_build_a_new_client(
    yotpo: tuple[EmulatorServer, YotpoAPI], yotpo_store: str
) -> None:
    """export() on a closed exporter sends nothing and reports a retryable
    failure; it never opens a new (never-closed) HTTP client."""
    emu, api = yotpo
    exporter = CustomEventExporter(
        yotpo_store, YOTPO_SECRET, all_events=True, base_url=emu.url
    )
    first = Event("e", user_id="u")
    assert exporter.export([first]).sent == [first]
    exporter.close()
    before = len(emu.recorded())
    event = Event("e2", user_id="u")
    result = exporter.export([event])
    assert result.retry == [event] and "closed" in (result.error or "")
    assert exporter._client is None
    assert len(emu.recorded()) == before


def test_the_yotpo_limiter_wait_ends_when_the_exporter_closes(
    yotpo: tuple[EmulatorServer, YotpoAPI], yotpo_store: str
) -> None:
    """A worker waiting for a rate-limit token wakes up when close() is called
    and sends nothing more."""
    emu, api = yotpo
    exporter = CustomEventExporter(
        yotpo_store, YOTPO_SECRET, all_events=True, base_url=emu.url, rate_limit=1
    )
    events = [Event("e", {"i": i}, user_id="u") for i in range(5)]
    results: list[trackware.ExportResult] = []
    thread = threading.Thread(target=lambda: results.append(exporter.export(events)))
    thread.start()
    # The first answer is in: the worker now waits a second for its next token.
    assert wait_until(lambda: exporter.last_response is not None)
    exporter.close()
    thread.join(10)
    assert not thread.is_alive()
    sent = len(emu.recorded("yotpo.event"))
    assert sent == 1 and len(results[0].sent) == 1
    assert len(results[0].sent) + len(results[0].retry) == 5
    assert not emu.wait_for(lambda: len(emu.recorded("yotpo.event")) > sent, 1.0)


def test_events_sent_before_a_hung_request_are_not_dead_lettered(
    yotpo: tuple[EmulatorServer, YotpoAPI], yotpo_store: str
) -> None:
    """Shutdown gives up a batch whose request hangs past the deadline: of the
    batch, the events already delivered (one request per event) count as sent,
    not dead-lettered; the one under way is dead-lettered as "in flight", the
    others too, and nothing more is sent after it completes."""
    emu, api = yotpo
    emu.fault("yotpo.event", delay=1.5, times=None)
    exporter = CustomEventExporter(
        yotpo_store, YOTPO_SECRET, all_events=True, base_url=emu.url, timeout=10.0
    )
    dead = MemoryDeadLetter()
    tracker = trackware.Tracker(
        [exporter],
        dead_letter=dead,
        retry=FAST,
        flush_interval=0.01,
        register_atexit=False,
    )
    tracked = [tracker.track("e", {"i": i}, user_id="u") for i in range(10)]
    first = tracked[0]
    assert first is not None
    # The first event is delivered; the second request is now under way.
    assert wait_until(lambda: exporter.last_response is not None)
    assert tracker.shutdown(timeout=0.5) is False
    dest = tracker.stats()["destinations"][exporter.name]
    assert dest["sent"] == 1 and dest["dropped"] == {"shutdown": 9}
    lettered = [r.event.event_id for r in dead.records]
    assert first.event_id not in lettered
    assert sorted(lettered) == sorted(e.event_id for e in tracked[1:] if e)
    assert "in flight" in dead.records[0].reason
    worker = tracker.destinations[0]._thread
    assert worker is not None
    worker.join(10)
    assert not worker.is_alive()
    # The request under way completed; none followed it.
    assert len(emu.recorded("yotpo.event")) == 2
    assert tracker.stats()["destinations"][exporter.name]["sent"] == 1
