"""Synerise's request-body rules, as the emulator reads them.

The v4 event, batch-element and transaction bodies, the AI events item, and
the php-sdk time format (vendor-apis.md §3 and the Synerise rows of §7). Each
``check_*`` appends the rules an item breaks to ``errors``; ``strict`` adds
the rules marked strict there.
"""

from __future__ import annotations

import datetime as _dt
import re
import typing as t

__all__ = [
    "AI_EVENT_TYPES",
    "API_VERSION",
    "KEBAB_RE",
    "RESERVED_ACTIONS",
    "check_ai_item",
    "check_common",
    "check_event",
    "check_transaction",
    "parse_time",
]

#: The ``Api-Version`` header ``/v4/*`` and ``/uauth/*`` require.
API_VERSION = "4.4"
#: Event types the AI events API takes (and v4 custom/batch refuses).
AI_EVENT_TYPES = frozenset(
    {"recommendation.view", "recommendation.click", "item.search.click"}
)
#: Actions that have a dedicated route; strict mode refuses them on custom/batch.
RESERVED_ACTIONS = AI_EVENT_TYPES | {"transaction.charge"}

_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.?\d+)?"
    r"(([+-])(\d{2}):(\d{2})|Z)?",
    re.ASCII,
)
_LOWER_UUID_RE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
#: strict action rule: lowercase segments separated by dots ("dog.bark").
_ACTION_RE = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+")
#: A batch element's ``type`` and a dedicated route's path segment.
KEBAB_RE = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_CURRENCY_RE = re.compile(r"[A-Za-z]{3}")

_Errors: t.TypeAlias = "list[str]"


def parse_time(value: str) -> float | None:
    """Epoch seconds of a php-sdk-regex ISO-8601 string (no zone: UTC), or None."""
    m = _TIME_RE.fullmatch(value)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = m.group(7) or ""
    digits = frac.lstrip(".")
    fraction = float("0." + digits) if digits else 0.0
    offset = 0
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60
        if m.group(9) == "-":
            offset = -offset
    try:
        moment = _dt.datetime(
            year, month, day, hour, minute, second, tzinfo=_dt.timezone.utc
        )
    except ValueError:
        return None
    return moment.timestamp() + fraction - offset


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_client(client: object, where: str, errors: _Errors, *, strict: bool) -> None:
    if not isinstance(client, dict):
        errors.append(f"{where}client: required, an object")
        return
    known = [k for k in ("id", "customId", "uuid", "email") if k in client]
    if not known:
        errors.append(
            f"{where}client: at least one of id, customId, uuid, email is required"
        )
    if "id" in client:
        cid = client["id"]
        # Lenient mode also takes a string id.
        if not (_is_int(cid) or (not strict and isinstance(cid, str))):
            errors.append(f"{where}client.id: must be an integer")
    if "customId" in client and (
        not isinstance(client["customId"], str) or not client["customId"]
    ):
        errors.append(f"{where}client.customId: must be a non-empty string")
    if "email" in client and (
        not isinstance(client["email"], str) or not client["email"]
    ):
        errors.append(f"{where}client.email: must be a non-empty string")
    if "uuid" in client and (
        not isinstance(client["uuid"], str)
        or not _LOWER_UUID_RE.fullmatch(client["uuid"])
    ):
        errors.append(f"{where}client.uuid: must be a lowercase UUID")


def check_time(item: dict[str, t.Any], field: str, where: str, errors: _Errors) -> None:
    if field not in item:
        return
    value = item[field]
    if not isinstance(value, str) or parse_time(value) is None:
        errors.append(
            f"{where}{field}: must be an ISO-8601 string "
            "(YYYY-MM-DDThh:mm:ss[.fff][Z|+hh:mm])"
        )


def check_event(
    item: object, where: str, errors: _Errors, *, strict: bool, batch: bool
) -> None:
    """One v4 event; ``batch`` adds the ``type``/``action`` coupling rules."""
    if not isinstance(item, dict):
        errors.append(f"{where}: each event must be an object")
        return
    etype: object = "custom"
    if batch:
        etype = item.get("type")
        if not isinstance(etype, str) or not KEBAB_RE.fullmatch(etype):
            errors.append(f"{where}type: required, a non-empty kebab-case string")
            etype = "custom"
    if etype == "custom":
        check_action(item, where, errors, strict=strict)
    elif "action" in item and strict:
        errors.append(
            f"{where}action: must be absent when type is not 'custom' "
            "(dedicated events carry their type instead)"
        )
    check_common(item, where, errors, strict=strict)


def check_action(
    item: dict[str, t.Any], where: str, errors: _Errors, *, strict: bool
) -> None:
    action = item.get("action")
    if not isinstance(action, str) or not action:
        errors.append(f"{where}action: required, a non-empty string")
        return
    if strict and not _ACTION_RE.fullmatch(action):
        errors.append(
            f"{where}action: must be dot-separated lowercase "
            f"(like 'dog.bark'), got {action[:100]!r}"
        )
    if strict and action in RESERVED_ACTIONS:
        route = (
            "/v4/transactions"
            if action == "transaction.charge"
            else "the AI events API"
        )
        errors.append(
            f"{where}action: {action!r} must be sent to {route}, not to custom/batch"
        )


