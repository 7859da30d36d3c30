"""Process-level behaviour: fork, interpreter exit, long outages (real subprocesses)."""

from __future__ import annotations

import json
import os
import typing as t

import pytest
from _support import Sink, free_port, run_script

pytestmark = pytest.mark.slow


def test_forked_child_delivers_its_own_events_and_parent_sends_once(
    sink: Sink,
) -> None:
    """A fork()ed child's 1,000 events all arrive; the parent's arrive exactly once."""
    proc = run_script(
        """
        import json, os, sys
        import trackware
        from trackware.exporters import HTTPExporter

        tracker = trackware.Tracker(
            [HTTPExporter(sys.argv[1], events=["parent", "child"])],
            flush_interval=0.05,
            dead_letter=None,
        )
        parent = [tracker.track("parent", {"i": i}).event_id for i in range(300)]
        tracker.track("unmapped")
        pid = os.fork()
        if pid == 0:
            child = [tracker.track("child", {"i": i}).event_id for i in range(1000)]
            tracker.track("unmapped")
            tracker.track("unmapped")
            # The child's counters start from zero and keep counting.
            assert tracker.stats()["destinations"]["http"]["not_applicable"] == 2
            with open(sys.argv[2], "w") as f:
                json.dump(child, f)
            sys.exit(0)  # a normal exit: atexit delivers the child's queue
        _, status = os.waitpid(pid, 0)
        assert tracker.flush(30)
        assert tracker.stats()["destinations"]["http"]["not_applicable"] == 1
        print(json.dumps({"parent": parent, "status": status}))
        """,
        sink.url,
        os.path.join(os.environ["TRACKWARE_DEAD_LETTER_PATH"] + ".child"),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == 0
    with open(os.environ["TRACKWARE_DEAD_LETTER_PATH"] + ".child") as f:
        child = json.load(f)
    assert len(child) == 1000
    assert sink.wait_for(1300, timeout=30)
    assert len(sink.ids) == 1300 == len(set(sink.ids))
    assert set(sink.ids) == set(child) | set(out["parent"])


def test_multiprocessing_fork_child_delivers(sink: Sink) -> None:
    """A multiprocessing (fork) child, which exits via os._exit, still delivers."""
    proc = run_script(
        """
        import multiprocessing, sys
        import trackware
        from trackware.exporters import HTTPExporter

        tracker = trackware.Tracker(
            [HTTPExporter(sys.argv[1])], flush_interval=30, dead_letter=None
        )
        tracker.track("parent")

        def work():
            for i in range(500):
                tracker.track("child", {"i": i})

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            p = ctx.Process(target=work)
            p.start()
            p.join()
            assert p.exitcode == 0
            assert tracker.flush(30)
        """,
        sink.url,
    )
    assert proc.returncode == 0, proc.stderr
    assert sink.wait_for(501, timeout=30)
    assert len(sink.ids) == 501 == len(set(sink.ids))


def test_events_are_delivered_at_interpreter_exit(sink: Sink) -> None:
    """A script that tracks 5,000 events and returns without flush delivers them."""
    proc = run_script(
        """
        import sys
        import trackware
        from trackware.exporters import HTTPExporter

        def main():
            tracker = trackware.Tracker(
                [HTTPExporter(sys.argv[1])],
                flush_interval=60,  # nothing is sent before exit on its own
                shutdown_timeout=20,
                dead_letter=None,
            )
            trackware.set_tracker(tracker)
            for i in range(5000):
                trackware.track("exit.test", {"i": i})

        main()
        """,
        sink.url,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(sink.ids) == 5000 == len(set(sink.ids))


def test_million_events_during_an_outage_stay_bounded_and_accounted() -> None:
    """1,000,000 events while the server is down: bounded memory, exact
    accounting, no exception; queued events flow once the server is back."""
    port = free_port()
    proc = run_script(
        """
        import json, resource, sys, time
        from _support import Sink
        import trackware
        from trackware.exporters import HTTPExporter

        port = int(sys.argv[1])
        tracker = trackware.Tracker(
            [HTTPExporter(f"http://127.0.0.1:{port}/events", timeout=1)],
            max_queue_size=10_000,
            retry=trackware.RetryPolicy(
                base_delay=0.05, max_delay=0.2, max_attempts=None,
                failure_threshold=3, open_for=0.2, max_open_for=0.5,
            ),
            dead_letter=trackware.MemoryDeadLetter(),
        )
        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        errors = 0
        for i in range(1_000_000):
            try:
                tracker.track("outage", {"i": i, "page": "/offers"})
            except Exception:
                errors += 1
            if i == 100_000:
                mid_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        end_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        during = tracker.stats()
        server = Sink(port)
        ok = tracker.flush(60)
        after = tracker.stats()
        print(json.dumps({
            "errors": errors, "base": base_rss, "mid": mid_rss, "end": end_rss,
            "during": during, "after": after, "flushed": ok,
            "received": len(server.ids), "distinct": len(set(server.ids)),
        }))
        server.stop()
        tracker.shutdown()
        """,
        str(port),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["errors"] == 0
    during = out["during"]
    dest = during["destinations"]["http"]
    assert during["tracked"] == 1_000_000
    assert dest["queue_depth"] <= 10_000
    accounted = (
        dest["sent"]
        + dest["rejected"]
        + dest["failed"]
        + sum(dest["dropped"].values())
        + dest["queue_depth"]
        + dest["in_flight"]
    )
    assert accounted == dest["enqueued"] == 1_000_000
    assert dest["dropped"]["queue_full"] >= 980_000
    # Memory: growth between 100k and 1M events is bounded by the queue, not
    # by the number of events (KiB; a leak of 900k events would be >300 MiB).
    assert out["end"] - out["mid"] < 64 * 1024
    after = out["after"]["destinations"]["http"]
    assert out["flushed"] is True
    assert after["sent"] == out["received"] == out["distinct"]
    assert after["sent"] == 1_000_000 - after["dropped"]["queue_full"]
    assert after["queue_depth"] == 0 and after["in_flight"] == 0


_ = t
