"""TrackwareMiddleware on Starlette apps (httpx.ASGITransport and TestClient)."""

from __future__ import annotations

import asyncio
import re
import typing as t

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

import trackware
from trackware import ConfigurationError
from trackware.integrations.asgi import TrackwareMiddleware


class Boom(Exception):
    pass


def make_app() -> Starlette:
    async def home(request: Request) -> Response:
        return PlainTextResponse("home")

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
                yield f"event: tick\ndata: {i}\n\n"
                await asyncio.sleep(0)

        return StreamingResponse(events(), media_type="text/event-stream")

    async def boom(request: Request) -> Response:
        raise Boom("the app failed")

    async def login(request: Request) -> Response:
        trackware.identify("c-42", traits={"tier": "gold"})
        trackware.track("user.logged_in")
        return PlainTextResponse("welcome")

    async def later(request: Request) -> Response:
        def work() -> None:
            trackware.identify("c-bg")
            trackware.track("background.done")

        return PlainTextResponse("accepted", background=BackgroundTask(work))

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def order(request: Request) -> Response:
        return PlainTextResponse("order")

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(text)
        await websocket.close(code=4001)

    async def listen(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return

    api = Starlette(routes=[Route("/orders/{order_id}", order, name="order")])
    return Starlette(
        routes=[
            Route("/", home, name="home"),
            Route("/items/{item_id:int}", item, name="item"),
            Route("/stream", stream),
            Route("/sse", sse),
            Route("/boom", boom),
            Route("/login", login, methods=["POST"]),
            Route("/later", later),
            Route("/health", health),
            Mount("/api", api),
            WebSocketRoute("/ws/echo", echo),
            WebSocketRoute("/ws/listen", listen),
        ]
    )


async def fetch(
    app: t.Any, *requests: tuple[str, str], raise_app_exceptions: bool = True
) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app, raise_app_exceptions=raise_app_exceptions)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
        return [await c.request(method, path) for method, path in requests]


def get(app: t.Any, *paths: str) -> list[httpx.Response]:
    return asyncio.run(fetch(app, *[("GET", p) for p in paths]))


def test_page_events_for_every_route_kind(recorder: t.Any) -> None:
    app = TrackwareMiddleware(make_app(), tracker=recorder.tracker)
    responses = get(app, "/", "/items/7", "/api/orders/o-9", "/nope", "/stream", "/sse")
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 200, 200]
    assert responses[4].text == "".join(f"chunk {i}\n" for i in range(5))
    pages = recorder.pages()
    got = [
        (p.properties["path"], p.properties["route"], p.properties["status"])
        for p in pages
    ]
    assert got == [
        ("/", "/", 200),
        ("/items/7", "/items/{item_id:int}", 200),
        ("/api/orders/o-9", "/api/orders/{order_id}", 200),
        ("/nope", None, 404),
        ("/stream", "/stream", 200),
        ("/sse", "/sse", 200),
    ]
    assert pages[0].properties["endpoint"] == "home"
    assert pages[2].properties["endpoint"] == "order"
    for page in pages:
        assert page.properties["method"] == "GET"
        assert page.properties["duration"] >= 0
    # One visitor and one session across the requests (the client keeps cookies).
    assert len({p.anonymous_id for p in pages}) == 1
    assert len({p.context["session_id"] for p in pages}) == 1
    assert len(recorder.events("session_start")) == 1
    viewed = recorder.events("item.viewed")[0]
    assert viewed.anonymous_id == pages[0].anonymous_id
    assert viewed.context["path"] == "/items/7"


