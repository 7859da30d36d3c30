"""Fixtures for the Flask integration suite: real Flask apps, a real tracker."""

from __future__ import annotations

import typing as t

import flask
import pytest
from flask.testing import FlaskClient

import trackware
from trackware.integrations.flask import Trackware
from trackware.testing import CapturedEvents, InMemoryExporter, capture_events

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


class Client(FlaskClient):
    """Buffers responses like a WSGI server: the body is read and closed.

    (Flask's test client leaves an unbuffered response open until it is
    closed, and trackware tracks the page event when a streamed body closes.)
    It also sends a browser user agent, since curl- or bot-like agents are
    excluded by default.
    """

    def open(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        kwargs.setdefault("buffered", True)
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("User-Agent", BROWSER)
        kwargs["headers"] = headers
        return super().open(*args, **kwargs)


@pytest.fixture
def memory() -> InMemoryExporter:
    return InMemoryExporter()


@pytest.fixture
def tracker(memory: InMemoryExporter) -> t.Iterator[trackware.Tracker]:
    tr = trackware.Tracker(
        [memory], dead_letter=trackware.MemoryDeadLetter(), register_atexit=False
    )
    yield tr
    tr.shutdown(timeout=5)


@pytest.fixture
def events(tracker: trackware.Tracker) -> t.Iterator[CapturedEvents]:
    """Every event ``tracker`` tracks during the test, captured synchronously."""
    with capture_events(tracker) as captured:
        yield captured


def build_app(name: str = "shop") -> flask.Flask:
    """A small shop with the kinds of views the integration must handle."""
    app = flask.Flask(name)
    app.secret_key = "test-secret-key-not-for-production"
    app.test_client_class = Client

    @app.route("/")
    def index() -> str:
        return "home"

    @app.route("/items/<int:item_id>", methods=["GET", "POST"])
    def item(item_id: int) -> str:
        trackware.track("item.viewed", {"item_id": item_id})
        return f"item {item_id}"

    @app.route("/boom")
    def boom() -> str:
        return str(1 / 0)

    @app.route("/forbidden")
    def forbidden() -> str:
        flask.abort(403)

    @app.route("/health")
    def health() -> str:
        return "ok"

    @app.route("/admin/<path:rest>")
    def admin(rest: str) -> str:
        return "admin"

    @app.route("/stream")
    def stream() -> flask.Response:
        @flask.stream_with_context
        def generate() -> t.Iterator[str]:
            yield "a"
            trackware.track("stream.chunk", {"n": 2})
            yield "b"

        return flask.Response(generate(), mimetype="text/plain")

    shop = flask.Blueprint("catalog", __name__, url_prefix="/catalog")

    @shop.route("/<slug>")
    def product(slug: str) -> str:
        return slug

    app.register_blueprint(shop)
    return app


@pytest.fixture
def make_app(
    tracker: trackware.Tracker,
) -> t.Callable[..., tuple[flask.Flask, FlaskClient]]:
    """``make_app(**options)``: a fresh shop with Trackware, and its client."""

    def make(
        app: flask.Flask | None = None, **options: t.Any
    ) -> tuple[flask.Flask, FlaskClient]:
        app = app or build_app()
        options.setdefault("tracker", tracker)
        Trackware(app, **options)
        return app, app.test_client()

    return make


@pytest.fixture
def new_app() -> t.Callable[[str], flask.Flask]:
    """``new_app(name)``: a fresh shop without Trackware."""
    return build_app


def _set_cookies(response: t.Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in response.headers.getlist("Set-Cookie"):
        out[value.split("=", 1)[0]] = value
    return out


@pytest.fixture
def set_cookies() -> t.Callable[[t.Any], dict[str, str]]:
    """``set_cookies(response)``: its Set-Cookie header values by cookie name."""
    return _set_cookies
