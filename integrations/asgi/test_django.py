"""TrackwareMiddleware around Django's ASGI handler (settings configured in-process)."""

from __future__ import annotations

import asyncio
import typing as t

import django
import httpx
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path, re_path

import trackware
from trackware.integrations.asgi import TrackwareMiddleware


async def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("home")


async def article(request: HttpRequest, year: int, slug: str) -> HttpResponse:
    trackware.track("article.read", {"year": year})
    return JsonResponse({"year": year, "slug": slug})


def profile(request: HttpRequest) -> HttpResponse:
    """A sync view: Django runs it in a thread; identify() must still reach us."""
    trackware.identify("dj-5", email="dj@example.com")
    return HttpResponse("profile")


def legacy(request: HttpRequest, code: str) -> HttpResponse:
    return HttpResponse(code)


async def feed(request: HttpRequest) -> StreamingHttpResponse:
    async def lines() -> t.AsyncIterator[bytes]:
        for i in range(3):
            yield f"line {i}\n".encode()

    return StreamingHttpResponse(lines(), content_type="text/plain")


async def broken(request: HttpRequest) -> HttpResponse:
    raise ZeroDivisionError("bad view")


class URLConf:
    urlpatterns = [
        path("", home, name="home"),
        path("articles/<int:year>/<slug:slug>/", article, name="article"),
        path("profile/", profile, name="profile"),
        re_path(r"^legacy/(?P<code>[a-z]+)$", legacy, name="legacy"),
        path("feed/", feed, name="feed"),
        path("broken/", broken, name="broken"),
    ]


def django_app() -> t.Any:
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="trackware-tests-only",
            ROOT_URLCONF=URLConf,
            ALLOWED_HOSTS=["*"],
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            USE_TZ=True,
            LOGGING_CONFIG=None,
        )
        django.setup()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


async def fetch(app: t.Any, *paths: str) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://site") as c:
        return [await c.get(p) for p in paths]


def test_django_pages_routes_and_identity(recorder: t.Any) -> None:
    app = TrackwareMiddleware(django_app(), tracker=recorder.tracker)
    responses = asyncio.run(
        fetch(
            app,
            "/",
            "/articles/2024/hello-world/",
            "/profile/",
            "/legacy/abc",
            "/feed/",
            "/nowhere/",
            "/broken/",
        )
    )
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 404, 500]
    assert responses[4].text == "line 0\nline 1\nline 2\n"
    assert responses[0].headers.get_list("set-cookie")
    got = [
        (p.properties["route"], p.properties["endpoint"], p.properties["status"])
        for p in recorder.pages()
    ]
    assert got == [
        ("/", "home", 200),
        ("/articles/<int:year>/<slug:slug>/", "article", 200),
        ("/profile/", "profile", 200),
        ("/legacy/(?P<code>[a-z]+)$", "legacy", 200),
        ("/feed/", "feed", 200),
        (None, None, 404),
        ("/broken/", "broken", 500),
    ]
    pages = recorder.pages()
    assert pages[2].user_id == "dj-5" and pages[2].email == "dj@example.com"
    assert recorder.events("article.read")[0].anonymous_id == pages[0].anonymous_id
    assert len({p.context["session_id"] for p in pages}) == 1


def test_django_lifespan_is_answered_and_flushes(sink: t.Any, drivers: t.Any) -> None:
    from trackware.exporters import HTTPExporter

    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)], dead_letter=None, flush_interval=60
    )
    app = TrackwareMiddleware(django_app(), tracker=tracker)
    asyncio.run(fetch(app, "/", "/profile/"))
    assert sink.ids == []
    sent = asyncio.run(drivers.run_lifespan(app))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert len(sink.ids) == 3  # session_start and two pages
    tracker.shutdown()
