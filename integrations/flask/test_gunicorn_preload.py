"""gunicorn ``--preload`` forks its workers while the app's import-time events
are being exported: no event may be lost, in ten runs.

The app (written to a temporary folder by the test) creates its tracker and
tracks events at import, in the gunicorn master; the master's worker thread
starts the first export at once, and gunicorn forks two workers meanwhile.
Who owns what (README, "Processes"): the master delivers its own queue, the
import-time events, exactly once; each forked worker starts with an empty
queue and delivers the page events it tracks.
"""

from __future__ import annotations

import collections
import os
import pathlib
import signal
import textwrap

import httpx
import pytest
from _support import Sink, free_port, serving

pytestmark = pytest.mark.slow

RUNS = 10
IMPORT_EVENTS = 600
PAGES = 20
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/130"

APP = """
import os

import flask

import trackware
from trackware.exporters import HTTPExporter
from trackware.integrations.flask import Trackware

tracker = trackware.Tracker(
    [HTTPExporter(os.environ["TW_SINK_URL"])],
    flush_interval=0.05,
    shutdown_timeout=10.0,
)
trackware.set_tracker(tracker)
# Tracked at import: in the gunicorn master, just before it forks its workers.
for i in range(int(os.environ["TW_IMPORT_EVENTS"])):
    tracker.track("imported", {"i": i})

app = flask.Flask(__name__)
app.secret_key = "preload-secret"
Trackware(app, tracker=tracker)


@app.route("/items/<int:item_id>")
def item(item_id):
    return {"pid": os.getpid()}


@app.route("/health")
def health():
    return "ok"
"""


def one_run(sink: Sink, folder: pathlib.Path, dead_letter: pathlib.Path) -> str:
    """gunicorn --preload, PAGES page requests, SIGTERM; the server's output."""
    port = free_port()
    env = {
        **os.environ,
        "TW_SINK_URL": sink.url,
        "TW_IMPORT_EVENTS": str(IMPORT_EVENTS),
        "TRACKWARE_DEAD_LETTER_PATH": str(dead_letter),
    }
    args = [
        "gunicorn",
        "--preload",
        "--workers",
        "2",
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "30",
        "--pythonpath",
        str(folder),
        "preload_app:app",
    ]
    with serving(args, env, port) as proc:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"User-Agent": BROWSER}
        ) as client:
            for i in range(PAGES):
                response = client.get(f"/items/{i}", timeout=30)
                assert response.status_code == 200
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output
    return output


def test_gunicorn_preload_with_events_tracked_at_import_loses_nothing(
    sink: Sink, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "preload_app.py").write_text(textwrap.dedent(APP))
    for run in range(RUNS):
        with sink.cond:
            sink.ids.clear()
            sink.bodies.clear()
        dead_letter = tmp_path / f"dead-{run}.jsonl"
        output = one_run(sink, tmp_path, dead_letter)
        with sink.cond:
            events = [e for body in sink.bodies for e in body["events"]]
        ids = [e["event_id"] for e in events]
        assert len(ids) == len(set(ids)), f"run {run}: an event arrived twice"
        names = collections.Counter(e["name"] for e in events)
        imported = sorted(
            e["properties"]["i"] for e in events if e["name"] == "imported"
        )
        assert imported == list(range(IMPORT_EVENTS)), (run, names, output[-3000:])
        paths = sorted(e["properties"]["path"] for e in events if e["name"] == "page")
        assert paths == sorted(f"/items/{i}" for i in range(PAGES)), (
            run,
            names,
            output[-3000:],
        )
        assert not dead_letter.exists(), dead_letter.read_text()
