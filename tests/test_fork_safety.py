"""Fork safety at every moment: a fork while the first export is in flight
(real os.fork(), a real HTTP sink), and nothing imported on a worker thread."""

from __future__ import annotations

import collections
import json
import typing as t

import pytest
from _support import Sink, run_script

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


_ = t
