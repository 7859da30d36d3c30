"""Visitor and session cookies: attributes, timeouts, tampering."""

from __future__ import annotations

import time
import typing as t
import uuid

import flask
import pytest

import trackware
from trackware.integrations._options import TrackingOptions
from trackware.integrations._request import RequestTracker
from trackware.integrations.flask import Trackware
from trackware.testing import CapturedEvents

MakeApp = t.Callable[..., tuple[flask.Flask, t.Any]]
SetCookies = t.Callable[[t.Any], dict[str, str]]


def attributes(header: str) -> set[str]:
    return {part.strip().split("=")[0] for part in header.split(";")[1:]}


def value_of(header: str) -> str:
    return header.split(";", 1)[0].split("=", 1)[1]


def unsigned(value: str) -> str:
    """A signed cookie's value without its signature."""
    return value.rpartition(".")[0]


def visitor_cookie(app: flask.Flask, visitor: str) -> str:
    engine = app.extensions["trackware"].engine(app)
    return t.cast(str, engine.cookies.sign("tw_vid", visitor))


def test_first_visit_sets_visitor_and_session_cookies(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies
) -> None:
    _, client = make_app()
    cookies = set_cookies(client.get("/"))
    assert set(cookies) == {"tw_vid", "tw_sid"}
    for header in cookies.values():
        assert {"Path", "HttpOnly", "SameSite", "Max-Age"} <= attributes(header)
        assert "SameSite=Lax" in header
        assert "Secure" not in attributes(header)  # plain http
    assert "Max-Age=1800" in cookies["tw_sid"]
    assert f"Max-Age={365 * 24 * 3600}" in cookies["tw_vid"]
    visitor = unsigned(value_of(cookies["tw_vid"]))
    start = events.one("session_start")
    assert start.anonymous_id == visitor
    assert start.properties["landing_path"] == "/"
    assert events.one("page").context["session_id"] == start.properties["session_id"]


def test_returning_visitor_keeps_visitor_and_session(
    make_app: MakeApp, events: CapturedEvents
) -> None:
    _, client = make_app()
    for path in ("/", "/items/1", "/catalog/hat"):
        client.get(path)
    assert events.names().count("session_start") == 1
    page_events = events.named("page")
    assert len({e.anonymous_id for e in page_events}) == 1
    assert len({e.context["session_id"] for e in page_events}) == 1
    assert (
        events.one("item.viewed").context["session_id"]
        == (page_events[0].context["session_id"])
    )


def test_secure_on_https_and_configured_names_domain_and_lifetime(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies
) -> None:
    _, client = make_app(
        visitor_cookie="shop_vid",
        session_cookie="shop_sid",
        cookie_domain="shop.test",
        visitor_max_age=3600,
        session_timeout=600,
    )
    cookies = set_cookies(client.get("/", base_url="https://shop.test"))
    assert set(cookies) == {"shop_vid", "shop_sid"}
    for header in cookies.values():
        assert "Secure" in attributes(header)
        assert "Domain=shop.test" in header
    assert "Max-Age=3600" in cookies["shop_vid"]
    assert "Max-Age=600" in cookies["shop_sid"]


def test_secure_follows_proxyfix_applied_inside_the_extension(
    make_app: MakeApp, set_cookies: SetCookies
) -> None:
    from werkzeug.middleware.proxy_fix import ProxyFix

    app = flask.Flask("proxied")
    app.secret_key = "proxied-secret"
    app.test_client_class = type(make_app()[1])
    app.route("/")(lambda: "ok")
    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1)  # type: ignore[method-assign]
    _, client = make_app(app)
    response = client.get("/", headers={"X-Forwarded-Proto": "https"})
    cookies = set_cookies(response)
    assert set(cookies) == {"tw_vid", "tw_sid"}
    for header in cookies.values():
        assert "Secure" in attributes(header)


def session_cookie(app: flask.Flask, sid: str, start: int, last: int) -> str:
    engine = app.extensions["trackware"].engine(app)
    return t.cast(str, engine.cookies.session_value((sid, start, last)))


def test_expired_session_ends_at_its_last_seen_time(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies
) -> None:
    app, client = make_app()
    old_sid = uuid.uuid4().hex
    now = int(time.time())
    start, last = now - 7200, now - 3600  # idle for an hour (timeout 30 min)
    visitor = uuid.uuid4().hex
    client.set_cookie("tw_vid", visitor_cookie(app, visitor))
    client.set_cookie("tw_sid", session_cookie(app, old_sid, start, last))
    response = client.get("/items/4")

    assert events.names() == ["session_end", "session_start", "item.viewed", "page"]
    end, new = events[0], events[1]
    assert end.properties == {
        "session_id": old_sid,
        "duration": 3600.0,
        "reason": "timeout",
    }
    assert end.unix_time == last  # the session's real last-seen time
    assert end.context["session_id"] == old_sid
    assert end.anonymous_id == new.anonymous_id == visitor
    new_sid = new.properties["session_id"]
    assert new_sid != old_sid
    assert events[3].context["session_id"] == new_sid
    cookies = set_cookies(response)
    assert "tw_vid" not in cookies  # the valid visitor cookie is kept as is
    assert value_of(cookies["tw_sid"]).startswith(new_sid + ".")


