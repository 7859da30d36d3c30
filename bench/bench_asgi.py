"""ASGI middleware overhead per request (not a test): ``python bench/bench_asgi.py``.

A minimal Starlette app is called directly (no server, no sockets) inside one
asyncio loop, plain and wrapped, in the same run:

* plain: the app alone;
* trackware, path excluded: the cost of the wrapper alone (headers read,
  exclusion decided, app called);
* trackware, returning visitor: ``TrackwareMiddleware`` with the visitor and
  session cookies a browser sends back (one page event per request; the jar
  takes the ``Set-Cookie`` values after each round, as a browser would);
* trackware, new visitor: no cookies (new ids, a ``session_start`` event and
  two ``Set-Cookie`` headers per request);
* OpenTelemetry: ``opentelemetry-instrumentation-asgi``'s middleware with the
  SDK's ``TracerProvider`` installed (skipped when not installed).

The tracker delivers to a null exporter on its worker thread, concurrently
with the requests. Each round times ``--requests`` single requests per variant
(variants interleaved); the table shows the median over ``--rounds`` rounds of
each round's median, in µs, and the added cost against the plain app, and
also the mean (the round's total time over its requests). The median is
what the request itself waits for; the mean is the whole cost: it includes
the requests that waited for the GIL while the worker drained, and the page
events that the tracker's intake thread builds and queues off the request
path (whatever the intake has not built when a round's requests are over is
built, and timed, before the round ends).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
import typing as t

from _common import BASE_SCOPE, HEADERS, SECRET, NullExporter, sdk_tracer_provider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import trackware
from trackware.integrations.asgi import TrackwareMiddleware

pc = time.perf_counter_ns


def make_app() -> Starlette:
    async def item(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/items/{item_id}", item)])


async def receive() -> dict[str, t.Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: t.Any) -> None:
    return None


async def call(app: t.Any, headers: list[tuple[bytes, bytes]]) -> list[t.Any]:
    """One request; returns the Set-Cookie values sent."""
    cookies: list[t.Any] = []

    async def keep(message: t.Any) -> None:
        if message["type"] == "http.response.start":
            cookies.extend(v for k, v in message["headers"] if k == b"set-cookie")

    scope = dict(BASE_SCOPE)
    scope["headers"] = headers
    await app(scope, receive, keep)
    return cookies


async def time_requests(
    app: t.Any, headers: list[t.Any], n: int, settle: t.Callable[[], object]
) -> tuple[float, float]:
    """Median and mean ns of ``n`` single requests, minus the timer's own cost
    (the mean includes ``settle()``: the page events still to build)."""
    samples = []
    base = BASE_SCOPE
    for _ in range(n):
        scope = dict(base)
        scope["headers"] = headers
        t0 = pc()
        await app(scope, receive, send)
        samples.append(pc() - t0)
    t0 = pc()
    settle()
    settled = pc() - t0
    empty = []
    for _ in range(n):
        t0 = pc()
        empty.append(pc() - t0)
    timer = statistics.median(empty)
    return (
        statistics.median(samples) - timer,
        statistics.fmean(samples) + settled / n - timer,
    )


async def run(rounds: int, requests: int) -> list[tuple[str, float, float]]:
    tracker = trackware.Tracker(
        [NullExporter()], dead_letter=None, max_queue_size=1_000_000
    )
    trackware.set_tracker(tracker)
    plain = make_app()
    tracked = TrackwareMiddleware(make_app(), tracker=tracker, cookie_secret=SECRET)
    # The cookies a browser would send back after its first visit.
    set_cookies = await call(tracked, HEADERS)
    jar_cookies = [c.split(b";", 1)[0] for c in set_cookies]
    jar = b"; ".join(jar_cookies)
    returning = [*HEADERS, (b"cookie", b"theme=dark; " + jar)]
    floor = TrackwareMiddleware(
        make_app(), tracker=tracker, exclude_paths=[r"^/items/"], cookie_secret=SECRET
    )
    variants: list[tuple[str, t.Any, list[t.Any]]] = [
        ("plain Starlette app", plain, HEADERS),
        ("trackware, path excluded (floor)", floor, HEADERS),
        ("trackware, returning visitor", tracked, returning),
        ("trackware, new visitor", tracked, HEADERS),
    ]
    try:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    except ImportError:
        print("opentelemetry-instrumentation-asgi not installed; skipping it")
    else:
        variants.append(
            (
                "OpenTelemetry ASGI middleware",
                OpenTelemetryMiddleware(
                    make_app(), tracer_provider=sdk_tracer_provider()
                ),
                HEADERS,
            )
        )
    settle = tracker.stats  # builds the page events the requests recorded first
    for _, app, headers in variants:  # warm up every code path
        await time_requests(app, headers, min(requests, 500), settle)
        tracker.flush(60)
    per_round: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    means: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for _ in range(rounds):
        for name, app, headers in variants:
            gc.collect()
            median, mean = await time_requests(app, headers, requests, settle)
            per_round[name].append(median)
            means[name].append(mean)
            # What the worker has yet to export (less than a batch, sent when
            # a second old) is delivered now, untimed: never in the next
            # variant's round.
            tracker.flush(60)
        # A browser keeps the cookies it is sent (the session cookie is
        # re-signed when a second has passed since it was last seen).
        updated = dict(c.split(b";", 1)[0].split(b"=", 1) for c in jar_cookies)
        for c in await call(tracked, returning):
            name_, value = c.split(b";", 1)[0].split(b"=", 1)
            updated[name_] = value
        jar_cookies[:] = [k + b"=" + v for k, v in updated.items()]
        returning[-1] = (
            b"cookie",
            b"theme=dark; " + b"; ".join(jar_cookies),
        )
        tracker.flush(60)
    stats = tracker.stats()
    tracker.shutdown()
    sent = stats["destinations"]["null"]["sent"]
    dropped = sum(stats["destinations"]["null"]["dropped"].values())
    print(f"  (tracker: {sent:,} events sent to the null exporter, {dropped} dropped)")
    return [
        (name, statistics.median(v), statistics.median(means[name]))
        for name, v in per_round.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=2_000)
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]} on {os.cpu_count()} cores\n")
    print(
        f"## ASGI middleware cost per request (median of {args.rounds} rounds "
        f"x {args.requests:,} requests, Starlette app called directly)"
    )
    rows = asyncio.run(run(args.rounds, args.requests))
    plain, plain_mean = rows[0][1], rows[0][2]
    print(f"  {'variant':<34} {'median':>11} {'added':>11}   {'mean':>8} {'added':>9}")
    for name, ns, mean in rows:
        added = ns - plain
        extra = (
            f"{'':<21}"
            if name == rows[0][0]
            else f"  +{added / 1000:7.2f} µs  ({ns / plain:4.2f}x)"
        )
        mean_extra = (
            "" if name == rows[0][0] else f" +{(mean - plain_mean) / 1000:6.2f}"
        )
        print(
            f"  {name:<34} {ns / 1000:8.2f} µs{extra} {mean / 1000:8.2f} µs{mean_extra}"
        )
    returning = next(r for r in rows if r[0] == "trackware, returning visitor")
    added = (returning[2] - plain_mean) / 1000
    print(
        f"  [{'met' if added <= 10 else 'MISSED'}] a returning visitor adds "
        f"{added:.2f} µs per request, mean (target <= 10 µs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
