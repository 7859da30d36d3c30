"""Cardlytics' clientEvent contract, as the emulator reads it.

The enum tables (``ClientEvent``, ``ClientEventType``, ``Channel``,
``Section``) are this emulator's own copy of vendor-apis.md §1.4, not the
exporter's: a wrong table in the exporter then fails against the emulator
(tests/emulators/test_vendor_tables.py checks that the two copies agree).
"""

from __future__ import annotations

import datetime as _dt
import re
import typing as t

__all__ = [
    "AD_EVENT_TYPES",
    "CHANNELS",
    "CLIENT_EVENTS",
    "CLIENT_EVENT_TYPES",
    "DOCUMENTED_VARIANTS",
    "NO_USER",
    "SCOPES",
    "SECTIONS",
    "client_event_errors",
]

#: ``clientEvent`` -> the ``clientEventType`` it belongs to (reference table,
#: plus the seed-only ``ExpandRedemption``).
CLIENT_EVENTS: dict[str, str] = {
    "DisplayElementExpanded": "AdInteraction",
    "DisplayElementCollapsed": "AdInteraction",
    "UrlLinkClicked": "AdInteraction",
    "UrlLinkContinue": "AdInteraction",
    "ActivateOffer": "AdInteraction",
    "ParkOffer": "AdInteraction",
    "UnParkOffer": "AdInteraction",
    "UnParkAllOffers": "SessionAction",
    "AdViewableImpression": "AdImpression",
    "LogEnrollment": "SessionAction",
    "RewardSummaryLinkClicked": "CustomerProfileAction",
    "LearnMoreLinkClicked": "CustomerProfileAction",
    "FaqLinkClicked": "CustomerProfileAction",
    "ExpiredOffersLinkClicked": "AdInteraction",
    "ExpandRedemption": "CustomerProfileAction",
}
#: (type, event) pairs the seed uses although the reference table disagrees.
DOCUMENTED_VARIANTS: frozenset[tuple[str, str]] = frozenset(
    {("SessionAction", "RewardSummaryLinkClicked")}
)
CLIENT_EVENT_TYPES = frozenset(
    {"AdImpression", "AdInteraction", "SessionAction", "CustomerProfileAction"}
)
#: Types whose events must carry a ``clientEventMetadata`` object.
AD_EVENT_TYPES = frozenset({"AdImpression", "AdInteraction"})
CHANNELS = frozenset(
    {"Email", "SMS", "MMS", "OLB", "MobileWeb", "MobileApp", "MobileWallet"}
)
SECTIONS = frozenset(
    {
        "Email",
        "SMS",
        "MMS",
        "Transaction",
        "Summary",
        "Dashboard",
        "Landing",
        "OnboardingPage",
        "LatestOffers",
        "ExpiringSoon",
        "RewardSummaryListView",
        "FeaturedOffers",
        "EntertainmentCategory",
        "FoodCategory",
        "RetailCategory",
        "ServicesCategory",
        "TravelCategory",
    }
)
#: The scopes a startSession body may ask for (OpenAPI).
SCOPES = frozenset({"api:customer", "api:institution"})
#: The ``x-source-customer-id`` of a request without a known customer.
NO_USER = "no-user-available"

_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
_ITEM_KEYS = frozenset(
    {
        "clientEventId",
        "clientEventType",
        "clientEvent",
        "clientEventTimestamp",
        "clientEventMetadata",
    }
)
_METADATA_KEYS = frozenset(
    {
        "serveToken",
        "section",
        "channel",
        "imageSlots",
        "categoryId",
        "curationId",
        "displayPosition",
        "price",
    }
)


def _valid_timestamp(value: object) -> bool:
    """RFC 3339 date-time with a time-zone designator (``Z`` or an offset)."""
    if not isinstance(value, str):
        return False
    match = _RFC3339.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        # datetime refuses hour 24 and minute 60; a leap second (:60) is valid.
        _dt.datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return False
    return second <= 60


