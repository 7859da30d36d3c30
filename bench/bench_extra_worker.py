"""``trackware worker`` delivery throughput (run by ``make bench`` via bench/run.py).

Events are appended to one destination's stream (the app side's format:
``trackware._codec`` in field ``e``), then 1, 2 and 4 worker processes
(``python -m trackware.worker worker``) deliver them to a loopback HTTP sink
in its own process: one that takes 20 ms per request (batches of 10: a slow
vendor, where workers scale out) and one that answers at once (batches of 100:
the workers' own CPU cost). The workers are started and frozen (SIGSTOP) while
the events go in; the clock runs from the moment they go on (SIGCONT) until
the sink has counted every event. Prints a markdown table (row, value,
target, met/missed).

Needs a Redis: ``$TRACKWARE_REDIS_URL`` or redis://127.0.0.1:6379/0.

    python bench/bench_extra_worker.py [--events-slow N] [--events-fast N]
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
import urllib.request
import uuid

CONFIG = """
import os
from trackware.exporters import HTTPExporter

def make():
    return [HTTPExporter(os.environ["BW_URL"], name="bench",
                         max_batch_size=int(os.environ["BW_BATCH"]))]
"""


def serve_sink(port: int, delay: float) -> None:
    """The sink process: counts ``"event_id"`` keys, answers after ``delay``."""
    count = [0]
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: t.Any) -> None:
            pass

        def do_GET(self) -> None:
            out = str(count[0]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if delay:
                time.sleep(delay)
            with lock:
                count[0] += body.count(b'"event_id"')
            out = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SinkProcess:
    def __init__(self, delay: float) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-sink", str(port), str(delay)]
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                self.count()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def count(self) -> int:
        with urllib.request.urlopen(self.url + "/count", timeout=5) as resp:
            return int(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def seed(client: t.Any, key: str, n: int) -> None:
    from trackware import _codec, _streams
    from trackware._event import Event

    pipe = client.pipeline(transaction=False)
    for i in range(n):
        event = Event(
            "order_completed", {"i": i, "amount": 3, "sku": "A-1"}, user_id=f"u{i}"
        )
        pipe.xadd(
            key,
            {
                _streams.EVENT_FIELD: _codec.encode(event),
                _streams.ID_FIELD: event.event_id,
            },
        )
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def measure(
    redis_url: str, sink: SinkProcess, workers: int, batch: int, n: int, folder: str
) -> float:
    """Events/s ``workers`` processes deliver ``n`` events at."""
    from trackware import _streams

    client = _streams.connect(redis_url)
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    key = _streams.stream_key(namespace, "bench")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([folder, env.get("PYTHONPATH", "")])
    env["BW_URL"] = sink.url + "/events"
    env["BW_BATCH"] = str(batch)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trackware.worker",
                "worker",
                "--config",
                "bench_worker_cfg:make",
                "--redis",
                redis_url,
                "--namespace",
                namespace,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(workers)
    ]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = len(client.xinfo_consumers(key, _streams.GROUP))
            except Exception:
                ready = 0
            if ready == workers:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.05)
        # The workers wait, frozen, while the events go in; the clock starts
        # when they all go on (their reads are already waiting at Redis).
        for proc in procs:
            os.kill(proc.pid, signal.SIGSTOP)
        base = sink.count()
        seed(client, key, n)
        start = time.perf_counter()
        for proc in procs:
            os.kill(proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 600
        while sink.count() < base + n:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not deliver everything")
            time.sleep(0.01)
        return n / (time.perf_counter() - start)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for k in client.scan_iter(match=f"trackware:{namespace}:*"):
            client.delete(k)
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events-slow", type=int, default=3000)
    parser.add_argument("--events-fast", type=int, default=20000)
    args = parser.parse_args()
    redis_url = os.environ.get("TRACKWARE_REDIS_URL") or "redis://127.0.0.1:6379/0"
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "bench_worker_cfg.py"), "w") as f:
            f.write(CONFIG)
        for label, delay, batch, n in (
            ("20 ms per request, batches of 10", 0.02, 10, args.events_slow),
            ("fast sink, batches of 100", 0.0, 100, args.events_fast),
        ):
            sink = SinkProcess(delay)
            try:
                rates = {
                    k: measure(redis_url, sink, k, batch, n, folder) for k in (1, 2, 4)
                }
            finally:
                sink.stop()
            for k, rate in rates.items():
                rows.append(
                    (
                        f"worker delivery, {label}: {k} worker(s)",
                        f"{rate:,.0f} events/s",
                        "",
                        "",
                    )
                )
            ratio = rates[4] / rates[1]
            target = "≥ 3.5×" if delay else "(CPU-bound: report)"
            met = ("met" if ratio >= 3.5 else "missed") if delay else ""
            rows.append(
                (
                    f"worker delivery, {label}: 4 workers / 1 worker",
                    f"{ratio:.2f}×",
                    target,
                    met,
                )
            )
    print(
        f"{os.cpu_count()} CPU(s); {args.events_slow} events (20 ms rows), "
        f"{args.events_fast} (fast rows)\n"
    )
    print("| row | value | target | met/missed |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-sink":
        serve_sink(int(sys.argv[2]), float(sys.argv[3]))
    else:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        raise SystemExit(main())
