"""The Flask extension contract: registration, factories, configuration."""

from __future__ import annotations

import typing as t

import flask
import pytest

import trackware
from trackware.integrations.flask import Trackware
from trackware.testing import CapturedEvents, InMemoryExporter

NewApp = t.Callable[[str], flask.Flask]


def test_registers_in_app_extensions_and_keeps_no_app(
    new_app: NewApp, tracker: trackware.Tracker, events: CapturedEvents
) -> None:
    app = new_app("shop")
    ext = Trackware(app, tracker=tracker)
    assert app.extensions["trackware"] is ext
    assert not hasattr(ext, "app")
    assert ext.engine(app).options.tracker is tracker
    with app.app_context():
        assert ext.engine() is ext.engine(app)

    app.test_client().get("/")
    assert events.names() == ["session_start", "page"]


def test_factory_pattern_serves_two_apps_in_one_process(new_app: NewApp) -> None:
    """One extension object, two apps, each with its own config and tracker."""
    ext = Trackware()
    mem_a, mem_b = InMemoryExporter(), InMemoryExporter()
    trackers = [
        trackware.Tracker([mem], dead_letter=None, register_atexit=False)
        for mem in (mem_a, mem_b)
    ]
    app_a, app_b = new_app("a"), new_app("b")
    app_a.config["TRACKWARE_TRACKER"] = trackers[0]
    app_b.config.update(TRACKWARE_TRACKER=trackers[1], TRACKWARE_PAGE_EVENT="view")
    ext.init_app(app_a)
    ext.init_app(app_b)
    assert app_a.extensions["trackware"] is app_b.extensions["trackware"] is ext

    app_a.test_client().get("/items/1")
    app_b.test_client().get("/items/2")
    app_b.test_client().get("/")
    for tr in trackers:
        assert tr.flush(10)
    assert mem_a.names() == ["session_start", "item.viewed", "page"]
    assert mem_b.names() == [
        "session_start",
        "item.viewed",
        "view",
        "session_start",
        "view",
    ]
    assert [e.properties["path"] for e in mem_b.events if e.name == "view"] == [
        "/items/2",
        "/",
    ]
    for tr in trackers:
        tr.shutdown()


def test_second_registration_on_the_same_app_is_refused(
    new_app: NewApp, tracker: trackware.Tracker
) -> None:
    app = new_app("shop")
    ext = Trackware(app, tracker=tracker)
    with pytest.raises(trackware.ConfigurationError, match="already registered"):
        ext.init_app(app)
    with pytest.raises(trackware.ConfigurationError, match="already registered"):
        Trackware(app, tracker=tracker)
    assert app.extensions["trackware"] is ext


def test_unknown_option_names_the_valid_ones() -> None:
    with pytest.raises(trackware.ConfigurationError, match="session_timeout"):
        Trackware(sesion_timeout=60)


@pytest.mark.parametrize(
    ("key", "value", "fix"),
    [
        ("TRACKWARE_SESSION_TIMEOUT", "soon", "number"),
        ("TRACKWARE_SESSION_TIMEOUT", 0, "> 0"),
        ("TRACKWARE_SESSION_COOKIE", "bad name;", "cookie name"),
        ("TRACKWARE_EXCLUDE_PATHS", "[unclosed", "not a valid regex"),
        ("TRACKWARE_IDENTITY", "flask_login", "callable"),
        ("TRACKWARE_ENABLED", "perhaps", "true or false"),
        ("TRACKWARE_TRACKER", "http://example.test", "trackware.Tracker"),
        ("TRACKWARE_TID_SOURCE", {"a": "b"}, "callable"),
        ("TRACKWARE_EXCLUDE_BOTS", "sometimes", "true or false"),
    ],
)
def test_invalid_configuration_raises_at_init_app(
    new_app: NewApp, key: str, value: t.Any, fix: str
) -> None:
    app = new_app("shop")
    app.config[key] = value
    with pytest.raises(trackware.ConfigurationError, match=fix):
        Trackware().init_app(app)
    assert "trackware" not in app.extensions


def test_config_keys_are_read_and_arguments_win(
    new_app: NewApp, tracker: trackware.Tracker, events: CapturedEvents
) -> None:
    app = new_app("shop")
    app.config.update(
        TRACKWARE_PAGE_EVENT="pageview",
        TRACKWARE_SESSIONS="false",  # strings from the environment are parsed
        TRACKWARE_SESSION_TIMEOUT="600",
        TRACKWARE_EXCLUDE_ROUTES="/admin/<path:rest>, /health",
        TRACKWARE_QUERY_ALLOW="utm_source",
        TRACKWARE_VISITOR_COOKIE="from_config",
    )
    ext = Trackware(app, tracker=tracker, visitor_cookie="from_argument")
    options = ext.engine(app).options
    assert options.session_timeout == 600.0
    assert options.sessions is False
    assert tuple(options.exclude_routes) == ("/admin/<path:rest>", "/health")
    assert options.visitor_cookie == "from_argument"

    client = app.test_client()
    client.get("/admin/x")
    response = client.get("/?utm_source=mail&token=secret")
    assert events.names() == ["pageview"]
    assert events[0].properties["query"] == {"utm_source": "mail"}
    assert response.headers["Set-Cookie"].startswith("from_argument=")


def test_disabled_by_config(
    new_app: NewApp, tracker: trackware.Tracker, events: CapturedEvents
) -> None:
    app = new_app("shop")
    app.config["TRACKWARE_ENABLED"] = "0"
    Trackware(app, tracker=tracker)
    response = app.test_client().get("/")
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert events == []


def test_engine_of_an_unregistered_app_names_the_fix(new_app: NewApp) -> None:
    with pytest.raises(trackware.ConfigurationError, match="init_app"):
        Trackware().engine(new_app("other"))


def test_default_tracker_is_looked_up_per_request(new_app: NewApp) -> None:
    """Without tracker=..., events go to whatever the process default is then."""
    app = new_app("shop")
    Trackware(app)
    memory = InMemoryExporter()
    tr = trackware.Tracker([memory], dead_letter=None, register_atexit=False)
    trackware.set_tracker(tr)
    app.test_client().get("/items/3")
    assert tr.flush(10)
    assert memory.names() == ["session_start", "item.viewed", "page"]
    tr.shutdown()


def test_misspelt_config_key_is_reported(
    new_app: NewApp, tracker: trackware.Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    app = new_app("shop")
    app.config["TRACKWARE_SESION_TIMEOUT"] = 60
    with caplog.at_level("WARNING", logger="trackware"):
        Trackware(app, tracker=tracker)
    assert "TRACKWARE_SESION_TIMEOUT" in caplog.text
    assert "SESSION_TIMEOUT" in caplog.text
