"""Identity (Flask-Login, identify(), callables), @tracked, bridges, MXO tid."""

from __future__ import annotations

import typing as t
import uuid

import blinker
import flask
import flask_login
import pytest

import trackware
from trackware.integrations.flask import Trackware, flask_login_identity
from trackware.testing import CapturedEvents

MakeApp = t.Callable[..., tuple[flask.Flask, t.Any]]
NewApp = t.Callable[[str], flask.Flask]
SetCookies = t.Callable[[t.Any], dict[str, str]]


class User(flask_login.UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def add_login(app: flask.Flask) -> None:
    manager = flask_login.LoginManager(app)

    @manager.user_loader
    def load(user_id: str) -> User:
        return User(user_id)

    @app.route("/login/<user_id>")
    def login(user_id: str) -> str:
        flask_login.login_user(User(user_id))
        trackware.track("user.logged_in")
        return "in"

    @app.route("/logout")
    def logout() -> str:
        flask_login.logout_user()
        return "out"


def test_flask_login_identity_reaches_every_event(
    new_app: NewApp, make_app: MakeApp, events: CapturedEvents
) -> None:
    app = new_app("shop")
    add_login(app)
    _, client = make_app(app, identity=flask_login_identity)

    client.get("/items/1")  # anonymous
    client.get("/login/c-42")
    client.get("/items/2")
    client.get("/logout")

    anonymous = [e for e in events if e.context["path"] == "/items/1"]
    assert [e.user_id for e in anonymous] == [None, None, None]
    by_path = {(e.name, e.context["path"]): e.user_id for e in events}
    # Events tracked after login_user() carry the user at once.
    assert by_path[("user.logged_in", "/login/c-42")] == "c-42"
    assert by_path[("page", "/login/c-42")] == "c-42"
    assert by_path[("item.viewed", "/items/2")] == "c-42"
    assert by_path[("page", "/items/2")] == "c-42"
    assert by_path[("page", "/logout")] == "c-42"  # the user who logged out
    assert len({e.anonymous_id for e in events}) == 1


def test_session_events_carry_the_logged_in_user(
    new_app: NewApp, make_app: MakeApp, events: CapturedEvents
) -> None:
    app = new_app("shop")
    add_login(app)
    _, client = make_app(app, identity=flask_login_identity)
    client.get("/login/c-7")
    client.delete_cookie("tw_sid")  # e.g. the browser dropped the session cookie
    client.get("/")
    assert [e.user_id for e in events.named("session_start")] == [None, "c-7"]


def test_identity_callable_returning_a_mapping(
    make_app: MakeApp, events: CapturedEvents
) -> None:
    def who() -> dict[str, t.Any]:
        return {
            "user_id": 17,
            "email": "ann@example.test",
            "traits": {"tier": flask.request.args.get("tier", "gold")},
        }

    _, client = make_app(identity=who)
    client.get("/items/3?tier=silver")
    assert events.names() == ["session_start", "item.viewed", "page"]
    for event in events:
        assert event.user_id == "17"
        assert event.email == "ann@example.test"
        assert event.traits == {"tier": "silver"}


def test_identity_callable_that_raises_leaves_the_request_anonymous(
    make_app: MakeApp, events: CapturedEvents
) -> None:
    def broken() -> str:
        raise LookupError("user store down")

    _, client = make_app(identity=broken)
    response = client.get("/items/1")
    assert response.status_code == 200
    assert events.names() == ["session_start", "item.viewed", "page"]
    assert {e.user_id for e in events} == {None}


def test_identify_inside_a_view_reaches_later_events_and_not_the_next_request(
    new_app: NewApp, make_app: MakeApp, events: CapturedEvents
) -> None:
    app = new_app("shop")

    @app.route("/checkout")
    def checkout() -> str:
        trackware.track("checkout.started")
        trackware.identify("c-9", email="nine@example.test", traits={"vip": True})
        trackware.track("checkout.done")
        return "ok"

    _, client = make_app(app)
    client.get("/checkout")
    client.get("/")
    assert events.one("checkout.started").user_id is None
    done = events.one("checkout.done")
    assert (done.user_id, done.email, done.traits) == (
        "c-9",
        "nine@example.test",
        {"vip": True},
    )
    first_page, second_page = events.named("page")
    assert first_page.user_id == "c-9"
    assert second_page.user_id is None  # identify() binds one request only
    assert second_page.anonymous_id == first_page.anonymous_id


@pytest.mark.parametrize("order", ["tracked_below_route", "tracked_above_route"])
def test_tracked_views_in_either_decorator_order(
    new_app: NewApp, make_app: MakeApp, events: CapturedEvents, order: str
) -> None:
    app = new_app("shop")
    if order == "tracked_below_route":

        @app.route("/offers/<offer_id>/activate", methods=["POST"])
        @trackware.tracked(
            "offer.activated", properties=lambda r, offer_id: {"offer_id": offer_id}
        )
        def activate(offer_id: str) -> str:
            return "activated"

    else:

        @trackware.tracked(
            "offer.activated", properties=lambda r, offer_id: {"offer_id": offer_id}
        )
        @app.route("/offers/<offer_id>/activate", methods=["POST"])
        def activate(offer_id: str) -> str:
            return "activated"

    _, client = make_app(app, identity=lambda: "c-1")
    response = client.post("/offers/o-5/activate")
    assert response.data == b"activated"
    offer = events.one("offer.activated")
    page = events.one("page")
    assert offer.properties["offer_id"] == "o-5"
    assert offer.properties["outcome"] == "ok"
    assert offer.user_id == page.user_id == "c-1"
    assert offer.context["session_id"] == page.context["session_id"]
    assert page.properties["endpoint"] == "activate"


def test_bridged_signals_carry_request_identity_and_session(
    new_app: NewApp,
    make_app: MakeApp,
    tracker: trackware.Tracker,
    events: CapturedEvents,
) -> None:
    cart = blinker.Namespace().signal("cart-added")
    tracker.bridge(cart, "cart.added", properties=lambda sender, sku: {"sku": sku})
    app = new_app("shop")

    @app.route("/cart/<sku>", methods=["POST"])
    def add(sku: str) -> str:
        cart.send(app, sku=sku)
        trackware.signals.action.send("cart", name="cart.viewed")
        return "ok"

    _, client = make_app(app, identity=lambda: "c-3")
    client.post("/cart/sku-1")
    page = events.one("page")
    for name in ("cart.added", "cart.viewed"):
        event = events.one(name)
        assert event.user_id == "c-3"
        assert event.anonymous_id == page.anonymous_id
        assert event.context["session_id"] == page.context["session_id"]
    assert events.one("cart.added").properties == {"sku": "sku-1"}


def test_mxo_tid_round_trip(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies
) -> None:
    """No tid → the exporter learns one → written back → read from the cookie."""
    learned: dict[str, str] = {}
    _, client = make_app(tid_source=learned.get)

    first = client.get("/items/1")
    assert "tw_tid" not in set_cookies(first)
    visitor = events.one("session_start").anonymous_id
    assert "mxo_tid" not in events.named("page")[0].context

    tid = str(uuid.uuid4())
    learned[visitor] = tid  # what InteractionExporter.tid_for would now answer
    second = client.get("/items/2")
    tid_cookie = set_cookies(second)["tw_tid"]
    assert tid_cookie.startswith(f"tw_tid={tid}.")  # signed (test_cookie_forgery)
    assert "HttpOnly" in tid_cookie and "SameSite=Lax" in tid_cookie
    assert events.named("page")[1].context["mxo_tid"] == tid

    learned.clear()  # from now on only the cookie knows it
    third = client.get("/items/3")
    assert "tw_tid" not in set_cookies(third)  # already there: not rewritten
    assert [e.name for e in events[-2:]] == ["item.viewed", "page"]
    for event in events[-2:]:
        assert event.context["mxo_tid"] == tid


def test_tid_bound_during_the_request_is_written_back(
    new_app: NewApp,
    make_app: MakeApp,
    events: CapturedEvents,
    set_cookies: SetCookies,
) -> None:
    app = new_app("shop")

    @app.route("/personalise")
    def personalise() -> str:
        scope = trackware.current_scope()
        assert scope is not None
        scope.bind(mxo_tid="6f1c2b3a-0000-4000-8000-00000000abcd")
        return "ok"

    _, client = make_app(app)
    response = client.get("/personalise")
    assert set_cookies(response)["tw_tid"].startswith(
        "tw_tid=6f1c2b3a-0000-4000-8000-00000000abcd."
    )


@pytest.mark.parametrize("bad", ["<script>", "short", "a" * 65, "tid with spaces"])
def test_malformed_tid_cookie_is_ignored(
    make_app: MakeApp, events: CapturedEvents, set_cookies: SetCookies, bad: str
) -> None:
    _, client = make_app(tid_source=lambda anonymous_id: None)
    client.set_cookie("tw_tid", bad)
    response = client.get("/")
    assert "mxo_tid" not in events.one("page").context
    assert set_cookies(response)["tw_tid"].startswith("tw_tid=; Max-Age=0;")


def test_mxo_tid_round_trip_with_the_lightweight_exporter_and_emulator(
    new_app: NewApp, set_cookies: SetCookies
) -> None:
    """End to end: MXO assigns a tid → the exporter remembers it → the next
    response sets the cookie → later events send that tid, never a new one."""
    mxo = pytest.importorskip("trackware.exporters.mxo")
    emulators = pytest.importorskip("trackware.testing.emulators._mxo")
    server_mod = pytest.importorskip("trackware.testing.emulators._server")
    api = emulators.MXOAPI()
    with server_mod.EmulatorServer([api]) as server:
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
        app = new_app("shop")
        Trackware(app, tracker=tracker, tid_source=exporter.tid_for)
        client = app.test_client()

        first = client.get("/items/1")
        assert "tw_tid" not in set_cookies(first)
        assert tracker.flush(10)
        assigned = {e["tid"] for e in api.events}
        assert len(assigned) == 1
        tid = assigned.pop()

        second = client.get("/items/2")
        assert set_cookies(second)["tw_tid"].startswith(f"tw_tid={tid}.")
        third = client.get("/items/3")
        assert "tw_tid" not in set_cookies(third)
        assert tracker.flush(10)
        assert {e["tid"] for e in api.events} == {tid}
        assert api.unknown_tids == []
        assert tracker.stats()["destinations"][exporter.name]["rejected"] == 0
        tracker.shutdown()
