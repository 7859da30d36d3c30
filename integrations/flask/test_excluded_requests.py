"""Excluding a request from page tracking never changes where the app's own
events go (the Flask side of what integrations/asgi/test_excluded_requests.py
pins for ASGI): real Flask apps through the test client."""

from __future__ import annotations

import typing as t

import flask
import pytest

import trackware
from trackware import _default
from trackware.integrations.flask import Trackware
from trackware.testing import InMemoryExporter

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"
CURL = "curl/8.5.0"

#: (method, path, user agent, tracked as a page?)
REQUESTS = [
    ("GET", "/health", BROWSER, False),  # a default excluded path
    ("GET", "/", CURL, False),  # curl's default user agent: a bot
    ("HEAD", "/", BROWSER, False),
    ("OPTIONS", "/", BROWSER, False),
    ("GET", "/admin", BROWSER, False),  # an excluded endpoint
    ("GET", "/", BROWSER, True),  # the control
]


def make_app() -> flask.Flask:
    app = flask.Flask("excluded")
    app.secret_key = "test-secret-key-not-for-production"

    @app.route("/", methods=["GET", "HEAD", "OPTIONS"])
    @app.route("/health")
    @app.route("/admin", endpoint="admin")
    def view() -> str:
        trackware.track(
            "app.event", {"method": flask.request.method, "path": flask.request.path}
        )
        return "ok"

    @app.route("/health/stream")
    def stream() -> flask.Response:
        def chunks() -> t.Iterator[str]:  # produced while the server sends it
            yield "a"
            trackware.track("app.streamed")
            yield "b"

        return flask.Response(chunks(), mimetype="text/plain")

    return app


def pages_and_events(
    tracker: trackware.Tracker, memory: InMemoryExporter
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    assert tracker.flush(10)

    def pairs(name: str) -> list[tuple[str, str]]:
        return [
            (e.properties["method"], e.properties["path"])
            for e in memory.events
            if e.name == name
        ]

    return pairs("page"), pairs("app.event")


@pytest.mark.parametrize("identity", [False, True], ids=["plain", "identity"])
def test_the_apps_events_reach_the_extensions_tracker(
    tracker: trackware.Tracker, memory: InMemoryExporter, identity: bool
) -> None:
    app = make_app()
    options: dict[str, t.Any] = {"exclude_endpoints": ["admin"]}
    if identity:  # the scope is opened inside Flask then
        options["identity"] = lambda: "c-1"
    Trackware(app, tracker=tracker, **options)
    client = app.test_client()
    for method, path, agent, _ in REQUESTS:
        response = client.open(
            path, method=method, headers={"User-Agent": agent}, buffered=True
        )
        assert response.status_code == 200, (method, path)
    pages, events = pages_and_events(tracker, memory)
    assert events == [(m, p) for m, p, _, _ in REQUESTS]
    assert pages == [(m, p) for m, p, _, page in REQUESTS if page]
    # No stand-in default was made: the extension's tracker is the default.
    assert _default.current is tracker


def test_streamed_body_of_an_excluded_request(
    tracker: trackware.Tracker, memory: InMemoryExporter
) -> None:
    app = make_app()
    Trackware(app, tracker=tracker)
    response = app.test_client().get(
        "/health/stream", headers={"User-Agent": BROWSER}, buffered=True
    )
    assert response.data == b"ab"
    assert tracker.flush(10)
    assert [e.name for e in memory.events] == ["app.streamed"]
    assert _default.current is tracker


def test_identify_in_an_excluded_request_stays_in_that_request(
    tracker: trackware.Tracker, memory: InMemoryExporter
) -> None:
    """An excluded request's scope (a TrackerScope, its fields class
    defaults until set) takes identify() on the instance: the next excluded
    request on the same thread, and the class, are untouched."""
    from trackware._context import TrackerScope

    app = flask.Flask("excluded-identify")
    app.secret_key = "test-secret-key-not-for-production"

    @app.route("/health/login")
    def login() -> str:
        trackware.identify("c-9", traits={"tier": "gold"}, email="c9@example.com")
        trackware.track("app.login")
        return "ok"

    @app.route("/health/next")
    def after() -> str:
        trackware.track("app.next")
        return "ok"

    Trackware(app, tracker=tracker)
    client = app.test_client()
    for path in ("/health/login", "/health/next"):
        assert client.get(path, headers={"User-Agent": BROWSER}).status_code == 200
    assert tracker.flush(10)
    login_event, next_event = memory.events
    assert (login_event.name, login_event.user_id) == ("app.login", "c-9")
    assert login_event.email == "c9@example.com"
    assert login_event.traits == {"tier": "gold"}
    assert (next_event.name, next_event.user_id, next_event.email) == (
        "app.next",
        None,
        None,
    )
    assert next_event.traits == {}
    assert TrackerScope.user_id is None and TrackerScope.traits == {}
