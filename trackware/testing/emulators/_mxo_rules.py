"""MXO's request-body rules, as the emulator reads them.

The interaction object (real time and offline), the Lightweight API body, the
site-key and tid shapes, and MXO's error body (``{statusCode, error: <rule>,
message}``; MXO documents none, so the emulator names the broken rule).
"""

from __future__ import annotations

import datetime as _dt
import re
import typing as t

from ._api import HTTPError

__all__ = [
    "SITE_KEY_RE",
    "TID_RE",
    "Checked",
    "fail",
    "interaction_problem",
    "lightweight_body",
    "parse_iso8601",
]

#: A site key's shape, a heuristic taken from the documented examples.
SITE_KEY_RE = re.compile(r"ONE-[A-Z0-9]{10}-\d{4}", re.ASCII)
#: A tid in strict mode: UUID-like.
TID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_ISO_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?"
    r"(Z|z|[+-]\d{2}:?\d{2})",
    re.ASCII,
)


class Checked(t.NamedTuple):
    """What :func:`interaction_problem` found: which of ``uri``/``url`` the
    interaction used, and the rule it broke (None: valid)."""

    uri_field: str
    problem: str | None


def fail(status: int, rule: str, message: str) -> HTTPError:
    """An MXO error answer naming ``rule``."""
    return HTTPError(status, {"statusCode": status, "error": rule, "message": message})


def parse_iso8601(value: str) -> _dt.datetime | None:
    """An aware datetime from ISO-8601 text with a zone designator, else None."""
    match = _ISO_RE.fullmatch(value)
    if match is None:
        return None
    date, clock, fraction, zone = match.groups()
    micros = (fraction or "0")[:6].ljust(6, "0")
    if zone in ("Z", "z"):
        zone = "+00:00"
    elif ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    try:
        return _dt.datetime.fromisoformat(f"{date}T{clock}.{micros}{zone}")
    except ValueError:
        return None


def interaction_problem(
    item: t.Any,
    *,
    strict: bool,
    offline: bool,
    future_skew: float,
    where: str = "",
) -> Checked:
    """Check one interaction object."""
    if not isinstance(item, dict):
        return Checked("", f"{where}interaction must be a JSON object")
    # Choice: the seed table says ``url``, every other source ``uri``.
    # Strict mode takes ``uri`` only; lenient takes exactly one of the two
    # and records which one arrived.
    has_uri, has_url = "uri" in item, "url" in item
    if strict and has_url:
        return Checked("url", f"{where}url is not accepted (strict): send uri")
    if has_uri and has_url:
        return Checked("uri", f"{where}send exactly one of uri/url")
    field = "url" if has_url else "uri"
    value = item.get(field)
    if not isinstance(value, str) or not value.strip():
        return Checked(field, f"{where}{field} must be a non-empty string")
    if "customerKey" in item and (
        not isinstance(item["customerKey"], str) or not item["customerKey"]
    ):
        return Checked(field, f"{where}customerKey must be a non-empty string")
    if "customerKeyName" in item:
        name = item["customerKeyName"]
        if not isinstance(name, str) or not name:
            return Checked(field, f"{where}customerKeyName must be a non-empty string")
        if not item.get("customerKey"):
            return Checked(field, f"{where}customerKeyName requires customerKey")
    if "properties" in item:
        problem = _properties_array_problem(item["properties"])
        if problem:
            return Checked(field, f"{where}{problem}")
    if "device" in item and not isinstance(item["device"], dict):
        return Checked(field, f"{where}device must be an object")
    if offline:
        problem = _timestamp_problem(item.get("timestamp"), future_skew)
        if problem:
            return Checked(field, f"{where}{problem}")
    return Checked(field, None)


def _timestamp_problem(value: t.Any, future_skew: float) -> str | None:
    if value is None:
        return "timestamp is required for offline interactions"
    if not isinstance(value, str):
        return "timestamp must be an ISO-8601 string"
    when = parse_iso8601(value)
    if when is None:
        return "timestamp must be ISO-8601 with a time zone (e.g. ...T12:00:00.000Z)"
    now = _dt.datetime.now(_dt.timezone.utc)
    if when > now + _dt.timedelta(seconds=future_skew):
        return "timestamp is in the future"
    return None


def lightweight_body(body: t.Any, *, strict: bool) -> dict[str, t.Any]:
    """The Lightweight API body, or :func:`fail` 400 naming the broken rule."""
    if not isinstance(body, dict):
        raise fail(400, "body", "body must be a JSON object")
    if strict:
        for name in ("customerKey", "url"):
            if name in body:
                raise fail(
                    400,
                    name,
                    f"{name} is not a Lightweight API field (strict): use "
                    + ("ck" if name == "customerKey" else "uri"),
                )
    uri = body.get("uri")
    if not isinstance(uri, str) or not uri.strip():
        raise fail(400, "uri", "uri must be a non-empty string")
    if "ck" in body and not isinstance(body["ck"], str):
        raise fail(400, "ck", "ck must be a string")
    if "properties" in body:
        props = body["properties"]
        if isinstance(props, dict):
            for key, val in props.items():
                if not key or not _scalar(val):
                    raise fail(
                        400,
                        "properties",
                        f"properties.{key}: an object's values must be "
                        "string, number or boolean",
                    )
        else:
            problem = _properties_array_problem(props)
            if problem:
                raise fail(400, "properties", problem)
    return body


def _scalar(value: t.Any) -> bool:
    return isinstance(value, (str, bool, int, float))


def _properties_array_problem(props: t.Any) -> str | None:
    if not isinstance(props, list):
        return "properties must be an array of {name, value}"
    for index, prop in enumerate(props):
        if not isinstance(prop, dict):
            return f"properties[{index}] must be an object {{name, value}}"
        name = prop.get("name")
        if not isinstance(name, str) or not name:
            return f"properties[{index}].name must be a non-empty string"
        if "value" not in prop or not _scalar(prop["value"]):
            return f"properties[{index}].value must be a string, number or boolean"
        extra = set(prop) - {"name", "value"}
        if extra:
            return f"properties[{index}] has unknown keys {sorted(extra)}"
    return None
