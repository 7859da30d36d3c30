"""The workloads that ``bench/callgrind.py`` counts instructions of, one per run.

``python bench/callgrind_scenarios.py ROW`` runs one row's scenario: a setup
and a warm-up, then two measured regions, ``N0`` operations and ``N``
operations, each ended by what settles the work the operations left behind,
and each bounded by a call of ``os.getloadavg()``: the marker at which
``valgrind --tool=callgrind --dump-before=getloadavg`` dumps its counters.
Only public trackware API is used, so that the same script measures any
checkout (``PYTHONPATH``). It prints one JSON line for ``bench/callgrind.py``.
"""

from __future__ import annotations

import itertools
import os
import sys
import time

# Request rows run on a frozen wall clock (set before trackware is imported,
# so that ``from time import time`` takes it too): the session cookie is
# renewed when the clock's second changes, which under valgrind's slowdown
# would depend on how fast the machine is. With the clock frozen, a returning
# visitor is always seen within the second it was last seen (no renewal), as
# most requests are. ``repeat().__next__`` is a C call, about what
# ``time.time()`` costs.
if len(sys.argv) > 1 and sys.argv[1].startswith(("flask-", "asgi-")):
    time.time = itertools.repeat(time.time()).__next__

# Memory layout shifted on request (TRACKWARE_BENCH_PAD objects kept alive
# before anything is imported): addresses decide some hash tables' shapes.
_pad = [object() for _ in range(int(os.environ.get("TRACKWARE_BENCH_PAD", "0")))]

import asyncio  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import typing as t  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    BASE_SCOPE,
    HEADERS,
    SECRET,
    NullExporter,
    absorbing_tracker,
)

import trackware  # noqa: E402
from trackware.exporters import HTTPExporter  # noqa: E402

FLAT = {"offer_id": "o-1", "amount": 3, "channel": "OLB"}
NESTED = {
    "order_id": "ord-1001",
    "cart": {
        "items": [
            {"sku": "sku-1", "qty": 1, "price": 9.5, "tags": ["new", "sale"]},
            {"sku": "sku-2", "qty": 2, "price": 4.25, "tags": []},
        ],
        "total": 18.0,
        "currency": "EUR",
    },
    "customer": {"tier": "gold", "since": 2019},
}
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


class Scenario(t.NamedTuple):
    """What the harness runs: ``prepare(k)`` before a region (not counted),
    ``run(k)`` in it (``k`` operations and what settles them), and a check
    of what the run did, for the report."""

    run: t.Callable[[int], None]
    n0: int
    n: int
    warmup: int
    prepare: t.Callable[[int], None] = lambda k: None
    check: t.Callable[[], dict[str, t.Any]] = lambda: {}


def settled(tracker: trackware.Tracker) -> int:
    """``stats()`` builds and routes what the integrations recorded (the
    intake thread's pending page events) on this thread: every region pays
    for all of its own work. Returns the events tracked so far."""
    return tracker.stats()["tracked"]


