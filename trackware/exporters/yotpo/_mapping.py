"""Yotpo's contract: an event as a custom customer event body.

:class:`YotpoMapping` is mixed into
:class:`~trackware.exporters.yotpo.CustomEventExporter`; every rule an event
breaks raises :class:`~trackware.exceptions.ContractViolation`.
"""

from __future__ import annotations

import collections.abc as c
import datetime as _dt
import decimal
import enum
import math
import re
import typing as t
import uuid

from ..._event import Event, iso_time
from ...exceptions import ContractViolation
from .._base import iso_time_problem, stable_uuid
from ._fields import MAX_NAME_LENGTH, YotpoFieldMap, snake_case
from ._phone import normalize_phone_strict

__all__ = ["PhoneNormalizer", "YotpoMapping"]

#: A phone normaliser: ``(value, default region)`` -> E.164 or ``None``.
PhoneNormalizer: t.TypeAlias = "t.Callable[[str, str | None], str | None]"

_WHITESPACE_RE = re.compile(r"\s")
#: Trait keys that carry identity rather than customer properties.
_IDENTITY_TRAITS = frozenset({"email", "phone", "phone_number", "external_id"})


class YotpoMapping:
    """The mapping half of the Yotpo exporter (mixed into it): the custom
    event body and Yotpo's identity and property rules."""

    field_map: YotpoFieldMap
    source: str
    event_names: dict[str, str]
    identity_preference: str
    default_region: str | None
    default_country_code: str | None
    nested_properties: str

    def _phone_normalizer(self) -> PhoneNormalizer:
        """The phone normaliser to use now (the exporter supplies it)."""
        raise NotImplementedError

    @staticmethod
    def identifiable(event: Event) -> bool:
        """Whether ``event`` names a customer at all (a user id, an email or a
        phone, on the event or in its traits). Yotpo keeps no anonymous
        customers, so an event without any is ``not_applicable`` here, not a
        rejection; one whose email or phone is unusable is rejected (someone
        must fix it)."""
        if event.email or event.phone:
            return True
        user_id = event.user_id
        if user_id is not None and str(user_id).strip():
            return True
        traits = event.traits
        return bool(traits) and any(
            _text(traits.get(key)) for key in ("email", "phone", "phone_number")
        )

    def yotpo_name(self, event: Event) -> str:
        """The Yotpo event name for ``event`` (raises ``ContractViolation``)."""
        name = self.event_names.get(event.name)
        if name is None:
            name = snake_case(event.name)
        if not name:
            raise ContractViolation(
                f"event_name: {event.name!r} has no letters or digits, so it has no "
                "snake_case form (Yotpo needs a non-empty snake_case name)"
            )
        if len(name) > MAX_NAME_LENGTH:
            raise ContractViolation(
                f"event_name: the snake_case name is {len(name)} characters; Yotpo "
                f"allows at most {MAX_NAME_LENGTH} (map it in event_names)"
            )
        return name

    def payload(self, event: Event) -> dict[str, t.Any]:
        """The JSON body for ``event`` (before encoding).

        Raises ``ContractViolation`` naming the rule the event breaks.
        """
        fm = self.field_map
        customer = self.customer(event)
        problem = iso_time_problem(event.unix_time, fm.timestamp)
        if problem:
            raise ContractViolation(problem)
        body: dict[str, t.Any] = {
            fm.source: self.source,
            fm.event_name: self.yotpo_name(event),
            fm.timestamp: iso_time(event.unix_time),
            # Yotpo's id must be a UUID: an app-supplied id that is not one
            # becomes a stable UUID derived from it (as Cardlytics does).
            fm.id: stable_uuid(event.event_id),
            fm.customer: customer,
        }
        properties = self.flat_properties(event.properties, "properties")
        if properties:
            body[fm.properties] = properties
        if fm.envelope:
            return {fm.envelope: body}
        return body

    def customer(self, event: Event) -> dict[str, t.Any]:
        """The customer object: identity per Yotpo's rule, plus properties."""
        fm = self.field_map
        traits = event.traits
        email = event.email or _text(traits.get("email"))
        phone_raw = (
            event.phone
            or _text(traits.get("phone"))
            or _text(traits.get("phone_number"))
        )
        region = self.default_region or self.default_country_code
        # Looked up at call time: the package's choice of normaliser.
        normalize = self._phone_normalizer()
        phone = normalize(phone_raw, region) if phone_raw else None
        email_ok = bool(email) and _valid_email(t.cast(str, email))
        customer: dict[str, t.Any] = {}
        user_id = event.user_id
        if user_id is not None and str(user_id).strip():
            customer[fm.external_id] = str(user_id)
            # Contacts enrich the profile when valid; an invalid one is left
            # out rather than costing the event (external_id identifies it).
            if email_ok:
                customer[fm.email] = email
            if phone:
                customer[fm.phone_number] = phone
        else:
            choices = {"email": email if email_ok else None, "phone": phone}
            preferred = self.identity_preference
            other = "phone" if preferred == "email" else "email"
            chosen = preferred if choices[preferred] else other
            if not choices[chosen]:
                problems = []
                if email and not email_ok:
                    problems.append("the email is not a valid address")
                if phone_raw and not phone:
                    problems.append(_phone_problem(region, normalize))
                detail = (
                    "; ".join(problems) or "the event has no user_id, email or phone"
                )
                raise ContractViolation(
                    f"identity: {detail}. Yotpo identifies a customer by external_id "
                    "(user_id), or else by exactly one of email / E.164 phone_number"
                )
            if chosen == "email":
                customer[fm.email] = choices["email"]
            else:
                customer[fm.phone_number] = choices["phone"]
        props = {k: v for k, v in traits.items() if k not in _IDENTITY_TRAITS}
        flat = self.flat_properties(props, "customer properties")
        if flat:
            customer[fm.customer_properties] = flat
        return customer

    def flat_properties(
        self, properties: t.Mapping[str, t.Any], what: str
    ) -> dict[str, t.Any]:
        """Yotpo's flat ``key: primitive`` object from ``properties``."""
        out: dict[str, t.Any] = {}
        origin: dict[str, str] = {}
        for key, value in properties.items():
            self._flatten_into(out, origin, str(key), value, what)
        return out

    def _flatten_into(
        self,
        out: dict[str, t.Any],
        origin: dict[str, str],
        key: str,
        value: t.Any,
        what: str,
    ) -> None:
        if value is None:
            return  # Yotpo does not take null: the property is simply left out.
        clean = _WHITESPACE_RE.sub("_", key)
        if not clean:
            raise ContractViolation(f"{what}: a property has an empty name")
        if isinstance(value, (c.Mapping, list, tuple)):
            if self.nested_properties != "flatten":
                kind = "an object" if isinstance(value, c.Mapping) else "an array"
                raise ContractViolation(
                    f"{what}: {key!r} is {kind}; Yotpo takes flat primitive values "
                    "(string, number, boolean, ISO date); use nested_properties="
                    "'flatten' or flatten it in a before_send hook"
                )
            items: c.Iterable[tuple[t.Any, t.Any]] = (
                value.items() if isinstance(value, c.Mapping) else enumerate(value)
            )
            for sub, item in items:
                self._flatten_into(out, origin, f"{clean}_{sub}", item, what)
            return
        primitive = _primitive(value)
        if isinstance(value, (float, decimal.Decimal)) and primitive is _INVALID:
            raise ContractViolation(
                f"{what}: {key!r} is not a finite number (JSON has no NaN/Infinity)"
            )
        if primitive is _INVALID:
            raise ContractViolation(
                f"{what}: {key!r} has type {type(value).__name__}; Yotpo takes "
                "string, number, boolean or ISO date values"
            )
        if primitive is None:
            return
        if clean in out:
            raise ContractViolation(
                f"{what}: {origin[clean]!r} and {key!r} both become {clean!r} "
                "(Yotpo property names use _ instead of spaces)"
            )
        out[clean] = primitive
        origin[clean] = key


def _phone_problem(region: str | None, normalize: PhoneNormalizer) -> str:
    problem = "the phone number cannot be made E.164"
    if normalize is normalize_phone_strict:
        return (
            f"{problem}: without the phonenumbers library only numbers "
            "already in E.164 (like +447700900123) are accepted; install "
            "trackware[phone] to normalise national and formatted numbers"
        )
    if not region:
        return (
            f"{problem} (set default_region or default_country_code for "
            "national numbers)"
        )
    return f"{problem} (not a possible number for its country)"


_INVALID = object()


def _text(value: t.Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _valid_email(value: str) -> bool:
    return value.count("@") == 1 and not _WHITESPACE_RE.search(value)


def _primitive(value: t.Any) -> t.Any:
    """A JSON primitive for ``value``; ``None`` to drop it; ``_INVALID`` if none."""
    if isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return _primitive(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return _INVALID
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else _INVALID
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return _INVALID
