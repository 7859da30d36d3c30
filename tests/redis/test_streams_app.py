"""The app side of Redis Streams (trackware/_streams.py) against a real Redis:
app processes only append; trimming is counted; Redis lost and back."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import typing as t

import pytest
from _support import Sink, run_script

import trackware
from trackware._codec import decode
from trackware._queue import MemoryQueue
from trackware._streams import (
    EVENT_FIELD,
    GROUP,
    ID_FIELD,
    RedisStreams,
    stream_key,
    trimmed_key,
)
from trackware.testing import InMemoryExporter

if t.TYPE_CHECKING:
    import redis

#: tests/redis/conftest.py's RedisServer (conftest modules are not imported
#: by name under --import-mode=importlib).
RedisServer = t.Any


def entries(client: redis.Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of stream ``key``, oldest first."""
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    start = "-"
    while True:
        chunk = client.xrange(key, min=start, max="+", count=5000)
        if not chunk:
            return out
        out.extend(chunk)
        start = "(" + chunk[-1][0].decode()


def backend(tracker: trackware.Tracker, name: str = "memory") -> dict[str, t.Any]:
    return t.cast("dict[str, t.Any]", tracker.stats()["destinations"][name]["backend"])


def test_import_trackware_does_not_import_redis() -> None:
    out = run_script(
        """
        import sys, trackware, trackware._streams
        print("redis" in sys.modules)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_events_reach_the_stream_encoded_once_with_their_ids(
    redis_url: str, redis_namespace: str, redis_client: redis.Redis
) -> None:
    ids: list[str] = []

    def tracked(sender: object, event: t.Any, **kw: object) -> None:
        ids.append(event.event_id)

    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue=redis_url,
        redis_namespace=redis_namespace,
        dead_letter=None,
    )
    trackware.signals.event_tracked.connect(tracked)
    try:
        for i in range(300):
            tracker.track("order.paid", {"i": i}, user_id=f"u{i}")
        # flush() returns once Redis acknowledged every append.
        assert tracker.flush(timeout=10)
        got = entries(redis_client, stream_key(redis_namespace, "memory"))
        assert len(got) == 300
        events = [decode(fields[EVENT_FIELD]) for _, fields in got]
        assert [e.event_id for e in events] == ids
        assert [fields[ID_FIELD].decode() for _, fields in got] == ids
        assert [e.properties["i"] for e in events] == list(range(300))
        assert events[7].user_id == "u7"
        stats = backend(tracker)
        assert stats["redis_appended"] == 300
        assert stats["redis_state"] == "up"
        assert stats["redis_fallback"] == 0
        # The in-process worker delivers nothing: trackware worker does.
        assert tracker.stats()["destinations"]["memory"]["sent"] == 0
    finally:
        trackware.signals.event_tracked.disconnect(tracked)
        assert tracker.shutdown(timeout=10)


@pytest.mark.slow
def test_two_app_processes_append_with_ids_intact(
    redis_url: str, redis_namespace: str, redis_client: redis.Redis
) -> None:
    """Events appended by 2 app processes reach the stream: each exactly once,
    with the id the app gave it, in each process's order."""
    code = """
        import json, sys, trackware
        from trackware.testing import InMemoryExporter
        url, namespace, tag, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
        ids = []
        trackware.signals.event_tracked.connect(
            lambda sender, event, **kw: ids.append(event.event_id), weak=False
        )
        tracker = trackware.Tracker(
            [InMemoryExporter()], queue=url, redis_namespace=namespace, dead_letter=None
        )
        for i in range(n):
            tracker.track("load.test", {"proc": tag, "i": i})
        ok = tracker.flush(timeout=60)
        done = tracker.shutdown(timeout=30)
        stats = tracker.stats()["destinations"]["memory"]["backend"]
        print(json.dumps({"ok": ok and done, "ids": ids, "stats": stats}))
    """
    n = 5000
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(__file__))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                __import__("textwrap").dedent(code),
                redis_url,
                redis_namespace,
                tag,
                str(n),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for tag in ("a", "b")
    ]
    reports = {}
    for tag, proc in zip(("a", "b"), procs, strict=True):
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        reports[tag] = json.loads(out.strip().splitlines()[-1])
        assert reports[tag]["ok"], reports[tag]["stats"]
        assert len(reports[tag]["ids"]) == n
        assert reports[tag]["stats"]["redis_appended"] == n

    got = entries(redis_client, stream_key(redis_namespace, "memory"))
    assert len(got) == 2 * n
    by_proc: dict[str, list[t.Any]] = {"a": [], "b": []}
    for _, fields in got:
        event = decode(fields[EVENT_FIELD])
        assert fields[ID_FIELD].decode() == event.event_id
        by_proc[event.properties["proc"]].append(event)
    for tag in ("a", "b"):
        events = by_proc[tag]
        assert [e.event_id for e in events] == reports[tag]["ids"]
        assert [e.properties["i"] for e in events] == list(range(n))


