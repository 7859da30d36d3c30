"""Process lifecycle: fork safety at every moment (a fork while the first
export is in flight, real os.fork(), a real HTTP sink; nothing imported on a
worker thread), and a process ended by SIGTERM shuts its trackers down first."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import typing as t

import pytest
from _support import Sink, free_port, run_script

pytestmark = pytest.mark.slow

TRIALS = 30
CHILD_EVENTS = 5


def test_nothing_is_imported_on_a_worker_thread(sink: Sink) -> None:
    """Building, mapping and sending a first batch imports no module on a
    trackware thread (an import there is the window in which a fork leaves the
    child a half-imported module, or an import lock no thread will release)."""
    proc = run_script(
        """
        import json, sys, threading

        imports = []

        def hook(event, args):
            if event == "import":
                imports.append((threading.current_thread().name, args[0]))

        sys.addaudithook(hook)
        import trackware
        from trackware.exporters import HTTPExporter

        tracker = trackware.Tracker(
            [HTTPExporter(sys.argv[1])], flush_interval=0, dead_letter=None
        )
        for i in range(3):
            tracker.track("first", {"i": i})
        assert tracker.flush(10)
        assert tracker.stats()["destinations"]["http"]["sent"] == 3
        print(json.dumps([m for name, m in imports if name.startswith("trackware")]))
        """,
        sink.url,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    assert len(sink.ids) == 3


def test_nothing_is_imported_on_a_worker_thread_by_yotpo(emulator: t.Any) -> None:
    """Yotpo normalizes phone numbers on its worker; libphonenumber loads a
    region's metadata module at the first number of that region, which must
    not happen there either."""
    proc = run_script(
        """
        import json, sys, threading

        imports = []

        def hook(event, args):
            if event == "import":
                imports.append((threading.current_thread().name, args[0]))

        sys.addaudithook(hook)
        import trackware
        from trackware.exporters.yotpo import CustomEventExporter

        yotpo = CustomEventExporter(
            "yotpo-test-store",
            "yotpo-test-secret-0001",
            base_url=sys.argv[1],
            event_names={"order.shipped": "order_shipped"},
        )
        tracker = trackware.Tracker([yotpo], flush_interval=0, dead_letter=None)
        phones = ["+14155552671", "+447700900123", "+4930123456", "+33612345678"]
        for phone in phones:
            tracker.track("order.shipped", user_id="u-1", email="a@b.co", phone=phone)
        assert tracker.flush(20)
        assert tracker.stats()["destinations"]["yotpo"]["sent"] == 4
        print(json.dumps([m for name, m in imports if name.startswith("trackware")]))
        """,
        emulator.url,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_fork_while_the_first_export_is_in_flight(sink: Sink) -> None:
    """30 times: a fresh process tracks an event (its worker starts the first
    export: building the HTTP client, connecting, sending) and forks at a
    moment spread over that window. Every child delivers its own events within
    a bounded deadline, and every parent its own, each exactly once."""
    proc = run_script(
        f"""
        import json, os, signal, sys, time
        import trackware
        from trackware.exporters import HTTPExporter

        url = sys.argv[1]

        def wait(pid, seconds):
            # The exit status, or "hung" (then it is killed).
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return os.waitstatus_to_exitcode(status)
                time.sleep(0.01)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "hung"

        def trial(n):
            tracker = trackware.Tracker(
                [HTTPExporter(url)], flush_interval=0, dead_letter=None
            )
            tracker.track("parent", {{"trial": n}})  # the worker starts exporting
            # Spread the fork over the first export (client, connect, send).
            time.sleep((n % 10) * 0.006)
            child = os.fork()
            if child == 0:
                for i in range({CHILD_EVENTS}):
                    tracker.track("child", {{"trial": n, "i": i}})
                ok = tracker.flush(8)
                os._exit(0 if ok else 3)
            status = wait(child, 15)
            ok = tracker.flush(8)
            os._exit(0 if ok and status == 0 else (4 if status == "hung" else 5))

        results = []
        for n in range({TRIALS}):
            # Each trial in a process forked from this thread-free one, so
            # each has a first export of its own.
            pid = os.fork()
            if pid == 0:
                try:
                    trial(n)
                finally:
                    os._exit(6)
            results.append(wait(pid, 40))
        print(json.dumps(results))
        """,
        sink.url,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    # 0: both delivered; 4: the child hung; 5: the child's events not delivered.
    assert results == [0] * TRIALS, collections.Counter(results)
    with sink.cond:
        events = [e for body in sink.bodies for e in body["events"]]
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    per_trial: dict[tuple[str, int], int] = collections.Counter(
        (e["name"], e["properties"]["trial"]) for e in events
    )
    expected: dict[tuple[str, int], int] = {}
    for n in range(TRIALS):
        expected[("parent", n)] = 1
        expected[("child", n)] = CHILD_EVENTS
    assert per_trial == expected


def test_child_forked_while_parent_threads_hold_trackware_locks(
    sink: Sink, tmp_path: t.Any
) -> None:
    """A parent thread may be writing a dead letter, a JSON-lines export or a
    log line (holding those locks) at the moment of a fork, and the child
    reuses the thread ids of the parent's workers for its own new threads. The
    child still dead-letters, exports, logs, flushes from a new thread and
    shuts down, within a deadline."""
    sink.default_status = 400  # every event is rejected: dead letter and a log line
    proc = run_script(
        """
        import os, signal, sys, threading, time
        import trackware
        from trackware import _log
        from trackware.exporters import HTTPExporter, JSONLinesExporter

        lines = JSONLinesExporter(sys.argv[3])
        tracker = trackware.Tracker(
            [HTTPExporter(sys.argv[1]), lines],
            flush_interval=0,
            dead_letter=sys.argv[2],
        )
        tracker.track("parent")
        assert tracker.flush(10)  # the worker thread exists; its id is known
        # A parent thread caught at the fork in the middle of a dead-letter
        # write, an export to a file and a log call (their locks held).
        held, release = threading.Event(), threading.Event()

        def writer():
            with tracker.dead_letter._lock, lines._lock, _log._throttle._lock:
                held.set()
                release.wait()

        threading.Thread(target=writer).start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            result = {}

            def child():
                tracker.track("child")
                result["flushed"] = tracker.flush(8)
                result["shut"] = tracker.shutdown(timeout=5)

            thread = threading.Thread(target=child)
            thread.start()
            thread.join(20)
            dead = tracker.stats()["destinations"]["http"]["dead_lettered"]
            ok = result == {"flushed": True, "shut": True} and dead == 1
            os._exit(0 if ok else 3)
        release.set()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                print(os.waitstatus_to_exitcode(status))
                break
            time.sleep(0.02)
        else:
            os.kill(pid, signal.SIGKILL)
            print("hung")
        """,
        sink.url,
        str(tmp_path / "dead.jsonl"),
        str(tmp_path / "events.jsonl"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0", proc.stderr[-3000:]
    for name in ("dead.jsonl", "events.jsonl"):
        lines = (tmp_path / name).read_text().splitlines()
        records = [json.loads(x) for x in lines]
        names = [r["event"]["name"] if "event" in r else r["name"] for r in records]
        assert sorted(names) == ["child", "parent"], name


# --- ending by SIGTERM ---------------------------------------------------------

TERM_SCRIPT = """
import os, signal, sys, time
import trackware
from trackware.exporters import HTTPExporter

