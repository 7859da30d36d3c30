"""Route finders of the ASGI middleware (trackware/integrations/_routes.py)."""

from __future__ import annotations

import typing as t

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from trackware.integrations._routes import route_finder


async def home(request: t.Any) -> PlainTextResponse:
    return PlainTextResponse("home")


async def order(request: t.Any) -> PlainTextResponse:
    return PlainTextResponse("order")


async def unrouted(request: t.Any) -> PlainTextResponse:
    return PlainTextResponse("nowhere")


def test_starlette_without_scope_route_is_found_by_its_endpoint(
    tmp_path: t.Any,
) -> None:
    """Starlette before 1.x leaves no scope["route"], only the router and the
    endpoint it matched: the route is found among the router's routes."""
    static = StaticFiles(directory=str(tmp_path))
    api = Starlette(routes=[Route("/orders/{order_id}", order, name="order")])
    app = Starlette(
        routes=[
            Route("/", home, name="home"),
            Mount("/api", app=api),
            Mount("/static", app=static, name="static"),
        ]
    )
    find = route_finder(app)

    def found(endpoint: t.Any) -> tuple[str | None, str | None]:
        inner = {"type": "http", "router": app.router, "endpoint": endpoint}
        return find(inner, "", "GET", "/whatever")

    assert found(home) == ("/", "home")
    assert found(order) == ("/api/orders/{order_id}", "order")
    assert found(static) == ("/static/{path:path}", "static")
    assert found(unrouted) == (None, None)
    assert find({"type": "http"}, "", "GET", "/") == (None, None)
    assert found(order) == ("/api/orders/{order_id}", "order")  # (cached)
