"""``trackware worker`` against a real Redis, real worker processes, real HTTP
servers and real SIGKILL/SIGTERM (issue 11, points 3 and 4).

The fleet tests run the worker as ``python -m trackware.worker worker
--config wcfg:make_tracker``: ``wcfg`` (written per test) is the app's own
factory, a Tracker with ``queue="redis://..."``; the app processes use it to
append, the workers to find their exporters (and must not append).

Sizes: CI runs 2 app processes x 5,000 events (the issue's figure is 100,000:
``WORKER_TEST_EVENTS=50000`` per app runs it; measured in
docs/worker.md).
"""

from __future__ import annotations

import collections
import http.server
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import typing as t
import uuid

import pytest
from _support import Sink, wait_for

import trackware
from trackware import _streams
from trackware._stream_consumer import StreamConsumerQueue
from trackware.exporters import HTTPExporter
from trackware.worker import run

if t.TYPE_CHECKING:
    import redis

pytestmark = pytest.mark.slow

CONFIG = """
import os

import trackware
from trackware.exporters import HTTPExporter


def exporters():
    if os.environ["WCFG_KIND"] == "yotpo":
        from trackware.exporters.yotpo import CustomEventExporter

        return [
            CustomEventExporter(
                os.environ["WCFG_STORE"],
                os.environ["WCFG_SECRET"],
                all_events=True,
                base_url=os.environ["WCFG_URL"],
                name="yotpo",
            )
        ]
    return [
        HTTPExporter(
            os.environ["WCFG_URL"],
            name="sink",
            max_batch_size=int(os.environ.get("WCFG_BATCH", "100")),
        )
    ]


def make_tracker():
    # The app's factory: its tracker appends to Redis Streams.
    return trackware.Tracker(
        exporters(),
        queue=os.environ["WCFG_REDIS"],
        redis_namespace=os.environ["WCFG_NS"],
    )
"""

APP = """
import json, sys
import wcfg

n, out = int(sys.argv[1]), sys.argv[2]
tracker = wcfg.make_tracker()
ids = []
for i in range(n):
    event = tracker.track("page_viewed", {"i": i}, user_id=f"u{i % 97}")
    ids.append(event.event_id)
assert tracker.flush(120), tracker.stats()
tracker.shutdown(30)
with open(out, "w") as f:
    json.dump(ids, f)
"""


class Fleet:
    """Worker and app processes of one test (all killed at the end)."""

    def __init__(self, tmp_path: t.Any, redis_url: str, namespace: str) -> None:
        self.dir = tmp_path
        (tmp_path / "wcfg.py").write_text(textwrap.dedent(CONFIG))
        self.redis_url = redis_url
        self.namespace = namespace
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(tmp_path), self.env.get("PYTHONPATH", "")]
        )
        self.env["WCFG_REDIS"] = redis_url
        self.env["WCFG_NS"] = namespace
        self.workers: list[subprocess.Popen[bytes]] = []
        self.apps: list[subprocess.Popen[bytes]] = []

    def worker(self, *options: str) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        log = open(self.dir / f"worker{n}.log", "wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trackware.worker",
                "worker",
                "--config",
                "wcfg:make_tracker",
                "--redis",
                self.redis_url,
                "--namespace",
                self.namespace,
                *options,
            ],
            env=self.env,
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.workers.append(proc)
        return proc

    def log(self, n: int) -> str:
        return (self.dir / f"worker{n}.log").read_text(errors="replace")

    def app(self, n: int) -> tuple[subprocess.Popen[bytes], t.Any]:
        out = self.dir / f"app{len(self.apps)}.json"
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(APP), str(n), str(out)],
            env=self.env,
            cwd=self.dir,
            start_new_session=True,
        )
        self.apps.append(proc)
        return proc, out

    def close(self) -> None:
        for proc in self.workers + self.apps:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def fleet(tmp_path: t.Any, redis_url: str, redis_namespace: str) -> t.Iterator[Fleet]:
    f = Fleet(tmp_path, redis_url, redis_namespace)
    try:
        yield f
    finally:
        f.close()


def consumers(client: redis.Redis, key: str) -> dict[str, int]:
    """Consumer name -> pending entries, in the trackware group of ``key``."""
    try:
        rows = client.xinfo_consumers(key, _streams.GROUP)
    except Exception:
        return {}
    return {r["name"].decode(): int(r["pending"]) for r in rows}


