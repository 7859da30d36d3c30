"""@tracked with Flask's @app.route, in either order, on a real Flask app."""

from __future__ import annotations

import gc
import typing as t

import pytest

flask = pytest.importorskip("flask")

import trackware  # noqa: E402
from trackware import tracked  # noqa: E402
from trackware._context import scope_var  # noqa: E402
from trackware.integrations.flask import Trackware  # noqa: E402
from trackware.testing import InMemoryExporter, capture_events  # noqa: E402


class Boom(Exception):
    pass


def create_app(tracker: trackware.Tracker, *, extension: bool) -> t.Any:
    """An application factory: the decorated views are locals that go away."""
    app = flask.Flask(__name__)
    app.secret_key = "decorators-test-secret"
    if extension:
        Trackware(app, tracker=tracker)

    @app.route("/below/<int:n>")
    @tracked("below", properties=lambda result, *a, **kw: {"n": kw["n"]})
    def below(n: int) -> str:
        if n == 0:
            raise Boom("zero")
        return f"below {n}"

    @tracked("above", properties=lambda result, *a, **kw: {"n": kw["n"]})
    @app.route("/above/<int:n>")
    def above(n: int) -> str:
        if n == 0:
            raise Boom("zero")
        return f"above {n}"

    @app.route("/async/<int:n>")
    @tracked("async_view")
    async def async_view(n: int) -> str:
        return f"async {n}"

    return app


@pytest.fixture
def tracker() -> t.Iterator[trackware.Tracker]:
    tr = trackware.Tracker([InMemoryExporter()], dead_letter=None, flush_interval=60)
    trackware.set_tracker(tr)
    # Each test starts (and ends) with no request scope bound in this context.
    token = scope_var.set(None)
    yield tr
    scope_var.reset(token)
    tr.shutdown(timeout=1)


def test_tracked_below_route_needs_no_extension(tracker: trackware.Tracker) -> None:
    app = create_app(tracker, extension=False)
    gc.collect()
    client = app.test_client()
    with capture_events(tracker) as events:
        assert client.get("/below/3").get_data(as_text=True) == "below 3"
        assert client.get("/below/0").status_code == 500
    ok, failed = events.named("below")
    assert ok.properties["outcome"] == "ok" and ok.properties["n"] == 3
    assert failed.properties["outcome"] == "Boom" and failed.properties["n"] == 0


@pytest.mark.parametrize("path", ["/below/5", "/above/5"])
def test_tracked_in_either_order_with_the_extension(
    tracker: trackware.Tracker, path: str
) -> None:
    app = create_app(tracker, extension=True)
    gc.collect()  # the factory's locals are gone; the wrappers must not be
    client = app.test_client()
    name = path.split("/")[1]
    with capture_events(tracker) as events:
        response = client.get(path)
        failed = client.get(f"/{name}/0")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == f"{name} 5"
    assert failed.status_code == 500
    ok, boom = events.named(name)
    assert ok.properties["outcome"] == "ok" and ok.properties["n"] == 5
    assert boom.properties["outcome"] == "Boom"


def test_tracked_async_view(tracker: trackware.Tracker) -> None:
    pytest.importorskip("asgiref")
    app = create_app(tracker, extension=False)
    with capture_events(tracker) as events:
        assert app.test_client().get("/async/2").get_data(as_text=True) == "async 2"
    assert events.one("async_view").properties["outcome"] == "ok"