def client_event_errors(
    body: t.Mapping[str, t.Any], *, strict: bool, max_events: int
) -> list[str]:
    """Every violation of the clientEvent body rules (empty when valid);
    ``strict`` adds the rules marked strict in the contract table."""
    events = body.get("clientEvents")
    if not isinstance(events, list):
        return ["clientEvents: required array of ClientEventMessage"]
    if not events:
        return ["clientEvents: must not be empty"]
    if len(events) > max_events:
        return [
            f"clientEvents: at most {max_events} events per request, got {len(events)}"
        ]
    errors: list[str] = []
    ids: set[str] = set()
    for index, item in enumerate(events):
        where = f"clientEvents[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{where}: must be an object")
            continue
        event_id = item.get("clientEventId")
        if not isinstance(event_id, str) or not _UUID.fullmatch(event_id):
            errors.append(f"{where}.clientEventId: must be a UUID string")
        elif event_id.lower() in ids:
            errors.append(
                f"{where}.clientEventId: duplicate {event_id} within the request"
            )
        else:
            ids.add(event_id.lower())
        kind = item.get("clientEventType")
        name = item.get("clientEvent")
        kind_ok = isinstance(kind, str) and kind in CLIENT_EVENT_TYPES
        if not kind_ok:
            errors.append(
                f"{where}.clientEventType: must be one of "
                f"{sorted(CLIENT_EVENT_TYPES)}, got {kind!r}"
            )
        if not isinstance(name, str) or name not in CLIENT_EVENTS:
            errors.append(f"{where}.clientEvent: not a ClientEvent value: {name!r}")
        elif kind_ok:
            expected = CLIENT_EVENTS[name]
            if kind != expected and (kind, name) not in DOCUMENTED_VARIANTS:
                errors.append(
                    f"{where}.clientEventType: {name} belongs to {expected}, not {kind}"
                )
        if not _valid_timestamp(item.get("clientEventTimestamp")):
            errors.append(
                f"{where}.clientEventTimestamp: must be an RFC 3339 date-time "
                "with a time zone (e.g. 2023-03-11T08:00:00Z)"
            )
        if strict:
            unknown = sorted(set(item) - _ITEM_KEYS)
            if unknown:
                errors.append(f"{where}: unknown keys {unknown}")
        if kind_ok:
            errors.extend(_metadata_errors(where, str(kind), item, strict))
    return errors


def _metadata_errors(
    where: str, kind: str, item: t.Mapping[str, t.Any], strict: bool
) -> list[str]:
    where = f"{where}.clientEventMetadata"
    present = "clientEventMetadata" in item
    metadata = item.get("clientEventMetadata")
    if kind not in AD_EVENT_TYPES:
        if metadata is not None:
            return [f"{where}: must be null for {kind} events"]
        if strict and not present:
            return [f"{where}: required (null for {kind} events)"]
        return []
    if not isinstance(metadata, dict):
        return [f"{where}: required object for {kind} events"]
    errors: list[str] = []
    section = metadata.get("section")
    if section not in SECTIONS:
        errors.append(f"{where}.section: required Section value, got {section!r}")
    channel = metadata.get("channel")
    if channel not in CHANNELS:
        errors.append(f"{where}.channel: required Channel value, got {channel!r}")
    token = metadata.get("serveToken")
    if token is None:
        if strict:
            errors.append(f"{where}.serveToken: required (strict)")
    elif not isinstance(token, str) or not token:
        errors.append(f"{where}.serveToken: must be a non-empty string")
    slots = metadata.get("imageSlots")
    if slots is not None and (
        not isinstance(slots, list) or not all(isinstance(s, str) for s in slots)
    ):
        errors.append(f"{where}.imageSlots: must be an array of strings")
    for key in ("categoryId", "curationId"):
        value = metadata.get(key)
        if value is not None and not isinstance(value, str):
            errors.append(f"{where}.{key}: must be a string")
    position = metadata.get("displayPosition")
    if position is not None and (type(position) is not int or position < 0):
        errors.append(f"{where}.displayPosition: must be an integer >= 0")
    if metadata.get("price") is not None:
        errors.append(f"{where}.price: must be null (undocumented field)")
    if strict:
        unknown = sorted(set(metadata) - _METADATA_KEYS)
        if unknown:
            errors.append(f"{where}: unknown keys {unknown}")
    return errors