def test_trimming_counts_entries_no_worker_read(
    redis_url: str, redis_namespace: str, redis_client: redis.Redis
) -> None:
    """MAXLEN ~ trims the stream; entries trimmed before the group read them
    are counted (stats and the fleet-wide counter), read ones are not."""
    key = stream_key(redis_namespace, "memory")
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue=redis_url,
        redis_namespace=redis_namespace,
        redis_maxlen=200,
        dead_letter=None,
    )
    try:
        # No consumer group yet: every trimmed entry is unread.
        for i in range(1000):
            tracker.track("e", {"i": i})
        assert tracker.flush(timeout=10)
        length = redis_client.xlen(key)
        assert 200 <= length < 1000
        stats = backend(tracker)
        assert stats["redis_trimmed"] == 1000 - length
        dropped = tracker.stats()["destinations"]["memory"]["dropped"]
        assert dropped == {"redis_trimmed": 1000 - length}
        assert int(redis_client.get(trimmed_key(redis_namespace, "memory")) or 0) == (
            1000 - length
        )

        # A group reads everything there is now: those are not lost when
        # trimmed. Then 1000 more: the ones trimmed are among the read ones
        # first, so only the overflow beyond them counts.
        redis_client.xgroup_create(key, GROUP, id="0")
        read = redis_client.xreadgroup(GROUP, "c1", {key: ">"}, count=10_000)
        n_read = len(read[0][1])
        assert n_read == length
        for i in range(1000):
            tracker.track("e", {"i": 1000 + i})
        assert tracker.flush(timeout=10)
        length2 = redis_client.xlen(key)
        removed_now = length + 1000 - length2
        unread_removed = max(0, removed_now - n_read)
        stats = backend(tracker)
        assert stats["redis_trimmed"] == (1000 - length) + unread_removed
        assert unread_removed > 0  # 1000 new entries, bound 200
        # The group's unread entries are exactly the surviving new ones.
        rest = redis_client.xreadgroup(GROUP, "c1", {key: ">"}, count=10_000)
        assert len(rest[0][1]) == 1000 - unread_removed
    finally:
        assert tracker.shutdown(timeout=10)


def test_trimming_read_entries_counts_nothing(
    redis_url: str, redis_namespace: str, redis_client: redis.Redis
) -> None:
    """A group that keeps up: the stream is trimmed, nothing is lost."""
    key = stream_key(redis_namespace, "memory")
    redis_client.xgroup_create(key, GROUP, id="0", mkstream=True)
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue=redis_url,
        redis_namespace=redis_namespace,
        redis_maxlen=100,
        dead_letter=None,
    )
    try:
        total_read = 0
        for round_ in range(10):
            for i in range(100):
                tracker.track("e", {"i": round_ * 100 + i})
            assert tracker.flush(timeout=10)
            read = redis_client.xreadgroup(GROUP, "c1", {key: ">"}, count=10_000)
            total_read += len(read[0][1]) if read else 0
        assert total_read == 1000
        assert redis_client.xlen(key) < 1000  # it was trimmed
        assert backend(tracker)["redis_trimmed"] == 0
    finally:
        assert tracker.shutdown(timeout=10)


