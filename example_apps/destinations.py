"""The five vendor exporters of the example apps, pointed at the local emulators.

Each exporter carries a realistic mapping for a bank's offers shop:

* offers -> Cardlytics clientEvent Ad* events (and session start ->
  ``LogEnrollment``);
* pages -> MXO Interaction API (offline batches), cart additions -> MXO
  Lightweight Event Listening;
* logins and product views -> Synerise custom events, orders -> Synerise
  transactions, recommendations -> Synerise AI events;
* shipped orders -> Yotpo custom customer events.

The credentials are the emulators' defaults: nothing here is a real secret.
"""

from __future__ import annotations

import os
import typing as t

import trackware
from trackware import Event, RetryPolicy
from trackware.exporters.cardlytics import ClientEventExporter
from trackware.exporters.mxo import InteractionExporter, LightweightExporter
from trackware.exporters.synerise import SyneriseExporter
from trackware.exporters.yotpo import CustomEventExporter
from trackware.testing.emulators import VendorEmulator

MXO_SITE_KEY = "ONE-NX8P2RSAAU-1813"
#: Retries fast enough for a demo (the defaults suit production).
DEMO_RETRY = RetryPolicy(base_delay=0.05, max_delay=0.5, open_for=0.5)


def page_touchpoint(event: Event) -> str | None:
    """MXO touchpoint URI of a page event: the route template, else the path."""
    if event.name != "page":
        return None
    route = event.properties.get("route") or event.properties.get("path") or "/"
    return "web://shop" + str(route).replace("<", "{").replace(">", "}")


def build_exporters(base_url: str) -> list[t.Any]:
    """The five exporters, configured for the emulators at ``base_url``."""
    return [
        ClientEventExporter(
            base_url=base_url,
            client_id="cardlytics-test-client",
            client_secret="cardlytics-test-secret",
            customer_id_key="demo-hmac-key-rotate-me",
            mapping={
                "offer.viewed": "AdViewableImpression",
                "offer.activated": "ActivateOffer",
                "offer.parked": "ParkOffer",
            },
            send_anonymous=False,
            retry=DEMO_RETRY,
        ),
        InteractionExporter(
            base_url=base_url,
            client_id="mxo-client-id",
            client_secret="mxo-client-secret",
            site_key=MXO_SITE_KEY,
            touchpoints=page_touchpoint,
            events=["page"],
            event_id_property="event_id",  # MXO has no dedup key: ids show repeats
            retry=DEMO_RETRY,
        ),
        LightweightExporter(
            base_url=base_url,
            site_key=MXO_SITE_KEY,
            touchpoints={"cart.added": "web://shop/cart"},
            retry=DEMO_RETRY,
        ),
        SyneriseExporter(
            api_key="test-synerise-api-key",
            base_url=base_url,
            tracker_key="test-tracker-key-0001",
            actions={"user.logged_in": "user.login", "product.viewed": "page.visit"},
            send_unmapped=False,
            retry=DEMO_RETRY,
        ),
        CustomEventExporter(
            "yotpo-test-store",
            "yotpo-test-secret-0001",
            base_url=base_url,
            event_names={"order.shipped": "order_shipped"},
            retry=DEMO_RETRY,
        ),
    ]


def server_tracker() -> trackware.Tracker:
    """The tracker of an example app under a real server, set as the default:
    the five exporters pointed at ``$TRACKWARE_EMULATOR_URL`` (default
    ``http://127.0.0.1:8900``, where ``trackware emulate --port 8900`` runs).
    ``TRACKWARE_INSPECTOR`` (read by every tracker) sends copies of its events
    and outcomes to ``trackware inspect``."""
    tracker = trackware.Tracker(
        build_exporters(
            os.environ.get("TRACKWARE_EMULATOR_URL", "http://127.0.0.1:8900")
        ),
        retry=DEMO_RETRY,
        flush_interval=0.2,
    )
    trackware.set_tracker(tracker)
    return tracker


def accepted(emulator: VendorEmulator) -> dict[str, int]:
    """What each destination's emulator accepted, by destination name."""
    mxo_lightweight = len(emulator.mxo.events_for("mxo.lightweight"))
    return {
        "cardlytics": len(emulator.cardlytics.events),
        "mxo": len(emulator.mxo.events) - mxo_lightweight,
        "mxo_lightweight": mxo_lightweight,
        "synerise": len(emulator.synerise.events),
        "yotpo": len(emulator.yotpo.events),
    }