def test_active_session_continues_and_is_refreshed(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies
) -> None:
    app, client = make_app()
    sid = uuid.uuid4().hex
    now = int(time.time())
    client.set_cookie("tw_vid", visitor_cookie(app, uuid.uuid4().hex))
    client.set_cookie("tw_sid", session_cookie(app, sid, now - 900, now - 600))
    response = client.get("/")
    assert events.names() == ["page"]
    assert events[0].context["session_id"] == sid
    refreshed = value_of(set_cookies(response)["tw_sid"])
    assert refreshed.startswith(f"{sid}.{now - 900:x}.")  # same start, new last-seen


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: "f" * 32 + v[32:],  # another session id, old signature
        lambda v: v[:-3] + ("AAA" if not v.endswith("AAA") else "BBB"),  # signature
        lambda v: v.rsplit(".", 1)[0] + ".u",  # "unsigned"
        lambda v: "<script>alert(1)</script>",
        lambda v: v + "; Domain=evil.test",
        lambda v: "x" * 500,
    ],
)
def test_tampered_session_cookie_is_replaced_never_trusted_or_echoed(
    make_app: MakeApp,
    events: CapturedEvents,
    set_cookies: SetCookies,
    tamper: t.Callable[[str], str],
) -> None:
    _, client = make_app()
    first = set_cookies(client.get("/"))
    original_sid = events.one("session_start").properties["session_id"]
    forged = tamper(value_of(first["tw_sid"]))
    client.set_cookie("tw_sid", forged)
    response = client.get("/items/1")

    starts = events.named("session_start")
    assert len(starts) == 2
    new_sid = starts[1].properties["session_id"]
    assert new_sid not in (original_sid, "f" * 32)
    assert events.named("page")[-1].context["session_id"] == new_sid
    header = set_cookies(response)["tw_sid"]
    assert value_of(header).startswith(new_sid + ".")
    everything = " ".join(str(v) for v in response.headers.values())
    everything += " ".join(repr(e.to_dict()) for e in events)
    assert forged not in everything
    assert "evil.test" not in everything and "<script>" not in everything


def test_session_cookie_signed_with_another_secret_is_refused(
    make_app: MakeApp, events: CapturedEvents
) -> None:
    _, client = make_app()
    other = RequestTracker(TrackingOptions(cookie_secret="someone-elses-secret"))
    sid = uuid.uuid4().hex
    now = int(time.time())
    client.set_cookie("tw_sid", other.cookies.session_value((sid, now - 10, now - 5)))
    client.get("/")
    assert events.one("session_start").properties["session_id"] != sid


@pytest.mark.parametrize(
    "visitor", ["", "abc", "<script>", "A" * 32, "0" * 31 + "g", "1" * 33]
)
def test_malformed_visitor_cookie_is_replaced(
    make_app: MakeApp,
    events: CapturedEvents,
    set_cookies: SetCookies,
    visitor: str,
) -> None:
    _, client = make_app()
    client.set_cookie("tw_vid", visitor)
    response = client.get("/")
    fresh = unsigned(value_of(set_cookies(response)["tw_vid"]))
    assert fresh != visitor and len(fresh) == 32
    assert events.one("page").anonymous_id == fresh


def test_sessions_off_sets_only_the_visitor_cookie(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies
) -> None:
    _, client = make_app(sessions=False)
    assert set(set_cookies(client.get("/"))) == {"tw_vid"}
    assert events.names() == ["page"]
    assert "session_id" not in events[0].context


def test_session_secret_defaults_to_the_apps_secret_key(
    new_app: t.Callable[[str], flask.Flask], tracker: trackware.Tracker
) -> None:
    """Two apps with different secret keys do not accept each other's sessions."""
    app_a, app_b = new_app("a"), new_app("b")
    app_b.secret_key = "a-different-secret-key"
    Trackware(app_a, tracker=tracker)
    Trackware(app_b, tracker=tracker)
    now = int(time.time())
    sid = uuid.uuid4().hex
    value = session_cookie(app_a, sid, now - 10, now - 5)
    assert (
        app_b.extensions["trackware"].engine(app_b).cookies.parse_session(value, now)
        is None
    )
    assert app_a.extensions["trackware"].engine(app_a).cookies.parse_session(value, now)