def test_unreachable_at_start_keeps_serving_and_counts(
    redis_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens: track() returns at once, the events go to the
    fallback (counted), one warning; shutdown ends at its deadline and counts
    what was not forwarded."""
    from _support import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue=url,
        redis_namespace=redis_namespace,
        dead_letter=None,
    )
    with caplog.at_level(logging.WARNING, logger="trackware"):
        for i in range(500):
            tracker.track("e", {"i": i})
        deadline = time.monotonic() + 10
        while backend(tracker)["redis_fallback"] < 500:
            assert time.monotonic() < deadline, backend(tracker)
            time.sleep(0.02)
        assert not tracker.flush(timeout=0.3)  # not in Redis: not settled
        stats = backend(tracker)
        assert stats["redis_state"] == "down"
        assert stats["redis_fallback_depth"] == 500
        assert stats["redis_errors"] >= 1
        started = time.monotonic()
        assert not tracker.shutdown(timeout=1.0)  # events did not reach Redis
        assert time.monotonic() - started < 5
    stats = backend(tracker)
    assert stats["redis_unforwarded"] == 500
    down = [r for r in caplog.records if "is unavailable" in r.getMessage()]
    assert len(down) == 1
    assert any("not forwarded to Redis" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_redis_stopped_and_restarted_while_tracking_10000(
    redis_server: RedisServer, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis is stopped while the app tracks 10,000 events, then started
    again, with a worker delivering throughout: all 10,000 reach the stream
    in the app's order and the HTTP server (distinct ids), track() never
    raised, the stats show the fallback. The longest track() call is printed
    (measured, not asserted: no test asserts a duration)."""
    import redis as redis_py

    from trackware.exporters import HTTPExporter
    from trackware.worker import run

    namespace = "restart"
    key = stream_key(namespace, "memory")
    stop = threading.Event()
    worker = threading.Thread(
        target=run,
        args=([HTTPExporter(sink.url, name="memory")], redis_server.url),
        kwargs={"namespace": namespace, "stop": stop, "handle_signals": False},
        daemon=True,
    )
    worker.start()
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue=redis_server.url,
        redis_namespace=namespace,
        dead_letter=None,
    )
    ids: list[str] = []

    def tracked(sender: object, event: t.Any, **kw: object) -> None:
        ids.append(event.event_id)

    trackware.signals.event_tracked.connect(tracked)
    took_all: list[float] = []
    stop_at, start_at = 3000, 7000
    try:
        with caplog.at_level(logging.WARNING, logger="trackware"):
            for i in range(10_000):
                if i == stop_at:
                    assert tracker.flush(timeout=10)
                    redis_server.stop(save=True)
                elif i == start_at:
                    # Wait until the sender has seen Redis go (events are in
                    # the fallback), then start it again.
                    deadline = time.monotonic() + 10
                    while backend(tracker)["redis_fallback"] == 0:
                        assert time.monotonic() < deadline
                        time.sleep(0.01)
                    redis_server.start()
                began = time.perf_counter()
                tracker.track("e", {"i": i})
                took_all.append(time.perf_counter() - began)
                if stop_at <= i < start_at and i % 500 == 0:
                    time.sleep(0.05)  # let the sender try (and fail) meanwhile
            assert tracker.flush(timeout=30)
        stats = backend(tracker)
        assert stats["redis_fallback"] > 0
        assert stats["redis_forwarded"] == stats["redis_fallback"]
        assert stats["redis_appended"] == 10_000
        assert stats["redis_state"] == "up"
        down = [
            r
            for r in caplog.records
            if "events go to the fallback queue" in r.getMessage()
        ]
        assert len(down) == 1
        client = redis_py.Redis.from_url(redis_server.url)
        try:
            got = [fields[ID_FIELD].decode() for _, fields in entries(client, key)]
        finally:
            client.close()
        # In the app's order (an append whose reply was lost may repeat one).
        assert list(dict.fromkeys(got)) == ids
        assert len(ids) == 10_000
        assert sink.wait_for(10_000, timeout=90)
        assert set(sink.ids) == set(ids)
        # For comparison, on this machine now: the memory queue.
        baseline = trackware.Tracker([InMemoryExporter()], dead_letter=None)
        memory_all: list[float] = []
        for i in range(10_000):
            began = time.perf_counter()
            baseline.track("e", {"i": i})
            memory_all.append(time.perf_counter() - began)
        baseline.shutdown(timeout=10)
        took_all.sort()
        memory_all.sort()
        print(
            f"\ntrack() with Redis stopped and restarted (a worker in this "
            f"process): longest {took_all[-1] * 1e6:.0f} µs, 99.9th percentile "
            f"{took_all[9990] * 1e6:.0f} µs, median {took_all[5000] * 1e6:.1f} µs; "
            f"memory queue on this machine now: longest "
            f"{memory_all[-1] * 1e6:.0f} µs, 99.9th {memory_all[9990] * 1e6:.0f} "
            f"µs; fallback {stats['redis_fallback']} events; "
            f"{len(sink.ids) - len(set(sink.ids))} delivered twice",
            file=sys.stderr,
        )
    finally:
        trackware.signals.event_tracked.disconnect(tracked)
        tracker.shutdown(timeout=10)
        stop.set()
        worker.join(30)