def consumer_of(client: redis.Redis, key: str, pid: int) -> str | None:
    for name in consumers(client, key):
        if name.split(":")[-2] == str(pid):
            return name
    return None


def held_event_ids(client: redis.Redis, key: str, consumer: str) -> set[str]:
    """The event ids of the entries pending with ``consumer``."""
    rows = client.xpending_range(
        key, _streams.GROUP, "-", "+", 1_000_000, consumername=consumer
    )
    ids: set[str] = set()
    for row in rows:
        for _, fields in client.xrange(key, row["message_id"], row["message_id"]):
            ids.add(fields[_streams.ID_FIELD].decode())
    return ids


def pending(client: redis.Redis, key: str) -> int:
    return int(client.xpending(key, _streams.GROUP)["pending"])


# --- the fleet -----------------------------------------------------------------------


def test_three_workers_deliver_two_apps_events_with_one_worker_killed(
    fleet: Fleet, redis_client: redis.Redis, sink: Sink
) -> None:
    """3 workers, events from 2 app processes, one worker SIGKILLed mid-run:
    every event reaches the HTTP server; duplicates only with the same id and
    only for the entries the killed worker held."""
    per_app = int(os.environ.get("WORKER_TEST_EVENTS", "5000"))
    fleet.env.update(WCFG_KIND="sink", WCFG_URL=sink.url, WCFG_BATCH="100")
    key = _streams.stream_key(fleet.namespace, "sink")
    for _ in range(3):
        fleet.worker("--visibility-timeout", "3")
    wait_for(lambda: len(consumers(redis_client, key)) == 3, 60, "3 workers reading")
    apps = [fleet.app(per_app) for _ in range(2)]
    total = 2 * per_app
    victim = fleet.workers[0]
    name = consumer_of(redis_client, key, victim.pid)
    assert name is not None
    # Kill it while it holds entries, with the backlog still being worked off:
    # frozen (SIGSTOP) its pending list cannot change; killed once it holds some.
    wait_for(lambda: len(sink.ids) >= total // 10, 120, "delivery under way")
    deadline = time.monotonic() + 60
    while True:
        os.killpg(victim.pid, signal.SIGSTOP)
        held = held_event_ids(redis_client, key, name)
        if held:
            break
        os.killpg(victim.pid, signal.SIGCONT)
        assert time.monotonic() < deadline, "the victim never held entries"
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    expected: list[str] = []
    for proc, out in apps:
        assert proc.wait(180) == 0
        expected.extend(json.loads(out.read_text()))
    assert len(set(expected)) == total
    wait_for(lambda: set(sink.ids) >= set(expected), 120, "every event delivered")
    wait_for(lambda: pending(redis_client, key) == 0, 30, "nothing pending")
    counts = collections.Counter(sink.ids)
    assert set(counts) == set(expected)  # no event missing, none foreign
    duplicates = {i for i, n in counts.items() if n > 1}
    assert duplicates <= held
    # The killed worker's entries were taken over: its name is gone from the
    # group's pending list.
    assert consumers(redis_client, key).get(name, 0) == 0
    # The workers appended nothing: the stream holds exactly the apps' events.
    assert redis_client.xlen(key) == total
    assert not redis_client.exists(_streams.dead_key(fleet.namespace, "sink"))


def test_killed_worker_entries_are_taken_over_after_the_visibility_timeout(
    fleet: Fleet, redis_client: redis.Redis, sink: Sink
) -> None:
    """A worker SIGKILLed mid-batch while the destination takes 200 ms per
    request: another worker takes its entries over after the visibility
    timeout and delivers them; zero loss."""
    sink.default_status = ("sleep", 0.2)  # type: ignore[assignment]
    fleet.env.update(WCFG_KIND="sink", WCFG_URL=sink.url, WCFG_BATCH="10")
    key = _streams.stream_key(fleet.namespace, "sink")
    victim = fleet.worker("--visibility-timeout", "2")
    wait_for(lambda: len(consumers(redis_client, key)) == 1, 60, "the first worker")
    proc, out = fleet.app(150)
    assert proc.wait(120) == 0
    expected = json.loads(out.read_text())
    name = consumer_of(redis_client, key, victim.pid)
    assert name is not None
    # Mid-batch: a request of its is at the sink and it holds entries.
    start = sink.requests
    wait_for(lambda: sink.requests > start, 30, "the victim sending")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    held = held_event_ids(redis_client, key, name)
    assert held
    survivor = fleet.worker("--visibility-timeout", "2")
    wait_for(lambda: set(sink.ids) >= set(expected), 120, "every event delivered")
    wait_for(lambda: pending(redis_client, key) == 0, 30, "nothing pending")
    assert set(sink.ids) == set(expected)
    assert {i for i, n in collections.Counter(sink.ids).items() if n > 1} <= held
    assert consumers(redis_client, key).get(name, 0) == 0
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(30) == 0
    assert "handed back" in fleet.log(1)


def test_sigterm_finishes_the_batch_in_hand_and_hands_back_the_rest(
    fleet: Fleet, redis_client: redis.Redis, sink: Sink
) -> None:
    """SIGTERM while a slow request is under way: the batch in hand is
    delivered and acknowledged, the worker exits 0, nothing stays pending
    with it, and another worker delivers the rest with no event twice."""
    sink.default_status = ("sleep", 0.2)  # type: ignore[assignment]
    fleet.env.update(WCFG_KIND="sink", WCFG_URL=sink.url, WCFG_BATCH="10")
    key = _streams.stream_key(fleet.namespace, "sink")
    first = fleet.worker("--shutdown-timeout", "5")
    wait_for(lambda: len(consumers(redis_client, key)) == 1, 60, "the worker")
    proc, out = fleet.app(100)
    assert proc.wait(120) == 0
    expected = json.loads(out.read_text())
    name = consumer_of(redis_client, key, first.pid)
    assert name is not None
    start = sink.requests
    wait_for(lambda: sink.requests > start, 30, "a request under way")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0, fleet.log(0)
    assert consumers(redis_client, key).get(name, 0) == 0
    # The request under way at SIGTERM was answered and its batch acknowledged.
    assert len(sink.ids) > 0
    assert sink.requests == len(sink.bodies)
    fleet.worker("--shutdown-timeout", "5")
    wait_for(lambda: set(sink.ids) >= set(expected), 120, "every event delivered")
    wait_for(lambda: pending(redis_client, key) == 0, 30, "nothing pending")
    assert sorted(sink.ids) == sorted(expected)  # each exactly once


# --- poison and dead letters (in-process worker: real Redis, real HTTP) --------------


class PoisonServer:
    """Answers 500 to every request carrying the poisoned event, 200 else."""

    def __init__(self, poison: str) -> None:
        self.ids: list[str] = []
        self.poison_requests = 0
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: t.Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                events = body["events"] if isinstance(body, dict) else body
                ids = [e["event_id"] for e in events]
                with server.lock:
                    if poison in ids:
                        server.poison_requests += 1
                        status, out = 500, b'{"error":"poisoned"}'
                    else:
                        server.ids.extend(ids)
                        status, out = 200, b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/events"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def worker_thread(
    exporters: t.Any, redis_url: str, namespace: str, **options: t.Any
) -> tuple[threading.Thread, threading.Event, dict[str, t.Any]]:
    stop = threading.Event()
    result: dict[str, t.Any] = {}

    def target() -> None:
        result.update(
            run(
                exporters,
                redis_url,
                namespace=namespace,
                stop=stop,
                handle_signals=False,
                **options,
            )
        )

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, stop, result


