"""Catalogue, offers and customers shared by the example shop and store."""

from __future__ import annotations

import typing as t

PRODUCTS: dict[str, dict[str, t.Any]] = {
    "p-100": {"id": "p-100", "name": "Espresso beans 1 kg", "price": 24.90},
    "p-200": {"id": "p-200", "name": "Milk frother", "price": 39.00},
    "p-300": {"id": "p-300", "name": "Ceramic cup set", "price": 18.50},
}

OFFERS: dict[str, dict[str, t.Any]] = {
    "o-1": {"id": "o-1", "merchant": "Bean Co.", "cashback": "5%", "token": "st-o1"},
    "o-2": {"id": "o-2", "merchant": "Cup House", "cashback": "3%", "token": "st-o2"},
}

#: user id -> (password, email, phone)
CUSTOMERS: dict[str, tuple[str, str, str]] = {
    "c-42": ("correct horse", "ada@example.com", "+447700900123"),
    "c-43": ("battery staple", "grace@example.com", "+14155550123"),
}

#: Recommendation frame the shop shows (Synerise AI events need its id).
RECOMMENDATION_FRAME = "3f0b3c1e-4d4b-4f55-9a3e-0c9a1d2b7e61"


def make_order(order_id: str, user_id: str, cart: dict[str, int]) -> dict[str, t.Any]:
    """The order a cart becomes (the shop's business logic, shared by both apps)."""
    items = [
        {
            "sku": sku,
            "name": PRODUCTS[sku]["name"],
            "quantity": qty,
            "price": PRODUCTS[sku]["price"],
        }
        for sku, qty in sorted(cart.items())
    ]
    total = sum(PRODUCTS[sku]["price"] * qty for sku, qty in cart.items())
    return {
        "id": order_id,
        "user_id": user_id,
        "items": items,
        "total": round(total, 2),
        "status": "placed",
    }


def order_properties(order: dict[str, t.Any], *args: t.Any, **kwargs: t.Any) -> dict:
    """``@tracked`` properties of ``transaction.charge`` from the placed order."""
    return {
        "order_id": order["id"],
        "revenue": order["total"],
        "currency": "EUR",
        "products": order["items"],
    }
