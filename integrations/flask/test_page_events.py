"""Automatic page events: contents, exclusions, sampling, failures, streaming."""

from __future__ import annotations

import typing as t

import flask
import pytest

import trackware
from trackware.testing import CapturedEvents, InMemoryExporter

MakeApp = t.Callable[..., tuple[flask.Flask, t.Any]]
NewApp = t.Callable[[str], flask.Flask]


def pages(events: CapturedEvents) -> list[trackware.Event]:
    return events.named("page")


def test_page_event_describes_the_request(
    make_app: MakeApp, events: CapturedEvents
) -> None:
    _, client = make_app()
    response = client.post(
        "/items/7?utm_source=mail&email=a@b.c",
        headers={"Referer": "https://search.test/q?term=secret"},
    )
    assert response.status_code == 200
    page = events.one("page")
    props = dict(page.properties)
    duration = props.pop("duration")
    assert isinstance(duration, float) and duration >= 0
    assert props == {
        "method": "POST",
        "path": "/items/7",
        "route": "/items/<int:item_id>",
        "endpoint": "item",
        "status": 200,
        "referrer": "https://search.test/q",
    }
    # The query string (and the referrer's) never reaches the event.
    assert "secret" not in repr(page.to_dict())
    assert "a@b.c" not in repr(page.to_dict())
    # No IP or user agent unless configured.
    assert "ip" not in page.context and "user_agent" not in page.context
    assert page.anonymous_id and page.context["session_id"]


def test_blueprint_route_is_named(make_app: MakeApp, events: CapturedEvents) -> None:
    _, client = make_app()
    client.get("/catalog/shoes")
    props = events.one("page").properties
    assert props["route"] == "/catalog/<slug>"
    assert props["endpoint"] == "catalog.product"
    assert props["blueprint"] == "catalog"


