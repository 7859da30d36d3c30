"""The body of ``track()``: check, redact and size an event, merge the scope's
identity and context, run the ``before_send`` hooks.

:class:`Preparer` holds what preparing needs (the redactor, the hooks, the
sampling rates, the size limit); :class:`~trackware.Tracker` is one, and adds
routing. ``Tracker.track`` is :meth:`Preparer.track` itself: no call layer.
"""

from __future__ import annotations

import collections
import datetime as _dt
import random
import time
import typing as t
from collections.abc import Mapping

from . import _lifecycle, _log
from ._context import scope_var
from ._event import Event, checked, make_event
from ._redact import DEFAULT_REDACT_ALLOW, Redactor
from ._validate import (
    CONTEXT,
    END_TIMESTAMP,
    MAX_EMAIL_LENGTH,
    MAX_ID_LENGTH,
    MAX_ITEMS,
    MAX_PHONE_LENGTH,
    MIN_TIMESTAMP,
    NUMBER_BOUND,
    PROPERTIES,
    TRAITS,
    Invalid,
    check_event_id,
    check_name,
    sanitize,
    text_field,
    unix_time,
    valid_subset,
)
from .exceptions import InvalidEventError

if t.TYPE_CHECKING:
    from ._context import Scope

__all__ = ["EventHook", "Preparer"]

EventHook = t.Callable[[Event], "Event | None"]

_now = time.time
_scope_get = scope_var.get


def _identity(
    user_id: t.Any, anonymous_id: t.Any, email: t.Any, phone: t.Any
) -> tuple[str | None, str | None, str | None, str | None]:
    """An event's identity fields checked: ASCII strings of a sane length
    pass at once; anything else is looked at closely (user_id and
    anonymous_id of other types converted with str(), as always). Raises
    ``Invalid``."""
    if user_id is not None and (
        type(user_id) is not str
        or len(user_id) > MAX_ID_LENGTH
        or not user_id.isascii()
    ):
        user_id = text_field(user_id, "user_id", MAX_ID_LENGTH, True)
    if anonymous_id is not None and (
        type(anonymous_id) is not str
        or len(anonymous_id) > MAX_ID_LENGTH
        or not anonymous_id.isascii()
    ):
        anonymous_id = text_field(anonymous_id, "anonymous_id", MAX_ID_LENGTH, True)
    if email is not None and (
        type(email) is not str or len(email) > MAX_EMAIL_LENGTH or not email.isascii()
    ):
        email = text_field(email, "email", MAX_EMAIL_LENGTH)
    if phone is not None and (
        type(phone) is not str or len(phone) > MAX_PHONE_LENGTH or not phone.isascii()
    ):
        phone = text_field(phone, "phone", MAX_PHONE_LENGTH)
    return user_id, anonymous_id, email, phone


