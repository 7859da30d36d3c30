"""Synerise's contract: an event as a v4 event, a transaction or an AI event body.

:class:`SyneriseMapping` is mixed into
:class:`~trackware.exporters.synerise.SyneriseExporter`; every rule an event
breaks raises :class:`~trackware.exceptions.ContractViolation`.
"""

from __future__ import annotations

import collections
import math
import re
import threading
import typing as t

from ... import _log
from ..._event import Event, iso_time
from ...exceptions import ContractViolation
from .._base import iso_time_problem

__all__ = [
    "ACTION_RE",
    "AI_EVENT_TYPES",
    "DEFAULT_ACTIONS",
    "TRANSACTION_ACTION",
    "SyneriseMapping",
    "is_number",
]

#: Events routed to the AI events API instead of ``/v4/events``.
AI_EVENT_TYPES = frozenset(
    {"recommendation.view", "recommendation.click", "item.search.click"}
)
TRANSACTION_ACTION = "transaction.charge"
#: The Flask/ASGI integrations' own events, as Synerise's native actions
#: (``page.visit`` is what Synerise's web SDK sends for a page view). Applied
#: under ``actions=``: map one of them yourself to send it under another name.
DEFAULT_ACTIONS: t.Mapping[str, str] = {
    "page": "page.visit",
    "session_start": "session.start",
    "session_end": "session.end",
}
#: The strict rule for actions: dot-separated lowercase, like ``dog.bark``.
ACTION_RE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)+\Z")
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
_HEX32_RE = re.compile(r"^[0-9a-fA-F]{32}\Z")
_CURRENCY_RE = re.compile(r"^[A-Za-z]{3}\Z")
#: Clamped times remembered (per event id) so that retries send the same one.
_CLAMP_MEMORY = 10_000


def _as_uuid(value: str | None) -> str | None:
    """``value`` as a lowercase dashed UUID, if it is one (dashed or 32 hex digits).

    The Flask and ASGI integrations' visitor ids are 32 hex digits; Synerise
    wants the dashed form.
    """
    if not value:
        return None
    if _UUID_RE.match(value):
        return value.lower()
    if _HEX32_RE.match(value):
        h = value.lower()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return None


def is_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _first(props: t.Mapping[str, t.Any], *keys: str) -> t.Any:
    for key in keys:
        if key in props and props[key] is not None:
            return props[key]
    return None