def append(
    redis_url: str, namespace: str, exporter: t.Any, n: int, poison_at: int = -1
) -> tuple[list[str], str | None]:
    """The app side: ``n`` events appended through Tracker(queue=redis)."""
    tracker = trackware.Tracker(
        [exporter], queue=redis_url, redis_namespace=namespace, register_atexit=False
    )
    ids: list[str] = []
    poison = None
    for i in range(n):
        event = tracker.track("e", {"i": i}, user_id="u")
        assert event is not None
        ids.append(event.event_id)
        if i == poison_at:
            poison = event.event_id
    assert tracker.flush(60)
    tracker.shutdown(10)
    return ids, poison


def test_poisoned_event_ends_in_the_dead_letter_stream_and_blocks_nothing(
    redis_url: str, redis_namespace: str, redis_client: redis.Redis, tmp_path: t.Any
) -> None:
    """The vendor answers 500 to every request with one event in it: the
    worker's retries narrow the failing batch down to it, and after the retry
    policy's attempts it alone is in the dead-letter stream (and the
    JSON-lines dead letter) with the vendor's answer; every other event,
    including those behind it, is delivered; nothing stays pending. (Its
    delivery count stays 1: max_deliveries bounds hand-outs to workers, see
    the next test.)"""
    events = "redis-poison"
    # The app side never sends (it only appends): its exporter's URL is unused.
    app_exporter = HTTPExporter("http://127.0.0.1:9/events", name=events)
    ids, poison = append(redis_url, redis_namespace, app_exporter, 200, poison_at=30)
    assert poison is not None
    server = PoisonServer(poison)
    retry = trackware.RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.05)
    try:
        exporter = HTTPExporter(server.url, name=events, max_batch_size=20)
        thread, stop, result = worker_thread(
            [exporter], redis_url, redis_namespace, retry=retry
        )
        dead_key = _streams.dead_key(redis_namespace, events)
        key = _streams.stream_key(redis_namespace, events)
        wait_for(lambda: redis_client.xlen(dead_key) == 1, 60, "the dead-letter entry")
        wait_for(lambda: len(set(server.ids)) == 199, 60, "the other events")
        wait_for(lambda: pending(redis_client, key) == 0, 30, "nothing pending")
        stop.set()
        thread.join(30)
    finally:
        server.stop()
    assert set(server.ids) == set(ids) - {poison}
    assert server.poison_requests == 8
    [(_, fields)] = redis_client.xrange(dead_key)
    assert fields[_streams.ID_FIELD].decode() == poison
    assert fields[b"status"] == b"500"
    assert fields[b"attempts"] == b"8"
    assert b"retries_exhausted" in fields[_streams.DEAD_FIELD_ERROR]
    assert b"poisoned" in fields[b"response"]
    assert trackware._codec.decode(fields[_streams.EVENT_FIELD]).event_id == poison
    lines = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [x["event"]["event_id"] for x in lines] == [poison]
    assert lines[0]["status"] == 500
    assert result["destinations"][events]["failed"] == 1


