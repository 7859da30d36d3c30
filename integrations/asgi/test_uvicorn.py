"""TrackwareMiddleware under a real uvicorn process on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import typing as t

import httpx
import pytest
from _support import Sink, free_port
from websockets.asyncio.client import connect

APPS = pathlib.Path(__file__).parent / "apps"
UVICORN = pathlib.Path(sys.executable).parent / "uvicorn"


class Uvicorn:
    """``uvicorn uvicorn_app:app`` in a subprocess; stderr is collected."""

    def __init__(
        self, sink: Sink, tmp_path: pathlib.Path, *, workers: int, flush: float
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dead_letter = tmp_path / "uvicorn-dead.jsonl"
        env = {
            **os.environ,
            "TW_SINK_URL": sink.url,
            "TW_FLUSH_INTERVAL": str(flush),
            "TRACKWARE_DEAD_LETTER_PATH": str(self.dead_letter),
        }
        self.workers = workers
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(
            [
                str(UVICORN),
                "uvicorn_app:app",
                "--app-dir",
                str(APPS),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--lifespan",
                "on",
                "--no-access-log",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: workers included
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.rstrip())
                self.cond.notify_all()

    def wait_log(self, text: str, count: int, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(text in line for line in self.lines) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    return False
                self.cond.wait(min(remaining, 0.5))
        return True

    def __enter__(self) -> Uvicorn:
        started = self.wait_log("Application startup complete", self.workers)
        # A single process binds its socket after the startup.
        started = started and self.wait_log("Uvicorn running on", 1)
        assert started, "\n".join(self.lines)
        return self

    def terminate(self) -> None:
        """SIGTERM, then wait for a graceful exit (uvicorn re-raises the signal
        after its shutdown, so the status may be -SIGTERM)."""
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout=120)
        assert status in (0, -signal.SIGTERM), "\n".join(self.lines)
        shut = sum("Application shutdown complete" in line for line in self.lines)
        assert shut == self.workers, "\n".join(self.lines)

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:  # a failed test: stop the server and workers
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.reader.join(timeout=30)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def dead_letters(self) -> list[t.Any]:
        if not self.dead_letter.exists():
            return []
        return [json.loads(x) for x in self.dead_letter.read_text().splitlines()]


def received(sink: Sink) -> list[dict[str, t.Any]]:
    with sink.cond:
        return [e for body in sink.bodies for e in body["events"]]


def wait_pages(sink: Sink, count: int, timeout: float = 60.0) -> bool:
    def pages() -> int:
        return sum(
            1 for body in sink.bodies for e in body["events"] if e["name"] == "page"
        )

    deadline = time.monotonic() + timeout
    with sink.cond:
        while pages() < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            sink.cond.wait(remaining)
    return True


@pytest.mark.slow
def test_features_under_uvicorn(sink: Sink, tmp_path: pathlib.Path) -> None:
    # A long flush interval: what the sink gets came through the lifespan
    # shutdown flush (or the at-exit shutdown).
    with Uvicorn(sink, tmp_path, workers=1, flush=60.0) as server:

        async def client_side() -> list[int]:
            statuses = []
            async with httpx.AsyncClient(base_url=server.url) as c:
                for path in ("/", "/items/5", "/stream", "/sse", "/account"):
                    headers = {"X-User": "u-1"} if path == "/items/5" else {}
                    if path == "/account":
                        headers = {"X-Customer": "c-dep"}
                    r = await c.get(path, headers=headers)
                    statuses.append(r.status_code)
                assert (await c.get("/stream")).text.count("chunk") == 5
                statuses.append((await c.head("/")).status_code)
                # Last on this connection: uvicorn closes it after an app error.
                statuses.append((await c.get("/boom")).status_code)
            async with httpx.AsyncClient(base_url=server.url) as c:
                forged = {"Cookie": "tw_vid=../../etc; tw_sid=abc.1.2.zzzz"}
                r = await c.get("/", headers=forged)
                statuses.append(r.status_code)
                assert "etc" not in " ".join(r.headers.get_list("set-cookie"))
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
                await ws.send("bye")
                await ws.wait_closed()
                assert ws.close_code == 4000
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
                await ws.send("x")
                assert await ws.recv() == "x"
                await ws.close(code=4100)
            return statuses

        statuses = asyncio.run(client_side())
        assert statuses == [200, 200, 200, 200, 200, 405, 500, 200]  # HEAD: 405
        assert server.wait_log("boom under uvicorn", 1)
        server.terminate()
    events = received(sink)
    pages = [e for e in events if e["name"] == "page"]
    got = [(p["properties"]["route"], p["properties"]["status"]) for p in pages]
    assert got == [
        ("/", 200),
        ("/items/{item_id}", 200),
        ("/stream", 200),
        ("/sse", 200),
        ("/account", 200),
        ("/stream", 200),
        ("/boom", 500),
        ("/", 200),
    ]
    assert pages[1]["user_id"] == "u-1"
    assert pages[4]["user_id"] == "c-dep"  # identify() in a sync dependency
    assert pages[0]["anonymous_id"] == pages[1]["anonymous_id"]
    assert pages[-1]["anonymous_id"] != pages[0]["anonymous_id"]
    assert [e["user_id"] for e in events if e["name"] == "item.viewed"] == ["u-1"]
    closes = [e["properties"] for e in events if e["name"] == "websocket_disconnect"]
    assert [(c["code"], c["initiator"]) for c in closes] == [
        (4000, "server"),
        (4100, "client"),
    ]
    assert len([e for e in events if e["name"] == "websocket_connect"]) == 2
    assert server.dead_letters() == []


async def hammer(url: str, count: int, concurrency: int) -> list[int]:
    limit = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as c:

        async def one(i: int) -> int:
            async with limit:
                path = "/" if i % 2 else f"/items/{i}"
                return (await c.get(path)).status_code

        return await asyncio.gather(*(one(i) for i in range(count)))


@pytest.mark.slow
def test_two_workers_500_requests_then_sigterm_loses_nothing(
    sink: Sink, tmp_path: pathlib.Path
) -> None:
    with Uvicorn(sink, tmp_path, workers=2, flush=0.2) as server:
        statuses = asyncio.run(hammer(server.url, 500, 50))
        assert statuses == [200] * 500
        assert wait_pages(sink, 500)
        pages = [e for e in received(sink) if e["name"] == "page"]
        assert len(pages) == 500
        assert len({p["event_id"] for p in pages}) == 500

        # Now the sink hangs on the next export of each worker while more
        # requests come in: their events are queued when SIGTERM arrives.
        with sink.cond:
            sink.script.extend([("sleep", 2), ("sleep", 2)])
        statuses = asyncio.run(hammer(server.url, 100, 50))
        assert statuses == [200] * 100
        server.terminate()
    events = received(sink)
    pages = [e for e in events if e["name"] == "page"]
    assert len(pages) == 600
    assert len({e["event_id"] for e in events}) == len(events)
    assert len([e for e in events if e["name"] == "item.viewed"]) == 300
    assert server.dead_letters() == []
    assert sum("Received SIGTERM" in line for line in server.lines) >= 1


@pytest.mark.slow
def test_two_workers_verify_each_others_signed_cookies(
    sink: Sink, tmp_path: pathlib.Path
) -> None:
    """The cookie key comes from the environment, the same in every worker: a
    browser served by one worker and then by the other stays one visitor in
    one session (a per-process key would make it a new visitor each time)."""
    with Uvicorn(sink, tmp_path, workers=2, flush=0.2) as server:
        pids: list[str] = []
        # A new connection per request, so that both workers answer.
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=server.url, limits=limits, timeout=10) as client:
            client.headers["User-Agent"] = "Mozilla/5.0 (two workers)"
            for _ in range(200):
                response = client.get("/")
                assert response.status_code == 200
                pids.append(response.text)
                if len(set(pids)) == 2 and len(pids) >= 10:
                    break
        assert len(set(pids)) == 2, "one worker answered every request"
        assert wait_pages(sink, len(pids))
        server.terminate()
    events = received(sink)
    pages = [e for e in events if e["name"] == "page"]
    assert len(pages) == len(pids)
    assert len({p["anonymous_id"] for p in pages}) == 1
    assert len({p["context"]["session_id"] for p in pages}) == 1
    assert len([e for e in events if e["name"] == "session_start"]) == 1
