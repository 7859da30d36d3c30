"""trackware benchmarks (not tests): ``make bench``.

Each section measures trackware and its reference points in the same run, on
this machine, and prints a table. Numbers are medians of single calls (timer
overhead subtracted) or throughputs over a fixed workload.
"""

from __future__ import annotations

import argparse
import gc
import glob
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import typing as t
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import PROPS, NullExporter, median_ns
from _sink import RemoteSink

import trackware
from trackware.exporters import HTTPExporter


def bench_track(n: int) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    sq: queue.SimpleQueue[object] = queue.SimpleQueue()
    rows.append(("queue.SimpleQueue.put", median_ns(lambda: sq.put(PROPS), n)))
    rows.append(("uuid.uuid4()", median_ns(uuid.uuid4, n)))

    sink = RemoteSink()
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url + "/events")],
        max_queue_size=n + 10,
        max_queue_bytes=1 << 31,
        dead_letter=None,
    )
    rows.append(
        (
            "trackware track() -> HTTPExporter",
            median_ns(lambda: tracker.track("offer.activated", PROPS), n),
        )
    )
    tracker.flush(60)
    tracker.shutdown()

    null = trackware.Tracker([NullExporter()], dead_letter=None)
    rows.append(
        (
            "trackware track() -> null exporter",
            median_ns(lambda: null.track("offer.activated", PROPS), n),
        )
    )
    null.shutdown()

    try:
        from segment.analytics.client import Client
    except ImportError:
        print("segment-analytics-python not installed; skipping Segment")
    else:
        logging.getLogger("segment").setLevel(logging.CRITICAL)
        client = Client(
            "bench-write-key", host=sink.url, max_queue_size=n + 10, sync_mode=False
        )
        rows.append(
            (
                "Segment Client.track()",
                median_ns(
                    lambda: client.track(
                        user_id="c-42", event="offer.activated", properties=PROPS
                    ),
                    n,
                ),
            )
        )
        client.flush()
        client.shutdown()
    sink.stop()
    return rows


def bench_delivery(n: int) -> list[tuple[str, float, int]]:
    rows: list[tuple[str, float, int]] = []
    sink = RemoteSink()
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url + "/events")],
        max_queue_size=n + 10,
        max_queue_bytes=1 << 31,
        dead_letter=None,
    )
    t0 = time.perf_counter()
    for i in range(n):
        tracker.track("offer.activated", {"i": i, **PROPS})
    tracker.flush(300)
    elapsed = time.perf_counter() - t0
    rows.append(("trackware end to end (track + 1 worker)", n / elapsed, sink.count))
    tracker_stats = tracker.stats()["destinations"]["http"]
    assert tracker_stats["sent"] == n, tracker_stats
    tracker.shutdown()

    # Worker drain rate: the first export waits at a gate while the backlog
    # builds, then one worker delivers it; timed from the gate opening.
    gate = threading.Event()

    class GatedHTTPExporter(HTTPExporter):
        def export(
            self, events: t.Sequence[trackware.Event], /
        ) -> trackware.ExportResult:
            gate.wait()
            return super().export(events)

    before = sink.count
    tracker = trackware.Tracker(
        [GatedHTTPExporter(sink.url + "/events")],
        max_queue_size=n + 10,
        max_queue_bytes=1 << 31,
        dead_letter=None,
    )
    for i in range(n):
        tracker.track("offer.activated", {"i": i, **PROPS})
    t0 = time.perf_counter()
    gate.set()
    tracker.flush(300)
    elapsed = time.perf_counter() - t0
    rows.append(
        ("trackware worker draining a backlog", n / elapsed, sink.count - before)
    )
    tracker.shutdown()

    try:
        from segment.analytics.client import Client
    except ImportError:
        sink.stop()
        return rows
    before = sink.count
    client = Client(
        "bench-write-key", host=sink.url, max_queue_size=n + 10, sync_mode=False
    )
    t0 = time.perf_counter()
    for i in range(n):
        client.track(user_id="c-42", event="offer.activated", properties={"i": i})
    client.flush()
    elapsed = time.perf_counter() - t0
    sink.wait_for(before + n, 30)
    rows.append(
        ("Segment end to end (track + 1 consumer)", n / elapsed, sink.count - before)
    )
    client.shutdown()
    sink.stop()
    return rows


