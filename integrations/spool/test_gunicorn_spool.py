"""gunicorn, 2 sync workers, ``--preload``, the spool on with
``durability="always"``: 2,000 requests while the destination is down and one
worker is SIGKILLed mid-traffic; then the destination comes up, and every page
event whose request got a response is delivered, with no duplicate id.

Each request's path (``/items/<n>``) is its marker: the page event carries the
path (its ``path`` property), so the test knows which events must arrive. The
killed worker's spool file is adopted by its replacement or its sibling
(``spool_adopt_interval``); the destination is down at the kill, so nothing
of it was in flight to a server that took it, and no id may arrive twice.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import os
import pathlib
import signal
import sqlite3
import textwrap
import threading
import time

import httpx
import pytest
from _support import Sink, free_port, serving

from trackware import deadletter

pytestmark = pytest.mark.slow

REQUESTS = 2_000
KILL_AFTER = 800  # responses before a worker is killed
CLIENTS = 4  # requests at once: some are in a worker when it is killed
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/130"

APP = """
import os

import flask

import trackware
from trackware.exporters import HTTPExporter
from trackware.integrations.flask import Trackware

tracker = trackware.Tracker(
    [HTTPExporter(os.environ["TW_SINK_URL"], name="sink")],
    spool=os.environ["TW_SPOOL"],
    durability="always",
    spool_adopt_interval=0.5,
    flush_interval=0.05,
    shutdown_timeout=10.0,
    # Down for the whole traffic: keep trying, and soon once it is back.
    retry=trackware.RetryPolicy(
        max_attempts=None,
        max_retry_time=600.0,
        base_delay=0.05,
        max_delay=0.3,
        open_for=0.2,
        max_open_for=0.5,
    ),
)
trackware.set_tracker(tracker)

app = flask.Flask(__name__)
app.secret_key = "spool-secret"
Trackware(app, tracker=tracker)


@app.route("/items/<int:n>")
def item(n):
    return {"pid": os.getpid()}


@app.route("/health")
def health():
    return "ok"
"""


def left_in(spool: pathlib.Path) -> dict[str, int | str]:
    """Events still owed in each spool file (for a failure's message)."""
    out: dict[str, int | str] = {}
    for path in sorted(spool.glob("*.sqlite3")):
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            ) as db:
                out[path.name] = db.execute(
                    "SELECT count(*) FROM events WHERE pending != 0"
                ).fetchone()[0]
        except sqlite3.Error as exc:
            out[path.name] = f"unreadable: {exc}"
    return out


def test_gunicorn_worker_killed_while_the_destination_is_down_loses_nothing(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "spool_app.py").write_text(textwrap.dedent(APP))
    spool = tmp_path / "spool"
    sink_port = free_port()  # nothing listens there yet: connection refused
    port = free_port()
    env = {
        **os.environ,
        "TW_SINK_URL": f"http://127.0.0.1:{sink_port}/events",
        "TW_SPOOL": str(spool),
        "TRACKWARE_DEAD_LETTER_PATH": str(tmp_path / "dead.jsonl"),
    }
    args = ["gunicorn", "--preload", "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    args += ["--graceful-timeout", "20", "--pythonpath", str(tmp_path)]
    answered: set[int] = set()
    pids: list[int] = []
    lock = threading.Lock()
    killed: list[int] = []
    sink: Sink | None = None
    try:
        with serving([*args, "spool_app:app"], env, port) as proc:
            client = httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"User-Agent": BROWSER},
                timeout=30,
            )

            def get(n: int) -> None:
                try:
                    response = client.get(f"/items/{n}")
                except httpx.TransportError:
                    return  # its worker was killed: no response, no promise
                if response.status_code != 200:
                    return
                pid = int(response.json()["pid"])
                with lock:
                    answered.add(n)
                    pids.append(pid)
                    if len(answered) == KILL_AFTER and not killed:
                        killed.append(pid)
                        os.kill(pid, signal.SIGKILL)

            with client, concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
                list(pool.map(get, range(REQUESTS)))
            assert killed, "no worker was killed"
            served_by = set(pids)
            # The killed worker was replaced: a third process answered.
            assert len(served_by) >= 3 and killed[0] in served_by, served_by
            assert len(answered) >= REQUESTS - CLIENTS, len(answered)

            sink = Sink(port=sink_port)  # the destination comes up
            expected = {f"/items/{n}" for n in answered}

            def arrived() -> collections.Counter[str]:
                with sink.cond:
                    bodies = list(sink.bodies)
                return collections.Counter(
                    e["properties"]["path"]
                    for body in bodies
                    for e in body["events"]
                    if e["name"] == "page"
                )

            deadline = time.monotonic() + 30
            while not expected <= set(arrived()) and time.monotonic() < deadline:
                time.sleep(0.1)
            missing = expected - set(arrived())
            assert not missing, (
                f"{len(missing)} of {len(expected)} answered requests' page "
                f"events never arrived, e.g. {sorted(missing)[:5]}; workers "
                f"{sorted(served_by)}, killed {killed}; spool: {left_in(spool)}"
            )
            with sink.cond:
                ids = list(sink.ids)
            twice = [i for i, c in collections.Counter(ids).items() if c > 1]
            assert twice == [], f"{len(twice)} ids arrived more than once"
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, output[-3000:]
        # Nothing was given up on, and every spool file was emptied.
        assert deadletter.list(spool) == []
        assert not (tmp_path / "dead.jsonl").exists()
    finally:
        if sink is not None:
            sink.stop()
