"""A FastAPI app wrapped (twice) in TrackwareMiddleware, served by a real uvicorn.

Configured from the environment (one tracker per worker process):
``TW_SINK_URL`` (required), ``TW_FLUSH_INTERVAL`` (seconds, default 0.2),
``TRACKWARE_DEAD_LETTER_PATH``, ``TRACKWARE_COOKIE_SECRET`` (required: the
middleware's cookie key, the same in every worker; the ASGI suites' conftest
sets it).
"""

from __future__ import annotations

import asyncio
import os
import typing as t

from fastapi import Depends, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, StreamingResponse

import trackware
from trackware.exporters import HTTPExporter
from trackware.integrations.asgi import TrackwareMiddleware

tracker = trackware.Tracker(
    [HTTPExporter(os.environ["TW_SINK_URL"])],
    flush_interval=float(os.environ.get("TW_FLUSH_INTERVAL", "0.2")),
    shutdown_timeout=20.0,
)

api = FastAPI()


def customer(request: Request) -> str:
    """A sync dependency (FastAPI runs it in a thread pool) that identifies."""
    user = request.headers.get("x-customer", "guest")
    trackware.identify(user)
    return user


@api.get("/", response_class=PlainTextResponse)
async def home() -> str:
    return f"pid {os.getpid()}"


@api.get("/items/{item_id}", response_class=PlainTextResponse)
async def item(item_id: int) -> str:
    trackware.track("item.viewed", {"item_id": item_id})
    return "item"


@api.get("/account", response_class=PlainTextResponse)
async def account(user: str = Depends(customer)) -> str:
    return user


@api.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> t.AsyncIterator[bytes]:
        for i in range(5):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(chunks())


@api.get("/sse")
async def sse() -> StreamingResponse:
    async def events() -> t.AsyncIterator[str]:
        for i in range(3):
            yield f"data: {i}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@api.get("/boom")
async def boom() -> None:
    raise RuntimeError("boom under uvicorn")


@api.websocket("/ws")
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


async def who(scope: t.Mapping[str, t.Any]) -> str | None:
    """Async identity callable: the X-User header."""
    for name, value in scope.get("headers", ()):
        if name == b"x-user":
            return str(value.decode())
    return None


# Wrapped twice on purpose: every request must still be tracked once.
api.add_middleware(TrackwareMiddleware, tracker=tracker)
app = TrackwareMiddleware(api, tracker=tracker, identity=who)
