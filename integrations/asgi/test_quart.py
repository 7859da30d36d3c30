"""TrackwareMiddleware around Quart apps (route templates from the URL map)."""

from __future__ import annotations

import asyncio
import typing as t

import httpx
from quart import Quart, websocket

import trackware
from trackware.integrations.asgi import TrackwareMiddleware
from trackware.testing import InMemoryExporter


def make_app() -> Quart:
    app = Quart(__name__)

    @app.route("/")
    async def index() -> str:
        return "index"

    @app.route("/users/<int:user_id>")
    async def user(user_id: int) -> dict[str, int]:
        trackware.identify(str(user_id))
        trackware.track("user.viewed")
        return {"user_id": user_id}

    @app.route("/stream")
    async def stream() -> t.Any:
        async def chunks() -> t.AsyncIterator[bytes]:
            for i in range(3):
                yield f"{i};".encode()

        return chunks(), 200, {"Content-Type": "text/plain"}

    @app.route("/crash")
    async def crash() -> str:
        raise KeyError("crash")

    @app.websocket("/ws")
    async def ws() -> None:
        message = await websocket.receive()
        await websocket.send(f"echo {message}")

    return app


async def fetch(app: t.Any, *paths: str) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as c:
        return [await c.get(p) for p in paths]


def test_quart_pages_routes_and_errors(recorder: t.Any) -> None:
    app = TrackwareMiddleware(make_app(), tracker=recorder.tracker)
    responses = asyncio.run(fetch(app, "/", "/users/12", "/stream", "/nope", "/crash"))
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 500]
    assert responses[2].text == "0;1;2;"
    got = [
        (p.properties["route"], p.properties["endpoint"], p.properties["status"])
        for p in recorder.pages()
    ]
    assert got == [
        ("/", "index", 200),
        ("/users/<int:user_id>", "user", 200),
        ("/stream", "stream", 200),
        (None, None, 404),
        ("/crash", "crash", 500),
    ]
    pages = recorder.pages()
    assert pages[1].user_id == "12"
    assert recorder.events("user.viewed")[0].user_id == "12"


def test_quart_asgi_app_wrapping_and_websocket(recorder: t.Any, drivers: t.Any) -> None:
    app = make_app()
    app.asgi_app = TrackwareMiddleware(  # type: ignore[method-assign]
        app.asgi_app, tracker=recorder.tracker
    )

    async def run() -> None:
        session = drivers.WebSocketSession(app, "/ws")
        await session.inbox.put({"type": "websocket.connect"})
        session.task = asyncio.create_task(
            app(session.scope, session.inbox.get, session.outbox.put)
        )
        await session.send_text("hi")
        messages = [await session.receive(), await session.receive()]
        assert [m["type"] for m in messages] == ["websocket.accept", "websocket.send"]
        assert messages[1]["text"] == "echo hi"
        await session.finished()

    asyncio.run(run())
    [connect] = recorder.events("websocket_connect")
    [disconnect] = recorder.events("websocket_disconnect")
    assert connect.properties["route"] == "/ws"
    assert disconnect.properties["accepted"] is True
    assert asyncio.run(fetch(app, "/users/3"))[0].status_code == 200
    [page] = recorder.pages()
    assert page.properties["route"] == "/users/<int:user_id>"


def test_quart_lifespan_passes_through(drivers: t.Any) -> None:
    memory = InMemoryExporter()
    # A long flush interval: only the lifespan flush delivers in time.
    tracker = trackware.Tracker([memory], dead_letter=None, flush_interval=60)
    app = make_app()
    started: list[str] = []

    @app.before_serving
    async def startup() -> None:
        started.append("up")

    @app.after_serving
    async def shutdown() -> None:
        tracker.track("server.stopping")

    wrapped = TrackwareMiddleware(app, tracker=tracker)
    sent = asyncio.run(drivers.run_lifespan(wrapped))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert started == ["up"]
    # Tracked by the app's own shutdown handler, then flushed by ours.
    assert memory.names() == ["server.stopping"]
    tracker.shutdown()
