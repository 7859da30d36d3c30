"""A small but real shop built with Flask and trackware.

Pages are tracked automatically by the extension (page and session events);
business actions are tracked with ``@tracked``, ``track()``, a bridged blinker
signal and ``identify()``. Where each event goes is decided by the exporters'
mappings (see ``example_apps/destinations.py``), not by the views.

Run it against the local vendor emulators with ``make demo-serve``
(``example_apps/`` must be on ``sys.path``: the demo puts it there).
"""

from __future__ import annotations

import typing as t

import blinker
from flask import Flask, abort, jsonify, request, session
from shop_data import (
    CUSTOMERS,
    OFFERS,
    PRODUCTS,
    RECOMMENDATION_FRAME,
    make_order,
    order_properties,
)

import trackware
from trackware.integrations.flask import Trackware

#: The shop's own signal; trackware turns it into ``user.logged_in`` events.
shop_signals = blinker.Namespace()
user_logged_in = shop_signals.signal("user-logged-in")

ORDERS: dict[str, dict[str, t.Any]] = {}


def current_identity() -> dict[str, t.Any] | None:
    """Identity callable for the extension: the logged-in customer, if any."""
    user_id = session.get("user_id")
    if user_id is None or user_id not in CUSTOMERS:
        return None
    _, email, phone = CUSTOMERS[user_id]
    return {"user_id": user_id, "email": email, "phone": phone}


@trackware.tracked("transaction.charge", properties=order_properties)
def place_order(user_id: str, cart: dict[str, int]) -> dict[str, t.Any]:
    """Business logic: turn the cart into an order (tracked on success)."""
    if not cart:
        raise ValueError("empty cart")
    order = make_order(f"ord-{len(ORDERS) + 1:04d}", user_id, cart)
    ORDERS[order["id"]] = order
    return order


def create_app(tracker: trackware.Tracker, **options: t.Any) -> Flask:
    app = Flask(__name__)
    app.secret_key = "example-shop-secret-change-me"
    app.config["TRACKWARE_SESSION_TIMEOUT"] = 1800.0
    Trackware(app, tracker=tracker, identity=current_identity, **options)
    tracker.bridge(
        user_logged_in,
        "user.logged_in",
        properties=lambda sender, user_id, method, **kw: {"method": method},
    )

    @app.get("/")
    def home() -> t.Any:
        return jsonify(shop="trackware example shop", products=len(PRODUCTS))

    @app.get("/health")
    def health() -> t.Any:
        return jsonify(ok=True)

    @app.get("/products")
    def products() -> t.Any:
        return jsonify(list(PRODUCTS.values()))

    @app.get("/products/<product_id>")
    def product(product_id: str) -> t.Any:
        item = PRODUCTS.get(product_id) or abort(404)
        trackware.track("product.viewed", {"sku": product_id, "name": item["name"]})
        return jsonify(item)

    @app.post("/login")
    def login() -> t.Any:
        data = request.get_json(force=True)
        user_id = str(data.get("user_id", ""))
        entry = CUSTOMERS.get(user_id)
        if entry is None or entry[0] != data.get("password"):
            abort(401)
        session["user_id"] = user_id
        trackware.identify(
            user_id, email=entry[1], phone=entry[2], traits={"tier": "gold"}
        )
        user_logged_in.send(app, user_id=user_id, method="password")
        return jsonify(user_id=user_id)

    @app.get("/offers")
    def offers() -> t.Any:
        shown = list(OFFERS.values())
        for position, offer in enumerate(shown):
            trackware.track(
                "offer.viewed",
                {
                    "offer_id": offer["id"],
                    "serveToken": offer["token"],
                    "section": "LatestOffers",
                    "channel": "OLB",
                    "displayPosition": position,
                },
            )
        return jsonify(shown)

    def _offer_action(offer_id: str, event: str) -> t.Any:
        offer = OFFERS.get(offer_id) or abort(404)
        trackware.track(
            event,
            {
                "offer_id": offer_id,
                "serveToken": offer["token"],
                "section": "LatestOffers",
                "channel": "OLB",
            },
        )
        return jsonify(offer_id=offer_id, state=event.split(".")[1])

    @app.post("/offers/<offer_id>/activate")
    def activate_offer(offer_id: str) -> t.Any:
        return _offer_action(offer_id, "offer.activated")

    @app.post("/offers/<offer_id>/park")
    def park_offer(offer_id: str) -> t.Any:
        return _offer_action(offer_id, "offer.parked")

    @app.get("/recommendations")
    def recommendations() -> t.Any:
        items = sorted(PRODUCTS)
        trackware.track(
            "recommendation.view",
            {"correlationId": RECOMMENDATION_FRAME, "items": items},
        )
        return jsonify(frame=RECOMMENDATION_FRAME, items=items)

    @app.post("/recommendations/<product_id>/click")
    def recommendation_click(product_id: str) -> t.Any:
        PRODUCTS.get(product_id) or abort(404)
        trackware.track(
            "recommendation.click",
            {"correlationId": RECOMMENDATION_FRAME, "items": [product_id]},
        )
        return jsonify(clicked=product_id)

    @app.post("/cart")
    def add_to_cart() -> t.Any:
        data = request.get_json(force=True)
        sku = str(data.get("sku"))
        PRODUCTS.get(sku) or abort(404)
        cart = dict(session.get("cart", {}))
        cart[sku] = cart.get(sku, 0) + int(data.get("quantity", 1))
        session["cart"] = cart
        trackware.track("cart.added", {"sku": sku, "quantity": cart[sku]})
        return jsonify(cart=cart)

    @app.post("/checkout")
    def checkout() -> t.Any:
        user_id = session.get("user_id") or abort(401)
        order = place_order(user_id, dict(session.get("cart", {})))
        session["cart"] = {}
        return jsonify(order), 201

    @app.post("/orders/<order_id>/ship")
    def ship(order_id: str) -> t.Any:
        order = ORDERS.get(order_id) or abort(404)
        order["status"] = "shipped"
        trackware.track(
            "order.shipped",
            {"order_id": order_id, "carrier": "DHL", "items": len(order["items"])},
            user_id=order["user_id"],
        )
        return jsonify(order)

    return app