def test_entry_handed_out_more_than_max_deliveries_is_dead_lettered(
    redis_url: str, redis_namespace: str, redis_client: redis.Redis, sink: Sink
) -> None:
    """An entry workers took and never settled (they died holding it) more
    than max_deliveries times goes to the dead-letter stream when a live
    worker takes it over, and is acknowledged; an entry that does not decode
    goes there too. The rest is delivered."""
    exporter = HTTPExporter(sink.url, name="sink")
    ids, _ = append(redis_url, redis_namespace, exporter, 5)
    key = _streams.stream_key(redis_namespace, "sink")
    redis_client.xadd(key, {_streams.EVENT_FIELD: b"not an event"})
    # Workers that died holding the first entry, three times over.
    redis_client.xgroup_create(key, _streams.GROUP, id="0")
    first = redis_client.xreadgroup(_streams.GROUP, "ghost", {key: ">"}, count=1)
    entry = first[0][1][0][0]
    for _ in range(2):
        redis_client.xclaim(key, _streams.GROUP, "ghost", 0, [entry], idle=10_000)
    thread, stop, result = worker_thread(
        [HTTPExporter(sink.url, name="sink")],
        redis_url,
        redis_namespace,
        max_deliveries=3,
        visibility_timeout=0.5,
    )
    dead_key = _streams.dead_key(redis_namespace, "sink")
    wait_for(lambda: redis_client.xlen(dead_key) == 2, 30, "two dead-letter entries")
    wait_for(lambda: len(sink.ids) == 4, 30, "the other events")
    wait_for(lambda: pending(redis_client, key) == 0, 30, "nothing pending")
    stop.set()
    thread.join(30)
    errors = sorted(
        f[_streams.DEAD_FIELD_ERROR].decode() for _, f in redis_client.xrange(dead_key)
    )
    assert errors[0].startswith("delivered 4 times without being settled")
    assert errors[1].startswith("undecodable")
    assert sorted(sink.ids) == sorted(ids[1:])
    backend = result["destinations"]["sink"]["backend"]
    assert backend["redis_over_delivered"] == 1
    assert backend["redis_undecodable"] == 1
    assert backend["redis_claimed"] == 1