def test_killed_redis_connection_is_reopened(
    redis_server: RedisServer,
) -> None:
    """Redis killed (SIGKILL: its data is gone) and started empty: the
    events tracked meanwhile are forwarded to the new one."""
    import redis as redis_py

    namespace = "killed"
    key = stream_key(namespace, "memory")
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue=redis_server.url,
        redis_namespace=namespace,
        dead_letter=None,
    )
    try:
        tracker.track("before")
        assert tracker.flush(timeout=10)
        redis_server.stop(save=False)
        for i in range(100):
            tracker.track("during", {"i": i})
        deadline = time.monotonic() + 10
        while backend(tracker)["redis_fallback"] < 100:
            assert time.monotonic() < deadline, backend(tracker)
            time.sleep(0.01)
        redis_server.start()
        assert tracker.flush(timeout=20)
        client = redis_py.Redis.from_url(redis_server.url)
        try:
            got = entries(client, key)
        finally:
            client.close()
        names = [decode(f[EVENT_FIELD]).name for _, f in got]
        assert names == ["during"] * 100
    finally:
        tracker.shutdown(timeout=10)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_appends_on_its_own_connection(
    redis_url: str, redis_namespace: str, redis_client: redis.Redis
) -> None:
    """A forked child re-initialises the client and the sender: its events
    reach the stream, the parent's are not sent twice."""
    key = stream_key(redis_namespace, "memory")
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue=redis_url,
        redis_namespace=redis_namespace,
        dead_letter=None,
    )
    try:
        for i in range(50):
            tracker.track("parent", {"i": i})
        assert tracker.flush(timeout=10)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                for i in range(70):
                    tracker.track("child", {"i": i})
                if tracker.flush(timeout=10) and tracker.shutdown(timeout=10):
                    code = 0
            finally:
                os._exit(code)
        for i in range(30):
            tracker.track("parent", {"i": 50 + i})
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert tracker.flush(timeout=10)
        got = [decode(f[EVENT_FIELD]) for _, f in entries(redis_client, key)]
        parent = [e.properties["i"] for e in got if e.name == "parent"]
        child = [e.properties["i"] for e in got if e.name == "child"]
        assert parent == list(range(80))
        assert child == list(range(70))
    finally:
        tracker.shutdown(timeout=10)


