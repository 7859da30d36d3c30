"""Cardlytics' contract: the enum tables, and an event as a ``ClientEventMessage``.

The tables are the exporter's own reading of Cardlytics' reference; the
emulator keeps its own (a test checks that the two agree).
"""

from __future__ import annotations

import math
import time
import typing as t

from ..._event import Event
from ...exceptions import ContractViolation
from .._base import iso_time_problem, stable_uuid

__all__ = [
    "AD_EVENT_TYPES",
    "CHANNELS",
    "CLIENT_EVENT_TYPES",
    "DEFAULT_MAPPING",
    "NO_USER",
    "SECTIONS",
    "ClientEventContract",
    "error_body",
]

#: ``clientEvent`` -> its ``clientEventType`` (Cardlytics' reference table,
#: plus ``ExpandRedemption``, which only the seed example uses).
CLIENT_EVENT_TYPES: t.Mapping[str, str] = {
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
#: Types whose events need ``clientEventMetadata``.
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
#: The ``x-source-customer-id`` of events without a user id.
NO_USER = "no-user-available"
#: Applied under the user's mapping: the session-start event logs enrollment.
DEFAULT_MAPPING: t.Mapping[str, str] = {"session_start": "LogEnrollment"}

#: (metadata key, property names looked up in order), in Cardlytics' field order.
_METADATA_PROPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("serveToken", ("serveToken", "serve_token")),
    ("section", ("section",)),
    ("channel", ("channel",)),
    ("imageSlots", ("imageSlots", "image_slots")),
    ("categoryId", ("categoryId", "category_id")),
    ("curationId", ("curationId", "curation_id")),
    ("displayPosition", ("displayPosition", "display_position")),
)


def _timestamp(unix: float) -> str:
    """ISO-8601 UTC with ``Z``; milliseconds only when there are any."""
    seconds = math.floor(unix)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    ms = min(int(round((unix - seconds) * 1000)), 999)
    return f"{text}.{ms:03d}Z" if ms else f"{text}Z"


def _client_event_id(event_id: str) -> str:
    # Lowercase: Cardlytics compares ids case-insensitively, so two ids that
    # differ only in case would be duplicates and fail the whole request.
    return stable_uuid(event_id).lower()


def error_body(data: dict[str, t.Any]) -> tuple[bool, int | None]:
    """Does a Cardlytics answer body report an error (a ``type``, or a
    ``status`` of 400 or more)? And that status, when it is an int."""
    status = data.get("status")
    code = status if type(status) is int else None
    return "type" in data or (code or 0) >= 400, code


class ClientEventContract:
    """The mapping half of :class:`~trackware.exporters.cardlytics.ClientEventExporter`
    (mixed into it): an event as a Cardlytics ``ClientEventMessage``."""

    #: app event name -> ``clientEvent`` (checked against the table).
    mapping: dict[str, str]
    default_channel: str | None
    default_section: str | None
    require_serve_token: bool

    def message(self, event: Event) -> dict[str, t.Any]:
        """The ``ClientEventMessage`` for ``event``; raises
        :class:`~trackware.exceptions.ContractViolation` naming the broken rule
        when the event cannot satisfy the contract."""
        client_event = self.mapping[event.name]
        kind = CLIENT_EVENT_TYPES[client_event]
        problem = iso_time_problem(event.unix_time, "clientEventTimestamp")
        if problem:
            raise ContractViolation(problem)
        return {
            "clientEventId": _client_event_id(event.event_id),
            "clientEventType": kind,
            "clientEvent": client_event,
            "clientEventTimestamp": _timestamp(event.unix_time),
            "clientEventMetadata": (
                self._metadata(event, client_event) if kind in AD_EVENT_TYPES else None
            ),
        }

    def _metadata(self, event: Event, client_event: str) -> dict[str, t.Any]:
        props = event.properties
        values: dict[str, t.Any] = {}
        for key, names in _METADATA_PROPS:
            for prop in names:
                value = props.get(prop)
                if value is not None:
                    values[key] = value
                    break
        rule = f"{client_event} clientEventMetadata"
        if "section" not in values and self.default_section is not None:
            values["section"] = self.default_section
        if "channel" not in values and self.default_channel is not None:
            values["channel"] = self.default_channel
        token = values.get("serveToken")
        if token is None:
            if self.require_serve_token:
                raise ContractViolation(
                    f"{rule}.serveToken is required for Ad events: set the "
                    "'serveToken' property (the ad's adServeToken from getAds)"
                )
        elif not isinstance(token, str) or not token:
            raise ContractViolation(f"{rule}.serveToken must be a non-empty string")
        for key, enum, enum_name in (
            ("section", SECTIONS, "Section"),
            ("channel", CHANNELS, "Channel"),
        ):
            value = values.get(key)
            if value is None:
                raise ContractViolation(
                    f"{rule}.{key} is required: set the {key!r} property "
                    f"(a {enum_name} value)"
                )
            if not isinstance(value, str) or value not in enum:
                raise ContractViolation(
                    f"{rule}.{key} {value!r} is not a Cardlytics {enum_name} value "
                    f"(one of {', '.join(sorted(enum))})"
                )
        slots = values.get("imageSlots")
        if slots is not None:
            if not isinstance(slots, (list, tuple)) or not all(
                isinstance(s, str) for s in slots
            ):
                raise ContractViolation(f"{rule}.imageSlots must be a list of strings")
            values["imageSlots"] = list(slots)
        for key in ("categoryId", "curationId"):
            value = values.get(key)
            if value is None or isinstance(value, str):
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                values[key] = str(value)
            else:
                raise ContractViolation(f"{rule}.{key} must be a string")
        position = values.get("displayPosition")
        if position is not None and (
            not isinstance(position, int) or isinstance(position, bool) or position < 0
        ):
            raise ContractViolation(
                f"{rule}.displayPosition must be a zero-based integer (>= 0)"
            )
        # Cardlytics' documented field order, defaults included.
        return {key: values[key] for key, _ in _METADATA_PROPS if key in values}