# --- track() ---------------------------------------------------------------------
def track_scenario(props: dict[str, t.Any], n: int) -> Scenario:
    tracker = absorbing_tracker()
    track = tracker.track

    def run(k: int) -> None:
        for _ in range(k):
            track("offer.activated", props)
        settled(tracker)

    return Scenario(run, n // 6, n, n // 6, check=lambda: _counts(tracker))


def _counts(tracker: trackware.Tracker) -> dict[str, t.Any]:
    stats = tracker.stats()
    return {
        "tracked": stats["tracked"],
        "dropped": sum(stats["dropped"].values()),
    }


class PassWSGI:
    """A WSGI wrapper that only calls the app: what any wrapper costs."""

    def __init__(self, app: t.Any) -> None:
        self.app = app

    def __call__(self, environ: t.Any, start_response: t.Any) -> t.Any:
        return self.app(environ, start_response)


class PassASGI:
    """ASGI middleware that only calls the app: what any middleware costs."""

    def __init__(self, app: t.Any) -> None:
        self.app = app

    async def __call__(self, scope: t.Any, receive: t.Any, send: t.Any) -> None:
        await self.app(scope, receive, send)


# --- Flask -----------------------------------------------------------------------
def flask_scenario(variant: str) -> Scenario:
    import flask
    from werkzeug.test import EnvironBuilder

    from trackware.integrations.flask import Trackware

    def make_app() -> flask.Flask:
        # Not "bench": with PYTHONPATH at a checkout, Flask would find the
        # checkout's bench/ folder as a namespace package and fail.
        app = flask.Flask(__name__)
        app.secret_key = "bench-secret-key"

        @app.route("/hello")
        def hello() -> str:
            return "Hello, World!"

        return app

    app = make_app()
    tracker: trackware.Tracker | None = None
    floor: t.Any = None
    if variant == "floor":
        from floor import FloorTracker, FloorWSGI

        floor = FloorTracker(SECRET)
        app.wsgi_app = FloorWSGI(app.wsgi_app, floor)  # type: ignore[method-assign]
    elif variant == "passthrough":
        app.wsgi_app = PassWSGI(app.wsgi_app)  # type: ignore[method-assign]
    elif variant == "otel":
        from _common import sdk_tracer_provider
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument_app(app, tracer_provider=sdk_tracer_provider())
    elif variant != "plain":
        tracker = absorbing_tracker()
        options = {"exclude_paths": [r"^/hello"]} if variant == "excluded" else {}
        Trackware(app, tracker=tracker, **options)
    base = EnvironBuilder(
        path="/hello", headers={"User-Agent": UA, "Referer": "https://x.test/"}
    ).get_environ()
    set_cookies: list[str] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
    ) -> t.Callable[[bytes], object]:
        for name, value in headers:
            if name == "Set-Cookie":
                set_cookies.append(value)
        return _write

    def call(environ: dict[str, t.Any]) -> None:
        body = app(environ, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    if variant != "first":
        # A returning visitor: the cookies a browser keeps from its first
        # visit (every variant sends them; Flask parses them all). The floor
        # gets its own (same names, same number, its own key).
        first = app if variant == "floor" else make_app()
        first_tracker = None
        if variant != "floor":
            first_tracker = absorbing_tracker()
            Trackware(first, tracker=first_tracker)
        jar: dict[str, str] = {}
        for _ in range(2):
            body = first(dict(base), start_response)
            body.close()
            for header in set_cookies:
                name, _, rest = header.partition("=")
                jar[name] = rest.split(";", 1)[0]
            set_cookies.clear()
        if first_tracker is not None:
            first_tracker.shutdown(timeout=5)
        base["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in jar.items())

    def run(k: int) -> None:
        for _ in range(k):
            # A fresh environ per request, as a server builds one.
            call(dict(base))
        if tracker is not None:
            settled(tracker)

    def check() -> dict[str, t.Any]:
        out: dict[str, t.Any] = {"set_cookie_headers": len(set_cookies)}
        if tracker is not None:
            out.update(_counts(tracker))
        if floor is not None:
            out["floor_events"] = len(floor.events)
        return out

    def prepare(k: int) -> None:
        set_cookies.clear()

    return Scenario(run, 200, 1_400, 200, prepare=prepare, check=check)


def _write(data: bytes) -> None:
    pass


# --- ASGI (Starlette) --------------------------------------------------------------


def asgi_scenario(variant: str) -> Scenario:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from trackware.integrations.asgi import TrackwareMiddleware

    async def item(request: Request) -> Response:
        return PlainTextResponse("ok")

    def make_app() -> Starlette:
        return Starlette(routes=[Route("/items/{item_id}", item)])

    loop = asyncio.new_event_loop()
    tracker: trackware.Tracker | None = None
    floor: t.Any = None
    app: t.Any = make_app()
    if variant == "floor":
        from floor import FloorASGI, FloorTracker

        floor = FloorTracker(SECRET)
        app = FloorASGI(app, floor)
    elif variant == "passthrough":
        app = PassASGI(app)
    elif variant == "otel":
        from _common import sdk_tracer_provider
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app = OpenTelemetryMiddleware(app, tracer_provider=sdk_tracer_provider())
    elif variant != "plain":
        tracker = absorbing_tracker()
        options = {"exclude_paths": [r"^/items/"]} if variant == "excluded" else {}
        app = TrackwareMiddleware(app, tracker=tracker, cookie_secret=SECRET, **options)
    set_cookies: list[bytes] = []

    async def receive() -> dict[str, t.Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: t.Any) -> None:
        if message["type"] == "http.response.start":
            for k, v in message["headers"]:
                if k == b"set-cookie":
                    set_cookies.append(v)

    headers = list(HEADERS)
    if variant != "first":
        # The cookies a browser sends back after its first visit (the
        # floor's own: same names, same number, its own key).
        first_tracker = None
        if variant == "floor":
            first = app
        else:
            first_tracker = absorbing_tracker()
            first = TrackwareMiddleware(
                make_app(), tracker=first_tracker, cookie_secret=SECRET
            )
        scope = dict(BASE_SCOPE, headers=headers)
        loop.run_until_complete(first(scope, receive, send))
        jar = b"; ".join(c.split(b";", 1)[0] for c in set_cookies)
        set_cookies.clear()
        if first_tracker is not None:
            first_tracker.shutdown(timeout=5)
        headers.append((b"cookie", b"theme=dark; " + jar))

    async def requests(k: int) -> None:
        base = BASE_SCOPE
        for _ in range(k):
            scope = dict(base)
            scope["headers"] = headers
            await app(scope, receive, send)

    def run(k: int) -> None:
        loop.run_until_complete(requests(k))
        if tracker is not None:
            settled(tracker)

    def check() -> dict[str, t.Any]:
        out: dict[str, t.Any] = {"set_cookie_headers": len(set_cookies)}
        if tracker is not None:
            out.update(_counts(tracker))
        if floor is not None:
            out["floor_events"] = len(floor.events)
        return out

    def prepare(k: int) -> None:
        set_cookies.clear()

    return Scenario(run, 500, 3_500, 500, prepare=prepare, check=check)


# --- delivery ----------------------------------------------------------------------
def delivery_scenario(kind: str) -> Scenario:
    """Per delivered event: ``k`` events wait in the queue while the worker
    is held at a gate in its first ``export`` (taken before the region);
    the region opens the gate and ``flush()``es, so it holds the delivery
    of the ``k`` events in batches of 100 and nothing else."""
    gate = threading.Event()
    gate.set()
    entered = threading.Event()
    sink: t.Any = None

    class Gated(NullExporter):
        def export(self, events: t.Sequence[trackware.Event], /) -> t.Any:
            entered.set()
            gate.wait()
            return super().export(events)

    class GatedHTTP(HTTPExporter):
        def export(self, events: t.Sequence[trackware.Event], /) -> t.Any:
            entered.set()
            gate.wait()
            return super().export(events)

    exporter: t.Any
    if kind == "null":
        exporter = Gated(name="gated", max_batch_size=100)
    else:
        from _sink import RemoteSink

        sink = RemoteSink()
        exporter = GatedHTTP(sink.url + "/events", name="gated", max_batch_size=100)
    tracker = trackware.Tracker(
        [exporter],
        max_queue_size=1_000_000,
        max_queue_bytes=1 << 34,
        flush_interval=3600.0,
        dead_letter=None,
        register_atexit=False,
    )
    counter = itertools.count()

    def prepare(k: int) -> None:
        tracker.flush(600)
        gate.clear()
        entered.clear()
        for _ in range(k):
            tracker.track("offer.activated", {"i": next(counter), **FLAT})
        entered.wait(600)  # the worker holds its first batch at the gate

    def run(k: int) -> None:
        gate.set()
        tracker.flush(600)

    def check() -> dict[str, t.Any]:
        tracker.flush(600)
        stats = tracker.stats()["destinations"]["gated"]
        out = {"sent": stats["sent"], "failed": stats["failed"]}
        if sink is not None:
            out["sink_received"] = sink.count
            sink.stop()
        return out

    return Scenario(run, 500, 5_500, 300, prepare=prepare, check=check)


SCENARIOS: dict[str, t.Callable[[], Scenario]] = {
    "track-flat": lambda: track_scenario(FLAT, 12_000),
    "track-nested": lambda: track_scenario(NESTED, 3_000),
    "flask-plain": lambda: flask_scenario("plain"),
    "flask-returning": lambda: flask_scenario("returning"),
    "flask-excluded": lambda: flask_scenario("excluded"),
    "flask-first": lambda: flask_scenario("first"),
    "flask-floor": lambda: flask_scenario("floor"),
    "flask-passthrough": lambda: flask_scenario("passthrough"),
    "flask-otel": lambda: flask_scenario("otel"),
    "asgi-plain": lambda: asgi_scenario("plain"),
    "asgi-returning": lambda: asgi_scenario("returning"),
    "asgi-excluded": lambda: asgi_scenario("excluded"),
    "asgi-first": lambda: asgi_scenario("first"),
    "asgi-floor": lambda: asgi_scenario("floor"),
    "asgi-passthrough": lambda: asgi_scenario("passthrough"),
    "asgi-otel": lambda: asgi_scenario("otel"),
    "deliver-null": lambda: delivery_scenario("null"),
    "deliver-http": lambda: delivery_scenario("http"),
}


def main(argv: list[str]) -> int:
    row = argv[0]
    scale = float(argv[1]) if len(argv) > 1 else 1.0
    scenario = SCENARIOS[row]()
    n0, n = round(scenario.n0 * scale), round(scenario.n * scale)
    scenario.prepare(scenario.warmup)
    scenario.run(scenario.warmup)
    marker = os.getloadavg  # callgrind dumps its counters as this is entered
    dumps = 0
    regions = []
    for k in (n0, n):
        scenario.prepare(k)
        # No collection inside a region: the absorbing trackers hold every
        # event of the run (production's queues drain), and how often the
        # collector walks them depends on the heap's size, not on the code.
        gc.collect()
        gc.freeze()
        gc.disable()
        marker()
        dumps += 1
        scenario.run(k)
        marker()
        dumps += 1
        gc.enable()
        # Dump i holds what ran between marker i-1 and marker i.
        regions.append(dumps)
    result = {
        "row": row,
        "trackware": trackware.__file__,
        "n0": n0,
        "n": n,
        "dumps": regions,
        "check": scenario.check(),
    }
    print(json.dumps(result), flush=True)
    # No interpreter teardown (daemon threads, queued events): nothing after
    # the last marker is counted anyway.
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