def test_a_thread_storm_never_blocks_on_a_stopped_redis(
    redis_server: RedisServer,
) -> None:
    """8 threads track while Redis is down: every event is accounted for
    (in the fallback), none raised."""
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue=redis_server.url,
        redis_namespace="storm",
        dead_letter=None,
    )
    redis_server.stop(save=False)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(1000):
                tracker.track("e", {"t": n, "i": i})
        except BaseException as exc:  # pragma: no cover - the failure
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    try:
        assert not errors
        deadline = time.monotonic() + 10
        while True:
            stats = backend(tracker)
            if stats["redis_fallback"] + stats["redis_fallback_full"] == 8000:
                break
            assert time.monotonic() < deadline, stats
            time.sleep(0.02)
        # The fallback is a MemoryQueue with the tracker's bounds (> 8,000).
        assert stats["redis_fallback"] == 8000
    finally:
        tracker.shutdown(timeout=1)


def test_options_are_checked() -> None:
    from trackware.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError):
        RedisStreams(
            "redis://127.0.0.1:1/0", maxlen=0, fallback=lambda n: MemoryQueue()
        )
    with pytest.raises(ConfigurationError):
        RedisStreams(
            "redis://127.0.0.1:1/0", namespace="", fallback=lambda n: MemoryQueue()
        )


def test_script_flushed_is_loaded_again_without_a_fallback(
    redis_server: RedisServer,
) -> None:
    """SCRIPT FLUSH (or a Redis restart) forgets the append script: the next
    batch loads it again at once; nothing goes to the fallback."""
    import redis as redis_py

    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue=redis_server.url,
        redis_namespace="noscript",
        dead_letter=None,
    )
    client = redis_py.Redis.from_url(redis_server.url)
    try:
        tracker.track("one")
        assert tracker.flush(timeout=10)
        client.script_flush()
        tracker.track("two")
        assert tracker.flush(timeout=10)
        stats = backend(tracker)
        assert stats["redis_appended"] == 2
        assert stats["redis_fallback"] == 0
        assert stats["redis_errors"] == 0
        assert client.xlen(stream_key("noscript", "memory")) == 2
    finally:
        client.close()
        tracker.shutdown(timeout=10)


_SPOOL_APP = """
    import json, sys, time, trackware
    from trackware.testing import InMemoryExporter
    url, folder, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ids = []
    trackware.signals.event_tracked.connect(
        lambda sender, event, **kw: ids.append(event.event_id), weak=False
    )
    tracker = trackware.Tracker(
        [InMemoryExporter()], queue=url, redis_namespace="spooled", spool=folder,
        dead_letter=None,
    )
    for i in range(n):
        tracker.track("e", {"i": i})
    deadline = time.monotonic() + 30
    while True:
        stats = tracker.stats()["destinations"]["memory"]["backend"]
        if n == 1 and stats["redis_forwarded"] >= int(sys.argv[4]):
            break
        if n > 1 and stats["redis_fallback"] >= n:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    tracker.shutdown(timeout=2)
    print(json.dumps({"ids": ids, "stats": tracker.stats()["destinations"]["memory"]}))
"""


@pytest.mark.slow
def test_redis_down_events_wait_in_the_spool_for_the_next_process(
    redis_server: RedisServer, tmp_path: t.Any
) -> None:
    """Redis is down: an app process with a spool keeps its events there
    and exits; the next process (Redis back) forwards them to the stream."""
    import redis as redis_py

    folder = str(tmp_path / "spool")
    redis_server.stop(save=False)
    first = run_script(_SPOOL_APP, redis_server.url, folder, "1000")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert report["stats"]["backend"]["redis_fallback"] == 1000
    assert report["stats"]["backend"]["redis_unforwarded"] == 1000
    assert report["stats"]["spooled"] >= 1000
    redis_server.start()
    second = run_script(_SPOOL_APP, redis_server.url, folder, "1", "1000")
    assert second.returncode == 0, second.stderr
    later = json.loads(second.stdout.strip().splitlines()[-1])
    client = redis_py.Redis.from_url(redis_server.url)
    try:
        got = entries(client, stream_key("spooled", "memory"))
    finally:
        client.close()
    got_ids = [fields[ID_FIELD].decode() for _, fields in got]
    # Each process's events once, in that process's order (the second's own
    # event may come before or after the ones it adopted).
    assert len(got_ids) == 1001, later["stats"]
    assert [i for i in got_ids if i not in later["ids"]] == report["ids"]
    assert [i for i in got_ids if i in later["ids"]] == later["ids"]
    assert later["stats"]["backend"]["redis_forwarded"] == 1000