def test_allow_listed_query_keys_ip_and_user_agent_when_configured(
    make_app: MakeApp, events: CapturedEvents
) -> None:
    _, client = make_app(
        query_allow=["utm_source", "utm_medium"],
        capture_ip=True,
        capture_user_agent=True,
    )
    client.get(
        "/?utm_source=mail&utm_medium=email&token=s3cret",
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
        headers={"User-Agent": "Mozilla/5.0 (Test) Firefox/130"},
    )
    page = events.one("page")
    assert page.properties["query"] == {"utm_source": "mail", "utm_medium": "email"}
    assert page.context["ip"] == "203.0.113.9"
    assert page.context["user_agent"] == "Mozilla/5.0 (Test) Firefox/130"
    assert "s3cret" not in repr(page.to_dict())


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("HEAD", "/", {}),
        ("OPTIONS", "/", {}),
        ("GET", "/health", {}),
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", "/favicon.ico", {}),
        ("GET", "/robots.txt", {}),
        ("GET", "/static/app.css", {}),
        ("GET", "/", {"User-Agent": "kube-probe/1.29"}),
        ("GET", "/", {"User-Agent": "ELB-HealthChecker/2.0"}),
        ("GET", "/", {"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"}),
    ],
)
def test_excluded_by_default(
    make_app: MakeApp,
    events: CapturedEvents,
    set_cookies: t.Any,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    _, client = make_app()
    response = client.open(path, method=method, headers=headers)
    assert response.status_code < 500
    assert events == []
    assert set_cookies(response) == {}  # excluded requests get no cookies either
    # The same app does track an ordinary request.
    client.get("/items/1")
    assert events.names() == ["session_start", "item.viewed", "page"]


def test_static_files_of_blueprints_are_excluded(
    new_app: NewApp,
    make_app: MakeApp,
    events: CapturedEvents,
    tmp_path: t.Any,
) -> None:
    (tmp_path / "logo.txt").write_text("logo")
    app = new_app("shop")
    assets = flask.Blueprint(
        "assets", __name__, static_folder=str(tmp_path), static_url_path="/files"
    )
    app.register_blueprint(assets, url_prefix="/brand")
    _, client = make_app(app)
    response = client.get("/brand/files/logo.txt")
    assert response.data == b"logo"
    response.close()
    assert events == []
    client.get("/")  # the same app does track an ordinary request
    assert events.names() == ["session_start", "page"]


def test_exclusion_by_route_endpoint_method_and_regex(
    make_app: MakeApp, events: CapturedEvents, set_cookies: t.Any
) -> None:
    _, client = make_app(
        exclude_routes=["/admin/<path:rest>"],
        exclude_endpoints=["catalog.product"],
        exclude_methods=["POST"],
        exclude_paths=[r"^/items/9\d*$"],
    )
    for method, path in [
        ("GET", "/admin/users"),
        ("GET", "/catalog/shoes"),
        ("POST", "/items/1"),
        ("GET", "/items/99"),
    ]:
        response = client.open(path, method=method)
        assert response.status_code == 200
        # Excluded before any cookie or session work is done.
        assert set_cookies(response) == {}
    assert events.names() == ["item.viewed", "item.viewed"]  # the views still ran
    client.get("/items/1")
    assert events.names()[-2:] == ["item.viewed", "page"]
    assert events.one("session_start")


def test_sampling_uses_the_trackers_sample_rates(
    make_app: MakeApp, memory: InMemoryExporter
) -> None:
    sampled = trackware.Tracker(
        [memory],
        sample_rates={"page": 0.0},
        dead_letter=None,
        register_atexit=False,
    )
    _, client = make_app(tracker=sampled)
    for i in range(5):
        client.get(f"/items/{i}")
    assert sampled.flush(10)
    assert memory.names().count("page") == 0
    assert memory.names().count("item.viewed") == 5
    assert memory.names().count("session_start") == 1
    assert sampled.stats()["dropped"] == {"sampled": 5}
    sampled.shutdown()


def test_failing_view_is_tracked_with_its_status(
    make_app: MakeApp, events: CapturedEvents
) -> None:
    app, client = make_app()
    app.config["PROPAGATE_EXCEPTIONS"] = False  # production behaviour
    response = client.get("/boom")
    assert response.status_code == 500
    page = events.one("page")
    assert page.properties["status"] == 500
    assert page.properties["error"] == "ZeroDivisionError"
    assert page.properties["route"] == "/boom"


def test_unhandled_exception_propagates_and_is_tracked(
    make_app: MakeApp, events: CapturedEvents
) -> None:
    app, client = make_app()
    app.testing = True  # exceptions propagate out of wsgi_app
    with pytest.raises(ZeroDivisionError):
        client.get("/boom")
    page = events.one("page")
    assert page.properties["status"] == 500
    assert page.properties["error"] == "ZeroDivisionError"
    assert trackware.current_scope() is None  # the request's scope was closed


def test_aborts_and_unknown_routes_keep_their_status(
    make_app: MakeApp, events: CapturedEvents
) -> None:
    _, client = make_app()
    assert client.get("/forbidden").status_code == 403
    assert client.get("/no/such/page").status_code == 404
    assert client.post("/").status_code == 405
    statuses = [(e.properties["status"], e.properties["route"]) for e in pages(events)]
    assert statuses == [(403, "/forbidden"), (404, None), (405, None)]
    assert "error" not in pages(events)[0].properties


def test_streaming_response_is_tracked_when_the_body_closes(
    make_app: MakeApp, events: CapturedEvents
) -> None:
    _, client = make_app()
    response = client.get("/stream", buffered=False)
    assert response.status_code == 200
    assert pages(events) == []  # the body has not been sent yet
    assert trackware.current_scope() is None  # bound only while chunks are made
    assert response.get_data() == b"ab"
    response.close()
    page = events.one("page")
    assert page.properties["status"] == 200
    assert page.properties["route"] == "/stream"
    chunk = events.one("stream.chunk")
    # Events tracked while streaming carry the request's visitor and session.
    assert chunk.anonymous_id == page.anonymous_id
    assert chunk.context["session_id"] == page.context["session_id"]
    # Closing twice tracks once.
    response.close()
    assert len(pages(events)) == 1


def test_no_scope_leaks_between_requests(
    make_app: MakeApp, tracker: trackware.Tracker, events: CapturedEvents
) -> None:
    _, client = make_app()
    client.get("/items/1")
    client.get("/health")
    client.get("/admin/x", headers={"User-Agent": "kube-probe/1.29"})
    assert trackware.current_scope() is None
    tracker.track("outside.request")
    assert events.one("outside.request").anonymous_id is None


def test_tracking_failures_never_reach_the_app(
    make_app: MakeApp, events: CapturedEvents
) -> None:
    def broken_tid_source(anonymous_id: str) -> str | None:
        raise RuntimeError("tid store down")

    def broken_hook(event: trackware.Event) -> trackware.Event | None:
        raise RuntimeError("hook bug")

    tracker = trackware.Tracker(
        [InMemoryExporter()],
        before_send=broken_hook,
        dead_letter=None,
        register_atexit=False,
    )
    _, client = make_app(tracker=tracker, tid_source=broken_tid_source)
    response = client.get("/items/5")
    assert response.status_code == 200
    assert response.data == b"item 5"
    assert tracker.stats()["dropped"]["hook_error"] == 3
    tracker.shutdown()


def test_hooks_async_views_and_error_handlers_see_the_request_scope(
    new_app: NewApp, make_app: MakeApp, events: CapturedEvents
) -> None:
    app = new_app("shop")

    @app.before_request
    def before() -> None:
        trackware.track("hook.before")

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        trackware.track("hook.teardown")

    @app.route("/async/<int:n>")
    async def async_view(n: int) -> str:
        trackware.identify("c-async")
        trackware.track("async.viewed", {"n": n})
        return "async"

    @app.errorhandler(404)
    def not_found(error: Exception) -> tuple[str, int]:
        trackware.track("not_found")
        return "nothing here", 404

    _, client = make_app(app)
    assert client.get("/async/3").data == b"async"
    assert client.get("/missing").status_code == 404
    first, second = events.named("page")
    assert first.properties["route"] == "/async/<int:n>"
    assert first.user_id == "c-async"  # identify() in the async view's thread
    assert (
        events.one("async.viewed").context["session_id"]
        == (first.context["session_id"])
    )
    for event in events:
        assert event.anonymous_id == first.anonymous_id
        assert event.context["session_id"] == first.context["session_id"]
    assert events.names() == [
        "session_start",
        "hook.before",
        "async.viewed",
        "hook.teardown",
        "page",
        "hook.before",
        "not_found",
        "hook.teardown",
        "page",
    ]
    assert second.properties["status"] == 404


def test_events_of_excluded_requests_still_go_to_the_extensions_tracker(
    new_app: NewApp, make_app: MakeApp, events: CapturedEvents
) -> None:
    app = new_app("shop")

    @app.route("/healthz")
    def healthz() -> str:
        trackware.track("probe.checked")
        trackware.identify("should-not-stick")
        return "ok"

    _, client = make_app(app, exclude_routes=["/items/<int:item_id>"])
    client.get("/healthz")
    client.get("/items/1")
    client.get("/")
    assert events.names() == ["probe.checked", "item.viewed", "session_start", "page"]
    assert events[0].anonymous_id is None and events[1].anonymous_id is None
    assert events[-1].user_id is None


def test_flasks_default_test_client_sees_page_events_without_closing(
    make_app: MakeApp, events: CapturedEvents
) -> None:
    """Apps' own test suites use Flask's client as is (responses never closed)."""
    from flask.testing import FlaskClient

    app, _ = make_app()
    client = FlaskClient(app, app.response_class, use_cookies=True)
    client.get("/items/1", headers={"User-Agent": "Mozilla/5.0"})
    client.get("/", headers={"User-Agent": "Mozilla/5.0"})
    assert [e.properties["path"] for e in pages(events)] == ["/items/1", "/"]
    assert trackware.current_scope() is None


@pytest.mark.parametrize("identity", [None, lambda: "c-5"])
def test_unhandled_exception_runs_the_view_once_and_names_the_route(
    new_app: NewApp, make_app: MakeApp, events: CapturedEvents, identity: t.Any
) -> None:
    app = new_app("shop")
    calls = []

    @app.route("/fail/<int:n>")
    def fail(n: int) -> str:
        calls.append(n)
        raise LookupError(n)

    _, client = make_app(app, identity=identity)
    app.testing = True  # exceptions propagate out of wsgi_app
    with pytest.raises(LookupError):
        client.get("/fail/1")
    assert calls == [1]
    props = events.one("page").properties
    assert (props["route"], props["status"], props["error"]) == (
        "/fail/<int:n>",
        500,
        "LookupError",
    )


def test_excluded_routes_leave_their_neighbours_tracked(
    make_app: MakeApp, events: CapturedEvents
) -> None:
    _, client = make_app(exclude_endpoints=["catalog.product"])
    assert client.get("/catalog/shoes").status_code == 200
    assert client.get("/catalog/shoes/extra").status_code == 404
    assert client.get("/catalog").status_code == 404
    assert [(e.properties["path"], e.properties["status"]) for e in pages(events)] == [
        ("/catalog/shoes/extra", 404),
        ("/catalog", 404),
    ]
