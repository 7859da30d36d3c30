"""A small Flask app run under real servers by test_servers.py.

Its tracker sends to the HTTP sink named by ``TRACKWARE_TEST_SINK_URL``. It is
created at import time, as in most apps: under gunicorn ``--preload`` that is
in the master, before the workers are forked.
"""

from __future__ import annotations

import os

import flask

import trackware
from trackware.exporters import HTTPExporter
from trackware.integrations.flask import Trackware

tracker = trackware.Tracker(
    [HTTPExporter(os.environ["TRACKWARE_TEST_SINK_URL"])],
    # Long enough that nothing is sent while the test runs: every event is
    # delivered by the graceful shutdown of the worker that tracked it.
    flush_interval=300.0,
    shutdown_timeout=20.0,
)
trackware.set_tracker(tracker)

app = flask.Flask(__name__)
app.secret_key = "served-app-secret"
Trackware(
    app,
    tracker=tracker,
    # Each test browser names its user; concurrent requests on worker threads
    # must never see each other's identity.
    identity=lambda: flask.request.headers.get("X-Test-User"),
)


@app.route("/items/<int:item_id>")
def item(item_id: int) -> dict[str, int]:
    return {"item": item_id, "pid": os.getpid()}


@app.route("/ready")
def ready() -> str:
    return "ok"