@pytest.mark.parametrize("refusal", ["oom", "readonly"])
def test_redis_refusing_writes_sends_events_to_the_fallback(
    redis_server: RedisServer, refusal: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis answers but refuses writes (OOM: maxmemory reached; READONLY: it
    became a replica): the events wait in the fallback, one warning, and are
    forwarded in order once it accepts writes again."""
    import redis as redis_py

    namespace = f"refusal-{refusal}"
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue=redis_server.url,
        redis_namespace=namespace,
        dead_letter=None,
    )
    ids: list[str] = []

    def tracked(sender: object, event: t.Any, **kw: object) -> None:
        ids.append(event.event_id)

    trackware.signals.event_tracked.connect(tracked)
    client = redis_py.Redis.from_url(redis_server.url)
    try:
        with caplog.at_level(logging.WARNING, logger="trackware"):
            for i in range(10):
                tracker.track("e", {"i": i})
            assert tracker.flush(timeout=10)
            if refusal == "oom":
                client.config_set("maxmemory", 1)
            else:
                # A replica of a master that is not there: read-only.
                client.replicaof("127.0.0.1", str(redis_server.port + 1))
            for i in range(200):
                tracker.track("e", {"i": 10 + i})
            deadline = time.monotonic() + 10
            while backend(tracker)["redis_fallback"] < 200:
                assert time.monotonic() < deadline, backend(tracker)
                time.sleep(0.02)
            assert backend(tracker)["redis_state"] == "down"
            if refusal == "oom":
                client.config_set("maxmemory", 0)
            else:
                client.replicaof("NO", "ONE")
            assert tracker.flush(timeout=20)
        got = entries(client, stream_key(namespace, "memory"))
        assert [f[ID_FIELD].decode() for _, f in got] == ids
        stats = backend(tracker)
        assert stats["redis_forwarded"] == stats["redis_fallback"] >= 200
        warned = [
            r.getMessage() for r in caplog.records if "is unavailable" in r.getMessage()
        ]
        assert len(warned) == 1
        assert ("OutOfMemoryError" if refusal == "oom" else "ReadOnlyError") in warned[
            0
        ]
    finally:
        trackware.signals.event_tracked.disconnect(tracked)
        client.close()
        tracker.shutdown(timeout=10)


@pytest.mark.slow
def test_paused_redis_times_out_then_everything_arrives(
    redis_server: RedisServer,
) -> None:
    """Redis stops answering (SIGSTOP) mid-stream: the sender's socket
    timeout fires on its own thread, the events go to the fallback, and after
    SIGCONT every event reaches the stream. A batch whose reply was lost may
    appear twice, with the same event ids (at-least-once)."""
    import redis as redis_py

    streams = RedisStreams(
        redis_server.url,
        namespace="paused",
        fallback=lambda name: MemoryQueue(),
        socket_timeout=0.3,
    )
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue_factory=lambda exporter: streams.queue(exporter.name),
        dead_letter=None,
    )
    ids: list[str] = []

    def tracked(sender: object, event: t.Any, **kw: object) -> None:
        ids.append(event.event_id)

    trackware.signals.event_tracked.connect(tracked)
    longest = 0.0
    try:
        for i in range(100):
            tracker.track("e", {"i": i})
        assert tracker.flush(timeout=10)
        redis_server.pause()
        paused_from = len(ids)
        for i in range(500):
            began = time.perf_counter()
            tracker.track("e", {"i": 100 + i})
            longest = max(longest, time.perf_counter() - began)
            if i % 100 == 0:
                time.sleep(0.1)
        deadline = time.monotonic() + 10
        while backend(tracker)["redis_state"] != "down":
            assert time.monotonic() < deadline, backend(tracker)
            time.sleep(0.02)
        paused_to = len(ids)
        redis_server.resume()
        for i in range(100):
            tracker.track("e", {"i": 600 + i})
        assert tracker.flush(timeout=30)
        client = redis_py.Redis.from_url(redis_server.url)
        try:
            got = [
                f[ID_FIELD].decode()
                for _, f in entries(client, "trackware:paused:memory")
            ]
        finally:
            client.close()
        assert set(got) == set(ids)
        twice = {i for i in got if got.count(i) > 1}
        assert twice <= set(ids[paused_from:paused_to])
        assert backend(tracker)["redis_fallback"] > 0
        print(
            f"\nlongest track() call while Redis was paused: {longest * 1e6:.0f} µs; "
            f"{len(got) - len(set(got))} entries appended twice",
            file=sys.stderr,
        )
    finally:
        trackware.signals.event_tracked.disconnect(tracked)
        tracker.shutdown(timeout=10)
        streams.close(time.monotonic() + 5)


def test_from_env_appends_to_the_redis_of_trackware_redis_url(
    redis_url: str, redis_namespace: str, redis_client: redis.Redis
) -> None:
    """TRACKWARE_REDIS_URL / _NAMESPACE / _MAXLEN configure Tracker.from_env()."""
    tracker = trackware.Tracker.from_env(
        [InMemoryExporter()],
        environ={
            "TRACKWARE_REDIS_URL": redis_url,
            "TRACKWARE_REDIS_NAMESPACE": redis_namespace,
            "TRACKWARE_REDIS_MAXLEN": "50",
        },
        dead_letter=None,
    )
    try:
        for i in range(200):
            tracker.track("e", {"i": i})
        assert tracker.flush(timeout=10)
        key = stream_key(redis_namespace, "memory")
        length = redis_client.xlen(key)
        assert 50 <= length < 200
        stats = backend(tracker)
        assert stats["redis_appended"] == 200
        assert stats["redis_trimmed"] == 200 - length
    finally:
        tracker.shutdown(timeout=10)


def test_the_password_of_the_redis_url_is_never_logged(
    redis_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    from _support import free_port

    secret = "s3cret-redis-pass"
    url = f"redis://user:{secret}@127.0.0.1:{free_port()}/0"
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue=url,
        redis_namespace=redis_namespace,
        dead_letter=None,
    )
    with caplog.at_level(logging.DEBUG, logger="trackware"):
        tracker.track("e")
        deadline = time.monotonic() + 10
        while backend(tracker)["redis_fallback"] < 1:
            assert time.monotonic() < deadline, backend(tracker)
            time.sleep(0.02)
        tracker.shutdown(timeout=0.5)
    text = caplog.text + repr(tracker.backends.streams) + repr(tracker.stats())
    assert "is unavailable" in caplog.text
    assert "127.0.0.1" in caplog.text
    assert secret not in text


def test_redis_slower_than_the_app_spills_to_the_fallback_instead_of_dropping(
    redis_url: str, redis_namespace: str, redis_client: redis.Redis
) -> None:
    """The sender cannot keep up (10 events per round trip here): past three
    quarters of its buffer the events go to the fallback, are forwarded
    first, and none is dropped; the stream has them in the app's order."""
    streams = RedisStreams(
        redis_url,
        namespace=redis_namespace,
        fallback=lambda name: MemoryQueue(100_000, 1 << 30),
        batch_size=10,
        buffer_events=5000,
    )
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue_factory=lambda exporter: streams.queue(exporter.name),
        dead_letter=None,
    )
    ids: list[str] = []

    def tracked(sender: object, event: t.Any, **kw: object) -> None:
        ids.append(event.event_id)

    trackware.signals.event_tracked.connect(tracked)
    try:
        for i in range(20_000):
            tracker.track("e", {"i": i})
            if i % 250 == 249:
                # An app between requests, not one tight loop: the sender
                # thread gets the GIL (it moves the buffer to the fallback).
                # Starved of CPU for longer than the last quarter of the buffer
                # takes to fill, it cannot, and the buffer drops its oldest,
                # counted (a loaded CI run saw 455 of 20,000 in a tight loop).
                time.sleep(0.001)
        assert tracker.flush(timeout=60)
        stats = tracker.stats()["destinations"]["memory"]
        assert stats["dropped"] == {}
        assert stats["backend"]["redis_fallback"] > 0
        assert stats["backend"]["redis_errors"] == 0
        got = entries(redis_client, stream_key(redis_namespace, "memory"))
        assert [f[ID_FIELD].decode() for _, f in got] == ids
    finally:
        trackware.signals.event_tracked.disconnect(tracked)
        tracker.shutdown(timeout=10)
        streams.close(time.monotonic() + 10)


