"""Error pages and unclosed bodies with Flask's own test client, which (unlike
a WSGI server) does not close the responses it returns.

Flask turns an unhandled HTTP error or exception into a response by running
werkzeug's error page as a WSGI app, which marks the response as streamed;
its body is complete all the same, so its page event must not wait for a
``close()`` that the test client never calls.
"""

from __future__ import annotations

import gc
import typing as t

import flask
import pytest

import trackware
from trackware.integrations.flask import Trackware
from trackware.testing import InMemoryExporter

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


def make_app() -> flask.Flask:
    app = flask.Flask("errors")
    app.secret_key = "test-secret-key-not-for-production"

    @app.route("/")
    def index() -> str:
        return "home"

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("the view failed")

    @app.route("/missing")
    def missing() -> str:
        flask.abort(404)

    @app.route("/teapot")
    def teapot() -> str:
        flask.abort(418)

    @app.route("/stream")
    def stream() -> flask.Response:
        def chunks() -> t.Iterator[str]:
            yield "a"
            yield "b"

        return flask.Response(chunks(), mimetype="text/plain")

    return app


def pages(tracker: trackware.Tracker, memory: InMemoryExporter) -> list[t.Any]:
    assert tracker.flush(10)
    return [
        (e.properties["path"], e.properties["status"])
        for e in memory.events
        if e.name == "page"
    ]


@pytest.fixture(params=[False, True], ids=["plain", "identity"])
def app(request: pytest.FixtureRequest, tracker: trackware.Tracker) -> flask.Flask:
    """The app with Trackware (with an identity callable the request's scope
    is opened inside Flask: the other path through the extension)."""
    app = make_app()
    options: dict[str, t.Any] = {}
    if request.param:
        options["identity"] = lambda: "c-1"
    Trackware(app, tracker=tracker, **options)
    return app


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 200),
        ("/boom", 500),
        ("/missing", 404),
        ("/teapot", 418),
        ("/no/such/page", 404),
    ],
)
def test_one_page_event_without_closing_the_response(
    app: flask.Flask,
    tracker: trackware.Tracker,
    memory: InMemoryExporter,
    path: str,
    status: int,
) -> None:
    client = app.test_client()
    response = client.get(path, headers={"User-Agent": BROWSER})
    assert response.status_code == status
    assert pages(tracker, memory) == [(path, status)]
    response.close()  # closing it after the early page event adds no second one
    assert pages(tracker, memory) == [(path, status)]
    assert memory.events[-1].properties.get("error") == (
        "RuntimeError" if path == "/boom" else None
    )


def test_method_not_allowed(
    app: flask.Flask, tracker: trackware.Tracker, memory: InMemoryExporter
) -> None:
    response = app.test_client().post("/", headers={"User-Agent": BROWSER})
    assert response.status_code == 405
    assert pages(tracker, memory) == [("/", 405)]


def test_streamed_body_waits_for_close(
    app: flask.Flask, tracker: trackware.Tracker, memory: InMemoryExporter
) -> None:
    response = app.test_client().get("/stream", headers={"User-Agent": BROWSER})
    assert response.status_code == 200
    assert pages(tracker, memory) == []  # produced while it is sent: not yet
    assert response.get_data() == b"ab"
    response.close()
    assert pages(tracker, memory) == [("/stream", 200)]
    response.close()
    assert pages(tracker, memory) == [("/stream", 200)]
    assert app.extensions["trackware"].stats(app)["page_unclosed"] == 0


def test_streamed_body_garbage_collected_unclosed_is_tracked_and_counted(
    app: flask.Flask, tracker: trackware.Tracker, memory: InMemoryExporter
) -> None:
    response = app.test_client().get("/stream", headers={"User-Agent": BROWSER})
    assert response.status_code == 200
    assert pages(tracker, memory) == []
    del response
    gc.collect()
    assert pages(tracker, memory) == [("/stream", 200)]
    assert app.extensions["trackware"].stats(app) == {"page_unclosed": 1}
    # The next request is tracked as usual.
    app.test_client().get("/", headers={"User-Agent": BROWSER})
    assert pages(tracker, memory) == [("/stream", 200), ("/", 200)]


def test_unclosed_body_in_a_reference_cycle_is_tracked_by_the_next_request(
    app: flask.Flask, tracker: trackware.Tracker, memory: InMemoryExporter
) -> None:
    """The cyclic collector may run anywhere (inside a lock trackware holds,
    say): a body it finalises is only counted there, and its page event is
    tracked by the app's next request (or by ``stats()``)."""
    response = app.test_client().get("/stream", headers={"User-Agent": BROWSER})
    cycle: list[t.Any] = [response]
    cycle.append(cycle)
    del response, cycle
    gc.collect()
    assert pages(tracker, memory) == []
    app.test_client().get("/", headers={"User-Agent": BROWSER})
    assert pages(tracker, memory) == [("/stream", 200), ("/", 200)]
    assert app.extensions["trackware"].stats(app) == {"page_unclosed": 1}


def test_stats_tracks_what_a_collected_cycle_left(
    app: flask.Flask, tracker: trackware.Tracker, memory: InMemoryExporter
) -> None:
    response = app.test_client().get("/stream", headers={"User-Agent": BROWSER})
    cycle: list[t.Any] = [response]
    cycle.append(cycle)
    del response, cycle
    gc.collect()
    assert app.extensions["trackware"].stats(app) == {"page_unclosed": 1}
    assert pages(tracker, memory) == [("/stream", 200)]
