"""A Starlette app wrapped in TrackwareMiddleware, served by a real uvicorn.

Configured from the environment (one tracker per worker process):
``TW_SINK_URL`` (required), ``TW_FLUSH_INTERVAL`` (seconds, default 0.2),
``TRACKWARE_DEAD_LETTER_PATH``.
"""

from __future__ import annotations

import asyncio
import os
import typing as t

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

import trackware
from trackware.exporters import HTTPExporter
from trackware.integrations.asgi import TrackwareMiddleware

tracker = trackware.Tracker(
    [HTTPExporter(os.environ["TW_SINK_URL"])],
    flush_interval=float(os.environ.get("TW_FLUSH_INTERVAL", "0.2")),
    shutdown_timeout=20.0,
)


async def home(request: Request) -> Response:
    return PlainTextResponse(f"pid {os.getpid()}")


async def item(request: Request) -> Response:
    trackware.track("item.viewed", {"item_id": request.path_params["item_id"]})
    return PlainTextResponse("item")


async def stream(request: Request) -> Response:
    async def chunks() -> t.AsyncIterator[bytes]:
        for i in range(5):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(chunks())


async def sse(request: Request) -> Response:
    async def events() -> t.AsyncIterator[str]:
        for i in range(3):
            yield f"data: {i}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def boom(request: Request) -> Response:
    raise RuntimeError("boom under uvicorn")


async def who(scope: t.Mapping[str, t.Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-user":
            return str(value.decode())
    return None


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close(code=4000)
                return
            await websocket.send_text(text)
    except WebSocketDisconnect:
        return


app = TrackwareMiddleware(
    Starlette(
        routes=[
            Route("/", home),
            Route("/items/{item_id:int}", item),
            Route("/stream", stream),
            Route("/sse", sse),
            Route("/boom", boom),
            WebSocketRoute("/ws", echo),
        ]
    ),
    tracker=tracker,
    identity=who,
)