def test_flush_waits_for_events_forwarded_from_a_spool_fallback(
    redis_server: RedisServer, tmp_path: t.Any
) -> None:
    """With a spool as the fallback: while Redis is away flush() is False (the
    events are not in Redis); once it is back, flush() returns when the
    spooled events are in the stream, in order."""
    import redis as redis_py

    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue=redis_server.url,
        redis_namespace="spool-flush",
        spool=str(tmp_path / "spool"),
        dead_letter=None,
    )
    ids: list[str] = []

    def tracked(sender: object, event: t.Any, **kw: object) -> None:
        ids.append(event.event_id)

    trackware.signals.event_tracked.connect(tracked)
    try:
        redis_server.stop(save=False)
        for i in range(300):
            tracker.track("e", {"i": i})
        deadline = time.monotonic() + 10
        while backend(tracker)["redis_fallback"] < 300:
            assert time.monotonic() < deadline, backend(tracker)
            time.sleep(0.02)
        assert not tracker.flush(timeout=0.3)
        assert tracker.stats()["destinations"]["memory"]["spooled"] >= 300
        redis_server.start()
        assert tracker.flush(timeout=20)
        client = redis_py.Redis.from_url(redis_server.url)
        try:
            got = entries(client, stream_key("spool-flush", "memory"))
        finally:
            client.close()
        assert [f[ID_FIELD].decode() for _, f in got] == ids
        assert backend(tracker)["redis_forwarded"] == 300
    finally:
        trackware.signals.event_tracked.disconnect(tracked)
        tracker.shutdown(timeout=10)


def test_shutdown_forwards_what_is_buffered(
    redis_url: str, redis_namespace: str, redis_client: redis.Redis
) -> None:
    """shutdown() right after tracking (no flush): the buffered events are
    appended before it returns, and it says so."""
    tracker = trackware.Tracker(
        [InMemoryExporter()],
        queue=redis_url,
        redis_namespace=redis_namespace,
        dead_letter=None,
    )
    for i in range(5000):
        tracker.track("e", {"i": i})
    assert tracker.shutdown(timeout=30)
    assert redis_client.xlen(stream_key(redis_namespace, "memory")) == 5000
    stats = backend(tracker)
    assert stats["redis_state"] == "closed"
    assert stats["redis_unforwarded"] == 0
    assert stats["redis_appended"] == 5000


def test_without_the_redis_package_the_tracker_says_so() -> None:
    out = run_script(
        """
        import sys
        sys.modules["redis"] = None  # as if redis-py were not installed
        import trackware
        from trackware.exceptions import ConfigurationError
        from trackware.testing import InMemoryExporter
        try:
            trackware.Tracker([InMemoryExporter()], queue="redis://127.0.0.1:1/0")
        except ConfigurationError as exc:
            print(exc)
        """
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'trackware[redis]'" in out.stdout
