"""Every cookie trackware reads back (visitor, session, MXO tid) is signed and
verified; forged ones are ignored, never trusted or echoed; keys rotate.

The cookies are signed here by a reference implementation of the documented
scheme (README, "Cookies"), not by the engine under test: a signature the
engine makes and checks the same wrong way would not pass.
"""

from __future__ import annotations

import logging
import typing as t
import uuid

import flask
import pytest
from _support import (
    COOKIE_OTHER_SECRET,
    COOKIE_RETIRED_SECRET,
    VICTIM_SID,
    VICTIM_TID,
    VICTIM_VID,
    cookie_forgeries,
    session_payload,
)
from _support import sign_cookie as sign

import trackware
from trackware import ConfigurationError
from trackware.exporters import mxo
from trackware.integrations.flask import Trackware
from trackware.testing import CapturedEvents
from trackware.testing.emulators import EmulatorServer
from trackware.testing.emulators._mxo import MXOAPI

MakeApp = t.Callable[..., tuple[flask.Flask, t.Any]]
NewApp = t.Callable[[str], flask.Flask]
SetCookies = t.Callable[[t.Any], dict[str, str]]

SECRET = "test-secret-key-not-for-production"  # conftest's app.secret_key
OTHER = COOKIE_OTHER_SECRET
OLD = "last-years-secret-key"
RETIRED = COOKIE_RETIRED_SECRET


def value_of(header: str) -> str:
    return header.split(";", 1)[0].split("=", 1)[1]


#: name -> the victim's plain value of that cookie.
PLAIN = {
    "tw_vid": VICTIM_VID,
    "tw_sid": None,  # made per test (it carries timestamps)
    "tw_tid": VICTIM_TID,
}

FORGERIES = cookie_forgeries(SECRET)


def plain(name: str) -> str:
    return session_payload() if name == "tw_sid" else t.cast(str, PLAIN[name])


def assert_not_echoed(forged: str, response: t.Any, events: CapturedEvents) -> None:
    everything = " ".join(str(v) for v in response.headers.values())
    everything += " ".join(repr(e.to_dict()) for e in events)
    assert forged not in everything
    assert "<script>" not in everything


def test_genuine_cookies_signed_as_documented_are_accepted(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies
) -> None:
    _, client = make_app(tid_source=lambda anonymous_id: None)
    sid_payload = session_payload()
    client.set_cookie("tw_vid", sign(SECRET, "tw_vid", VICTIM_VID))
    client.set_cookie("tw_sid", sign(SECRET, "tw_sid", sid_payload))
    client.set_cookie("tw_tid", sign(SECRET, "tw_tid", VICTIM_TID))
    response = client.get("/items/1")

    assert events.names() == ["item.viewed", "page"]  # no new session
    for event in events:
        assert event.anonymous_id == VICTIM_VID
        assert event.context["session_id"] == VICTIM_SID
        assert event.context["mxo_tid"] == VICTIM_TID
    cookies = set_cookies(response)
    assert set(cookies) == {"tw_sid"}  # only the session's last-seen time renewed
    renewed = value_of(cookies["tw_sid"])
    assert renewed == sign(SECRET, "tw_sid", renewed.rsplit(".", 1)[0])


def test_cookies_it_sets_are_signed_as_documented(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies
) -> None:
    learned: dict[str, str] = {}
    _, client = make_app(tid_source=learned.get)
    first = set_cookies(client.get("/"))
    visitor = events.one("page").anonymous_id
    assert visitor is not None
    assert value_of(first["tw_vid"]) == sign(SECRET, "tw_vid", visitor)
    session = value_of(first["tw_sid"])
    assert session == sign(SECRET, "tw_sid", session.rsplit(".", 1)[0])
    learned[visitor] = VICTIM_TID
    second = set_cookies(client.get("/"))
    assert value_of(second["tw_tid"]) == sign(SECRET, "tw_tid", VICTIM_TID)


