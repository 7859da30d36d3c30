"""Under uvicorn, every event tracked in a worker ends in an outcome before the
worker exits: delivered, or dead-lettered (and counted there), never vanished.

uvicorn handles SIGTERM itself: it shuts down gracefully (running the lifespan
shutdown, unless ``--lifespan off``), then restores the handler it found and
raises SIGTERM again, so the process dies by the signal and atexit hooks never
run. Each case runs a real uvicorn (1 or 2 workers, lifespan on or off), tracks
events in real requests, stops it with SIGTERM and counts, per event, what the
receiver got plus what the dead-letter file holds. The receiver is healthy (it
accepts), down (connection refused) or hung (it accepts the connection and
never answers). The app's flush interval is long, so every event is still
queued when SIGTERM arrives.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import pathlib
import signal
import socket
import textwrap
import threading
import typing as t

import httpx
import pytest
from _support import Sink, free_port, serving

import trackware
from trackware.exporters import HTTPExporter
from trackware.integrations.asgi import TrackwareMiddleware

REQUESTS = 16
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/130"

APP = """
import os

import trackware
from trackware.exporters import HTTPExporter
from trackware.integrations.asgi import TrackwareMiddleware

tracker = trackware.Tracker(
    [HTTPExporter(os.environ["TW_SINK_URL"], timeout=1.0, connect_timeout=1.0)],
    flush_interval=60.0,  # nothing leaves before the server is stopped
    shutdown_timeout=1.5,
)


async def endpoints(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path.startswith("/work/"):
        tracker.track("work", {"n": int(path[len("/work/"):])})
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


app = TrackwareMiddleware(
    endpoints,
    tracker=tracker,
    sessions=False,
    cookie_secret="uvicorn-exit-test-cookie-secret",
)
"""


class HungReceiver:
    """Accepts TCP connections and never answers (a vendor that hangs)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/events"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)

    def stop(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


CASES = [
    (workers, vendor, lifespan)
    for workers in (1, 2)
    for vendor in ("healthy", "down", "hung")
    for lifespan in ("on", "off")
]


def test_lifespan_shutdown_dead_letters_what_it_cannot_deliver(
    drivers: t.Any,
) -> None:
    """The lifespan shutdown shuts the tracker down: with the vendor down, the
    queued events are in the dead letter when ``lifespan.shutdown.complete``
    is sent (a flush would leave them queued in a process about to die)."""
    dead = trackware.MemoryDeadLetter()
    exporter = HTTPExporter(
        f"http://127.0.0.1:{free_port()}/events", timeout=1.0, connect_timeout=1.0
    )
    tracker = trackware.Tracker(
        [exporter],
        flush_interval=60.0,
        shutdown_timeout=1.0,
        dead_letter=dead,
        register_atexit=False,
    )
    for i in range(5):
        tracker.track("queued", {"i": i})

    async def endpoints(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"]
                await send({"type": f"{kind}.complete"})
                if kind == "lifespan.shutdown":
                    return

    app = TrackwareMiddleware(endpoints, tracker=tracker)
    sent = asyncio.run(drivers.run_lifespan(app))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert [r.event.properties["i"] for r in dead.records] == list(range(5))
    assert tracker.stats()["destinations"]["http"]["dead_lettered"] == 5


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workers", "vendor", "lifespan"),
    CASES,
    ids=[f"{w}worker-{v}-lifespan-{ls}" for w, v, ls in CASES],
)
def test_sigterm_leaves_no_event_without_an_outcome(
    workers: int, vendor: str, lifespan: str, sink: Sink, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "exit_app.py").write_text(textwrap.dedent(APP))
    dead_letter = tmp_path / "dead.jsonl"
    hung = HungReceiver() if vendor == "hung" else None
    if vendor == "healthy":
        url = sink.url
    elif hung is not None:
        url = hung.url
    else:
        url = f"http://127.0.0.1:{free_port()}/events"  # nothing listens: refused
    port = free_port()
    env = {
        **os.environ,
        "TW_SINK_URL": url,
        "TRACKWARE_DEAD_LETTER_PATH": str(dead_letter),
    }
    args = [
        "uvicorn",
        "exit_app:app",
        "--app-dir",
        str(tmp_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--lifespan",
        lifespan,
        "--no-access-log",
    ]
    try:
        with serving(args, env, port) as proc:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"User-Agent": BROWSER}
            ) as client:
                for n in range(REQUESTS):
                    assert client.get(f"/work/{n}", timeout=30).status_code == 200
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=90)
            # uvicorn's own exit status is kept: the re-raised SIGTERM (one
            # process) or 0 (the supervisor of several workers).
            assert proc.returncode == (-signal.SIGTERM if workers == 1 else 0), output
    finally:
        if hung is not None:
            hung.stop()

    with sink.cond:
        delivered = [e for body in sink.bodies for e in body["events"]]
    dead = (
        [json.loads(line)["event"] for line in dead_letter.read_text().splitlines()]
        if dead_letter.exists()
        else []
    )
    outcomes = collections.Counter(_key(e) for e in delivered + dead)
    expected = {("page", f"/work/{n}") for n in range(REQUESTS)} | {
        ("work", n) for n in range(REQUESTS)
    }
    missing = expected - set(outcomes)
    assert not missing, (
        f"{len(missing)} of {len(expected)} events vanished (delivered "
        f"{len(delivered)}, dead-lettered {len(dead)}):\n{output[-3000:]}"
    )
    assert set(outcomes) == expected
    assert all(count == 1 for count in outcomes.values()), outcomes
    if vendor == "healthy":
        assert dead == []
    else:
        assert delivered == []


def _key(event: dict[str, t.Any]) -> tuple[str, t.Any]:
    if event["name"] == "page":
        return ("page", event["properties"]["path"])
    return (event["name"], event["properties"].get("n"))
