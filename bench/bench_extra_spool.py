"""Benchmarks of the durable SQLite spool (issue 10), printed as a markdown table.

Rows: ``track()`` median with the memory queue and with the spool in each
mode (and with ``spool_fsync=True``); events/s through the spool with one
worker; events/s into the spool with the destination down; replay of the
spooled events by a new process after a restart. Wall clock on this machine;
not a test.

"Through, 1 worker": ``n`` events tracked in a loop (batch mode) and
delivered by the destination's one worker, from the first ``track()`` until
``flush()`` returns. Each is measured twice: to the loopback sink (a separate
process: the HTTP exporter's cost is in the figure) and to a null-cost
destination (an exporter that accepts every batch at once: the spool's own
cost), each beside the memory queue in the same run, the anchor the spool
cannot beat. Replay: a new process adopts a killed-like process's file
(``n`` events) and delivers them, to the sink and (a copy of the file) to
the null destination.

    python bench/bench_extra_spool.py [--events N] [--throughput N] [--replay N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import typing as t

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import PROPS, median_ns
from _sink import RemoteSink

import trackware
from trackware.exporters import BaseExporter, ExportResult, HTTPExporter


def median_us(fn: t.Callable[[], object], n: int) -> float:
    return median_ns(fn, n) / 1000


def track_median(url: str, n: int, **options: t.Any) -> float:
    tracker = trackware.Tracker(
        [HTTPExporter(url)],
        max_queue_size=n + 10,
        max_queue_bytes=1 << 31,
        dead_letter=None,
        register_atexit=False,
        **options,
    )
    tracker.track("warm-up", PROPS)
    value = median_us(lambda: tracker.track("offer.activated", PROPS), n)
    tracker.flush(120)
    tracker.shutdown(30)
    return value


class NullExporter(BaseExporter):
    """A null-cost destination: every batch is accepted at once (counted)."""

    def __init__(self, name: str = "http", expect: int = 0) -> None:
        super().__init__(name=name)  # max_batch_size 100, as HTTPExporter's
        self.count = 0
        self.expect = expect
        self.reached = threading.Event()

    def export(self, events: t.Sequence[trackware.Event], /) -> ExportResult:
        result = ExportResult()
        result.sent.extend(events)
        self.count += len(events)
        if self.expect and self.count >= self.expect:
            self.reached.set()
        return result


def through(url: str | None, n: int, folder: str | None) -> float:
    """events/s: track n into the spool (batch; None: the memory queue) and
    deliver with one worker (to the sink at url; None: a null destination)."""
    tracker = trackware.Tracker(
        [HTTPExporter(url) if url else NullExporter()],
        spool=folder,
        max_queue_size=n + 10,
        max_queue_bytes=1 << 31,
        dead_letter=None,
        register_atexit=False,
    )
    t0 = time.perf_counter()
    for i in range(n):
        tracker.track("offer.activated", {"i": i, **PROPS})
    ok = tracker.flush(600)
    elapsed = time.perf_counter() - t0
    assert ok and tracker.stats()["destinations"]["http"]["sent"] == n
    tracker.shutdown(30)
    return n / elapsed


_SPOOL_DOWN = """
import os, sys, time
import trackware
from trackware.exporters import BaseExporter, ExportResult, HTTPExporter

folder, n = sys.argv[1], int(sys.argv[2])
tracker = trackware.Tracker(
    [HTTPExporter("http://127.0.0.1:9/down", timeout=1)], spool=folder,
    spool_max_bytes=4 * 1024**3, dead_letter=None, register_atexit=False,
    retry=trackware.RetryPolicy(max_attempts=None, max_delay=5),
)
props = {"offer_id": "o-1", "amount": 3, "channel": "OLB"}
t0 = time.perf_counter()
for i in range(n):
    tracker.track("offer.activated", {"i": i, **props})
for spool in tracker.backends.spools.values():
    spool.close()
