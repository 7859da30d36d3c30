"""The process default: ``Trackware(app, tracker=...)`` and
``TrackwareMiddleware(app, tracker=...)`` make their tracker the process
default when none is set, so ``trackware.track()`` in a background job (a
thread the app starts, outside any request), ``trackware.flush()`` and
``trackware.stats()`` reach it; a default set before is kept. Real Flask and
Starlette apps, events delivered over HTTP to a real sink."""

from __future__ import annotations

import asyncio
import logging
import threading
import typing as t

import flask
import httpx
import pytest
from _support import Sink
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import trackware
from trackware import _default
from trackware.exporters import HTTPExporter
from trackware.integrations.asgi import TrackwareMiddleware
from trackware.integrations.flask import Trackware

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


def http_tracker(sink: Sink, name: str = "http") -> trackware.Tracker:
    return trackware.Tracker(
        [HTTPExporter(sink.url, name=name)], dead_letter=None, flush_interval=0.01
    )


def background_job() -> None:
    """What a job queue or a thread of the app does: track outside a request
    (a new thread starts without the request's context)."""
    worker = threading.Thread(target=trackware.track, args=("job.done",))
    worker.start()
    worker.join(10)


def flask_app() -> flask.Flask:
    app = flask.Flask("process_default")
    app.secret_key = "process-default-test-secret"

    @app.route("/")
    def index() -> str:
        background_job()
        return "ok"

    return app


def starlette_app() -> Starlette:
    def index(request: Request) -> PlainTextResponse:
        background_job()
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", index)])


def wrap(framework: str, tracker: trackware.Tracker) -> t.Callable[[], int]:
    """Wrap a fresh app of ``framework`` with ``tracker``; returns a function
    making one browser request to it (the status)."""
    if framework == "flask":
        app = flask_app()
        Trackware(app, tracker=tracker)
        client = app.test_client()
        return lambda: client.get("/", headers={"User-Agent": BROWSER}).status_code
    middleware = TrackwareMiddleware(
        starlette_app(), tracker=tracker, cookie_secret="process-default-secret"
    )

    async def get() -> int:
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://shop.test"
        ) as client:
            response = await client.get("/", headers={"User-Agent": BROWSER})
        return response.status_code

    return lambda: asyncio.run(get())


def names(sink: Sink) -> list[str]:
    return sorted(e["name"] for body in sink.bodies for e in body["events"])


@pytest.mark.parametrize("framework", ["flask", "starlette"])
def test_the_integrations_tracker_becomes_the_default(
    framework: str, sink: Sink
) -> None:
    tracker = http_tracker(sink)
    try:
        request = wrap(framework, tracker)
        assert trackware.get_tracker() is tracker
        # Outside any request, as a job started at start-up would.
        assert trackware.track("startup.done") is not None
        assert request() == 200  # its page event, and the job's thread
        assert trackware.flush(20)
        assert sink.wait_for(4)
        assert names(sink) == ["job.done", "page", "session_start", "startup.done"]
        stats = trackware.stats()
        assert stats["tracked"] == 4
        assert stats["destinations"]["http"]["sent"] == 4
        assert stats["dropped"] == {}
    finally:
        tracker.shutdown(5)


@pytest.mark.parametrize("framework", ["flask", "starlette"])
def test_a_default_set_before_is_kept(framework: str, sink: Sink) -> None:
    other_sink = Sink()
    default = http_tracker(other_sink, name="default")
    tracker = http_tracker(sink, name="app")
    try:
        trackware.set_tracker(default)
        request = wrap(framework, tracker)
        assert trackware.get_tracker() is default
        assert request() == 200
        assert tracker.flush(20) and default.flush(20)
        assert sink.wait_for(2) and other_sink.wait_for(1)
        # The request's events went to the app's tracker...
        assert names(sink) == ["page", "session_start"]
        # ...and the job's, outside the request, to the default.
        assert names(other_sink) == ["job.done"]
        assert trackware.stats()["destinations"].keys() == {"default"}
    finally:
        tracker.shutdown(5)
        default.shutdown(5)
        other_sink.stop()


@pytest.mark.parametrize("framework", ["flask", "starlette"])
def test_the_stand_in_default_is_replaced_and_its_drops_reported(
    framework: str, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    """Events tracked before any tracker was configured went to the stand-in
    (counted as no_tracker); wrapping the app replaces it, and says how many
    went nowhere."""
    assert trackware.track("too.early") is None
    stand_in = _default.current
    assert stand_in is not None
    assert stand_in.stats()["dropped"] == {"no_tracker": 1}
    tracker = http_tracker(sink)
    try:
        with caplog.at_level(logging.WARNING, logger="trackware"):
            wrap(framework, tracker)
        assert trackware.get_tracker() is tracker
        assert "1 event(s) tracked before a tracker was configured" in caplog.text
        assert trackware.track("in.time") is not None
        assert trackware.flush(20)
        assert names(sink) == ["in.time"]
    finally:
        tracker.shutdown(5)


def test_without_tracker_no_default_is_made(sink: Sink) -> None:
    """Without tracker= the integrations use the default per request; they
    set none themselves."""
    app = flask_app()
    Trackware(app)
    TrackwareMiddleware(starlette_app(), cookie_secret="process-default-secret")
    assert _default.current is None


def test_flask_tracker_from_app_config_becomes_the_default(sink: Sink) -> None:
    tracker = http_tracker(sink)
    try:
        app = flask_app()
        app.config["TRACKWARE_TRACKER"] = tracker
        Trackware(app)
        assert trackware.get_tracker() is tracker
    finally:
        tracker.shutdown(5)