def test_streamed_page_event_waits_for_the_last_chunk(recorder: t.Any) -> None:
    """The page event is tracked only once the body is complete."""
    seen_before_end: list[int] = []

    async def slow_stream(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            recorder.tracker.flush(5)
            seen_before_end.append(len(recorder.memory.events))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    app = TrackwareMiddleware(slow_stream, tracker=recorder.tracker)
    [response] = get(app, "/download")
    assert response.text == "xxx"
    # Only the session_start was tracked while the body was still streaming.
    assert seen_before_end == [1, 1, 1]
    [page] = recorder.pages()
    assert page.properties["status"] == 200


def test_excluded_requests(recorder: t.Any) -> None:
    app = TrackwareMiddleware(
        make_app(), tracker=recorder.tracker, exclude_routes=["/items/{item_id:int}"]
    )

    async def run() -> None:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
            await c.get("/health")
            await c.head("/")
            await c.options("/")
            await c.get("/", headers={"User-Agent": "Googlebot/2.1"})
            await c.get("/items/3")
            await c.get("/")

    asyncio.run(run())
    assert [p.properties["path"] for p in recorder.pages()] == ["/"]


def test_cookies_set_on_response_start_and_reused(recorder: t.Any) -> None:
    app = TrackwareMiddleware(
        make_app(), tracker=recorder.tracker, cookie_secret="s3cret-for-tests"
    )

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
            first = await c.get("/")
            second = await c.get("/items/1")
            return [first, second]

    first, second = asyncio.run(run())
    set_cookies = first.headers.get_list("set-cookie")
    assert any(c.startswith("tw_vid=") for c in set_cookies)
    assert any(c.startswith("tw_sid=") for c in set_cookies)
    assert all("HttpOnly" in c and "SameSite=Lax" in c for c in set_cookies)
    # The same second: the session cookie needs no refresh, the visitor is known.
    assert not any(
        c.startswith("tw_vid=") for c in second.headers.get_list("set-cookie")
    )
    pages = recorder.pages()
    vid = re.search(r"tw_vid=([0-9a-f]{32})", " ".join(set_cookies))
    assert vid is not None
    assert [p.anonymous_id for p in pages] == [vid.group(1)] * 2


def test_tampered_cookies_are_replaced_never_echoed(recorder: t.Any) -> None:
    app = TrackwareMiddleware(
        make_app(), tracker=recorder.tracker, cookie_secret="s3cret-for-tests"
    )

    async def run() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
            good = await c.get("/")
            sid = good.cookies["tw_sid"]
            forged = sid[:-4] + ("AAAA" if not sid.endswith("AAAA") else "BBBB")
            evil = '<script>"x"</script>'
            c.cookies.clear()
            bad = await c.get(
                "/",
                headers={"Cookie": f"tw_vid={evil}; tw_sid={forged}; tw_tid=%00bad"},
            )
            return good, bad

    good, bad = asyncio.run(run())
    header = " ".join(bad.headers.get_list("set-cookie"))
    assert "<script>" not in header and "%00" not in header
    assert good.cookies["tw_sid"] not in header
    first, second = recorder.pages()
    assert re.fullmatch(r"[0-9a-f]{32}", second.anonymous_id or "")
    assert second.anonymous_id != first.anonymous_id
    assert second.context["session_id"] != first.context["session_id"]
    assert "mxo_tid" not in second.context
    # The forged session started a new one (it was not trusted).
    assert len(recorder.events("session_start")) == 2


def test_exception_is_recorded_and_reraised_untouched(recorder: t.Any) -> None:
    failure = Boom("raw app failure")

    async def raw(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        raise failure

    app = TrackwareMiddleware(raw, tracker=recorder.tracker)

    async def call() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/explode",
            "raw_path": b"/explode",
            "query_string": b"",
            "root_path": "",
            "headers": [],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 80),
        }

        async def receive() -> dict[str, t.Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: t.Any) -> None:
            raise AssertionError("nothing is sent")

        await app(scope, receive, send)

    with pytest.raises(Boom) as info:
        asyncio.run(call())
    assert info.value is failure
    [page] = recorder.pages()
    assert page.properties["status"] == 500
    assert page.properties["error"] == "Boom"
    # Through Starlette (its error middleware answers 500, then re-raises).
    recorder.clear()
    app = TrackwareMiddleware(make_app(), tracker=recorder.tracker)
    with pytest.raises(Boom):
        get(app, "/boom")
    [page] = recorder.pages()
    assert page.properties["status"] == 500
    assert page.properties["route"] == "/boom"
    assert trackware.current_scope() is None


