"""The apps ``bench/serve.py`` serves: a Starlette app for uvicorn and a Flask
app for gunicorn, each plain, with the floor (``bench/floor.py``) or with
trackware, as ``BENCH_SERVE_VARIANT`` says (``plain``, ``floor``,
``trackware``, ``sessions`` = trackware without page events).

trackware's tracker delivers to an exporter that accepts every batch (its
worker thread drains as in production; nothing leaves the machine).
"""

from __future__ import annotations

import os
import sys
import typing as t

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import SECRET, NullExporter
from floor import FloorASGI, FloorTracker, FloorWSGI

import trackware

VARIANT = os.environ.get("BENCH_SERVE_VARIANT", "plain")


#: The trackware variants (the p99 experiments besides ``trackware``):
#: ``sessions`` without page events; ``absorb`` with a worker that never
#: wakes (its queue holds the run: the intake thread alone); ``inline`` with
#: page events built on the request thread (no intake thread);
#: ``gather0`` with the intake thread draining as soon as it is woken.
TRACKWARE_VARIANTS = ("trackware", "sessions", "absorb", "inline", "gather0")


def _tracker() -> trackware.Tracker:
    if VARIANT == "absorb":
        from _common import absorbing_tracker

        return absorbing_tracker()
    tracker = trackware.Tracker([NullExporter()], dead_letter=None)
    if VARIANT == "inline":
        tracker.pages_deferred = False
    elif VARIANT == "gather0":
        from trackware import _intake

        _intake.GATHER = 0.0
    return tracker


def _options() -> dict[str, t.Any]:
    return {"page_event": None} if VARIANT == "sessions" else {}


def starlette_app() -> t.Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    async def item(request: Request) -> Response:
        return PlainTextResponse("ok")

    app: t.Any = Starlette(routes=[Route("/items/{item_id}", item)])
    if VARIANT == "floor":
        return FloorASGI(app, FloorTracker(SECRET))
    if VARIANT in TRACKWARE_VARIANTS:
        from trackware.integrations.asgi import TrackwareMiddleware

        return TrackwareMiddleware(
            app, tracker=_tracker(), cookie_secret=SECRET, **_options()
        )
    return app


def flask_app() -> t.Any:
    import flask

    app = flask.Flask("serve_apps")

    @app.route("/items/<item_id>")
    def item(item_id: str) -> str:
        return "ok"

    if VARIANT == "floor":
        app.wsgi_app = FloorWSGI(app.wsgi_app, FloorTracker(SECRET))  # type: ignore[method-assign]
    elif VARIANT in TRACKWARE_VARIANTS:
        from trackware.integrations.flask import Trackware

        Trackware(app, tracker=_tracker(), cookie_secret=SECRET, **_options())
    return app
