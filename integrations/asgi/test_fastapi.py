"""TrackwareMiddleware on FastAPI: route templates, dependencies, identity."""

from __future__ import annotations

import asyncio
import threading
import typing as t

import httpx
import pytest
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Request, WebSocket
from fastapi.responses import StreamingResponse

import trackware
from trackware.integrations.asgi import TrackwareMiddleware

DEPENDENCY_THREADS: list[str] = []


def current_customer(request: Request) -> str:
    """A sync dependency: FastAPI runs it in a thread pool."""
    DEPENDENCY_THREADS.append(threading.current_thread().name)
    customer = request.headers.get("x-customer", "anonymous")
    trackware.identify(customer, traits={"plan": "pro"})
    return customer


def make_app() -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/shop")

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"page": "home"}

    @router.get("/products/{sku}")
    async def product(sku: str) -> dict[str, str]:
        trackware.track("product.viewed", {"sku": sku})
        return {"sku": sku}

    @app.get("/account")
    async def account(customer: str = Depends(current_customer)) -> dict[str, str]:
        trackware.track("account.viewed")
        return {"customer": customer}

    @app.get("/sync-view")
    def sync_view() -> dict[str, str]:
        trackware.identify("c-sync")
        return {"ok": "yes"}

    @app.post("/orders", status_code=201)
    async def order(
        tasks: BackgroundTasks, customer: str = Depends(current_customer)
    ) -> dict[str, str]:
        tasks.add_task(trackware.track, "order.confirmation_sent")
        return {"order": "o-1"}

    @app.get("/export")
    async def export() -> StreamingResponse:
        async def rows() -> t.AsyncIterator[bytes]:
            for i in range(4):
                yield f"{i}\n".encode()

        return StreamingResponse(rows(), media_type="text/csv")

    @app.get("/fail")
    async def fail() -> None:
        raise LookupError("missing")

    @app.websocket("/ws/{room}")
    async def room(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        await websocket.send_json({"room": room})
        await websocket.close()

    app.include_router(router)
    return app


async def fetch(app: t.Any, *requests: tuple[str, str, dict[str, str]]) -> list[int]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        return [
            (await c.request(method, path, headers=headers)).status_code
            for method, path, headers in requests
        ]


def test_route_templates_and_statuses(recorder: t.Any) -> None:
    app = TrackwareMiddleware(make_app(), tracker=recorder.tracker)
    statuses = asyncio.run(
        fetch(
            app,
            ("GET", "/", {}),
            ("GET", "/shop/products/sku-1", {}),
            ("GET", "/export", {}),
            ("GET", "/missing", {}),
            ("DELETE", "/", {}),
        )
    )
    assert statuses == [200, 200, 200, 404, 405]
    got = [
        (p.properties["route"], p.properties["endpoint"], p.properties["status"])
        for p in recorder.pages()
    ]
    assert got == [
        ("/", "home", 200),
        ("/shop/products/{sku}", "product", 200),
        ("/export", "export", 200),
        (None, None, 404),
        ("/", "home", 405),
    ]


def test_sync_dependency_identify_reaches_the_page_event(recorder: t.Any) -> None:
    DEPENDENCY_THREADS.clear()
    app = TrackwareMiddleware(make_app(), tracker=recorder.tracker)
    statuses = asyncio.run(
        fetch(
            app,
            ("GET", "/account", {"X-Customer": "c-77"}),
            ("POST", "/orders", {"X-Customer": "c-78"}),
            ("GET", "/sync-view", {}),
        )
    )
    assert statuses == [200, 201, 200]
    # The dependency really ran off the event loop's thread.
    assert DEPENDENCY_THREADS and threading.main_thread().name not in DEPENDENCY_THREADS
    account, order, sync_view = recorder.pages()
    assert account.user_id == "c-77" and account.traits == {"plan": "pro"}
    assert recorder.events("account.viewed")[0].user_id == "c-77"
    assert order.user_id == "c-78" and order.properties["status"] == 201
    confirmation = recorder.events("order.confirmation_sent")[0]
    assert confirmation.user_id == "c-78"
    assert confirmation.context["session_id"] == order.context["session_id"]
    assert sync_view.user_id == "c-sync"


def test_add_middleware_exception_and_websocket(
    recorder: t.Any, drivers: t.Any
) -> None:
    app = make_app()
    app.add_middleware(TrackwareMiddleware, tracker=recorder.tracker)
    with pytest.raises(LookupError):
        asyncio.run(fetch(app, ("GET", "/fail", {})))
    [page] = recorder.pages()
    assert page.properties["status"] == 500
    assert page.properties["route"] == "/fail"
    assert page.properties["error"] == "LookupError"

    async def run() -> None:
        ws = drivers.WebSocketSession(app, "/ws/lobby")
        assert (await ws.connect())["type"] == "websocket.accept"
        assert (await ws.receive())["type"] == "websocket.send"
        assert (await ws.receive())["type"] == "websocket.close"
        await ws.finished()

    asyncio.run(run())
    [connect] = recorder.events("websocket_connect")
    [disconnect] = recorder.events("websocket_disconnect")
    assert connect.properties["route"] == "/ws/{room}"
    assert disconnect.properties["code"] == 1000
    assert disconnect.properties["initiator"] == "server"
