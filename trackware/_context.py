"""Identity and request context, carried by ``contextvars``.

A :class:`Scope` holds who the current visitor is and facts about the current
request; ``track()`` reads it, :func:`identify` updates it. Integrations bind
one per request (:func:`trackware.request_scope` binds one for any block).
"""

from __future__ import annotations

import contextvars
import typing as t

from . import _ambient, _log
from ._validate import (
    CONTEXT,
    MAX_EMAIL_LENGTH,
    MAX_ID_LENGTH,
    MAX_PHONE_LENGTH,
    TRAITS,
    Invalid,
    text_field,
    valid_subset,
)

if t.TYPE_CHECKING:
    from ._tracker import Tracker

__all__ = [
    "Scope",
    "TrackerScope",
    "current_scope",
    "identify",
    "scope_var",
    "sendable",
]


class Scope:
    """Who is acting and in which request. Mutable, one per request/context.

    ``traits_cache`` and ``identity_cache`` are ``track()``'s (``None`` until
    it sets them; a subclass built without ``__init__`` sets them to ``None``).
    """

    __slots__ = (
        "anonymous_id",
        "context",
        "email",
        "identity_cache",
        "phone",
        "tracker",
        "traits",
        "traits_cache",
        "user_id",
    )

    def __init__(
        self,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        traits: t.Mapping[str, t.Any] | None = None,
        context: t.Mapping[str, t.Any] | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.user_id = user_id
        self.anonymous_id = anonymous_id
        self.email = email
        self.phone = phone
        # Both dicts are replaced, never mutated: events keep a reference to
        # the dict that was current when they were tracked, and trackers cache
        # the redacted traits per dict.
        self.traits: dict[str, t.Any] = sendable(traits, "traits")
        self.context: dict[str, t.Any] = sendable(context, "context")
        self.tracker = tracker
        #: (traits dict, redactor, its sendable traits): track() redacts and
        #: checks a scope's traits once per dict and redactor.
        self.traits_cache: tuple[t.Any, t.Any, dict[str, t.Any]] | None = None
        #: The identity (user_id, anonymous_id, email, phone) track() last
        #: found valid in this scope: while the fields are these very
        #: objects, it checks nothing again.
        self.identity_cache: tuple[t.Any, ...] | None = None

    def bind(self, **context: t.Any) -> None:
        """Add request/session facts that every later event in this scope carries.

        Values must be what event properties accept; others are left out
        (with a logged warning), never raised.
        """
        merged = dict(self.context)
        merged.update(sendable(context, "context"))
        self.context = merged

    def copy(self) -> Scope:
        return Scope(
            user_id=self.user_id,
            anonymous_id=self.anonymous_id,
            email=self.email,
            phone=self.phone,
            traits=self.traits,
            context=self.context,
            tracker=self.tracker,
        )

    def __repr__(self) -> str:
        return (
            f"Scope(user_id={self.user_id!r}, anonymous_id={self.anonymous_id!r}, "
            f"context_keys={sorted(self.context)!r})"
        )


#: The dict of a scope with no traits or context (shared: a scope's dicts
#: are replaced, never mutated).
_NOTHING: dict[str, t.Any] = {}


class TrackerScope(Scope):
    """A scope that names only a tracker: what an integration binds for a
    request it does not track, so that what the app tracks still goes to its
    tracker. Made with one store (``object.__new__`` and ``.tracker``): the
    other fields read these class defaults until :func:`identify` or the app
    sets them (on the instance, never on the class).
    """

    user_id = anonymous_id = email = phone = None
    traits = context = _NOTHING
    traits_cache = identity_cache = None


def sendable(values: t.Mapping[str, t.Any] | None, what: str) -> dict[str, t.Any]:
    """The entries of ``values`` an event can carry; the others are logged."""
    if not values:
        return {}
    kept, reasons = valid_subset(values, labels=TRAITS if what == "traits" else CONTEXT)
    for reason in reasons:
        _log.warn(
            f"scope-{what}:{reason[:80]}", "trackware: %s left out: %s", what, reason
        )
    return kept


#: The current scope (``None`` outside any).
scope_var: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "trackware_scope", default=None
)


def current_scope() -> Scope | None:
    """The scope bound to the current context, if any."""
    return scope_var.get()


# Lower layers (MXO's interact()) read the current scope through _ambient.
_ambient.install(current_scope)


def identify(
    user_id: str | None = None,
    *,
    traits: t.Mapping[str, t.Any] | None = None,
    email: str | None = None,
    phone: str | None = None,
    anonymous_id: str | None = None,
) -> None:
    """Bind an identity to the current request (or context) for later events.

    Inside a request handled by a trackware integration this updates that
    request's scope, so the page event and every event tracked later in the
    request carry the identity. Outside a request it binds a new scope to the
    current context. Never raises.

    Args:
        user_id: your stable customer id.
        traits: attributes of the customer, merged into earlier traits.
        email: the customer's email address.
        phone: the customer's phone number.
        anonymous_id: the visitor id, when you manage it yourself.

    A value track() would reject (see the README's "Events": e.g. a non-string
    email, text with a lone surrogate, an over-long id, a trait that cannot be
    encoded) is left out, with a logged warning, and the earlier one kept.
    """
    scope = scope_var.get()
    if scope is None:
        scope = Scope()
        scope_var.set(scope)
    if user_id is not None:
        scope.user_id = _identity(
            user_id, "user_id", MAX_ID_LENGTH, True, scope.user_id
        )
    if email is not None:
        scope.email = _identity(email, "email", MAX_EMAIL_LENGTH, False, scope.email)
    if phone is not None:
        scope.phone = _identity(phone, "phone", MAX_PHONE_LENGTH, False, scope.phone)
    if anonymous_id is not None:
        scope.anonymous_id = _identity(
            anonymous_id, "anonymous_id", MAX_ID_LENGTH, True, scope.anonymous_id
        )
    if traits:
        merged = dict(scope.traits)
        merged.update(sendable(traits, "traits"))
        scope.traits = merged


def _identity(
    value: t.Any, what: str, max_length: int, convert: bool, current: str | None
) -> str | None:
    """``value`` checked as track() checks it (user_id and anonymous_id of
    other types converted with ``str()``); if it cannot be sent, ``current``
    is kept and why is logged (identify() never raises)."""
    try:
        return text_field(value, what, max_length, convert)
    except Invalid as exc:
        _log.warn(
            f"identify-{what}",
            "trackware: identify(): %s left out: %s",
            what,
            exc,
        )
        return current