def test_double_wrapping_tracks_once(recorder: t.Any) -> None:
    inner = TrackwareMiddleware(make_app(), tracker=recorder.tracker)
    app = TrackwareMiddleware(inner, tracker=recorder.tracker)
    get(app, "/", "/items/2")
    assert len(recorder.pages()) == 2
    assert len(recorder.events("session_start")) == 1

    # A middleware in between rebuilds the scope without the marker: the
    # ContextVar guard still sees the outer request.
    recorder.clear()

    async def rebuilds(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        clean = {k: v for k, v in scope.items() if k != "trackware"}
        await inner(clean, receive, send)

    app = TrackwareMiddleware(rebuilds, tracker=recorder.tracker)
    get(app, "/", "/items/2")
    assert len(recorder.pages()) == 2


def test_identity_from_async_callable(recorder: t.Any) -> None:
    async def who(scope: t.Mapping[str, t.Any]) -> dict[str, t.Any] | None:
        await asyncio.sleep(0)
        for name, value in scope["headers"]:
            if name == b"x-user":
                return {"user_id": value.decode(), "email": "a@example.com"}
        return None

    app = TrackwareMiddleware(make_app(), tracker=recorder.tracker, identity=who)

    async def run() -> None:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
            await c.get("/items/5", headers={"X-User": "c-7"})
            await c.get("/")

    asyncio.run(run())
    signed_in, anonymous = recorder.pages()
    assert signed_in.user_id == "c-7" and signed_in.email == "a@example.com"
    # The identity is known before the session starts: session_start has it.
    assert recorder.events("session_start")[0].user_id == "c-7"
    assert recorder.events("item.viewed")[0].user_id == "c-7"
    assert anonymous.user_id is None


def test_failing_sync_identity_never_breaks_the_request(recorder: t.Any) -> None:
    def who(scope: t.Mapping[str, t.Any]) -> str:
        raise RuntimeError("identity backend down")

    app = TrackwareMiddleware(make_app(), tracker=recorder.tracker, identity=who)
    [response] = get(app, "/")
    assert response.status_code == 200
    [page] = recorder.pages()
    assert page.user_id is None


def test_identify_in_endpoint_and_background_task(recorder: t.Any) -> None:
    app = TrackwareMiddleware(make_app(), tracker=recorder.tracker)
    responses = asyncio.run(fetch(app, ("POST", "/login"), ("GET", "/later")))
    assert [r.status_code for r in responses] == [200, 200]
    login_page, later_page = recorder.pages()
    assert login_page.user_id == "c-42"
    assert login_page.traits == {"tier": "gold"}
    assert recorder.events("user.logged_in")[0].user_id == "c-42"
    # The background task runs after the response; its events carry the
    # request's visitor and session and its own identify().
    done = recorder.events("background.done")[0]
    assert done.user_id == "c-bg"
    assert done.anonymous_id == later_page.anonymous_id
    assert done.context["session_id"] == later_page.context["session_id"]


def test_client_disconnect_is_flagged(recorder: t.Any) -> None:
    async def waits_for_body(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    app = TrackwareMiddleware(waits_for_body, tracker=recorder.tracker)

    async def call() -> None:
        messages = [
            {"type": "http.request", "body": b"part", "more_body": True},
            {"type": "http.disconnect"},
        ]

        async def receive() -> dict[str, t.Any]:
            return messages.pop(0)

        async def send(message: t.Any) -> None:
            raise AssertionError("no response")

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/upload",
            "headers": [],
            "query_string": b"",
            "scheme": "http",
        }
        await app(scope, receive, send)

    asyncio.run(call())
    [page] = recorder.pages()
    assert page.context["client_disconnected"] is True
    assert page.properties["status"] == 499


def test_websocket_connect_and_disconnect(recorder: t.Any, drivers: t.Any) -> None:
    app = TrackwareMiddleware(make_app(), tracker=recorder.tracker)

    async def run() -> None:
        echo = drivers.WebSocketSession(app, "/ws/echo")
        accept = await echo.connect()
        assert accept["type"] == "websocket.accept"
        cookies = [v for k, v in accept.get("headers", []) if k == b"set-cookie"]
        assert any(c.startswith(b"tw_vid=") for c in cookies)
        await echo.send_text("hello")
        assert (await echo.receive())["text"] == "hello"
        closing = await echo.receive()
        assert (closing["type"], closing["code"]) == ("websocket.close", 4001)
        await echo.finished()
        vid = next(c for c in cookies if c.startswith(b"tw_vid=")).split(b";")[0]
        listen = drivers.WebSocketSession(app, "/ws/listen", [(b"cookie", vid)])
        await listen.connect()
        await listen.disconnect(4100)
        await listen.finished()

    asyncio.run(run())
    connects = recorder.events("websocket_connect")
    disconnects = recorder.events("websocket_disconnect")
    assert [e.properties["route"] for e in connects] == ["/ws/echo", "/ws/listen"]
    server_closed, client_closed = disconnects
    assert server_closed.properties["code"] == 4001
    assert server_closed.properties["initiator"] == "server"
    assert client_closed.properties["code"] == 4100
    assert client_closed.properties["initiator"] == "client"
    for e in disconnects:
        assert e.properties["accepted"] is True
        assert e.properties["duration"] >= 0
        assert e.anonymous_id == connects[0].anonymous_id
    assert recorder.pages() == []


def test_lifespan_shutdown_flushes_the_tracker(sink: t.Any, drivers: t.Any) -> None:
    from trackware.exporters import HTTPExporter

    # A long flush interval: only a flush delivers before the interval ends.
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)], dead_letter=None, flush_interval=60
    )
    app = TrackwareMiddleware(make_app(), tracker=tracker)
    get(app, *["/items/1"] * 5)
    assert sink.ids == []
    sent = asyncio.run(drivers.run_lifespan(app))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    # The flush ran before lifespan.shutdown.complete was sent.
    assert len(sink.ids) == 5 * 2 + 1  # pages, item.viewed, one session_start
    tracker.shutdown()


