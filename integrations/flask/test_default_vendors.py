"""A default Flask app with all five vendor exporters writes no dead letter
for its own page and session events (hardening item 9).

The integration tracks ``page``, ``session_start`` and ``session_end`` by
itself. With default settings each vendor must either take them (mapped to
its native event where it has one: Synerise ``page.visit``,
``session.start``, ``session.end``; Cardlytics ``LogEnrollment`` for a
session start) or count them ``not_applicable`` when it cannot take them by
design (Yotpo keeps no anonymous customers; Cardlytics has no page event).
Dead letters are for what someone must fix, and nothing here needs fixing.
"""

from __future__ import annotations

import time
import typing as t
import uuid

import flask
from flask.testing import FlaskClient

import trackware
from trackware import MemoryDeadLetter, RetryPolicy
from trackware.exporters.cardlytics import ClientEventExporter
from trackware.exporters.mxo import InteractionExporter, LightweightExporter
from trackware.exporters.synerise import SyneriseExporter
from trackware.exporters.yotpo import CustomEventExporter
from trackware.integrations.flask import Trackware
from trackware.testing.emulators import VendorEmulator

SITE_KEY = "ONE-NX8P2RSAAU-1813"
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, open_for=0.05)
DESTINATIONS = ("cardlytics", "mxo", "mxo_lightweight", "synerise", "yotpo")
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


class Client(FlaskClient):
    """Reads and closes each response like a WSGI server, as a browser."""

    def open(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        kwargs.setdefault("buffered", True)
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("User-Agent", BROWSER)
        kwargs["headers"] = headers
        return super().open(*args, **kwargs)


def default_exporters(url: str) -> list[trackware.exporters.BaseExporter]:
    """Each vendor's exporter with only what it cannot work without."""
    return [
        ClientEventExporter(
            base_url=url,
            client_id="cardlytics-test-client",
            client_secret="cardlytics-test-secret",
            customer_id_key="hmac-key",
        ),
        InteractionExporter(
            base_url=url,
            client_id="mxo-client-id",
            client_secret="mxo-client-secret",
            site_key=SITE_KEY,
            default_touchpoint="web://shop",
        ),
        LightweightExporter(
            base_url=url, site_key=SITE_KEY, default_touchpoint="web://shop"
        ),
        SyneriseExporter("test-synerise-api-key", base_url=url),
        CustomEventExporter(
            "yotpo-test-store", "yotpo-test-secret-0001", base_url=url, all_events=True
        ),
    ]


def who() -> dict[str, str] | None:
    """The signed-in customer, from a header (the app's own login, in short)."""
    user = flask.request.headers.get("X-Customer")
    return {"user_id": user, "email": f"{user}@example.com"} if user else None


def test_default_flask_app_with_all_five_vendors_writes_no_dead_letter() -> None:
    with VendorEmulator() as emu:
        dead = MemoryDeadLetter()
        tracker = trackware.Tracker(
            default_exporters(emu.url),
            dead_letter=dead,
            retry=FAST,
            flush_interval=0.05,
            register_atexit=False,
        )
        app = flask.Flask("default_vendors")
        app.secret_key = "test-secret-key-not-for-production"
        app.test_client_class = Client

        @app.route("/")
        def index() -> str:
            return "home"

        @app.route("/items/<int:item_id>")
        def item(item_id: int) -> str:
            return f"item {item_id}"

        Trackware(app, tracker=tracker, identity=who)
        engine = app.extensions["trackware"].engine(app)
        try:
            new_visitor = app.test_client()
            returning = app.test_client()
            customer = app.test_client()
            for path in ("/", "/items/1", "/items/2"):
                assert new_visitor.get(path).status_code == 200
                assert returning.get(path).status_code == 200
                assert customer.get(path, headers={"X-Customer": "c-42"}).status_code
            # Both come back after an hour away: their next request ends the
            # old session (session_end) and starts a new one.
            now = int(time.time())
            for client in (returning, customer):
                expired = engine.cookies.session_value(
                    (uuid.uuid4().hex, now - 7200, now - 3600)
                )
                client.set_cookie("tw_sid", expired)
            assert returning.get("/").status_code == 200
            assert customer.get("/", headers={"X-Customer": "c-42"}).status_code
            assert tracker.flush(timeout=60)
            everything = tracker.stats()
            stats = everything["destinations"]
        finally:
            tracker.shutdown(timeout=10)

        assert [r.reason for r in dead.records] == []
        # 11 page views, 3 session starts, then 2 session ends and 2 starts.
        tracked = everything["tracked"]
        assert tracked == 18, everything
        assert sorted(stats) == sorted(DESTINATIONS)
        for dest, s in stats.items():
            # Every event either sent or not applicable: nothing rejected,
            # dropped, failed or still waiting.
            assert s["rejected"] == 0 and s["dead_lettered"] == 0, (dest, s)
            assert s["failed"] == 0 and not s["dropped"], (dest, s)
            assert s["sent"] + s["not_applicable"] == tracked, (dest, s)
            assert s["sent"] > 0, (dest, s)

        # What each vendor got: its native events where it has them.
        actions = sorted({e.get("action") for e in emu.synerise.of_kind("event")})
        assert actions == ["page.visit", "session.end", "session.start"]
        assert {e["clientEvent"] for e in emu.cardlytics.events} == {"LogEnrollment"}
        # Yotpo took the signed-in customer's events only; the anonymous
        # visitors' were not applicable, not rejected.
        assert {e["customer"]["external_id"] for e in emu.yotpo.events} == {"c-42"}
        assert stats["yotpo"]["not_applicable"] > 0
        uris = {e["interaction"]["uri"] for e in emu.mxo.events}
        assert {"web://shop/page", "web://shop/session_start"} <= uris
        assert "web://shop/session_end" in uris
