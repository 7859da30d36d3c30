"""The inspector's cost to the app: ``track()`` with and without a tracker
attached to a ``trackware inspect`` sidecar, the CPU per delivered event (all
threads: the app's, the worker's, the inspector client's), and the proof that
with the inspector off none of its code runs (a profiler counting calls into
``trackware._inspect`` and ``trackware._tap`` while events are tracked and
exported over real HTTP).

The sidecar runs in a process of its own (as in use). Run from the
repository's root: ``python bench/bench_extra_inspector.py [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.server
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import types
import typing as t

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import NullExporter, absorbing_tracker

import trackware
from trackware import _inspect, _tap
from trackware.exporters import HTTPExporter

#: Added µs per track() call with the inspector on (a signal and a deque append).
ADDED_TARGET_US = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def sidecar() -> t.Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trackware.inspector", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("trackware inspect did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait()


def attached(
    tr: trackware.Tracker, url: str, max_buffer: int
) -> _inspect.InspectorClient:
    client = _inspect.InspectorClient(tr, url, max_buffer=max_buffer)
    client.start()
    return client


def drained(client: _inspect.InspectorClient | None) -> None:
    """Wait (untimed) until the client has posted what it holds."""
    if client is None:
        return
    deadline = time.monotonic() + 30
    while client.stats()["buffered"] and time.monotonic() < deadline:
        time.sleep(0.01)


def track_round(
    tr: trackware.Tracker, calls: int, client: _inspect.InspectorClient | None
) -> float:
    """µs per track() call over ``calls`` calls: the calling thread's CPU
    time (other processes on a busy machine do not count; the GC is off)."""
    drained(client)
    track = tr.track
    gc.disable()
    t0 = time.thread_time()
    for i in range(calls):
        track("bench.event", {"i": i, "plan": "pro"}, user_id="u1")
    elapsed = time.thread_time() - t0
    gc.enable()
    return elapsed / calls * 1e6


def cpu_per_event(url: str | None, n: int) -> tuple[float, dict[str, t.Any]]:
    """CPU µs per event (process time, every thread), tracked and delivered
    to a do-nothing exporter, with or without the inspector."""
    tr = trackware.Tracker(
        [NullExporter(name="null")],
        flush_interval=0.05,
        max_queue_size=n + 10,
        dead_letter=None,
        register_atexit=False,
    )
    client = attached(tr, url, n * 3) if url else None
    t0 = time.process_time()
    for i in range(n):
        tr.track("bench.event", {"i": i, "plan": "pro"}, user_id="u1")
    tr.flush(60)
    drained(client)
    used = time.process_time() - t0
    stats = client.stats() if client is not None else {}
    if client is not None:
        client.close(time.monotonic() + 5)
    tr.shutdown(timeout=5)
    return used / n * 1e6, stats


class _Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: t.Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def calls_into_inspector(url: str | None, n: int) -> int:
    """Python calls into trackware._inspect and trackware._tap while ``n``
    events are tracked and exported over real HTTP (a local sink)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    watched = {_inspect.__file__, _tap.__file__}
    count = 0

    def profile(frame: types.FrameType, event: str, arg: t.Any) -> None:
        nonlocal count
        if event == "call" and frame.f_code.co_filename in watched:
            count += 1

    tr = trackware.Tracker(
        [HTTPExporter(f"http://127.0.0.1:{server.server_port}/")],
        flush_interval=0.01,
        dead_letter=None,
        register_atexit=False,
    )
    client = _inspect.attach(tr, url) if url else None
    threading.setprofile(profile)  # the worker threads (started after this)
    sys.setprofile(profile)
    try:
        for i in range(n):
            tr.track("bench.event", {"i": i})
            if i % 100 == 99:
                tr.flush(10)
        tr.flush(10)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    if client is not None:
        client.close(time.monotonic() + 5)
    tr.shutdown(timeout=5)
    server.shutdown()
    server.server_close()
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args(argv)
    rounds, calls, n = (10, 1000, 5_000) if args.quick else (30, 2000, 20_000)
    with sidecar() as url:
        off = absorbing_tracker()
        on = absorbing_tracker()
        client = attached(on, url, calls * 4)
        track_round(off, calls, None)  # warm-up
        track_round(on, calls, client)
        off_us: list[float] = []
        on_us: list[float] = []
        for _ in range(rounds):  # interleaved: the machine's noise hits both
            off_us.append(track_round(off, calls, None))
            on_us.append(track_round(on, calls, client))
        lost = sum(client.stats()["dropped"].values())
        client.close(time.monotonic() + 5)
        off.shutdown(timeout=5)
        on.shutdown(timeout=5)
        cpu_off, _ = cpu_per_event(None, n)
        cpu_on, cpu_stats = cpu_per_event(url, n)
        probe_off = calls_into_inspector(None, 2_000)
        probe_on = calls_into_inspector(url, 2_000)
    med_off, med_on = statistics.median(off_us), statistics.median(on_us)
    added = med_on - med_off
    print(
        f"{rounds} interleaved rounds x {calls} track() calls per tracker "
        "(median of the rounds' means, the app thread's CPU time; the client "
        "posts between rounds); "
        f"{n:,} events for the CPU rows; sidecar in its own process"
    )
    print()
    print("| row | value | target | |")
    print("|---|---|---|---|")
    print(f"| track(), inspector off | {med_off:.2f} µs | — | |")
    print(f"| track(), inspector on | {med_on:.2f} µs ({lost} copies dropped) | — | |")
    verdict = "met" if added <= ADDED_TARGET_US else "missed"
    print(
        f"| track() added by the inspector | {added:+.2f} µs | "
        f"≤ {ADDED_TARGET_US:g} µs | {verdict} |"
    )
    print(
        f"| CPU per delivered event, all threads, off → on | {cpu_off:.1f} → "
        f"{cpu_on:.1f} µs (+{cpu_on - cpu_off:.1f}; {cpu_stats.get('records', 0):,} "
        f"records posted) | — | |"
    )
    print(
        f"| calls into _inspect/_tap while 2,000 events are tracked and exported "
        f"over HTTP, off (on) | {probe_off} ({probe_on:,}) | 0 when off | "
        f"{'met' if probe_off == 0 and probe_on > 0 else 'missed'} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