def test_lifespan_for_apps_without_lifespan_support(
    sink: t.Any, drivers: t.Any
) -> None:
    from trackware.exporters import HTTPExporter

    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)], dead_letter=None, flush_interval=60
    )
    tracker.track("queued.before.shutdown")

    async def http_only(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        if scope["type"] != "http":
            raise ValueError("only http")  # like Django's ASGIHandler

    app = TrackwareMiddleware(http_only, tracker=tracker)
    sent = asyncio.run(drivers.run_lifespan(app))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert len(sink.ids) == 1
    tracker.shutdown()


def test_asgi2_app_is_accepted(recorder: t.Any) -> None:
    class LegacyApp:
        def __init__(self, scope: t.Any) -> None:
            self.scope = scope

        async def __call__(self, receive: t.Any, send: t.Any) -> None:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    app = TrackwareMiddleware(LegacyApp, tracker=recorder.tracker)
    [response] = get(app, "/legacy")
    assert response.status_code == 204
    assert [p.properties["status"] for p in recorder.pages()] == [204]


def test_add_middleware_and_options_validation(recorder: t.Any) -> None:
    starlette_app = make_app()
    starlette_app.add_middleware(
        TrackwareMiddleware, tracker=recorder.tracker, query_allow=["q"]
    )
    asyncio.run(fetch(starlette_app, ("GET", "/items/4?q=shoes&email=a@b.c")))
    [page] = recorder.pages()
    assert page.properties["query"] == {"q": "shoes"}
    assert page.properties["route"] == "/items/{item_id:int}"
    with pytest.raises(ConfigurationError, match="unknown option"):
        TrackwareMiddleware(make_app(), sesion_timeout=5)
    with pytest.raises(ConfigurationError, match="identity"):
        TrackwareMiddleware(make_app(), identity="user")
    with pytest.raises(ConfigurationError, match="session_timeout"):
        TrackwareMiddleware(make_app(), session_timeout=0)


def test_disconnect_while_streaming_is_flagged_not_a_server_error(
    recorder: t.Any,
) -> None:
    async def streams(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(10):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})

    app = TrackwareMiddleware(streams, tracker=recorder.tracker)

    async def call() -> None:
        sent: list[t.Any] = []

        async def send(message: t.Any) -> None:
            if len(sent) == 3:
                raise ConnectionResetError("client went away")
            sent.append(message)

        async def receive() -> dict[str, t.Any]:
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "method": "GET", "path": "/feed", "headers": []}
        await app(scope, receive, send)

    with pytest.raises(ConnectionResetError):
        asyncio.run(call())
    [page] = recorder.pages()
    assert page.properties["status"] == 200
    assert page.properties["error"] == "ConnectionResetError"
    assert page.context["client_disconnected"] is True


