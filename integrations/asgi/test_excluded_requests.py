"""Excluding a request from page tracking never changes where the app's own
events go: real Starlette and FastAPI apps, requests excluded by path, bot
user agent, method and route, next to a tracked control request."""

from __future__ import annotations

import asyncio
import typing as t

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import trackware
from trackware import _default
from trackware.integrations.asgi import TrackwareMiddleware

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"
CURL = "curl/8.5.0"

#: (method, path, user agent, tracked as a page?)
REQUESTS = [
    ("GET", "/health", BROWSER, False),  # a default excluded path
    ("GET", "/", CURL, False),  # curl's default user agent: a bot
    ("HEAD", "/", BROWSER, False),
    ("OPTIONS", "/", BROWSER, False),
    ("GET", "/admin", BROWSER, False),  # an excluded endpoint (after routing)
    ("GET", "/", BROWSER, True),  # the control
]


def starlette_app() -> Starlette:
    async def view(request: Request) -> Response:
        trackware.track(
            "app.event", {"method": request.method, "path": request.url.path}
        )
        return PlainTextResponse("ok")

    async def stream(request: Request) -> Response:
        async def chunks() -> t.AsyncIterator[bytes]:
            trackware.track("app.streamed", {"path": request.url.path})
            yield b"chunk"

        return StreamingResponse(chunks())

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        trackware.track("app.socket", {"path": websocket.url.path})
        await websocket.close()

    return Starlette(
        routes=[
            Route("/", view, methods=["GET", "HEAD", "OPTIONS"]),
            Route("/health", view),
            Route("/admin", view, name="admin"),
            Route("/stream", stream),
            WebSocketRoute("/health/ws", socket),
        ]
    )


def fastapi_app() -> FastAPI:
    app = FastAPI()

    def record(request_method: str, path: str) -> None:
        trackware.track("app.event", {"method": request_method, "path": path})

    @app.api_route("/", methods=["GET", "HEAD", "OPTIONS"])
    def home(  # a sync view: FastAPI runs it in its thread pool
        tasks: BackgroundTasks, request: Request
    ) -> PlainTextResponse:
        tasks.add_task(trackware.track, "app.background", {"path": "/"})
        record(request.method, request.url.path)
        return PlainTextResponse("ok")

    @app.get("/health")
    async def health(request: Request) -> PlainTextResponse:
        record(request.method, request.url.path)
        return PlainTextResponse("ok")

    @app.get("/admin", name="admin")
    async def admin(request: Request) -> PlainTextResponse:
        record(request.method, request.url.path)
        return PlainTextResponse("ok")

    return app


async def send_all(app: t.Any, requests: t.Sequence[tuple[str, str, str]]) -> None:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
        for method, path, agent in requests:
            response = await c.request(method, path, headers={"User-Agent": agent})
            assert response.status_code == 200, (method, path, response.text)


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app])
def test_the_apps_events_reach_the_middlewares_tracker(
    recorder: t.Any, make_app: t.Callable[[], t.Any]
) -> None:
    app = TrackwareMiddleware(
        make_app(), tracker=recorder.tracker, exclude_endpoints=["admin"]
    )
    asyncio.run(send_all(app, [(m, p, a) for m, p, a, _ in REQUESTS]))
    got = [
        (e.properties["method"], e.properties["path"])
        for e in recorder.events("app.event")
    ]
    assert got == [(m, p) for m, p, _, _ in REQUESTS]
    pages = recorder.pages()
    assert [(p.properties["method"], p.properties["path"]) for p in pages] == [
        (m, p) for m, p, _, page in REQUESTS if page
    ]
    if make_app is fastapi_app:  # background tasks too: curl, HEAD, OPTIONS, control
        assert len(recorder.events("app.background")) == 4
    # No stand-in default was made (it would have been created on first use,
    # without destinations): the middleware's tracker is the default.
    assert _default.current is recorder.tracker


def test_streamed_body_and_websocket_of_excluded_requests(
    recorder: t.Any, drivers: t.Any
) -> None:
    app = TrackwareMiddleware(
        starlette_app(), tracker=recorder.tracker, exclude_paths=[r"^/health", "^/st"]
    )
    asyncio.run(send_all(app, [("GET", "/stream", BROWSER)]))

    async def socket() -> None:
        session = drivers.WebSocketSession(app, "/health/ws")
        accepted = await session.connect()
        assert accepted["type"] == "websocket.accept"
        await session.finished()

    asyncio.run(socket())
    assert [e.name for e in recorder.events()] == ["app.streamed", "app.socket"]
    assert _default.current is recorder.tracker


def test_excluded_request_without_a_tracker_uses_the_process_default(
    recorder: t.Any,
) -> None:
    """With no tracker= the scope bound names none: the app's events go to
    the process default, as those of tracked requests do."""
    trackware.set_tracker(recorder.tracker)
    app = TrackwareMiddleware(starlette_app())
    asyncio.run(send_all(app, [("GET", "/", CURL), ("GET", "/", BROWSER)]))
    assert len(recorder.events("app.event")) == 2
    assert len(recorder.pages()) == 1


def test_identify_in_an_excluded_request_stays_in_that_request(
    recorder: t.Any,
) -> None:
    """An excluded connection's scope (Untracked: its fields class defaults
    until set) takes identify() on the instance; the next request, and the
    class, are untouched; a second middleware inside does not track it."""
    from trackware._context import TrackerScope

    async def login(request: Request) -> Response:
        trackware.identify("c-9", email="c9@example.com")
        trackware.track("app.login")
        return PlainTextResponse("ok")

    async def after(request: Request) -> Response:
        trackware.track("app.next")
        return PlainTextResponse("ok")

    inner = TrackwareMiddleware(
        Starlette(routes=[Route("/health/login", login), Route("/health/next", after)]),
        tracker=recorder.tracker,
        exclude_paths=[],  # the inner one would track them: the outer handles them
    )
    app = TrackwareMiddleware(inner, tracker=recorder.tracker)
    asyncio.run(
        send_all(
            app, [("GET", "/health/login", BROWSER), ("GET", "/health/next", BROWSER)]
        )
    )
    login_event, next_event = recorder.events()
    assert (login_event.name, login_event.user_id) == ("app.login", "c-9")
    assert login_event.email == "c9@example.com"
    assert (next_event.name, next_event.user_id, next_event.email) == (
        "app.next",
        None,
        None,
    )
    assert recorder.pages() == []
    assert TrackerScope.user_id is None and TrackerScope.email is None
