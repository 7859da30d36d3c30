"""Redis Streams, the app side: what ``track()`` costs with
``queue="redis://..."`` beside the in-memory queue, and how many events per
second one app process appends to Redis.

Uses the Redis on 127.0.0.1:6379 when it answers, else a throwaway
``redis-server`` on a free port, else prints why it measured nothing. Each
run has a namespace of its own and deletes its keys afterwards. Run from the
repository's root: ``python bench/bench_extra_redis.py [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import NullExporter

import trackware

TRACK_TARGET_US = 5.0
APPEND_TARGET = 100_000


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_url() -> tuple[str | None, subprocess.Popen[bytes] | None]:
    """The Redis to measure against, and the server we started (if any)."""
    if _answers(6379):
        return "redis://127.0.0.1:6379/0", None
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=tempfile.gettempdir(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _answers(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            return None, None
        time.sleep(0.02)
    return f"redis://127.0.0.1:{port}/0", proc


def tracker(url: str | None, namespace: str) -> trackware.Tracker:
    """A tracker that never delivers in-process during the run: the memory
    one absorbs (long flush interval, huge batch), the Redis one appends."""
    options: dict[str, t.Any] = {
        "max_queue_size": 5_000_000,
        "max_queue_bytes": 1 << 34,
        "max_batch_size": 10_000_000,
        "max_batch_bytes": 1 << 34,
        "flush_interval": 3600.0,
        "dead_letter": None,
        "register_atexit": False,
    }
    if url is not None:
        options.update(queue=url, redis_namespace=namespace, redis_maxlen=10_000_000)
    return trackware.Tracker(
        [NullExporter(name="absorb", max_batch_size=10_000_000)], **options
    )


def track_rounds(tr: trackware.Tracker, rounds: int, calls: int) -> list[float]:
    """µs per track() call, one figure per round (the GC off while timed)."""
    track = tr.track
    out = []
    for _r in range(rounds):
        gc.disable()
        t0 = time.perf_counter()
        for i in range(calls):
            track("bench.event", {"i": i, "plan": "pro"}, user_id="u1")
        out.append((time.perf_counter() - t0) / calls * 1e6)
        gc.enable()
    return out


def append_rate(url: str, namespace: str, n: int) -> tuple[float, int, int]:
    """Events/s from track() of the first event until Redis acknowledged the
    last (flush), one process; how many Redis holds; how many were dropped.
    The tracker's queue bounds (which the Redis buffer takes when larger than
    its own) hold the whole run, so the rate is of events kept."""
    tr = tracker(url, namespace)
    track = tr.track
    t0 = time.perf_counter()
    for i in range(n):
        track("bench.event", {"i": i, "plan": "pro"}, user_id="u1")
    ok = tr.flush(timeout=300)
    elapsed = time.perf_counter() - t0
    stats = tr.stats()["destinations"]["absorb"]
    tr.shutdown(timeout=30)
    if not ok:
        print(f"  (flush did not finish: {stats['backend']})")
    dropped = sum(stats["dropped"].values())
    return n / elapsed, int(stats["backend"]["redis_appended"]), dropped


def encode_cost(n: int = 20_000) -> float:
    """µs to encode one bench event with the codec (what the sender does per
    event before sending; a reference for this machine's speed)."""
    from trackware._codec import encode
    from trackware.testing import InMemoryExporter

    exporter = InMemoryExporter()
    tr = trackware.Tracker([exporter], dead_letter=None, register_atexit=False)
    for i in range(1000):
        tr.track("bench.event", {"i": i, "plan": "pro"}, user_id="u1")
    tr.flush(timeout=10)
    events = list(exporter.events)
    tr.shutdown(timeout=5)
    rounds = max(1, n // len(events))
    gc.disable()
    t0 = time.perf_counter()
    for _ in range(rounds):
        for event in events:
            encode(event)
    took = time.perf_counter() - t0
    gc.enable()
    return took / (rounds * len(events)) * 1e6


def cleanup(url: str, namespace: str) -> None:
    from trackware._streams import connect

    client = connect(url)
    try:
        keys = list(client.scan_iter(match=f"trackware:{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args(argv)
    try:
        import redis  # noqa: F401
    except ImportError:
        print("  (redis-py is not installed: no Redis rows)")
        return 0
    url, server = redis_url()
    if url is None:
        print("  (no Redis on 127.0.0.1:6379 and no redis-server on PATH: no rows)")
        return 0
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    rounds, calls, n = (10, 2000, 50_000) if args.quick else (30, 5000, 300_000)
    try:
        memory = tracker(None, namespace)
        redis_tracker = tracker(url, namespace)
        # Interleaved rounds: the machine's noise hits both alike.
        mem_us: list[float] = []
        redis_us: list[float] = []
        track_rounds(memory, 2, calls)  # warm-up
        track_rounds(redis_tracker, 2, calls)
        for _ in range(rounds):
            mem_us += track_rounds(memory, 1, calls)
            redis_us += track_rounds(redis_tracker, 1, calls)
        memory.shutdown(timeout=5)
        redis_tracker.shutdown(timeout=60)
        cleanup(url, namespace)
        rate, appended, dropped = append_rate(url, namespace, n)
        cleanup(url, namespace)
        encode_us = encode_cost()
    finally:
        if server is not None:
            server.kill()
            server.wait()
    med_mem, med_redis = statistics.median(mem_us), statistics.median(redis_us)
    print(
        f"Redis at {url}; {rounds} interleaved rounds x {calls} track() calls "
        f"per queue (median of the rounds' means); {n:,} events appended"
    )
    print()
    print("| row | value | target | |")
    print("|---|---|---|---|")
    print(
        f"| track(), memory queue | {med_mem:.2f} µs | ≤ {TRACK_TARGET_US:g} µs | "
        f"{'met' if med_mem <= TRACK_TARGET_US else 'missed'} |"
    )
    print(
        f"| track(), Redis queue | {med_redis:.2f} µs | ≤ {TRACK_TARGET_US:g} µs | "
        f"{'met' if med_redis <= TRACK_TARGET_US else 'missed'} |"
    )
    met = rate >= APPEND_TARGET and appended == n and not dropped
    print(
        f"| events/s into Redis, one app process (track → XADD acknowledged) | "
        f"{rate:,.0f}/s ({appended:,} appended, {dropped} dropped) | "
        f"≥ {APPEND_TARGET:,}/s | {'met' if met else 'missed'} |"
    )
    print(
        f"| reference: encoding one event (codec), this machine | "
        f"{encode_us:.2f} µs | — | — |"
    )
    print()
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.1f} ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