@pytest.mark.parametrize("forgery", list(FORGERIES), ids=list(FORGERIES))
def test_forged_visitor_cookie_is_a_new_visitor(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies, forgery: str
) -> None:
    _, client = make_app()
    forged = FORGERIES[forgery]("tw_vid", VICTIM_VID)
    client.set_cookie("tw_vid", forged)
    response = client.get("/")

    fresh = events.one("page").anonymous_id
    assert fresh not in (VICTIM_VID, None) and len(fresh) == 32
    assert value_of(set_cookies(response)["tw_vid"]) == sign(SECRET, "tw_vid", fresh)
    assert_not_echoed(forged, response, events)


@pytest.mark.parametrize("forgery", list(FORGERIES), ids=list(FORGERIES))
def test_forged_session_cookie_starts_a_new_session(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies, forgery: str
) -> None:
    _, client = make_app()
    forged = FORGERIES[forgery]("tw_sid", session_payload())
    client.set_cookie("tw_sid", forged)
    response = client.get("/")

    new_sid = events.one("session_start").properties["session_id"]
    assert new_sid != VICTIM_SID
    assert events.one("page").context["session_id"] == new_sid
    assert "session_end" not in events.names()  # nothing of the victim's
    renewed = value_of(set_cookies(response)["tw_sid"])
    assert renewed.startswith(new_sid + ".")
    assert renewed == sign(SECRET, "tw_sid", renewed.rsplit(".", 1)[0])
    assert_not_echoed(forged, response, events)


@pytest.mark.parametrize("forgery", list(FORGERIES), ids=list(FORGERIES))
def test_forged_tid_cookie_never_reaches_events_and_is_expired(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies, forgery: str
) -> None:
    _, client = make_app(tid_source=lambda anonymous_id: None)
    forged = FORGERIES[forgery]("tw_tid", VICTIM_TID)
    client.set_cookie("tw_tid", forged)
    response = client.get("/items/1")

    for event in events:
        assert "mxo_tid" not in event.context
        assert VICTIM_TID not in repr(event.to_dict())
    expired = set_cookies(response)["tw_tid"]
    assert value_of(expired) == ""
    assert "Max-Age=0" in expired
    assert_not_echoed(forged, response, events)
    # Gone from the browser: the next request carries no tid cookie at all.
    again = client.get("/items/2")
    assert "tw_tid" not in set_cookies(again)


def test_forged_tid_gives_way_to_the_visitors_own(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies
) -> None:
    own = str(uuid.uuid4())
    _, client = make_app(tid_source=lambda anonymous_id: own)
    client.set_cookie("tw_tid", VICTIM_TID)
    response = client.get("/")
    assert events.one("page").context["mxo_tid"] == own
    assert value_of(set_cookies(response)["tw_tid"]) == sign(SECRET, "tw_tid", own)