class Preparer:
    """Turns ``track()``'s arguments into a checked, redacted :class:`Event`.

    The tracker that subclasses it provides the members declared below
    without a value: where events go (``_route``, ``_after_pending`` while
    recorded page events wait) and whether it accepts them (``_admit``).
    """

    #: Raise :class:`InvalidEventError` from ``track()`` instead of dropping.
    strict: bool
    _redact: Redactor
    _hooks: tuple[EventHook, ...]
    _sample: dict[str, float]
    #: The largest event track() accepts, approximately encoded (bytes).
    _max_event_bytes: int
    #: The value of ``_lifecycle.forks`` when the process id was last checked
    #: (-1: not yet).
    _forks_seen = -1
    _accepting: bool
    #: Page records waiting for the intake (an event tracked meanwhile
    #: follows them).
    _pending: collections.deque[t.Any]

    def __init__(
        self,
        *,
        strict: bool,
        max_event_bytes: int,
        before_send: EventHook | t.Iterable[EventHook],
        redact_keys: t.Iterable[str] | None,
        redact_allow: t.Iterable[str] | None,
        sample_rates: t.Mapping[str, float] | None,
    ) -> None:
        self.strict = strict
        # An event larger could only ever be sent alone, over the batch limit.
        self._max_event_bytes = max_event_bytes
        self._hooks = (before_send,) if callable(before_send) else tuple(before_send)
        self._redact = Redactor(
            redact_keys,
            allow=redact_allow if redact_allow is not None else DEFAULT_REDACT_ALLOW,
        )
        self._sample = dict(sample_rates or {})

    def _admit(self) -> bool:
        raise NotImplementedError

    def _route(self, event: Event) -> Event:
        raise NotImplementedError

    def _after_pending(self, event: Event) -> Event:
        raise NotImplementedError

    def count_dropped(
        self, event: Event | None, reason: str, detail: str | None = None
    ) -> None:
        raise NotImplementedError

    # --- the hot path ----------------------------------------------------------------
    def track(
        self,
        name: str,
        props: t.Mapping[str, t.Any] | None = None,
        /,
        *,
        properties: t.Mapping[str, t.Any] | None = None,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        traits: t.Mapping[str, t.Any] | None = None,
        context: t.Mapping[str, t.Any] | None = None,
        timestamp: float | _dt.datetime | None = None,
        event_id: str | None = None,
    ) -> Event | None:
        """Record that something happened; returns the event, or ``None`` if dropped.

        ``properties`` may be given by position or by keyword. Identity and
        context not given here come from the current scope (the request
        being handled, or :func:`trackware.identify`). Never raises, except
        :class:`InvalidEventError` when the tracker is strict: an event that
        breaks a rule (see the README's "Events") is counted as
        ``dropped["invalid"]`` and logged with the rule. Never blocks on I/O,
        and the work it does is bounded whatever it is given.
        """
        try:
            if (self._forks_seen != _lifecycle.forks or not self._accepting) and (
                not self._admit()
            ):
                return None
            if properties is not None:
                if props is not None:
                    raise Invalid(
                        "properties given twice: by position and as properties="
                    )
                props = properties
            limit = self._max_event_bytes
            if type(name) is not str or not name or not name.isascii():
                name = check_name(name, limit)
            if self._sample:
                rate = self._sample.get(name)
                if rate is not None and random.random() >= rate:
                    self.count_dropped(None, "sampled")
                    return None
            redact = self._redact
            verdicts = redact.verdicts  # known keys: a dict lookup, not a call
            size = 96 + len(name)
            event_props: dict[str, t.Any]
            if props:
                if type(props) is not dict:
                    if not isinstance(props, Mapping):
                        raise Invalid(
                            f"properties must be a dict, not {type(props).__name__}"
                        )
                    if len(props) > MAX_ITEMS:
                        sanitize(props, redact, PROPERTIES, limit)  # raises
                elif len(props) > MAX_ITEMS:
                    sanitize(props, redact, PROPERTIES, limit)  # raises, at once
                # One pass over flat values; anything else (nested or rich
                # values, non-ASCII text, a key to redact, a bad key) takes
                # the full pass: validate, redact (a deep copy) and size,
                # with bounded work (trackware._validate.sanitize).
                event_props = dict(props)
                for key, value in event_props.items():
                    if type(key) is str and (
                        verdicts.get(key) is False or not redact(key)
                    ):
                        tv = type(value)
                        if tv is str:
                            if value.isascii():
                                size += len(key) + len(value) + 6
                                continue
                            if size + len(value) <= limit:
                                try:  # (inline: as cheap as it gets)
                                    value.encode("utf-8")
                                except UnicodeEncodeError:
                                    pass  # the full pass says why
                                else:
                                    size += len(key) + len(value) + 6
                                    continue
                        elif tv is int:
                            if -NUMBER_BOUND < value < NUMBER_BOUND:
                                size += len(key) + 12
                                continue
                        elif (
                            tv is bool
                            or value is None
                            or (tv is float and value - value == 0.0)
                        ):
                            size += len(key) + 12
                            continue
                    event_props, props_size = sanitize(
                        event_props, redact, PROPERTIES, limit
                    )
                    size = 96 + len(name) + props_size
                    break
            else:
                event_props = {}
            if traits:
                traits, traits_size = sanitize(traits, redact, TRAITS, limit)
                size += traits_size
            if context:
                context, context_size = sanitize(context, redact, CONTEXT, limit)
                size += context_size
            if size > limit:
                raise Invalid(
                    f"the event is too large: about {size:,} bytes encoded, over "
                    f"the {limit:,} an event may have (max_batch_bytes)"
                )
            scope: Scope | None = _scope_get()
            if scope is not None:
                if user_id is None:
                    user_id = scope.user_id
                if anonymous_id is None:
                    anonymous_id = scope.anonymous_id
                if email is None:
                    email = scope.email
                if phone is None:
                    phone = scope.phone
                scope_traits = scope.traits
                if scope_traits:
                    # Redact (and validate: integrations may set them directly)
                    # once per traits dict: scopes replace it, never mutate it.
                    cached = scope.traits_cache
                    if (
                        cached is None
                        or cached[0] is not scope_traits
                        or cached[1] is not redact
                    ):
                        cached = (
                            scope_traits,
                            redact,
                            self._sendable_traits(scope_traits),
                        )
                        scope.traits_cache = cached
                    scope_traits = cached[2]
                if traits:
                    event_traits = dict(scope_traits)
                    event_traits.update(traits)
                else:
                    event_traits = scope_traits
                if context:
                    ctx = dict(scope.context)
                    ctx.update(context)
                else:
                    ctx = scope.context
                # Identity, given or from the scope (which integrations and
                # identity callbacks set directly), is checked once per scope
                # while it stays the same (strings are immutable).
                try:
                    known = scope.identity_cache
                except AttributeError:  # a scope made without __init__
                    known = None
                if (
                    known is None
                    or known[0] is not user_id
                    or known[1] is not anonymous_id
                    or known[2] is not email
                    or known[3] is not phone
                ):
                    known = _identity(user_id, anonymous_id, email, phone)
                    scope.identity_cache = known
                    user_id, anonymous_id, email, phone = known
            else:
                event_traits = traits if traits else {}  # type: ignore[assignment]
                ctx = context if context else {}  # type: ignore[assignment]
                if (
                    user_id is not None
                    or anonymous_id is not None
                    or email is not None
                    or phone is not None
                ):
                    user_id, anonymous_id, email, phone = _identity(
                        user_id, anonymous_id, email, phone
                    )
            event = make_event(
                name,
                event_props,
                user_id,
                anonymous_id,
                email,
                phone,
                event_traits,
                ctx,
                _now()
                if timestamp is None
                else timestamp
                if type(timestamp) is float
                and MIN_TIMESTAMP <= timestamp < END_TIMESTAMP
                else unix_time(timestamp),
                size,
                None if event_id is None else check_event_id(event_id),
            )
            if self._hooks:
                result = self._run_hooks(event)
                if result is None:
                    return None
                event = result
            if self._pending:
                return self._after_pending(event)
            return self._route(event)
        except Invalid as exc:
            self.reject_invalid(str(exc))
            return None
        except InvalidEventError:
            raise
        except Exception as exc:
            _log.error(
                "track-internal",
                "trackware: track(%r) failed internally: %s",
                name if type(name) is str and len(name) < 200 else type(name),
                type(exc).__name__,
                exc_info=True,
            )
            self.count_dropped(None, "internal_error")
            return None

    def _run_hooks(self, event: Event) -> Event | None:
        """The ``before_send`` hooks, in order; then the event they leave is
        checked and redacted again in full (:meth:`_recheck`), whether they
        replaced it or changed it in place. ``None``: dropped (counted)."""
        original = event
        name = event.name
        for hook in self._hooks:
            try:
                result = hook(event)
            except InvalidEventError as exc:
                # Event.replace() or Event(...) refused what the hook made.
                self.reject_invalid(
                    f"before_send hook {getattr(hook, '__qualname__', hook)!r} "
                    f"made an invalid event: {exc}"
                )
                return None
            except Exception:
                _log.error(
                    f"hook:{getattr(hook, '__qualname__', hook)}",
                    "trackware: before_send hook %r raised; event %r dropped",
                    getattr(hook, "__qualname__", hook),
                    name,
                    exc_info=True,
                )
                self.count_dropped(event, "hook_error")
                return None
            if result is None:
                self.count_dropped(event, "before_send")
                return None
            if result is not event and type(result) is not Event:
                _log.error(
                    f"hook-type:{getattr(hook, '__qualname__', hook)}",
                    "trackware: before_send hook %r returned %s, not an "
                    "Event or None; event %r dropped",
                    getattr(hook, "__qualname__", hook),
                    type(result).__name__,
                    name,
                )
                self.count_dropped(event, "hook_error")
                return None
            event = result
        del original
        return self._recheck(event)

    def _recheck(self, event: Event) -> Event:
        """Check, redact and size again everything a ``before_send`` hook can
        change: name, ids, email, phone, properties, traits, context,
        timestamp (raises ``Invalid``)."""
        raw_id, name, props, uid, anon, email, phone, traits, ctx, ts, size = checked(
            tuple(event), self._redact, self._max_event_bytes
        )
        return make_event(
            name, props, uid, anon, email, phone, traits, ctx, ts, size, raw_id
        )

    def _sendable_traits(self, traits: dict[str, t.Any]) -> dict[str, t.Any]:
        kept, reasons = valid_subset(traits, self._redact, TRAITS)
        for reason in reasons:
            _log.warn(f"traits:{reason[:80]}", "trackware: trait left out: %s", reason)
        return kept

    def reject_invalid(self, reason: str) -> None:
        """Count an event that breaks a rule as ``dropped["invalid"]`` and log
        ``reason`` (a strict tracker raises :class:`InvalidEventError`
        instead). For code that calls ``track()`` for others (bridges, the
        ``action`` receiver, ``@tracked``) and finds the call itself wrong."""
        if self.strict:
            raise InvalidEventError(reason)
        _log.warn(f"invalid:{reason[:80]}", "trackware: event dropped: %s", reason)
        self.count_dropped(None, "invalid", reason)