def test_privacy_defaults_and_opt_ins(recorder: t.Any) -> None:
    async def run(app: t.Any) -> httpx.Response:
        transport = httpx.ASGITransport(app, client=("203.0.113.9", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="https://shop") as c:
            return await c.get(
                "/items/3?email=a@b.c&utm_source=mail",
                headers={
                    "User-Agent": "Mozilla/5.0 Firefox/130.0",
                    "Referer": "https://mail.example/inbox?token=secret",
                },
            )

    response = asyncio.run(
        run(TrackwareMiddleware(make_app(), tracker=recorder.tracker))
    )
    # HTTPS request: the cookies are Secure.
    cookies = response.headers.get_list("set-cookie")
    assert {c.split("=", 1)[0] for c in cookies} == {"tw_vid", "tw_sid"}
    assert all("Secure" in c for c in cookies)
    [page] = recorder.pages()
    assert "query" not in page.properties
    assert page.properties["referrer"] == "https://mail.example/inbox"
    assert "ip" not in page.context and "user_agent" not in page.context
    recorder.clear()
    asyncio.run(
        run(
            TrackwareMiddleware(
                make_app(),
                tracker=recorder.tracker,
                capture_ip=True,
                capture_user_agent=True,
                query_allow=["utm_source"],
            )
        )
    )
    [page] = recorder.pages()
    assert page.properties["query"] == {"utm_source": "mail"}
    assert page.context["ip"] == "203.0.113.9"
    assert page.context["user_agent"] == "Mozilla/5.0 Firefox/130.0"


def test_sampling_follows_the_tracker(sink: t.Any) -> None:
    from trackware.exporters import HTTPExporter

    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)], dead_letter=None, sample_rates={"page": 0.0}
    )
    app = TrackwareMiddleware(make_app(), tracker=tracker)
    get(app, "/", "/items/1")
    assert tracker.flush(10)
    names = [e["name"] for body in sink.bodies for e in body["events"]]
    assert sorted(names) == ["item.viewed", "session_start"]
    assert tracker.stats()["dropped"].get("sampled") == 2
    tracker.shutdown()


def test_identity_is_asked_again_when_the_response_is_complete(
    recorder: t.Any,
) -> None:
    logged_in: dict[str, str] = {}

    def who(scope: t.Mapping[str, t.Any]) -> str | None:
        return logged_in.get("user")

    async def login(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        logged_in["user"] = "c-late"  # the app's own session now knows the user
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = TrackwareMiddleware(login, tracker=recorder.tracker, identity=who)
    get(app, "/login")
    [start] = recorder.events("session_start")
    [page] = recorder.pages()
    assert start.user_id is None
    assert page.user_id == "c-late"


def test_rejected_websocket_and_excluded_endpoint(
    recorder: t.Any, drivers: t.Any
) -> None:
    async def gate(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.close", "code": 1008})

    app = TrackwareMiddleware(gate, tracker=recorder.tracker)

    async def run() -> None:
        ws = drivers.WebSocketSession(app, "/ws/private")
        closing = await ws.connect()
        assert closing["type"] == "websocket.close"
        await ws.finished()

    asyncio.run(run())
    assert recorder.events("websocket_connect") == []
    [rejected] = recorder.events("websocket_disconnect")
    assert rejected.properties["accepted"] is False
    assert rejected.properties["code"] == 1008

    recorder.clear()
    app = TrackwareMiddleware(
        make_app(), tracker=recorder.tracker, exclude_endpoints=["home"]
    )
    get(app, "/", "/items/1")
    assert [p.properties["route"] for p in recorder.pages()] == ["/items/{item_id:int}"]


def test_split_cookie_headers_are_joined(recorder: t.Any) -> None:
    app = TrackwareMiddleware(make_app(), tracker=recorder.tracker)

    async def run() -> None:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
            first = await c.get("/")
            vid, sid = first.cookies["tw_vid"], first.cookies["tw_sid"]
            c.cookies.clear()
            # HTTP/2 clients may send one cookie header per cookie.
            await c.get(
                "/items/1",
                headers=[("cookie", f"tw_vid={vid}"), ("cookie", f"tw_sid={sid}")],
            )

    asyncio.run(run())
    first, second = recorder.pages()
    assert second.anonymous_id == first.anonymous_id
    assert second.context["session_id"] == first.context["session_id"]
    assert len(recorder.events("session_start")) == 1