def test_rejections_are_counted_and_logged_without_the_value(
    make_app: MakeApp,
    events: CapturedEvents,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, client = make_app()
    engine = app.extensions["trackware"].engine(app)
    assert engine.cookie_rejections() == {"visitor": 0, "session": 0, "tid": 0}
    client.set_cookie("tw_vid", VICTIM_VID)
    client.set_cookie("tw_sid", sign(OTHER, "tw_sid", session_payload()))
    client.set_cookie("tw_tid", sign(OTHER, "tw_tid", VICTIM_TID))
    with caplog.at_level(logging.INFO, logger="trackware"):
        client.get("/")
    assert engine.cookie_rejections() == {"visitor": 1, "session": 1, "tid": 1}
    text = caplog.text
    assert "tw_vid" in text and "tw_sid" in text and "tw_tid" in text
    assert VICTIM_VID not in text and VICTIM_SID not in text
    assert VICTIM_TID not in text


def test_a_forged_tid_is_never_sent_to_mxo(
    new_app: NewApp, set_cookies: SetCookies
) -> None:
    """End to end with the MXO emulator: a visitor presenting another
    customer's tid (unsigned, or signed with another key) gets a thread of its
    own; nothing is written into the victim's."""
    api = MXOAPI()
    with EmulatorServer([api]) as server:
        exporter = mxo.LightweightExporter(
            base_url=server.url,
            site_key="ONE-ABCDEFGHIJ-1234",
            default_touchpoint="https://shop.test/",
        )
        tracker = trackware.Tracker(
            [exporter],
            flush_interval=0.01,
            dead_letter=trackware.MemoryDeadLetter(),
            register_atexit=False,
        )
        try:
            app = new_app("shop")
            Trackware(app, tracker=tracker, tid_source=exporter.tid_for)
            victim = app.test_client()
            victim.get("/items/1")
            assert tracker.flush(10)
            victim_tids = {e["tid"] for e in api.events}
            assert len(victim_tids) == 1
            victim_tid = victim_tids.pop()
            signed = value_of(set_cookies(victim.get("/items/2"))["tw_tid"])
            assert signed == sign(SECRET, "tw_tid", victim_tid)  # the genuine one
            assert tracker.flush(10)
            seen = len(api.events)

            for forged in (victim_tid, sign(OTHER, "tw_tid", victim_tid)):
                attacker = app.test_client()
                attacker.set_cookie("tw_tid", forged)
                response = attacker.get("/items/3")
                assert victim_tid not in " ".join(
                    response.headers.getlist("Set-Cookie")
                )
            assert tracker.flush(10)
            sent = api.events[seen:]
            assert sent  # the attackers' events were delivered...
            assert victim_tid not in {
                e["tid"] for e in sent
            }  # ...in threads of their own
            assert api.unknown_tids == []
        finally:
            tracker.shutdown()


# --- key rotation: app.secret_key signs, SECRET_KEY_FALLBACKS still verify ---------


def rotated_app(new_app: NewApp) -> flask.Flask:
    app = new_app("rotated")
    app.secret_key = "this-years-secret-key"
    app.config["SECRET_KEY_FALLBACKS"] = ["an-unrelated-fallback", OLD]
    return app


def test_cookies_signed_with_a_fallback_key_are_kept_and_re_signed(
    new_app: NewApp,
    make_app: MakeApp,
    events: CapturedEvents,
    set_cookies: SetCookies,
) -> None:
    app, client = make_app(rotated_app(new_app), tid_source=lambda anonymous_id: None)
    new = t.cast(str, app.secret_key)
    payload = session_payload()
    client.set_cookie("tw_vid", sign(OLD, "tw_vid", VICTIM_VID))
    client.set_cookie("tw_sid", sign(OLD, "tw_sid", payload))
    client.set_cookie("tw_tid", sign(OLD, "tw_tid", VICTIM_TID))
    response = client.get("/items/1")

    # The same visitor, session and tid: a rotation restarts nothing.
    assert events.names() == ["item.viewed", "page"]
    for event in events:
        assert event.anonymous_id == VICTIM_VID
        assert event.context["session_id"] == VICTIM_SID
        assert event.context["mxo_tid"] == VICTIM_TID
    # Re-signed with the current key, so dropping OLD later loses nothing.
    cookies = set_cookies(response)
    assert value_of(cookies["tw_vid"]) == sign(new, "tw_vid", VICTIM_VID)
    assert value_of(cookies["tw_tid"]) == sign(new, "tw_tid", VICTIM_TID)
    session = value_of(cookies["tw_sid"])
    assert session.startswith(VICTIM_SID + ".")
    assert session == sign(new, "tw_sid", session.rsplit(".", 1)[0])
    # The browser now holds current cookies: nothing more to rewrite.
    later = client.get("/items/2")
    assert not {"tw_vid", "tw_tid"} & set(set_cookies(later))
    assert events.names().count("session_start") == 0


@pytest.mark.parametrize("forgery", list(FORGERIES), ids=list(FORGERIES))
def test_forged_cookies_are_refused_with_fallback_keys_too(
    new_app: NewApp,
    make_app: MakeApp,
    events: CapturedEvents,
    set_cookies: SetCookies,
    forgery: str,
) -> None:
    """Forgeries are refused however many keys verify (SECRET, the conftest's
    key, is not one of the rotated app's keys either)."""
    _, client = make_app(rotated_app(new_app), tid_source=lambda anonymous_id: None)
    forged = {name: FORGERIES[forgery](name, plain(name)) for name in PLAIN}
    for name, value in forged.items():
        client.set_cookie(name, value)
    response = client.get("/items/1")

    assert events.one("session_start").properties["session_id"] != VICTIM_SID
    for event in events:
        assert event.anonymous_id != VICTIM_VID
        assert "mxo_tid" not in event.context
    cookies = set_cookies(response)
    assert set(cookies) == {"tw_vid", "tw_sid", "tw_tid"}  # tid: expired
    for value in forged.values():
        assert_not_echoed(value, response, events)


def test_a_key_removed_from_the_fallbacks_no_longer_verifies(
    new_app: NewApp, make_app: MakeApp, events: CapturedEvents
) -> None:
    app, client = make_app(rotated_app(new_app))
    client.set_cookie("tw_vid", sign(RETIRED, "tw_vid", VICTIM_VID))
    client.get("/")
    assert events.one("page").anonymous_id != VICTIM_VID


def test_cookie_secret_option_with_its_own_fallbacks(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies
) -> None:
    """An explicit cookie_secret (a sequence: the first signs) replaces the
    app's secret key and its fallbacks."""
    _, client = make_app(cookie_secret=["trackware-only-key", OLD])
    client.set_cookie("tw_vid", sign(OLD, "tw_vid", VICTIM_VID))
    response = client.get("/")
    assert events.one("page").anonymous_id == VICTIM_VID
    resigned = value_of(set_cookies(response)["tw_vid"])
    assert resigned == sign("trackware-only-key", "tw_vid", VICTIM_VID)
    client.set_cookie("tw_vid", sign(SECRET, "tw_vid", VICTIM_VID))
    client.get("/")
    assert events.named("page")[1].anonymous_id != VICTIM_VID


# --- no key: refused at start-up, never silently unsigned ----------------------------


def test_app_without_secret_key_is_refused_naming_the_options(
    new_app: NewApp, tracker: trackware.Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRACKWARE_COOKIE_SECRET", raising=False)
    app = new_app("keyless")
    app.secret_key = None
    with pytest.raises(ConfigurationError) as info:
        Trackware(app, tracker=tracker)
    message = str(info.value)
    for fix in ("secret_key", "TRACKWARE_COOKIE_SECRET", "ephemeral_cookie_secret"):
        assert fix in message
    assert "trackware" not in app.extensions


def test_environment_secret_signs_when_the_app_has_none(
    new_app: NewApp,
    tracker: trackware.Tracker,
    events: CapturedEvents,
    set_cookies: SetCookies,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACKWARE_COOKIE_SECRET", "from-the-environment")
    app = new_app("keyless")
    app.secret_key = None
    Trackware(app, tracker=tracker)
    response = app.test_client().get("/")
    visitor = events.one("page").anonymous_id
    assert visitor is not None
    expected = sign("from-the-environment", "tw_vid", visitor)
    assert value_of(set_cookies(response)["tw_vid"]) == expected


def test_ephemeral_key_only_when_asked_for_and_loudly(
    new_app: NewApp,
    tracker: trackware.Tracker,
    events: CapturedEvents,
    set_cookies: SetCookies,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("TRACKWARE_COOKIE_SECRET", raising=False)
    app = new_app("keyless")
    app.secret_key = None
    app.config["TRACKWARE_EPHEMERAL_COOKIE_SECRET"] = "true"
    with caplog.at_level(logging.WARNING, logger="trackware"):
        Trackware(app, tracker=tracker)
    assert "per-process" in caplog.text
    client = app.test_client()
    first = set_cookies(client.get("/"))
    visitor = events.one("page").anonymous_id
    assert visitor is not None
    signed = value_of(first["tw_vid"])
    assert signed.startswith(visitor + ".")
    client.get("/")  # the process's own key verifies its cookies
    assert events.named("page")[1].anonymous_id == visitor
    client.set_cookie("tw_vid", VICTIM_VID)
    client.get("/")
    assert events.named("page")[2].anonymous_id != VICTIM_VID


def test_key_precedence_option_then_environment_then_secret_key(
    new_app: NewApp,
    tracker: trackware.Tracker,
    events: CapturedEvents,
    set_cookies: SetCookies,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TRACKWARE_COOKIE_SECRET in app.config (the option), else in the
    environment, else app.secret_key (as the README's Cookies section says)."""
    monkeypatch.setenv("TRACKWARE_COOKIE_SECRET", "from-the-environment")
    configured = new_app("configured")
    configured.config["TRACKWARE_COOKIE_SECRET"] = ["from-app-config", OLD]
    from_env = new_app("from_env")
    for app, key in (
        (configured, "from-app-config"),
        (from_env, "from-the-environment"),
    ):
        Trackware(app, tracker=tracker)
        response = app.test_client().get("/")
        visitor = events.named("page")[-1].anonymous_id
        assert visitor is not None
        assert value_of(set_cookies(response)["tw_vid"]) == sign(key, "tw_vid", visitor)


def test_invalid_keys_are_refused_at_start_up(
    new_app: NewApp, tracker: trackware.Tracker
) -> None:
    app = new_app("bad-fallbacks")
    app.config["SECRET_KEY_FALLBACKS"] = [OLD, 42]
    with pytest.raises(ConfigurationError, match="SECRET_KEY_FALLBACKS"):
        Trackware(app, tracker=tracker)
    with pytest.raises(ConfigurationError, match="cookie_secret"):
        Trackware(new_app("bad-option"), tracker=tracker, cookie_secret={"k": "v"})


def test_a_forged_tid_never_reaches_interact(new_app: NewApp) -> None:
    """interact() (MXO's optimizations, read live) uses the request's tid: a
    visitor presenting another customer's tid, unsigned or signed with another
    key, asks MXO in a thread of its own, never in the victim's."""
    api = MXOAPI(client_id="mxo-client", client_secret="mxo-s3cret")
    with EmulatorServer([api]) as server:
        exporter = mxo.InteractionExporter(
            base_url=server.url,
            client_id="mxo-client",
            client_secret="mxo-s3cret",
            site_key="ONE-NX8P2RSAAU-1813",
            default_touchpoint="api://shop",
            timeout=5.0,
        )
        try:
            app = new_app("shop")

            @app.route("/offers")
            def offers() -> str:
                result = exporter.interact("api://shop/offers")
                assert result.ok, result.error
                return str(result.tid)

            tracker = trackware.Tracker([], dead_letter=None, register_atexit=False)
            Trackware(app, tracker=tracker, tid_source=exporter.tid_for)
            victim = app.test_client()
            victim_tid = victim.get("/offers").text
            assert victim.get("/offers").text == victim_tid  # the cookie works
            calls = server.recorded("mxo.interaction")
            assert [c.query.get("tid") for c in calls] == [None, victim_tid]

            for forged in (victim_tid, sign(OTHER, "tw_tid", victim_tid)):
                attacker = app.test_client()
                attacker.set_cookie("tw_tid", forged)
                assert attacker.get("/offers").text != victim_tid
            calls = server.recorded("mxo.interaction")[2:]
            assert len(calls) == 2
            assert all(c.query.get("tid") is None for c in calls)
            assert api.unknown_tids == []
            tracker.shutdown(timeout=5)
        finally:
            exporter.close()