def check_common(
    item: dict[str, t.Any], where: str, errors: _Errors, *, strict: bool
) -> None:
    label = item.get("label")
    if not isinstance(label, str) or not label:
        errors.append(f"{where}label: required, a non-empty string")
    check_client(item.get("client"), where, errors, strict=strict)
    if "params" in item and not isinstance(item["params"], dict):
        errors.append(f"{where}params: must be an object")
    check_time(item, "time", where, errors)
    if "eventSalt" in item and not isinstance(item["eventSalt"], str):
        errors.append(f"{where}eventSalt: must be a string")


def check_money(value: object, field: str, where: str, errors: _Errors) -> None:
    if not isinstance(value, dict):
        errors.append(f"{where}{field}: required, an object {{amount, currency}}")
        return
    if not _is_number(value.get("amount")):
        errors.append(f"{where}{field}.amount: required, a number")
    currency = value.get("currency")
    if not isinstance(currency, str) or not _CURRENCY_RE.fullmatch(currency):
        errors.append(f"{where}{field}.currency: required, a 3-letter code")


def check_transaction(
    item: object, where: str, errors: _Errors, *, strict: bool
) -> None:
    """The transaction contract (php-sdk ``TransactionValidator`` and
    ``ProductValidator``; the body schema is not in the seed).

    Required: ``client``, ``orderId`` (non-empty string), ``revenue`` and
    ``value`` (``{amount: number, currency: 3 letters}``), ``products``
    (a non-empty array; each with non-empty ``sku`` and ``name`` strings and a
    ``finalUnitPrice`` money object; ``quantity`` a number > 0 if present;
    ``regularPrice``/``discountPrice``/``netUnitPrice`` money objects if
    present). Optional: ``recordedAt`` (php-sdk time regex),
    ``discountAmount`` (money), ``paymentInfo`` (object with a string
    ``method``), ``source`` (string), ``metadata`` (object),
    ``eventSalt`` (string).
    """
    if not isinstance(item, dict):
        errors.append(f"{where}: each transaction must be an object")
        return
    check_client(item.get("client"), where, errors, strict=strict)
    order_id = item.get("orderId")
    if not isinstance(order_id, str) or not order_id:
        errors.append(f"{where}orderId: required, a non-empty string")
    check_money(item.get("revenue"), "revenue", where, errors)
    check_money(item.get("value"), "value", where, errors)
    if "discountAmount" in item:
        check_money(item["discountAmount"], "discountAmount", where, errors)
    products = item.get("products")
    # Choice: products are required, and an empty array is no products
    # (each product becomes a product.buy event; a transaction without
    # any is what the library must never send).
    if not isinstance(products, list) or not products:
        errors.append(f"{where}products: required, a non-empty array")
        products = []
    for i, product in enumerate(products):
        at = f"{where}products[{i}]."
        if not isinstance(product, dict):
            errors.append(f"{at[:-1]}: must be an object")
            continue
        for key in ("sku", "name"):
            if not isinstance(product.get(key), str) or not product.get(key):
                errors.append(f"{at}{key}: required, a non-empty string")
        check_money(product.get("finalUnitPrice"), "finalUnitPrice", at, errors)
        for key in ("regularPrice", "discountPrice", "netUnitPrice"):
            if key in product:
                check_money(product[key], key, at, errors)
        if "quantity" in product and not (
            _is_number(product["quantity"]) and product["quantity"] > 0
        ):
            errors.append(f"{at}quantity: must be a number > 0")
    check_time(item, "recordedAt", where, errors)
    if "paymentInfo" in item:
        info = item["paymentInfo"]
        if not isinstance(info, dict) or not isinstance(info.get("method"), str):
            errors.append(f"{where}paymentInfo: must be an object with a method")
    if "source" in item and not isinstance(item["source"], str):
        errors.append(f"{where}source: must be a string")
    if "metadata" in item and not isinstance(item["metadata"], dict):
        errors.append(f"{where}metadata: must be an object")
    if "eventSalt" in item and not isinstance(item["eventSalt"], str):
        errors.append(f"{where}eventSalt: must be a string")


def check_ai_item(
    item: object, where: str, errors: _Errors, *, strict: bool, warnings: list[str]
) -> None:
    if not isinstance(item, dict):
        errors.append(f"{where}: body must be an object")
        return
    correlation = item.get("correlationId")
    if not isinstance(correlation, str) or not correlation:
        errors.append(f"{where}correlationId: required, a non-empty string")
    client_uuid = item.get("clientUUID")
    if not isinstance(client_uuid, str) or not _UUID_RE.fullmatch(client_uuid):
        errors.append(f"{where}clientUUID: required, a UUID")
    items = item.get("items")
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        errors.append(f"{where}items: required, an array of item-ID strings")
    if "eventTimestamp" in item:
        stamp = item["eventTimestamp"]
        if _is_int(stamp) and stamp >= 0:
            pass
        elif not strict and isinstance(stamp, str) and parse_time(stamp) is not None:
            warnings.append(
                f"{where}eventTimestamp: ISO-8601 accepted in lenient mode; "
                "the documented type is integer epoch ms"
            )
        else:
            errors.append(
                f"{where}eventTimestamp: must be an integer >= 0 "
                "(Unix time in milliseconds)"
            )
    if "campaignId" in item and not isinstance(item["campaignId"], str):
        errors.append(f"{where}campaignId: must be a string")