def test_a_live_worker_keeps_its_slow_entries_from_being_taken_over(
    redis_url: str, redis_namespace: str, redis_client: redis.Redis, sink: Sink
) -> None:
    """Requests slower than the visibility timeout: the heartbeat keeps the
    entries the (live) worker holds, so a second worker takes none of them
    over and nothing is delivered twice."""
    sink.default_status = ("sleep", 0.8)  # type: ignore[assignment]
    ids, _ = append(redis_url, redis_namespace, HTTPExporter(sink.url, name="sink"), 30)
    options = {"visibility_timeout": 0.5, "max_deliveries": 2}
    exporter = HTTPExporter(sink.url, name="sink", max_batch_size=10)
    workers = [
        worker_thread([exporter], redis_url, redis_namespace, **options),
        worker_thread(
            [HTTPExporter(sink.url, name="sink", max_batch_size=10)],
            redis_url,
            redis_namespace,
            **options,
        ),
    ]
    wait_for(lambda: len(sink.ids) >= 30, 60, "every event")
    for _thread, stop, _ in workers:
        stop.set()
    for thread, _, _ in workers:
        thread.join(30)
    assert sorted(sink.ids) == sorted(ids)
    for _, _, result in workers:
        backend = result["destinations"]["sink"]["backend"]
        assert backend["redis_claimed"] == 0
        assert backend["redis_over_delivered"] == 0


# --- Yotpo: the rate limit holds across the fleet ------------------------------------


def test_yotpo_rate_limit_holds_across_three_workers(
    fleet: Fleet, redis_client: redis.Redis
) -> None:
    """3 worker processes send to one Yotpo store: the emulator never sees
    more than 5 requests in any 1 s window (its request log) and answers no
    429."""
    from trackware.testing.emulators import EmulatorServer
    from trackware.testing.emulators._yotpo import YotpoAPI

    store, secret = f"store-{uuid.uuid4().hex[:10]}", "yotpo-worker-secret"
    api = YotpoAPI(stores={store: secret})
    with EmulatorServer([api]) as emu:
        fleet.env.update(
            WCFG_KIND="yotpo", WCFG_URL=emu.url, WCFG_STORE=store, WCFG_SECRET=secret
        )
        key = _streams.stream_key(fleet.namespace, "yotpo")
        for _ in range(3):
            fleet.worker()
        wait_for(lambda: len(consumers(redis_client, key)) == 3, 60, "3 workers")
        proc, out = fleet.app(24)
        assert proc.wait(120) == 0
        expected = json.loads(out.read_text())
        wait_for(lambda: len(api.events) >= len(expected), 60, "every event at Yotpo")
        times = sorted(r.at for r in emu.recorded("yotpo.event"))
        for proc in fleet.workers:
            proc.send_signal(signal.SIGTERM)
        for proc in fleet.workers:
            assert proc.wait(30) == 0
    assert len(times) == len(expected)
    assert api.rate_limited == 0
    # Every 6th request is at least a second after the one 5 before it.
    assert all(b - a >= 1.0 for a, b in zip(times, times[5:], strict=False))
    # Every worker took part (the limit was shared, not one worker's).
    logs = [fleet.log(n) for n in range(3)]
    assert all("stopped" in log for log in logs)
    assert not redis_client.exists(_streams.dead_key(fleet.namespace, "yotpo"))


def test_worker_refuses_track_calls_in_its_process(
    redis_url: str, redis_namespace: str, redis_client: redis.Redis
) -> None:
    """A consumer queue never appends: an event offered to it in the worker
    process is refused and counted, the stream stays empty."""
    queue = StreamConsumerQueue(
        redis_client,
        redis_namespace,
        "sink",
        consumer="c",
        batch_size=10,
        dead_letter=None,
    )
    event = trackware.Event("e", user_id="u")
    assert queue.put(event) == [event]
    assert queue.dropped_full == 1
    assert not redis_client.exists(_streams.stream_key(redis_namespace, "sink"))
    queue.close()


def test_worker_rides_out_a_redis_restart(
    redis_server: t.Any, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis (a throwaway redis-server, saved on shutdown) stops under a
    running worker and comes back: the worker reconnects and delivers what is
    appended afterwards; nothing is delivered twice or lost."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    app = HTTPExporter("http://127.0.0.1:9/events", name="sink")
    before, _ = append(redis_server.url, namespace, app, 50)
    thread, stop, result = worker_thread(
        [HTTPExporter(sink.url, name="sink")], redis_server.url, namespace
    )
    wait_for(lambda: len(sink.ids) == 50, 60, "the first 50")
    redis_server.stop(save=True)
    wait_for(lambda: "Redis read failed" in caplog.text, 30, "the worker noticing")
    redis_server.start()
    after, _ = append(redis_server.url, namespace, app, 50)
    wait_for(lambda: len(sink.ids) == 100, 60, "the 50 appended after the restart")
    stop.set()
    thread.join(30)
    assert sorted(sink.ids) == sorted(before + after)
    backend = result["destinations"]["sink"]["backend"]
    assert backend["redis_errors"] > 0
