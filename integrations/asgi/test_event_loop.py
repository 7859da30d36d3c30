"""The event loop keeps running while the destination hangs."""

from __future__ import annotations

import asyncio
import typing as t

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import trackware
from trackware.exporters import HTTPExporter
from trackware.integrations.asgi import TrackwareMiddleware

REQUESTS = 200


async def item(request: Request) -> Response:
    await asyncio.sleep(0)  # the app's own async work: yields to the loop once
    trackware.track("item.viewed")
    return PlainTextResponse("item")


def test_loop_keeps_ticking_while_the_destination_hangs(sink: t.Any) -> None:
    sink.script.append(("sleep", 5))  # the first export hangs for 5 s
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)], dead_letter=None, flush_interval=0.01
    )
    tracker.track("warmup")
    assert sink.wait_requests(1)  # the worker is now stuck in that export
    app = TrackwareMiddleware(
        Starlette(routes=[Route("/items/{n}", item)]), tracker=tracker
    )

    async def main() -> tuple[int, list[int]]:
        ticks = 0
        running = True

        async def ticker() -> None:
            nonlocal ticks
            while running:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
            responses = [await c.get(f"/items/{i}") for i in range(REQUESTS)]
        during = ticks - before
        running = False
        await task
        return during, [r.status_code for r in responses]

    during, statuses = asyncio.run(main())
    assert statuses == [200] * REQUESTS
    # Every request was served and the ticker kept running, all while the
    # destination had not answered its first request yet.
    assert sink.ids == [] and sink.requests == 1
    assert during >= REQUESTS
    # Then everything is delivered: warmup, one session_start (the client
    # keeps the cookies), and per request the item.viewed and page events.
    assert tracker.flush(30)
    assert len(sink.ids) == 2 + 2 * REQUESTS
    assert len(set(sink.ids)) == len(sink.ids)
    tracker.shutdown()
