"""The trackware ASGI example store: FastAPI with the same journey as the shop.

Pages, sessions and identity are tracked by ``TrackwareMiddleware``; business
actions with ``@tracked``, ``track()`` and ``identify()`` (also from a sync
dependency, which FastAPI runs in a thread pool). A websocket pushes live
offer updates and a streaming endpoint sends the order history.

``example_apps/`` must be on ``sys.path`` (the demo puts it there).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import typing as t

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from shop_data import (
    CUSTOMERS,
    OFFERS,
    PRODUCTS,
    RECOMMENDATION_FRAME,
    make_order,
    order_properties,
)
from starlette.websockets import WebSocketDisconnect

import trackware
from trackware.integrations.asgi import TrackwareMiddleware

SESSION_COOKIE = "store_session"
#: store session token -> customer id (an in-memory login, enough for a demo)
LOGINS: dict[str, str] = {}
CARTS: dict[str, dict[str, int]] = {}
ORDERS: dict[str, dict[str, t.Any]] = {}


async def current_identity(scope: t.Mapping[str, t.Any]) -> dict[str, t.Any] | None:
    """Async identity callable for the middleware: reads the login cookie."""
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, token = part.strip().partition("=")
                if key == SESSION_COOKIE and token in LOGINS:
                    user_id = LOGINS[token]
                    _, email, phone = CUSTOMERS[user_id]
                    return {"user_id": user_id, "email": email, "phone": phone}
    return None


def customer(request: Request) -> str:
    """Sync dependency (runs in a thread pool): the logged-in customer."""
    user_id = LOGINS.get(request.cookies.get(SESSION_COOKIE, ""))
    if user_id is None:
        raise HTTPException(401, "log in first")
    _, email, phone = CUSTOMERS[user_id]
    trackware.identify(user_id, email=email, phone=phone)
    return user_id


@trackware.tracked("transaction.charge", properties=order_properties)
async def place_order(user_id: str, cart: dict[str, int]) -> dict[str, t.Any]:
    """Business logic: turn the cart into an order (tracked on success)."""
    if not cart:
        raise HTTPException(400, "empty cart")
    order = make_order(f"ord-a{len(ORDERS) + 1:04d}", user_id, cart)
    ORDERS[order["id"]] = order
    return order


def _offer_props(offer_id: str, **extra: t.Any) -> dict[str, t.Any]:
    offer = OFFERS.get(offer_id)
    if offer is None:
        raise HTTPException(404, "no such offer")
    return {
        "offer_id": offer_id,
        "serveToken": offer["token"],
        "section": "LatestOffers",
        "channel": "OLB",
        **extra,
    }


def create_app(tracker: trackware.Tracker, **options: t.Any) -> t.Any:
    api = FastAPI(title="trackware example store")

    @api.get("/")
    async def home() -> dict[str, t.Any]:
        return {"store": "trackware example store", "products": len(PRODUCTS)}

    @api.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @api.get("/products/{product_id}")
    async def product(product_id: str) -> dict[str, t.Any]:
        item = PRODUCTS.get(product_id)
        if item is None:
            raise HTTPException(404, "no such product")
        trackware.track("product.viewed", {"sku": product_id, "name": item["name"]})
        return item

    @api.post("/login")
    async def login(request: Request) -> JSONResponse:
        data = await request.json()
        user_id = str(data.get("user_id", ""))
        entry = CUSTOMERS.get(user_id)
        if entry is None or entry[0] != data.get("password"):
            raise HTTPException(401, "bad credentials")
        token = secrets.token_hex(16)
        LOGINS[token] = user_id
        trackware.identify(user_id, email=entry[1], phone=entry[2])
        trackware.track("user.logged_in", {"method": "password"})
        response = JSONResponse({"user_id": user_id})
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax")
        return response

    @api.get("/offers")
    async def offers(user_id: str = Depends(customer)) -> list[dict[str, t.Any]]:
        shown = list(OFFERS.values())
        for position, offer in enumerate(shown):
            trackware.track(
                "offer.viewed", _offer_props(offer["id"], displayPosition=position)
            )
        return shown

    @api.post("/offers/{offer_id}/activate")
    async def activate(offer_id: str, user_id: str = Depends(customer)) -> t.Any:
        trackware.track("offer.activated", _offer_props(offer_id))
        return {"offer_id": offer_id, "state": "activated"}

    @api.post("/offers/{offer_id}/park")
    async def park(offer_id: str, user_id: str = Depends(customer)) -> t.Any:
        trackware.track("offer.parked", _offer_props(offer_id))
        return {"offer_id": offer_id, "state": "parked"}

    @api.get("/recommendations")
    async def recommendations() -> dict[str, t.Any]:
        items = sorted(PRODUCTS)
        trackware.track(
            "recommendation.view",
            {"correlationId": RECOMMENDATION_FRAME, "items": items},
        )
        return {"frame": RECOMMENDATION_FRAME, "items": items}

    @api.post("/recommendations/{product_id}/click")
    async def recommendation_click(product_id: str) -> dict[str, str]:
        if product_id not in PRODUCTS:
            raise HTTPException(404, "no such product")
        trackware.track(
            "recommendation.click",
            {"correlationId": RECOMMENDATION_FRAME, "items": [product_id]},
        )
        return {"clicked": product_id}

    @api.post("/cart")
    async def add_to_cart(request: Request, user_id: str = Depends(customer)) -> t.Any:
        data = await request.json()
        sku = str(data.get("sku"))
        if sku not in PRODUCTS:
            raise HTTPException(404, "no such product")
        cart = CARTS.setdefault(user_id, {})
        cart[sku] = cart.get(sku, 0) + int(data.get("quantity", 1))
        trackware.track("cart.added", {"sku": sku, "quantity": cart[sku]})
        return {"cart": cart}

    @api.post("/checkout", status_code=201)
    async def checkout(user_id: str = Depends(customer)) -> dict[str, t.Any]:
        order = await place_order(user_id, CARTS.pop(user_id, {}))
        return order

    @api.post("/orders/{order_id}/ship")
    async def ship(order_id: str) -> dict[str, t.Any]:
        order = ORDERS.get(order_id)
        if order is None:
            raise HTTPException(404, "no such order")
        order["status"] = "shipped"
        trackware.track(
            "order.shipped",
            {"order_id": order_id, "carrier": "DHL", "items": len(order["items"])},
            user_id=order["user_id"],
        )
        return order

    @api.get("/orders/stream")
    async def order_stream(user_id: str = Depends(customer)) -> StreamingResponse:
        async def lines() -> t.AsyncIterator[bytes]:
            for order in list(ORDERS.values()):
                if order["user_id"] == user_id:
                    yield (json.dumps(order) + "\n").encode()
                    await asyncio.sleep(0)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @api.websocket("/ws/offers")
    async def offer_updates(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            for offer in OFFERS.values():
                await websocket.send_json({"offer": offer["id"], "state": "live"})
            await websocket.receive_text()  # the client says goodbye
        except WebSocketDisconnect:
            return
        await websocket.close(code=1000)

    # Signs trackware's visitor, session and tid cookies (like the shop's
    # app.secret_key). In production: a real secret, kept out of the code,
    # e.g. the TRACKWARE_COOKIE_SECRET environment variable (read when no
    # cookie_secret is given).
    options.setdefault("cookie_secret", "example-store-secret-change-me")
    return TrackwareMiddleware(
        api, tracker=tracker, identity=current_identity, **options
    )