print(n / (time.perf_counter() - t0), flush=True)
os._exit(0)
"""


def replay_null(n: int, folder: str) -> float:
    """events/s delivered to a null destination by a new process that adopts
    the file of ``n`` events in ``folder``."""
    null = NullExporter(expect=n + 1)
    t0 = time.perf_counter()
    tracker = trackware.Tracker(
        [null], spool=folder, dead_letter=None, register_atexit=False
    )
    tracker.track("start", PROPS)  # starts the worker
    ok = null.reached.wait(3600)
    elapsed = time.perf_counter() - t0
    assert ok, null.count
    tracker.shutdown(30)
    return n / elapsed


def replay(
    url: str, sink: RemoteSink, n: int, folder: str, copy: str | None = None
) -> tuple[float, float]:
    """(events/s into the spool with the destination down, events/s delivered
    by a new process that adopts the file); ``copy``: the spooled folder is
    copied there first (for :func:`replay_null`)."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SPOOL_DOWN), folder, str(n)],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    into = float(out.stdout.strip())
    if copy is not None:
        shutil.copytree(folder, copy)
    before = sink.count
    t0 = time.perf_counter()
    tracker = trackware.Tracker(
        [HTTPExporter(url)], spool=folder, dead_letter=None, register_atexit=False
    )
    tracker.track("start", PROPS)  # starts the worker
    ok = sink.wait_for(before + n + 1, 3600)
    elapsed = time.perf_counter() - t0
    assert ok, sink.count - before
    tracker.shutdown(30)
    return into, n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--throughput", type=int, default=100_000)
    parser.add_argument("--replay", type=int, default=1_000_000)
    args = parser.parse_args()
    sink = RemoteSink()
    url = sink.url + "/events"
    root = tempfile.mkdtemp(prefix="bench-spool-")
    rows: list[tuple[str, str, str, bool | None]] = []
    try:
        n = args.events
        memory = track_median(url, n)
        rows.append(("track() memory queue", f"{memory:.2f} µs", "", None))
        batch = track_median(url, n, spool=f"{root}/b")
        rows.append(
            (
                'track() spool, durability="batch"',
                f"{batch:.2f} µs",
                "≤ 5 µs",
                batch <= 5,
            )
        )
        always = track_median(url, n, spool=f"{root}/a", durability="always")
        rows.append(
            (
                'track() spool, durability="always"',
                f"{always:.2f} µs",
                "≤ 12 µs",
                always <= 12,
            )
        )
        fsync = track_median(
            url, min(n, 2000), spool=f"{root}/f", durability="always", spool_fsync=True
        )
        rows.append(
            ('track() spool, "always" + spool_fsync=True', f"{fsync:.1f} µs", "", None)
        )
        for label, target_url in (("loopback sink", url), ("null destination", None)):
            memory_rate = through(target_url, args.throughput, None)
            rows.append(
                (
                    f"events/s through the memory queue, 1 worker, {label} "
                    "(same run: the anchor)",
                    f"{memory_rate:,.0f}",
                    "",
                    None,
                )
            )
            where = f"{root}/t-{'sink' if target_url else 'null'}"
            rate = through(target_url, args.throughput, where)
            rows.append(
                (
                    f"events/s through the spool, 1 worker, {label} (track + deliver)",
                    f"{rate:,.0f}",
                    "≥ 100,000",
                    rate >= 100_000,
                )
            )
        into, out = replay(url, sink, args.replay, f"{root}/r", f"{root}/r-null")
        null_out = replay_null(args.replay, f"{root}/r-null")
        rows.append(
            (
                f"events/s into the spool, destination down ({args.replay:,})",
                f"{into:,.0f}",
                "",
                None,
            )
        )
        rows.append(
            (
                f"replay of {args.replay:,} spooled events after a restart, "
                "loopback sink",
                f"{out:,.0f}/s",
                "≥ 50,000/s",
                out >= 50_000,
            )
        )
        rows.append(
            (
                f"replay of {args.replay:,} spooled events after a restart, "
                "null destination",
                f"{null_out:,.0f}/s",
                "≥ 50,000/s",
                null_out >= 50_000,
            )
        )
    finally:
        sink.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("| row | value | target | met |")
    print("|---|---|---|---|")
    for name, value, target, met in rows:
        mark = "" if met is None else ("met" if met else "missed")
        print(f"| {name} | {value} | {target} | {mark} |")


if __name__ == "__main__":
    main()