stopping = []
if sys.argv[2] == "server":
    # A server's own handler, installed before the app (and its tracker) is
    # loaded; like uvicorn's, it stops gracefully, then restores the handler
    # it found and raises SIGTERM again.
    found = signal.signal(signal.SIGTERM, lambda *a: stopping.append(True))
tracker = trackware.Tracker(
    [HTTPExporter(sys.argv[1], timeout=1, connect_timeout=1)],
    flush_interval=60,  # nothing leaves before SIGTERM
    shutdown_timeout=2,
    dead_letter=sys.argv[3],
)
for i in range(50):
    tracker.track("queued", {"i": i})
print("ready", flush=True)
deadline = time.monotonic() + 60
while not stopping and time.monotonic() < deadline:
    time.sleep(0.01)
if stopping:
    signal.signal(signal.SIGTERM, found)
    signal.raise_signal(signal.SIGTERM)
print("the server returned", flush=True)
"""


@pytest.mark.parametrize("handler", ["default", "server"])
@pytest.mark.parametrize("vendor", ["healthy", "down"])
def test_sigterm_ends_the_process_after_the_trackers_shut_down(
    handler: str, vendor: str, sink: Sink, tmp_path: t.Any
) -> None:
    """SIGTERM at its default action, or through a server handler that
    re-raises it after a graceful stop: the 50 queued events are delivered
    (or dead-lettered when the vendor is down) before the process ends, and
    it still ends by SIGTERM."""
    url = sink.url if vendor == "healthy" else f"http://127.0.0.1:{free_port()}/x"
    dead = tmp_path / "term-dead.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", TERM_SCRIPT, url, handler, str(dead)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n", proc.stderr
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGTERM, (out, err)
    dead_letters = dead.read_text().splitlines() if dead.exists() else []
    if vendor == "healthy":
        assert len(sink.ids) == 50 == len(set(sink.ids))
        assert dead_letters == []
    else:
        assert len(dead_letters) == 50
        assert {json.loads(x)["event"]["name"] for x in dead_letters} == {"queued"}
