"""Fixtures for the ASGI suites: isolation like tests/conftest.py, a sink, a tracker."""

from __future__ import annotations

import asyncio
import typing as t

import pytest

import trackware
from trackware.testing import InMemoryExporter


class Recorder:
    """A tracker delivering to memory, with helpers to read what it got."""

    def __init__(self) -> None:
        self.memory = InMemoryExporter()
        self.tracker = trackware.Tracker(
            [self.memory], dead_letter=None, flush_interval=0.01
        )

    def events(self, name: str | None = None) -> list[trackware.Event]:
        assert self.tracker.flush(10)
        return [e for e in self.memory.events if name is None or e.name == name]

    def pages(self) -> list[trackware.Event]:
        return self.events("page")

    def clear(self) -> None:
        assert self.tracker.flush(10)
        self.memory.clear()


@pytest.fixture(autouse=True)
def _cookie_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The middleware refuses to start without a cookie signing key; the ASGI
    suites give it one the way a deployment may, in the environment (served
    apps inherit it). Tests of the key itself set or delete it."""
    monkeypatch.setenv("TRACKWARE_COOKIE_SECRET", "asgi-suites-cookie-secret")


@pytest.fixture
def recorder() -> t.Iterator[Recorder]:
    r = Recorder()
    yield r
    r.tracker.shutdown()


class WebSocketSession:
    """Drives an ASGI app's websocket directly (httpx's ASGITransport has none)."""

    def __init__(
        self, app: t.Any, path: str, headers: t.Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        self.app = app
        self.scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"shop"), *headers],
            "client": ("127.0.0.1", 5000),
            "server": ("shop", 80),
            "subprotocols": [],
        }
        self.inbox: asyncio.Queue[dict[str, t.Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, t.Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def connect(self) -> dict[str, t.Any]:
        await self.inbox.put({"type": "websocket.connect"})
        self.task = asyncio.create_task(
            self.app(self.scope, self.inbox.get, self.outbox.put)
        )
        return await self.receive()

    async def send_text(self, text: str) -> None:
        await self.inbox.put({"type": "websocket.receive", "text": text})

    async def receive(self) -> dict[str, t.Any]:
        return await asyncio.wait_for(self.outbox.get(), 10)

    async def disconnect(self, code: int) -> None:
        await self.inbox.put({"type": "websocket.disconnect", "code": code})

    async def finished(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


async def run_lifespan(app: t.Any) -> list[str]:
    """Start the app's lifespan and shut it down; returns what the app sent."""
    inbox: asyncio.Queue[dict[str, t.Any]] = asyncio.Queue()
    sent: list[str] = []
    started = asyncio.Event()

    async def send(message: dict[str, t.Any]) -> None:
        sent.append(message["type"])
        if message["type"].startswith("lifespan.startup"):
            started.set()

    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    )
    await asyncio.wait_for(started.wait(), 10)
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(task, 30)
    return sent


class Drivers:
    WebSocketSession = WebSocketSession
    run_lifespan = staticmethod(run_lifespan)


@pytest.fixture
def drivers() -> type[Drivers]:
    return Drivers