class SyneriseMapping:
    """The mapping half of the Synerise exporter (mixed into it): the bodies of
    v4 events, transactions and AI events, checked against Synerise's rules."""

    name: str
    strict: bool
    dedicated: dict[str, str]
    labels: dict[str, str]
    label_property: str | None
    client_id_trait: str | None
    transaction_source: str | None

    def _init_clamps(self) -> None:
        """No remembered clamped times yet (called at construction)."""
        self._clamped: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._clamp_lock = threading.Lock()

    def _clamps_after_fork(self) -> None:
        """A lock a parent thread held at fork time stays held in the child:
        take a free one (the remembered times stay valid)."""
        self._clamp_lock = threading.Lock()

    def _time(self, event: Event, now: float) -> float:
        """The event's time, clamped to ``now`` when in the future.

        The clamped value is remembered per event id (bounded), so a retry
        sends the same ``time`` and the vendor overwrites instead of adding.
        """
        with self._clamp_lock:
            remembered = self._clamped.get(event.event_id)
            if remembered is not None:
                return remembered
            when = event.unix_time
            if when <= now:
                problem = iso_time_problem(when, "time")
                if problem:
                    raise ContractViolation(problem)
                return when
            self._clamped[event.event_id] = now
            while len(self._clamped) > _CLAMP_MEMORY:
                self._clamped.popitem(last=False)
        _log.warn(
            f"future-time:{self.name}",
            "trackware: %s: event %r has a time in the future; sending the "
            "current time instead (Synerise would replace it and break "
            "eventSalt overwrites)",
            self.name,
            event.name,
        )
        return now

    def _names_someone(self, event: Event) -> bool:
        """Whether ``event`` carries any identity a profile could come from
        (usable or not: an unusable one is rejected, since someone can fix
        it)."""
        if event.user_id or event.email or event.anonymous_id:
            return True
        trait = self.client_id_trait
        return trait is not None and event.traits.get(trait) is not None

    def _profile(self, event: Event) -> dict[str, t.Any]:
        client: dict[str, t.Any] = {}
        if self.client_id_trait is not None:
            raw = event.traits.get(self.client_id_trait)
            if raw is not None:
                if isinstance(raw, int) and not isinstance(raw, bool):
                    client["id"] = raw
                elif isinstance(raw, str) and raw.isascii() and raw.isdigit():
                    client["id"] = int(raw)
                else:
                    raise ContractViolation(
                        f"client.id: trait {self.client_id_trait!r} must be an "
                        f"integer, got {type(raw).__name__}"
                    )
        if event.user_id:
            client["customId"] = str(event.user_id)
        anonymous = _as_uuid(event.anonymous_id)
        if anonymous is not None:
            client["uuid"] = anonymous
        if event.email:
            client["email"] = event.email
        if not client:
            trait = f", trait {self.client_id_trait!r}" if self.client_id_trait else ""
            raise ContractViolation(
                "client: at least one of id, customId, uuid, email is required "
                f"(the event has no user_id, email, UUID anonymous_id{trait})"
            )
        return client

    def _label(self, event: Event, default: str) -> str:
        label = self.labels.get(event.name)
        if label:
            return label
        if self.label_property is not None:
            value = event.properties.get(self.label_property)
            if isinstance(value, str) and value:
                return value
        return default

    def _v4_event(self, event: Event, now: float, action: str) -> dict[str, t.Any]:
        etype = self.dedicated.get(event.name)
        if etype is None and self.strict and not ACTION_RE.match(action):
            raise ContractViolation(
                f"action: {action[:100]!r} is not dot-separated lowercase (like "
                "'dog.bark'); map the event name with actions= or pass strict=False"
            )
        body: dict[str, t.Any] = {"type": etype or "custom"}
        if etype is None:
            body["action"] = action
        body["label"] = self._label(event, action if etype is None else event.name)
        body["client"] = self._profile(event)
        body["time"] = iso_time(self._time(event, now))
        params = dict(event.properties)
        if self.label_property is not None:
            params.pop(self.label_property, None)
        if params:
            body["params"] = params
        body["eventSalt"] = event.event_id
        return body

    def _ai_event(self, event: Event) -> dict[str, t.Any]:
        props = event.properties
        correlation = _first(props, "correlationId", "correlation_id")
        if not isinstance(correlation, str) or not correlation:
            raise ContractViolation(
                "correlationId: required, a non-empty string property"
            )
        client_uuid = _first(props, "clientUUID", "client_uuid")
        if client_uuid is None:
            client_uuid = _as_uuid(event.anonymous_id)
        if not isinstance(client_uuid, str) or not _UUID_RE.match(client_uuid):
            raise ContractViolation(
                "clientUUID: required, a UUID (property clientUUID, or a UUID "
                "anonymous_id)"
            )
        raw_items = props.get("items", [])
        if not isinstance(raw_items, (list, tuple)) or not all(
            isinstance(i, str) or (isinstance(i, int) and not isinstance(i, bool))
            for i in raw_items
        ):
            raise ContractViolation("items: must be a list of item IDs (strings)")
        body: dict[str, t.Any] = {
            "correlationId": correlation,
            "clientUUID": client_uuid.lower(),
            "items": [str(i) for i in raw_items],
            "eventTimestamp": int(round(event.unix_time * 1000)),
        }
        if body["eventTimestamp"] < 0:
            raise ContractViolation(
                "eventTimestamp: must be Unix time in milliseconds >= 0; the event "
                "is dated before 1970"
            )
        campaign = _first(props, "campaignId", "campaign_id")
        if campaign is not None:
            if not isinstance(campaign, (str, int)) or isinstance(campaign, bool):
                raise ContractViolation("campaignId: must be a string")
            body["campaignId"] = str(campaign)
        return body

    @staticmethod
    def _money(value: object, currency: object, field: str) -> dict[str, t.Any]:
        if isinstance(value, dict):
            amount, currency = value.get("amount"), value.get("currency", currency)
        else:
            amount = value
        if not is_number(amount):
            raise ContractViolation(f"{field}.amount: required, a number")
        if not isinstance(currency, str) or not _CURRENCY_RE.match(currency):
            raise ContractViolation(
                f"{field}.currency: required, a 3-letter currency code"
            )
        return {"amount": amount, "currency": currency}

    def _transaction(self, event: Event, now: float) -> dict[str, t.Any]:
        props = dict(event.properties)
        used = {
            "order_id",
            "orderId",
            "currency",
            "revenue",
            "value",
            "discount",
            "discountAmount",
            "products",
            "paymentInfo",
            "payment_method",
            "source",
            "metadata",
        }
        currency = props.get("currency")
        order_id = _first(props, "orderId", "order_id")
        if isinstance(order_id, int) and not isinstance(order_id, bool):
            order_id = str(order_id)
        if not isinstance(order_id, str) or not order_id:
            raise ContractViolation(
                "orderId: required, a non-empty string (property order_id)"
            )
        if props.get("revenue") is None:
            raise ContractViolation(
                "revenue: required (property revenue with currency)"
            )
        revenue = self._money(props["revenue"], currency, "revenue")
        value = (
            self._money(props["value"], currency, "value")
            if props.get("value") is not None
            else dict(revenue)
        )
        body: dict[str, t.Any] = {
            "client": self._profile(event),
            "orderId": order_id,
            "recordedAt": iso_time(self._time(event, now)),
            "revenue": revenue,
            "value": value,
        }
        discount = _first(props, "discountAmount", "discount")
        if discount is not None:
            body["discountAmount"] = self._money(discount, currency, "discountAmount")
        products = props.get("products")
        if not isinstance(products, (list, tuple)) or not products:
            raise ContractViolation(
                "products: required, a non-empty list of products (property "
                "products: [{sku, name, price, quantity}, ...]); Synerise makes a "
                "product.buy event of each"
            )
        body["products"] = [
            self._product(p, currency, i) for i, p in enumerate(products)
        ]
        payment = _first(props, "paymentInfo", "payment_method")
        if isinstance(payment, str) and payment:
            body["paymentInfo"] = {"method": payment}
        elif isinstance(payment, dict) and isinstance(payment.get("method"), str):
            body["paymentInfo"] = dict(payment)
        elif payment is not None:
            raise ContractViolation(
                "paymentInfo: must be {method: str} (or payment_method)"
            )
        source = props.get("source", self.transaction_source)
        if source is not None:
            if not isinstance(source, str):
                raise ContractViolation("source: must be a string")
            body["source"] = source
        metadata = props.get("metadata")
        if metadata is None:
            metadata = {k: v for k, v in props.items() if k not in used}
        if not isinstance(metadata, dict):
            raise ContractViolation("metadata: must be an object")
        if metadata:
            body["metadata"] = metadata
        body["eventSalt"] = event.event_id
        return body

    def _product(self, raw: object, currency: object, index: int) -> dict[str, t.Any]:
        where = f"products[{index}]"
        if not isinstance(raw, dict):
            raise ContractViolation(f"{where}: must be an object")
        product = dict(raw)
        sku = product.pop("sku", None) or product.pop("product_id", None)
        if isinstance(sku, int) and not isinstance(sku, bool):
            sku = str(sku)
        if not isinstance(sku, str) or not sku:
            raise ContractViolation(f"{where}.sku: required, a non-empty string")
        name = product.pop("name", None)
        if not isinstance(name, str) or not name:
            raise ContractViolation(f"{where}.name: required, a non-empty string")
        out: dict[str, t.Any] = {"sku": sku, "name": name}
        quantity = product.pop("quantity", None)
        if quantity is not None:
            if not is_number(quantity) or quantity <= 0:
                raise ContractViolation(f"{where}.quantity: must be a number > 0")
            out["quantity"] = quantity
        price = product.pop("finalUnitPrice", None)
        if price is None:
            price = product.pop("price", None)
        if price is None:
            raise ContractViolation(f"{where}.finalUnitPrice: required (or price)")
        out["finalUnitPrice"] = self._money(
            price, product.pop("currency", currency), f"{where}.finalUnitPrice"
        )
        for key in ("regularPrice", "discountPrice", "netUnitPrice"):
            if product.get(key) is not None:
                out[key] = self._money(product.pop(key), currency, f"{where}.{key}")
        out.update(product)
        return out