def run_extras(timeout: float = 1800.0) -> int:
    """Run every ``bench/bench_extra_*.py`` (added by other parts of the
    project), each in its own process, under a heading of its own. A failing
    or hanging script prints its error and the others still run. Returns the
    number that failed."""
    here = os.path.dirname(os.path.abspath(__file__))
    failed = 0
    for path in sorted(glob.glob(os.path.join(here, "bench_extra_*.py"))):
        name = os.path.basename(path)
        print(f"\n## {name}", flush=True)
        try:
            proc = subprocess.run(
                [sys.executable, path],
                cwd=os.path.dirname(here),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or ""
            text = out.decode() if isinstance(out, bytes) else out
            print(text, end="" if text.endswith("\n") or not text else "\n")
            print(f"  [FAILED] {name}: no result within {timeout:.0f} s")
            failed += 1
            continue
        except OSError as exc:
            print(f"  [FAILED] {name}: {exc}")
            failed += 1
            continue
        out = proc.stdout
        print(out, end="" if out.endswith("\n") or not out else "\n", flush=True)
        if proc.returncode != 0:
            print(f"  [FAILED] {name} exited with status {proc.returncode}")
            failed += 1
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--core-only", action="store_true", help="skip the Flask and ASGI benches"
    )
    parser.add_argument(
        "--extras-only",
        action="store_true",
        help="only run the bench/bench_extra_*.py scripts",
    )
    parser.add_argument(
        "--no-extras", action="store_true", help="skip bench/bench_extra_*.py"
    )
    parser.add_argument(
        "--no-servers",
        action="store_true",
        help="skip the real-server bench (bench/serve.py: uvicorn, gunicorn, wrk)",
    )
    args = parser.parse_args()
    if args.extras_only:
        run_extras()
        return 0
    gc.collect()
    print(f"Python {sys.version.split()[0]} on {os.cpu_count()} cores\n")
    print(f"## Cost on the caller's thread (median of {args.calls:,} calls)")
    rows = bench_track(args.calls)
    for name, ns in rows:
        print(f"  {name:<40} {ns / 1000:8.2f} µs")
    by_name = dict(rows)
    seg = by_name.get("Segment Client.track()")
    ours = by_name["trackware track() -> HTTPExporter"]
    if seg:
        print(f"  Segment / trackware: {seg / ours:.1f}x")
    print(f"\n## Delivery throughput to a loopback sink ({args.events:,} events)")
    delivery = bench_delivery(args.events)
    for name, rate, received in delivery:
        print(f"  {name:<40} {rate:10,.0f} events/s  (sink received {received:,})")
    drain = dict((name, rate) for name, rate, _ in delivery)[
        "trackware worker draining a backlog"
    ]
    print("\n## Targets")
    checks = [
        (f"track() median {ours / 1000:.2f} µs <= 5 µs", ours <= 5000),
        (
            f"track() {seg / ours:.1f}x cheaper than Segment's (>= 6x)"
            if seg
            else "Segment not installed: ratio not measured",
            bool(seg) and seg / ours >= 6,
        ),
        (f"one worker delivers {drain:,.0f} events/s (>= 100,000)", drain >= 1e5),
    ]
    for text, ok in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")
    if not args.core_only:
        # The integrations' per-request overhead, each beside OpenTelemetry's.
        from bench_asgi import main as asgi_main
        from bench_flask import main as flask_main

        print()
        flask_main([])
        print()
        asgi_main([])
        if not args.no_servers:
            # Real servers under wrk, plain / floor / trackware interleaved.
            from serve import main as serve_main

            print()
            serve_main([])
    if not args.no_extras:
        run_extras()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
