"""MXO's vocabulary: paths, formats, the request type and value mapping."""

from __future__ import annotations

import dataclasses
import re
import typing as t

from ..._event import Event
from ..._json import to_jsonable
from ...exceptions import ContractViolation
from .._base import encode_event
from .._http import HTTPRequest

__all__ = [
    "DEFAULT_PROFILE_EVENTS",
    "ENV_PREFIX",
    "IDENTITY_FIELDS",
    "INTERACTION_PATH",
    "JSON",
    "LIGHTWEIGHT_PATH",
    "MAX_OFFLINE_BATCH",
    "OFFLINE_BATCH_PATH",
    "SITE_KEY_RE",
    "TID_RE",
    "TOKEN_PATH",
    "CustomerKey",
    "MXORequest",
    "OfflineGroup",
    "PropertySource",
    "Touchpoints",
    "encode",
    "is_2xx",
    "string_value",
]

TOKEN_PATH = "/one/oauth2token"
INTERACTION_PATH = "/one/oauth2/rt/api/2.0/interaction"
OFFLINE_BATCH_PATH = "/one/oauth2/rt/api/2.0/interactions/offline"
LIGHTWEIGHT_PATH = "/one/rt/track/{sk}/events"
#: The documented cap of ``PUT /interactions/offline``.
MAX_OFFLINE_BATCH = 100
#: Events sent as profile updates (``PUT /interaction``) unless configured.
DEFAULT_PROFILE_EVENTS: frozenset[str] = frozenset({"identify", "profile.updated"})
#: Identity fields a customer key can come from.
IDENTITY_FIELDS = ("user_id", "email", "phone", "anonymous_id")

SITE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+\Z")
TID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
JSON = "application/json"
ENV_PREFIX = "TRACKWARE_MXO_"

Touchpoints: t.TypeAlias = "t.Mapping[str, str] | t.Callable[[Event], str | None]"
CustomerKey: t.TypeAlias = "str | t.Callable[[Event], str | None]"
PropertySource: t.TypeAlias = "t.Callable[[Event], t.Mapping[str, t.Any]]"


@dataclasses.dataclass
class MXORequest(HTTPRequest):
    """An :class:`~trackware.exporters.HTTPRequest` that knows its visitors."""

    #: anonymous ids whose tid the answer tells us.
    visitors: tuple[str, ...] = ()


@dataclasses.dataclass
class OfflineGroup:
    """Offline interactions that go in one ``/interactions/offline`` call
    (one visitor's), and the tid they are sent with."""

    tid: str | None
    events: list[Event] = dataclasses.field(default_factory=list)
    #: each event's interaction, JSON-encoded
    items: list[bytes] = dataclasses.field(default_factory=list)


def string_value(value: t.Any) -> str | None:
    """An MXO property value: text (``None`` means: leave the property out)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    try:
        plain = to_jsonable(value)
        return plain if isinstance(plain, str) else encode_event(plain)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ContractViolation(
            f"json: a property value of type {type(value).__name__} cannot be "
            f"encoded as JSON ({type(exc).__name__}); MXO property values are text"
        ) from None


def is_2xx(code: t.Any) -> bool:
    """Whether ``code`` (a body's ``statusCode``) is an integer 2xx status."""
    return isinstance(code, int) and not isinstance(code, bool) and 200 <= code < 300


def encode(obj: t.Any) -> bytes:
    """JSON-encode one event's body on the worker, alone (an unencodable value
    breaks the contract: ContractViolation)."""
    return encode_event(obj).encode("utf-8")
