"""Per-request overhead of the Flask integration (a benchmark, not a test).

Calls a hello-world Flask app through ``app(environ, start_response)``, the
way a WSGI server does (body iterated and closed), in three variants measured
in the same run, interleaved round by round:

* plain Flask;
* trackware: ``Trackware(app, tracker=...)`` with page and session tracking on,
  a returning visitor (visitor and session cookies sent back), and a tracker
  whose exporter never sends during the run (its queue absorbs the events);
* trackware as above, but with a tracker whose worker drains its queue
  concurrently (a null exporter, the default 1 s flush interval): the worker
  competes with the request thread for the GIL, as in production;
* OpenTelemetry's ``FlaskInstrumentor`` with the SDK's ``TracerProvider``
  installed (spans are created and ended for real; without the SDK the API's
  no-op tracer would make it look far cheaper than it is in use).

Each round times ``--requests`` calls; the numbers are medians over
``--rounds`` rounds. Run: ``.venv-bench/bin/python bench/bench_flask.py``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import typing as t

import flask
from _common import NullExporter, sdk_tracer_provider
from werkzeug.test import EnvironBuilder

import trackware
from trackware.integrations.flask import Trackware

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


def make_app() -> flask.Flask:
    app = flask.Flask("bench")
    app.secret_key = "bench-secret-key"

    @app.route("/hello")
    def hello() -> str:
        return "Hello, World!"

    return app


class Client:
    """Calls a WSGI app like a server does, keeping the cookies it sets."""

    def __init__(self, app: t.Any, tracker: trackware.Tracker | None = None) -> None:
        self.app = app
        # The page events of a round are built on the tracker's intake thread
        # (concurrently, sharing the GIL); whatever it has not done when the
        # round's requests are over is done before the clock stops, so each
        # variant pays for all of its own work.
        self.settle = tracker._drain if tracker is not None else (lambda: None)
        self.base = EnvironBuilder(
            path="/hello", headers={"User-Agent": UA, "Referer": "https://x.test/"}
        ).get_environ()
        self.set_cookies: list[str] = []
        self.cookies: dict[str, str] = {}

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
    ) -> t.Callable[[bytes], object]:
        for name, value in headers:
            if name == "Set-Cookie":
                self.set_cookies.append(value)
        return _write

    def call(self, environ: dict[str, t.Any]) -> None:
        body = self.app(environ, self.start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def round(self, n: int) -> float:
        """Seconds per request over ``n`` requests."""
        if self.cookies:
            self.base["HTTP_COOKIE"] = "; ".join(
                f"{k}={v}" for k, v in self.cookies.items()
            )
        base = self.base
        call = self.call
        t0 = time.perf_counter()
        for _ in range(n):
            # A fresh environ per request (a server builds one too), dropped
            # after the request as a server drops it.
            call(dict(base))
        self.settle()
        elapsed = time.perf_counter() - t0
        for header in self.set_cookies:  # a browser would send these back
            name, _, rest = header.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        self.set_cookies.clear()
        return elapsed / n


def _write(data: bytes) -> None:
    pass


_DRAINING: list[trackware.Tracker] = []


def build_variants() -> tuple[dict[str, Client], trackware.Tracker]:
    variants: dict[str, Client] = {}
    variants["plain Flask"] = Client(make_app())

    tracker = trackware.Tracker(
        [NullExporter(name="absorb")],
        max_queue_size=5_000_000,
        max_queue_bytes=1 << 34,
        max_batch_size=10_000_000,
        max_batch_bytes=1 << 34,
        flush_interval=3600.0,
        dead_letter=None,
        register_atexit=False,
    )
    tracked_app = make_app()
    Trackware(tracked_app, tracker=tracker)
    variants["trackware (page + sessions)"] = Client(tracked_app, tracker)
    visitor_app = make_app()
    Trackware(visitor_app, tracker=tracker, page_event=None, sessions=False)
    variants["trackware (visitor scope only)"] = Client(visitor_app, tracker)
    draining = trackware.Tracker(
        [NullExporter()], dead_letter=None, register_atexit=False
    )
    draining_app = make_app()
    Trackware(draining_app, tracker=draining)
    variants["trackware (page + sessions, draining)"] = Client(draining_app, draining)
    _DRAINING.append(draining)

    try:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
    except ImportError:
        print("  (opentelemetry-instrumentation-flask not installed: skipped)")
    else:
        otel_app = make_app()
        FlaskInstrumentor().instrument_app(
            otel_app, tracer_provider=sdk_tracer_provider()
        )
        variants["OpenTelemetry FlaskInstrumentor"] = Client(otel_app)
    return variants, tracker


def run(rounds: int = 200, requests: int = 200) -> dict[str, float]:
    """Median µs per request of each variant; also prints the table."""
    variants, tracker = build_variants()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for client in variants.values():  # warm up; take the cookies
        client.round(50)
        client.round(50)
    # Every variant sends the same browser cookies (Flask parses them all).
    jar = variants["trackware (page + sessions)"].cookies
    for client in variants.values():
        client.cookies = {**jar, **client.cookies}
    gc.collect()
    gc.freeze()
    for _ in range(rounds):
        for name, client in variants.items():
            samples[name].append(client.round(requests))
    gc.unfreeze()
    medians = {name: statistics.median(s) * 1e6 for name, s in samples.items()}
    plain = medians["plain Flask"]
    print(
        f"## Flask per-request overhead (median of {rounds} rounds x "
        f"{requests} requests)"
    )
    print(f"  {'variant':<40} {'µs/request':>11} {'added µs':>9} {'ratio':>6}")
    for name, us in medians.items():
        print(f"  {name:<40} {us:11.1f} {us - plain:9.1f} {us / plain:6.2f}")
    stats = tracker.stats()
    tracked = stats["tracked"]
    tracker.shutdown(timeout=30)
    print(f"  (trackware tracked {tracked:,} events during the run)")
    for other in _DRAINING:
        other.flush(60)
        sent = other.stats()["destinations"]["null"]["sent"]
        other.shutdown(timeout=30)
        print(f"  (the draining tracker delivered {sent:,} events)")
    _DRAINING.clear()
    return medians


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``argv`` defaults to none (callable from bench/run.py)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args([] if argv is None else argv)
    print(f"Python {sys.version.split()[0]} on {os.cpu_count()} cores\n")
    run(args.rounds, args.requests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
