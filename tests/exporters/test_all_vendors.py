"""One tracker, all five vendor destinations, 10,000 mixed events, real HTTP.

Every destination's emulator must hold exactly the events mapped to it, each
once, and ``stats()`` must account for every event.
"""

from __future__ import annotations

import collections
import random
import typing as t

import pytest

import trackware
from trackware import MemoryDeadLetter, RetryPolicy
from trackware.exporters.cardlytics import ClientEventExporter
from trackware.exporters.mxo import InteractionExporter, LightweightExporter
from trackware.exporters.synerise import SyneriseExporter
from trackware.exporters.yotpo import CustomEventExporter
from trackware.testing.emulators import VendorEmulator

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, open_for=0.05)
SITE_KEY = "ONE-NX8P2RSAAU-1813"
TOTAL = 10_000

#: event name -> the destination its mapping sends it to
ROUTES = {
    "offer.activated": "cardlytics",
    "offer.viewed": "cardlytics",
    "page": "mxo",
    "cart.added": "mxo_lightweight",
    "product.viewed": "synerise",
    "recommendation.view": "synerise",
    "transaction.charge": "synerise",
    "order.shipped": "yotpo",
    "newsletter.opened": None,  # mapped nowhere: unrouted
}


def props(name: str, i: int) -> dict[str, t.Any]:
    if name.startswith("offer."):
        return {"serveToken": f"st-{i}", "section": "LatestOffers", "channel": "OLB"}
    if name == "recommendation.view":
        return {"correlationId": f"frame-{i}", "items": [f"sku-{i}"]}
    if name == "transaction.charge":
        return {
            "order_id": f"ord-{i}",
            "revenue": 10.5,
            "currency": "EUR",
            "products": [{"sku": "p-1", "name": "Beans", "quantity": 1, "price": 10.5}],
        }
    return {"n": i}


@pytest.fixture
def emulator() -> t.Iterator[VendorEmulator]:
    with VendorEmulator() as emu:
        emu.yotpo.rate_limit = None  # the 5 req/s limit is tested on its own
        yield emu


def test_ten_thousand_mixed_events_reach_exactly_their_destinations(
    emulator: VendorEmulator,
) -> None:
    url = emulator.url
    exporters = [
        ClientEventExporter(
            base_url=url,
            client_id="cardlytics-test-client",
            client_secret="cardlytics-test-secret",
            customer_id_key="hmac-key",
            mapping={
                "offer.activated": "ActivateOffer",
                "offer.viewed": "AdViewableImpression",
            },
            session_event=None,
        ),
        InteractionExporter(
            base_url=url,
            client_id="mxo-client-id",
            client_secret="mxo-client-secret",
            site_key=SITE_KEY,
            touchpoints={"page": "web://shop/page"},
            event_id_property="event_id",
        ),
        LightweightExporter(
            base_url=url,
            site_key=SITE_KEY,
            touchpoints={"cart.added": "web://shop/cart"},
            event_id_property="event_id",
        ),
        SyneriseExporter(
            api_key="test-synerise-api-key",
            base_url=url,
            tracker_key="test-tracker-key-0001",
            actions={"product.viewed": "product.view"},
            send_unmapped=False,
        ),
        CustomEventExporter(
            "yotpo-test-store",
            "yotpo-test-secret-0001",
            base_url=url,
            event_names={"order.shipped": "order_shipped"},
            rate_limit=None,
        ),
    ]
    dead = MemoryDeadLetter()
    tracker = trackware.Tracker(
        exporters, dead_letter=dead, retry=FAST, flush_interval=0.05
    )
    rng = random.Random(7)
    names = list(ROUTES)
    # Yotpo is one request per event: keep its share realistic (few shipments).
    weights = [20, 20, 20, 10, 10, 5, 5, 1, 9]
    expected: dict[str | None, set[str]] = collections.defaultdict(set)
    expected_ai_items: set[str] = set()
    users = [f"c-{n}" for n in range(25)]
    for i in range(TOTAL):
        name = rng.choices(names, weights)[0]
        user = users[i % len(users)]
        event = tracker.track(
            name,
            props(name, i),
            user_id=user,
            email=f"{user}@example.com",
            anonymous_id=f"{i % 97:08x}-0000-4000-8000-000000000000",
        )
        assert event is not None
        if name == "recommendation.view":
            # AI events carry no event id: they are matched by their item.
            expected_ai_items.add(f"sku-{i}")
        else:
            expected[ROUTES[name]].add(event.event_id)
    assert tracker.flush(timeout=120.0)

    got: dict[str, list[str]] = {
        "cardlytics": [e["clientEventId"] for e in emulator.cardlytics.events],
        "mxo": [
            p["value"]
            for e in emulator.mxo.events
            if e["endpoint"] != "mxo.lightweight"
            for p in e["interaction"]["properties"]
            if p["name"] == "event_id"
        ],
        "mxo_lightweight": [
            p["value"]
            for e in emulator.mxo.events_for("mxo.lightweight")
            for p in e["interaction"]["properties"]
            if p["name"] == "event_id"
        ],
        "synerise": [e["eventSalt"] for e in emulator.synerise.of_kind("event")]
        + [e["eventSalt"] for e in emulator.synerise.of_kind("transaction")],
        "yotpo": [e["id"] for e in emulator.yotpo.events],
    }
    ai_items = [e["items"][0] for e in emulator.synerise.of_kind("ai")]
    assert sorted(ai_items) == sorted(expected_ai_items)  # each AI event once

    stats = tracker.stats()
    for name, ids in got.items():
        assert sorted(ids) == sorted(expected[name]), name
        sent = len(ids) + (len(ai_items) if name == "synerise" else 0)
        row = stats["destinations"][name]
        assert row["sent"] == sent, (name, row)
        # Every other event was declined by this destination's mapping.
        assert row["not_applicable"] == TOTAL - sent, (name, row)
        assert row["enqueued"] == row["sent"], (name, row)
        assert row["rejected"] == row["dead_lettered"] == 0, (name, row)
        assert row["queue_depth"] == row["in_flight"] == 0
    assert emulator.cardlytics.duplicates == []
    assert stats["tracked"] == TOTAL
    assert stats["unrouted"] == len(expected[None])
    assert not dead.records
    tracker.shutdown()
