"""Yotpo's custom-customer-event body rules, as the emulator reads them.

The field names are unknown (vendor-apis.md §5.4), so the emulator and the
exporter share one configurable field map: :class:`FieldMap` is what the
emulator reads of one (the exporter's ``YotpoFieldMap`` is one), and
:data:`DEFAULT_FIELD_MAP` is the emulator's own copy of the placeholders.
The rules themselves (snake_case, length, UUID id, identity, E.164, flat
properties) are the emulator's own reading of §5.7.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import typing as t

from ._api import HTTPError

__all__ = [
    "DEFAULT_FIELD_MAP",
    "MAX_NAME_LENGTH",
    "FieldMap",
    "PlaceholderFieldMap",
    "errors_body",
    "event_body",
    "fail",
]

#: The longest event name and source Yotpo takes (§5.4).
MAX_NAME_LENGTH = 255


class FieldMap(t.Protocol):
    """Where the custom-event endpoint is and what its JSON fields are called."""

    @property
    def path(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def envelope(self) -> str | None: ...
    @property
    def source(self) -> str: ...
    @property
    def event_name(self) -> str: ...
    @property
    def timestamp(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def customer(self) -> str: ...
    @property
    def properties(self) -> str: ...
    @property
    def external_id(self) -> str: ...
    @property
    def phone_number(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def customer_properties(self) -> str: ...
    @property
    def version(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class PlaceholderFieldMap:
    """A :class:`FieldMap`: the placeholder names of vendor-apis.md §5.4."""

    path: str = "/core/v3/stores/{store_id}/custom_events"
    method: str = "POST"
    envelope: str | None = None
    source: str = "source"
    event_name: str = "event_name"
    timestamp: str = "timestamp"
    id: str = "id"
    customer: str = "customer"
    properties: str = "properties"
    external_id: str = "external_id"
    phone_number: str = "phone_number"
    email: str = "email"
    customer_properties: str = "properties"
    version: str = "placeholder-1"

    def replace(self, **changes: t.Any) -> PlaceholderFieldMap:
        """A copy with some names changed."""
        return dataclasses.replace(self, **changes)


#: The map the emulator uses unless told otherwise.
DEFAULT_FIELD_MAP: FieldMap = PlaceholderFieldMap()

_SNAKE_RE = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_E164_RE = re.compile(r"\+[1-9]\d{1,14}", re.ASCII)
_DATETIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?"
    r"(Z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_WHITESPACE_RE = re.compile(r"\s")


class Problem(t.NamedTuple):
    """One broken rule: its name, the field (None: the body) and a message."""

    rule: str
    field: str | None
    message: str


def errors_body(status: int, problems: t.Sequence[Problem]) -> dict[str, t.Any]:
    return {
        "status": status,
        "errors": [
            {"rule": p.rule, "field": p.field, "message": p.message} for p in problems
        ],
    }


def fail(
    status: int,
    rule: str,
    field: str | None,
    message: str,
    headers: dict[str, str] | None = None,
) -> HTTPError:
    return HTTPError(
        status, errors_body(status, [Problem(rule, field, message)]), headers
    )


def _iso_ok(value: str, *, strict: bool) -> bool:
    match = _DATETIME_RE.fullmatch(value)
    if match is not None:
        if strict and match.group(7) is None:
            return False
        y, mo, d, h, mi, sec = (int(match.group(i)) for i in range(1, 7))
        try:
            _dt.datetime(y, mo, d, h, mi, sec)
        except ValueError:
            return False
        return True
    if strict:
        return False
    date = _DATE_RE.fullmatch(value)
    if date is None:
        return False
    try:
        _dt.date(int(date.group(1)), int(date.group(2)), int(date.group(3)))
    except ValueError:
        return False
    return True


def event_body(body: t.Any, fm: FieldMap, *, strict: bool) -> dict[str, t.Any]:
    """The event object from ``body``, or ``HTTPError`` 400 listing every rule
    it breaks (``strict``: the strict reading of vendor-apis.md §5.7)."""
    if fm.envelope:
        if not isinstance(body, dict) or not isinstance(body.get(fm.envelope), dict):
            raise fail(
                400,
                "envelope",
                fm.envelope,
                f"the body must be {{{fm.envelope!r}: {{...}}}}",
            )
        if strict and set(body) != {fm.envelope}:
            raise fail(400, "unknown_field", None, f"only {fm.envelope!r} is allowed")
        body = body[fm.envelope]
    if not isinstance(body, dict):
        raise fail(400, "body_object", None, "the body must be a JSON object")
    problems: list[Problem] = []
    known = {
        fm.source,
        fm.event_name,
        fm.timestamp,
        fm.id,
        fm.customer,
        fm.properties,
    }
    if strict:
        for key in body:
            if key not in known:
                problems.append(Problem("unknown_field", key, f"unknown field {key!r}"))
    _check_name(body, fm.event_name, "event_name", True, problems, strict)
    _check_name(body, fm.source, "source", strict, problems, strict)
    if fm.id not in body:
        problems.append(Problem("id", fm.id, "required"))
    else:
        value = body[fm.id]
        if not isinstance(value, str) or not value:
            problems.append(Problem("id", fm.id, "must be a non-empty string"))
        elif strict and not _UUID_RE.fullmatch(value):
            problems.append(Problem("id", fm.id, "must be a UUID"))
    if fm.timestamp not in body:
        if strict:
            problems.append(Problem("timestamp", fm.timestamp, "required"))
    else:
        value = body[fm.timestamp]
        if not isinstance(value, str) or not _iso_ok(value, strict=strict):
            problems.append(
                Problem(
                    "timestamp",
                    fm.timestamp,
                    "must be an ISO-8601 date-time"
                    + (" with a time zone" if strict else ""),
                )
            )
    _check_customer(body, fm, problems, strict)
    if fm.properties in body:
        _check_flat(body[fm.properties], fm.properties, problems)
    if problems:
        raise HTTPError(400, errors_body(400, problems))
    return body


def _check_name(
    body: dict[str, t.Any],
    field: str,
    rule: str,
    required: bool,
    problems: list[Problem],
    strict: bool,
) -> None:
    if field not in body:
        if required:
            problems.append(Problem(rule, field, "required"))
        return
    value = body[field]
    if not isinstance(value, str) or not value:
        problems.append(Problem(rule, field, "must be a non-empty string"))
    elif len(value) > MAX_NAME_LENGTH:
        problems.append(
            Problem(rule, field, f"longer than {MAX_NAME_LENGTH} characters")
        )
    elif strict and not _SNAKE_RE.fullmatch(value):
        problems.append(Problem(rule, field, f"must be snake_case, got {value!r}"))


def _check_customer(
    body: dict[str, t.Any], fm: FieldMap, problems: list[Problem], strict: bool
) -> None:
    customer = body.get(fm.customer)
    if fm.customer not in body:
        problems.append(Problem("customer", fm.customer, "required"))
        return
    if not isinstance(customer, dict):
        problems.append(Problem("customer", fm.customer, "must be an object"))
        return
    if strict:
        known = {fm.external_id, fm.email, fm.phone_number, fm.customer_properties}
        for key in customer:
            if key not in known:
                problems.append(
                    Problem("unknown_field", f"{fm.customer}.{key}", f"unknown {key!r}")
                )
    present = {
        field: customer[field]
        for field in (fm.external_id, fm.email, fm.phone_number)
        if field in customer
    }
    if fm.external_id in present:
        value = present[fm.external_id]
        if not isinstance(value, str) or not value:
            problems.append(
                Problem("external_id", fm.external_id, "must be a non-empty string")
            )
    if fm.email in present:
        value = present[fm.email]
        if (
            not isinstance(value, str)
            or value.count("@") != 1
            or _WHITESPACE_RE.search(value)
        ):
            problems.append(Problem("email", fm.email, "not a valid email address"))
    if fm.phone_number in present:
        value = present[fm.phone_number]
        if not isinstance(value, str) or not _E164_RE.fullmatch(value):
            problems.append(
                Problem(
                    "phone_e164",
                    fm.phone_number,
                    "must be E.164 (+<country><number>)",
                )
            )
    if not present:
        problems.append(
            Problem(
                "identity",
                fm.customer,
                f"identify the customer by {fm.external_id}, {fm.email} or "
                f"{fm.phone_number}",
            )
        )
    elif (
        fm.external_id not in present
        and fm.email in present
        and fm.phone_number in present
    ):
        problems.append(
            Problem(
                "identity",
                fm.customer,
                f"without {fm.external_id}, send only one of {fm.email} or "
                f"{fm.phone_number}",
            )
        )
    if fm.customer_properties in customer:
        _check_flat(
            customer[fm.customer_properties],
            f"{fm.customer}.{fm.customer_properties}",
            problems,
        )


def _check_flat(value: t.Any, where: str, problems: list[Problem]) -> None:
    if not isinstance(value, dict):
        problems.append(Problem("properties_object", where, "must be an object"))
        return
    for key, item in value.items():
        path = f"{where}.{key}"
        if not key or _WHITESPACE_RE.search(key):
            problems.append(
                Problem("property_key", path, "property names use _ instead of spaces")
            )
        if item is None:
            problems.append(Problem("property_null", path, "null is not supported"))
        elif isinstance(item, (dict, list)):
            problems.append(
                Problem(
                    "property_nested",
                    path,
                    "values must be primitives (string, number, boolean, date)",
                )
            )
