"""trackware.metrics.prometheus under PROMETHEUS_MULTIPROC_DIR, with a fork:
the aggregated files show the parent's and the child's stats() summed."""

from __future__ import annotations

import typing as t

import pytest
from _support import run_script

SCRIPT = r"""
import json, os, sys, time
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]  # before prometheus_client
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from _support import Sink
from metrics.expect import (
    assert_matches, busy_tracker, busy_traffic, key, parsed_samples,
    prometheus_expected,
)
import trackware.metrics

def scrape():
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return parsed_samples(generate_latest(registry).decode())

sink = Sink()
tracker = busy_tracker(sink, sys.argv[2])
metrics = trackware.metrics.prometheus(tracker, CollectorRegistry(), interval=0.05)
assert metrics.multiprocess
tracker.track("offer.viewed")
assert tracker.flush(10)
before = tracker.stats()
metrics.sync()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    # The child: fresh accounts (its tracker is not registered for exit:
    # the metrics reset it), its own files, a new thread that syncs them.
    code = 3
    try:
        assert tracker.stats()["tracked"] == 0
        for i in range(3):
            tracker.track("offer.viewed", {"i": i})
        tracker.track("internal.ping")
        tracker.track("")
        assert tracker.flush(10)
        mine = tracker.stats()
        os.write(write, json.dumps(mine).encode())
        # Until the child's own thread has synced ALL of its figures (not
        # only a first one: it syncs every 0.05 s, possibly mid-flush).
        want = prometheus_expected([before, mine])

        def synced():
            try:
                assert_matches(scrape(), want)
            except AssertionError:
                return False
            return True

        deadline = time.monotonic() + 20
        while not synced() and time.monotonic() < deadline:
            time.sleep(0.02)
        code = 0 if synced() else 4
    finally:
        os._exit(code)  # no exit sync: the child's thread did it
os.close(write)
child = json.loads(os.read(read, 1 << 20))
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
busy_traffic(tracker, sink)
metrics.sync()
parent = tracker.stats()
scraped = scrape()
assert_matches(scraped, prometheus_expected([parent, child]))
assert scraped[key("trackware_dropped_events_total", reason="invalid")] == 2
duration = key("trackware_export_duration_seconds_count", destination="sink")
assert scraped[duration] == sink.requests, (scraped[duration], sink.requests)

# A child that exits before its thread syncs: the exit sync writes its figures.
metrics.interval = 3600.0  # the children's threads wait this long
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    for i in range(2):
        tracker.track("order.placed", {"i": i})
    assert tracker.flush(10)
    os.write(write, json.dumps(tracker.stats()).encode())
    sys.exit(0)  # the exit callbacks run: the last sync
os.close(write)
last = json.loads(os.read(read, 1 << 20))
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert last["tracked"] == 2
assert_matches(scrape(), prometheus_expected([parent, child, last]))
metrics.close()
tracker.shutdown()
print("ok")
"""


@pytest.mark.slow
def test_the_files_hold_both_processes_figures(tmp_path: t.Any) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    result = run_script(SCRIPT, str(folder), str(tmp_path / "dead.jsonl"), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok", result.stdout + result.stderr
