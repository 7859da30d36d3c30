"""The Tracker: builds events on the caller's thread and hands them to destinations."""

from __future__ import annotations

import atexit
import collections
import datetime as _dt
import itertools
import os
import pathlib
import random
import sys
import threading
import time
import typing as t
import weakref
from collections.abc import Mapping

import blinker

from . import _config, _env, _intake, _lifecycle, _log, signals
from ._config import TrackerStats
from ._context import Scope, _scope
from ._deadletter import DeadLetter, JSONLinesDeadLetter
from ._event import (
    _NUMBER_BOUND,
    CONTEXT,
    END_TIMESTAMP,
    MAX_EMAIL_LENGTH,
    MAX_ID_LENGTH,
    MAX_ITEMS,
    MAX_PHONE_LENGTH,
    MIN_TIMESTAMP,
    PROPERTIES,
    TRAITS,
    Event,
    _fast_bits,
    _Invalid,
    check_event_id,
    check_name,
    checked,
    sanitize,
    text_field,
    unix_time,
    valid_subset,
)
from ._queue import EventQueue, MemoryQueue
from ._redact import DEFAULT_REDACT_ALLOW, Redactor
from ._retry import RetryPolicy
from ._worker import Destination, _count_value, _worker_threads
from .exceptions import ConfigurationError, InvalidEventError
from .exporters._base import BaseExporter, Exporter

if t.TYPE_CHECKING:
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from ._config import DestinationStats, TrackerOptions
    from ._intake import PageRecord

__all__ = [
    "Bridge",
    "Tracker",
    "bridge",
    "flush",
    "get_tracker",
    "init",
    "set_tracker",
    "shutdown",
    "stats",
    "track",
]

EventHook = t.Callable[[Event], "Event | None"]
QueueFactory = t.Callable[[Exporter], EventQueue]

_DEFAULT = object()
_live: weakref.WeakSet[Tracker] = weakref.WeakSet()
_tracked_signal = signals.event_tracked
_new_tuple = tuple.__new__
_now = time.time
_getpid = os.getpid
#: Forks seen by this process's children (bumped after every ``os.fork()``):
#: track() compares it instead of making a ``getpid()`` syscall per event.
_forks = 0


def _takes_all(exporter: Exporter) -> bool:
    """Does ``exporter.applies`` accept every event (``BaseExporter.applies``
    without an ``events=`` list)?"""
    method = getattr(exporter.applies, "__func__", None)
    return method is BaseExporter.applies and getattr(exporter, "_only", 0) is None


def _identity(
    user_id: t.Any, anonymous_id: t.Any, email: t.Any, phone: t.Any
) -> tuple[str | None, str | None, str | None, str | None]:
    """An event's identity fields checked: ASCII strings of a sane length
    pass at once; anything else is looked at closely (user_id and
    anonymous_id of other types converted with str(), as always). Raises
    ``_Invalid``."""
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


class Bridge:
    """A connection from a blinker signal to a tracker; ``disconnect()`` undoes it."""

    def __init__(self, signal: blinker.Signal, receiver: t.Callable[..., None]) -> None:
        self.signal = signal
        self.receiver = receiver

    def disconnect(self) -> None:
        self.signal.disconnect(self.receiver)


class Tracker:
    """Collects events and delivers them to its exporters in the background.

    Each exporter becomes a *destination* with its own bounded queue, worker
    thread, retry policy and circuit breaker, so one slow or failing vendor
    never delays another. ``track()`` only builds the event and puts it on the
    queues; mapping, encoding and I/O happen on the workers.

    Args:
        exporters: where events go.
        max_queue_size: events each destination's queue holds at most.
        max_queue_bytes: approximate bytes each destination's queue holds at most.
        max_batch_size: events per export call (default: each exporter's own
            batch size; an exporter's cap always wins if lower).
        max_batch_bytes: approximate bytes per export call; also the largest
            event ``track()`` accepts (a bigger one is rejected as invalid).
        flush_interval: the longest an event waits for its batch to fill, seconds.
        queue_full_policy: ``"drop_oldest"`` (default), ``"drop_newest"`` or
            ``"block"`` (wait up to ``block_timeout`` for space). Drops are
            counted in ``stats()`` and announced on ``signals.event_dropped``.
        block_timeout: the longest ``track()`` blocks under ``"block"``.
        retry: the default :class:`RetryPolicy` (an exporter may bring its own).
        dead_letter: where refused and given-up events are kept: a
            :class:`DeadLetter`, a file path, ``None`` to keep none (they are
            still counted), or by default the JSON-lines file at
            ``$TRACKWARE_DEAD_LETTER_PATH`` or
            ``~/.local/state/trackware/dead-letter.jsonl``.
        before_send: hooks run on every event in order; each returns the
            (possibly replaced) event, or ``None`` to drop it.
        redact_keys: the key words whose values are replaced by
            ``"[redacted]"`` (default: password, token, secret, authorization,
            card, cvv, ssn and friends; see ``trackware.DEFAULT_REDACT_WORDS``).
        redact_allow: exact keys never redacted (default: ``serveToken``).
        filters: per-destination predicates, by destination name.
        sample_rates: per event name, the fraction of events kept (0..1).
        strict: raise :class:`InvalidEventError` from ``track()`` for invalid
            events instead of dropping them (for development and tests).
        enabled: ``False`` turns ``track()`` into a counted no-op (also
            ``TRACKWARE_DISABLED=1``).
        shutdown_timeout: the budget of ``shutdown()`` and of the at-exit flush.
        register_atexit: deliver what is queued when the interpreter exits,
            and before the process ends by SIGTERM (see trackware._lifecycle).
        queue_factory: builds each destination's queue (default: in memory).
    """

    #: The value of ``_forks`` when the process id was last checked (-1: not
    #: yet). Where ``os.register_at_fork`` is missing, so is ``os.fork``.
    _forks_seen = -1

    def __init__(
        self,
        exporters: Exporter | t.Iterable[Exporter] = (),
        *,
        max_queue_size: int = 10_000,
        max_queue_bytes: int = 8 * 1024 * 1024,
        max_batch_size: int | None = None,
        max_batch_bytes: int = 1024 * 1024,
        flush_interval: float = 1.0,
        queue_full_policy: str = "drop_oldest",
        block_timeout: float = 0.1,
        retry: RetryPolicy | None = None,
        dead_letter: t.Any = _DEFAULT,
        before_send: EventHook | t.Iterable[EventHook] = (),
        redact_keys: t.Iterable[str] | None = None,
        redact_allow: t.Iterable[str] | None = None,
        filters: t.Mapping[str, t.Callable[[Event], bool]] | None = None,
        sample_rates: t.Mapping[str, float] | None = None,
        strict: bool = False,
        enabled: bool = True,
        shutdown_timeout: float = 5.0,
        register_atexit: bool = True,
        queue_factory: QueueFactory | None = None,
    ) -> None:
        if isinstance(exporters, Exporter):
            exporters = [exporters]
        exporters = list(exporters)
        if (max_batch_size is not None and max_batch_size < 1) or max_batch_bytes < 1:
            raise ConfigurationError("max_batch_size and max_batch_bytes must be >= 1")
        if flush_interval < 0 or shutdown_timeout < 0:
            raise ConfigurationError("flush_interval and shutdown_timeout must be >= 0")
        for rate_name, rate in (sample_rates or {}).items():
            if not 0.0 <= rate <= 1.0:
                raise ConfigurationError(
                    f"sample_rates[{rate_name!r}] must be between 0 and 1, not {rate}"
                )
        names: set[str] = set()
        for exporter in exporters:
            if not isinstance(exporter, Exporter):
                raise ConfigurationError(
                    f"{exporter!r} is not an exporter: it needs name, "
                    "max_batch_size, applies(), export() and close()"
                )
            if exporter.name in names:
                raise ConfigurationError(
                    f"two exporters are named {exporter.name!r}: pass name=... to "
                    "one of them so stats and dead letters can tell them apart"
                )
            names.add(exporter.name)
        unknown = set(filters or ()) - names
        if unknown:
            raise ConfigurationError(
                f"filters name unknown destination(s) {sorted(unknown)}; "
                f"destinations are {sorted(names)}"
            )
        self.strict = strict
        #: track() rejects (as invalid) an event whose approximate encoded
        #: size is larger: it could only ever be sent alone, over the limit.
        self._max_event_bytes = max_batch_bytes
        _env.check_environment()  # a misspelt TRACKWARE_DISABLED is reported
        self.enabled = enabled and os.environ.get("TRACKWARE_DISABLED", "") not in (
            "1",
            "true",
            "yes",
        )
        self.shutdown_timeout = shutdown_timeout
        self.dead_letter = self._make_dead_letter(dead_letter)
        self._hooks: tuple[EventHook, ...] = (
            (before_send,) if callable(before_send) else tuple(before_send)
        )
        self._redact = Redactor(
            redact_keys,
            allow=redact_allow if redact_allow is not None else DEFAULT_REDACT_ALLOW,
        )
        self._sample = dict(sample_rates or {})
        self._queue_factory: QueueFactory = queue_factory or (
            lambda _exp: MemoryQueue(
                max_queue_size,
                max_queue_bytes,
                policy=queue_full_policy,
                block_timeout=block_timeout,
            )
        )
        retry = retry or RetryPolicy()
        self.destinations: tuple[Destination, ...] = tuple(
            Destination(
                self,
                exporter,
                self._queue_factory(exporter),
                max_batch_size=max_batch_size or exporter.max_batch_size,
                max_batch_bytes=max_batch_bytes,
                flush_interval=flush_interval,
                retry=retry,
                dead_letter=self.dead_letter,
                event_filter=(filters or {}).get(exporter.name),
            )
            for exporter in exporters
        )
        self._routes = self._build_routes()
        self._offer_many = self._build_offer_many()
        self._lock = threading.Lock()
        #: For integrations: whether page events may be recorded with
        #: record_page() and built off the request thread (nothing must run
        #: on that thread for them: no hooks, no sampling, no redacted page key).
        self.pages_deferred = (
            not self._hooks
            and not self._sample
            and self._redact.page_keys_clear
            and all(
                getattr(d.queue, "policy", None) != "block" for d in self.destinations
            )
        )
        self._defer_pages = self.pages_deferred  # renovation: remove at the end
        self._init_intake()
        self._tracked = itertools.count()
        self._unrouted = itertools.count()
        self._dropped: collections.Counter[str] = collections.Counter()
        self._pid = os.getpid()
        self._forks_seen = _forks  # this process's, as of now
        self._shut = False
        self._accepting = self.enabled
        self._shutdown_lock = threading.Lock()
        self._bridges: list[Bridge] = []
        if register_atexit:
            _live.add(self)
            _watch_exit()

    @classmethod
    def from_env(
        cls,
        exporters: Exporter | t.Iterable[Exporter] = (),
        *,
        environ: t.Mapping[str, str] | None = None,
        **options: Unpack[TrackerOptions],
    ) -> Tracker:
        """A tracker configured by ``TRACKWARE_*`` environment variables
        (``environ``, default ``os.environ``); keyword options win over them.

        A vendor's exporter is added when any of its ``TRACKWARE_<VENDOR>_*``
        variables is set, built by that exporter's ``from_env()`` (MXO:
        ``InteractionExporter`` when ``TRACKWARE_MXO_CLIENT_ID`` or
        ``_CLIENT_SECRET`` is set, else ``LightweightExporter``); an
        ``HTTPExporter`` for ``TRACKWARE_HTTP_URL``; then ``exporters``.
        Tracker options come from ``TRACKWARE_FLUSH_INTERVAL``,
        ``TRACKWARE_MAX_QUEUE_SIZE``, ``TRACKWARE_MAX_BATCH_SIZE``,
        ``TRACKWARE_SHUTDOWN_TIMEOUT``, ``TRACKWARE_QUEUE_FULL_POLICY``,
        ``TRACKWARE_STRICT``, ``TRACKWARE_DEAD_LETTER_PATH`` and
        ``TRACKWARE_DISABLED``. Which destinations were built is logged
        (INFO, names only). See docs/configuration.md.

        Raises:
            ConfigurationError: a vendor configured in part (naming the
                missing variables), a value that does not parse, or no
                destination at all while tracking is enabled (naming the
                variables to set).
        """
        extra = [exporters] if isinstance(exporters, Exporter) else list(exporters)
        built, merged = _config.build_arguments(environ, extra, options)
        try:
            return cls(built, **merged)
        except BaseException:
            for exporter in built[: len(built) - len(extra)]:
                try:
                    exporter.close()
                except Exception:  # pragma: no cover - closing a fresh exporter
                    pass
            raise

    @staticmethod
    def _make_dead_letter(value: t.Any) -> DeadLetter | None:
        if value is _DEFAULT:
            return JSONLinesDeadLetter()
        if value is None:
            return None
        if isinstance(value, (str, pathlib.PurePath)):
            return JSONLinesDeadLetter(value)
        if isinstance(value, DeadLetter):
            return value
        raise ConfigurationError(
            "dead_letter must be a path, a DeadLetter (e.g. "
            "trackware.JSONLinesDeadLetter(path)), or None"
        )

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
            if (self._forks_seen != _forks or not self._accepting) and (
                not self._admit()
            ):
                return None
            if properties is not None:
                if props is not None:
                    raise _Invalid(
                        "properties given twice: by position and as properties="
                    )
                props = properties
            limit = self._max_event_bytes
            if type(name) is not str or not name or not name.isascii():
                name = check_name(name, limit)
            if self._sample:
                rate = self._sample.get(name)
                if rate is not None and random.random() >= rate:
                    self._drop(None, "sampled")
                    return None
            redact = self._redact
            verdicts = redact._cache  # known keys: a dict lookup, not a call
            size = 96 + len(name)
            event_props: dict[str, t.Any]
            if props:
                if type(props) is not dict:
                    if not isinstance(props, Mapping):
                        raise _Invalid(
                            f"properties must be a dict, not {type(props).__name__}"
                        )
                    if len(props) > MAX_ITEMS:
                        sanitize(props, redact, PROPERTIES, limit)  # raises
                elif len(props) > MAX_ITEMS:
                    sanitize(props, redact, PROPERTIES, limit)  # raises, at once
                # One pass over flat values; anything else (nested or rich
                # values, non-ASCII text, a key to redact, a bad key) takes
                # the full pass: validate, redact (a deep copy) and size,
                # with bounded work (trackware._event.sanitize).
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
                            if -_NUMBER_BOUND < value < _NUMBER_BOUND:
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
                raise _Invalid(
                    f"the event is too large: about {size:,} bytes encoded, over "
                    f"the {limit:,} an event may have (max_batch_bytes)"
                )
            scope: Scope | None = _scope.get()
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
                    cached = scope._clean_traits
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
                        scope._clean_traits = cached
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
                    known = scope._checked_ids
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
                    scope._checked_ids = known
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
            event: Event = _new_tuple(
                Event,
                (
                    _fast_bits(128) if event_id is None else check_event_id(event_id),
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
                ),
            )
            if self._hooks:
                result = self._run_hooks(event)
                if result is None:
                    return None
                event = result
            if self._pending:
                return self._after_pending(event)
            return self._route(event)
        except _Invalid as exc:
            self._invalid(str(exc))
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
            self._drop(None, "internal_error")
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
                self._invalid(
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
                self._drop(event, "hook_error")
                return None
            if result is None:
                self._drop(event, "before_send")
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
                self._drop(event, "hook_error")
                return None
            event = result
        del original
        return self._recheck(event)

    def _route(self, event: Event) -> Event:
        """Offer a finished event to every destination that takes it (the last
        step of :meth:`track` and of recorded page events)."""
        routed = False
        for applies, flt, offer, dest, not_applicable in self._routes:
            try:
                if applies is not None and not applies(event):
                    not_applicable()
                    continue
                if flt is not None and not flt(event):
                    dest.count_filtered()
                    continue
            except Exception:
                # A broken filter (or exporter check) costs this event this
                # destination only, never the others.
                self._route_failed(dest, event)
                continue
            offer(event)
            routed = True
        next(self._tracked)  # itertools.count: atomic without a lock
        if not routed:
            next(self._unrouted)
        if _tracked_signal.receivers:
            signals.event_tracked.send(self, event=event)
        return event

    # --- page events recorded by the integrations ----------------------------------
    def record_page(self, record: PageRecord) -> None:
        """For integrations: track the page event ``record`` describes, recorded
        when its request ended (see :class:`trackware._intake.PageRecord`).

        The record normally waits for the tracker's intake thread, which builds
        and routes waiting records in batches, off the request thread. Only
        trackers whose ``pages_deferred`` holds (no hooks, no sampling, page
        keys not redacted, no blocking queue) should get records. A record is
        built here instead when something must see the event on this thread
        (an ``event_tracked`` receiver, e.g.
        ``trackware.testing.capture_events``), when the tracker is not
        accepting, or after a fork; and the waiting records are built here when
        the intake is ``PENDING_MAX`` behind (back-pressure rather than
        unbounded memory).
        """
        pending = self._pending
        if (
            self._accepting
            and self._forks_seen == _forks
            and not _tracked_signal.receivers
        ):
            pending.append(record)
            waiting = len(pending)
            if waiting == 1:
                self._pages.wake()
            elif waiting > _intake.PENDING_MAX:
                self._pages.drain()  # the intake thread is behind: catch up here
            if not self._accepting:  # shutdown began meanwhile: never strand it
                self._pages.drain()
        elif self._admit():
            pending.append(record)  # after what waits: the order is kept
            self._pages.drain()

    # renovation: remove when integrations switch (they call record_page)
    if t.TYPE_CHECKING:

        def _page(self, record: t.Any) -> None: ...

    else:
        _page = record_page

    def _after_pending(self, event: Event) -> Event:
        """An event ``track()`` built while recorded page events wait: it
        follows them (each destination gets events in the order tracked)."""
        pending = self._pending
        pending.append(event)
        waiting = len(pending)
        if _tracked_signal.receivers or waiting > _intake.PENDING_MAX:
            # Receivers see it now, on this thread; or back-pressure.
            self._pages.drain()
        elif waiting == 1:  # drained meanwhile
            self._pages.wake()
        return event

    def _admit(self) -> bool:
        """What every new event passes first: after a fork, fresh state; when
        not accepting, the event is counted as dropped."""
        if self._forks_seen != _forks:
            self._forks_seen = _forks
            if self._pid != _getpid():
                self._after_fork()
        if not self._accepting:
            self._drop(None, "shutdown" if self._shut else "disabled")
            return False
        return True

    def _init_intake(self) -> None:
        self._pages = _intake.Intake(self._route_many, self._drop)
        #: The intake's deque, read by track() on every event.
        self._pending = self._pages.pending
        self._tracked_in_batches = 0

    def _drain(self) -> None:
        """Build and route every waiting page record (see :class:`Intake`)."""
        self._pages.drain()

    def _route_many(self, events: list[Event]) -> None:
        """:meth:`_route` for a batch: one queue operation per destination when
        every destination takes every event (no ``applies`` list, no filter)."""
        offer_many = self._offer_many
        if offer_many is None or _tracked_signal.receivers:
            for event in events:
                self._route(event)
            return
        for offer in offer_many:
            offer(events)
        with self._lock:
            self._tracked_in_batches += len(events)

    def _sendable_traits(self, traits: dict[str, t.Any]) -> dict[str, t.Any]:
        kept, reasons = valid_subset(traits, self._redact, TRAITS)
        for reason in reasons:
            _log.warn(f"traits:{reason[:80]}", "trackware: trait left out: %s", reason)
        return kept

    def _route_failed(self, dest: Destination, event: Event) -> None:
        _log.error(
            f"route:{dest.name}",
            "trackware: the filter or applies() of destination %r raised; event %r "
            "not sent there (counted as filtered)",
            dest.name,
            event.name,
            exc_info=True,
        )
        dest.count_filtered()

    def _recheck(self, event: Event) -> Event:
        """Check, redact and size again everything a ``before_send`` hook can
        change: name, ids, email, phone, properties, traits, context,
        timestamp (raises ``_Invalid``)."""
        result: Event = _new_tuple(
            Event, checked(tuple(event), self._redact, self._max_event_bytes)
        )
        return result

    def _build_routes(
        self,
    ) -> tuple[
        tuple[
            t.Callable[[Event], bool] | None,
            t.Any,
            t.Callable[[Event], None],
            Destination,
            t.Callable[[], int],
        ],
        ...,
    ]:
        """Bound methods looked up once: the hot path calls them per event.

        ``applies`` is ``None`` for an exporter that takes every event (the
        base class's ``applies`` with no ``events=`` list): no call per event.
        """
        return tuple(
            (
                None if _takes_all(d.exporter) else d.exporter.applies,
                d.event_filter,
                d.offer,
                d,
                d.count_not_applicable,
            )
            for d in self.destinations
        )

    def _build_offer_many(self) -> tuple[t.Callable[[list[Event]], None], ...] | None:
        """Each destination's ``offer_many``, when every one takes every event
        (see :meth:`_route_many`); ``None`` otherwise, or with no destination
        (the events are counted as unrouted one by one)."""
        if not self._routes or any(
            applies is not None or flt is not None
            for applies, flt, _, _, _ in self._routes
        ):
            return None
        return tuple(d.offer_many for d in self.destinations)

    def _invalid(self, reason: str) -> None:
        if self.strict:
            raise InvalidEventError(reason)
        _log.warn(f"invalid:{reason[:80]}", "trackware: event dropped: %s", reason)
        self._drop(None, "invalid", reason)

    def _drop(
        self, event: Event | None, reason: str, detail: str | None = None
    ) -> None:
        with self._lock:
            self._dropped[reason] += 1
        if signals.event_dropped.receivers:
            signals.event_dropped.send(
                self, event=event, reason=reason, destination=None, detail=detail
            )

    # --- bus -------------------------------------------------------------------------
    def bridge(
        self,
        signal: blinker.Signal,
        name: str,
        *,
        properties: t.Mapping[str, t.Any] | t.Callable[..., t.Any] | None = None,
        sender: t.Any = blinker.ANY,
        **track_kwargs: t.Any,
    ) -> Bridge:
        """Track an event named ``name`` every time ``signal`` is sent.

        ``properties`` is a dict, or a callable receiving the signal's
        ``(sender, **kwargs)`` and returning the properties (or ``None`` to
        skip that occurrence). The connection is strong: the bridge lives until
        :meth:`Bridge.disconnect`. A failing callable is logged and counted,
        never raised into the code that sent the signal.
        """
        return _connect_bridge(self, signal, name, properties, sender, track_kwargs)

    # --- delivery control ------------------------------------------------------------
    def flush(
        self,
        timeout: float | None = 10.0,
        *,
        destinations: t.Iterable[str] | None = None,
    ) -> bool:
        """Wait until every event tracked before this call is settled.

        Settled means sent, rejected, or kept in the dead letter. Returns
        ``True`` if that happened within ``timeout`` seconds, else ``False``
        (delivery goes on in the background). Safe to call from any thread;
        on a trackware worker thread it returns ``False`` at once.

        Args:
            timeout: seconds to wait at most (``None``: no limit).
            destinations: only wait for these destinations (by name).
        """
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        self._drain()
        wanted = None if destinations is None else set(destinations)
        if wanted is not None and not wanted <= {d.name for d in self.destinations}:
            raise ConfigurationError(f"flush(): unknown destination(s) in {wanted}")
        ok = True
        for dest in self.destinations:
            if wanted is not None and dest.name not in wanted:
                continue
            if not dest.flush(deadline):
                ok = False
        return ok

    def shutdown(self, timeout: float | None = None) -> bool:
        """Deliver what is queued within ``timeout`` seconds, then stop. Idempotent.

        Destinations drain in parallel within the one budget. Events still
        queued when it runs out are written to the dead letter (reason
        ``shutdown``) and counted, never silently lost. Later ``track()``
        calls are counted as dropped (``shutdown``). Returns ``True`` if
        everything was delivered.
        """
        with self._shutdown_lock:
            if self._shut:
                return True
            self._shut = True
            self._accepting = False
        # Page events recorded before this point are delivered like the rest.
        self._pages.drain()
        self._pages.close()  # the intake thread ends
        budget = self.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        for dest in self.destinations:
            dest.request_stop(deadline)
        # Just before the deadline, every destination still busy stops
        # sending at once (Destination.halt), so that each settles its batch
        # exactly within the one budget and nothing leaves after we return.
        for dest in self.destinations:
            dest.wait_stopped()
        for dest in self.destinations:
            dest.halt()
        ok = True
        for dest in self.destinations:
            if not dest.shutdown(deadline):
                ok = False
        for dest in self.destinations:
            try:
                dest.exporter.close()
            except Exception:
                _log.error(
                    f"close:{dest.name}",
                    "trackware: closing %s failed",
                    dest.name,
                    exc_info=True,
                )
        for b in self._bridges:
            b.disconnect()
        _live.discard(self)
        if not ok:
            left = {d.name: d.queue.in_flight() for d in self.destinations}
            _log.warn(
                "shutdown-incomplete",
                "trackware: shutdown budget of %.1fs ran out; undelivered events are "
                "in the dead letter (in flight: %s)",
                budget,
                left,
            )
        return ok

    def stats(self) -> TrackerStats:
        """Counters for the tracker and each destination, in this process
        (a :class:`trackware.TrackerStats`, ready for ``json.dumps``).

        Each process counts its own: under a server with several worker
        processes, each worker answers with its own counters.

        ``tracked`` counts events built and routed; ``dropped`` counts, by
        reason, events that never reached a destination. Per destination:
        ``enqueued`` (offered to its queue) always equals ``sent + rejected +
        failed + sum(dropped) + queue_depth + in_flight`` once nothing is
        moving; ``dead_lettered`` counts what was written to the dead letter.
        """
        self._drain()  # recorded page events are counted as tracked
        with self._lock:
            tracked = _count_value(self._tracked) + self._tracked_in_batches
            unrouted = _count_value(self._unrouted)
            dropped = dict(self._dropped)
        destinations = {
            d.name: t.cast("DestinationStats", d.stats()) for d in self.destinations
        }
        return {
            "tracked": tracked,
            "unrouted": unrouted,
            "dropped": dropped,
            "destinations": destinations,
        }

    # --- process lifecycle -----------------------------------------------------------
    def _after_fork(self) -> None:
        """In a forked child: fresh queues, threads, locks and counters."""
        self._lock = threading.Lock()
        self._shutdown_lock = threading.Lock()
        self._pid = os.getpid()
        self._tracked = itertools.count()
        self._unrouted = itertools.count()
        self._dropped = collections.Counter()
        # A parent thread may have been writing a dead letter at fork time.
        dead_letter_after_fork = getattr(self.dead_letter, "after_fork", None)
        if dead_letter_after_fork is not None:
            dead_letter_after_fork()
        # The parent builds and delivers what its requests recorded.
        self._init_intake()
        for dest in self.destinations:
            dest.after_fork_in_child()
        self._routes = self._build_routes()
        self._offer_many = self._build_offer_many()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        names = ", ".join(d.name for d in self.destinations)
        return f"<Tracker destinations=[{names}]>"


# --- bridges ------------------------------------------------------------------------


def _connect_bridge(
    tracker: Tracker | None,
    signal: blinker.Signal,
    name: str,
    properties: t.Mapping[str, t.Any] | t.Callable[..., t.Any] | None,
    sender: t.Any,
    track_kwargs: dict[str, t.Any],
) -> Bridge:
    if not isinstance(signal, blinker.Signal):
        raise ConfigurationError(f"bridge() needs a blinker signal, not {signal!r}")
    if not isinstance(name, str) or not name:
        raise ConfigurationError("bridge() needs a non-empty event name")

    def receiver(sent_by: t.Any, /, **kwargs: t.Any) -> None:
        target = tracker or get_tracker()
        try:
            if callable(properties):
                props = properties(sent_by, **kwargs)
                if props is None:
                    return
            else:
                props = properties
        except Exception:
            _log.error(
                f"bridge:{name}",
                "trackware: properties callable of bridge %r raised; event dropped",
                name,
                exc_info=True,
            )
            target._drop(None, "hook_error")
            return
        target.track(name, props, **track_kwargs)

    signal.connect(receiver, sender=sender, weak=False)
    handle = Bridge(signal, receiver)
    if tracker is not None:
        tracker._bridges.append(handle)
    return handle


# --- the process default tracker ----------------------------------------------------

_default: Tracker | None = None
_default_lock = threading.Lock()


def set_tracker(tracker: Tracker) -> None:
    """Make ``tracker`` the process default used by :func:`track` and friends."""
    global _default
    if not isinstance(tracker, Tracker):
        raise ConfigurationError(f"set_tracker() needs a Tracker, not {tracker!r}")
    _default = tracker


def init(
    exporters: Exporter | t.Iterable[Exporter] = (),
    *,
    environ: t.Mapping[str, str] | None = None,
    **options: Unpack[TrackerOptions],
) -> Tracker:
    """Build a tracker with :meth:`Tracker.from_env` and make it the process
    default (:func:`set_tracker`); returns it. Call it once, at start-up.

    A default set before is replaced (not shut down: it delivers what it has
    queued at exit).

    Raises:
        ConfigurationError: as :meth:`Tracker.from_env`.
    """
    tracker = Tracker.from_env(exporters, environ=environ, **options)
    set_tracker(tracker)
    return tracker


def _adopt_default(tracker: Tracker) -> bool:
    """Make ``tracker`` the process default unless one was set (the stand-in
    :func:`get_tracker` makes does not count). The integrations call it with
    the tracker they are given; returns whether it became the default."""
    global _default
    if not isinstance(tracker, Tracker):
        return False
    with _default_lock:
        current = _default
        if current is not None and type(current) is not _NoTracker:
            return current is tracker
        _default = tracker
    if current is not None:
        # What the stand-in counted stays visible in its own stats() only:
        # say so, once, rather than let the counts seem to vanish.
        dropped = current.stats()["dropped"].get("no_tracker", 0)
        if dropped:
            _log.warn(
                "no-tracker-replaced",
                "trackware: %d event(s) tracked before a tracker was configured "
                "went nowhere (dropped['no_tracker'])",
                dropped,
            )
    return True


def get_tracker() -> Tracker:
    """The tracker for the current context: the request's, else the process default.

    With none configured, a stand-in without destinations is returned: its
    ``track()`` returns ``None`` and counts each event in its ``stats()`` as
    ``dropped["no_tracker"]`` (and how to configure a tracker is logged once)
    rather than letting events vanish.
    """
    scope = _scope.get()
    if scope is not None and scope.tracker is not None:
        return scope.tracker
    tracker = _default
    if tracker is None:
        tracker = _make_fallback()
    return tracker


class _NoTracker(Tracker):
    """The process default until one is configured (see :func:`get_tracker`).

    It is created disabled, so every event reaches ``_admit``, which counts
    it as ``no_tracker``: ``track()`` returns ``None`` for an event that goes
    nowhere, and ``trackware.stats()`` says why.
    """

    def _admit(self) -> bool:
        self._drop(None, "no_tracker")
        return False


def _make_fallback() -> Tracker:
    global _default
    with _default_lock:
        if _default is None:
            _log.warn(
                "no-tracker",
                "trackware: no tracker configured, so events go nowhere: they are "
                "counted as dropped['no_tracker'] in trackware.stats(). Configure "
                "one at start-up: trackware.init() (from TRACKWARE_* variables), "
                "trackware.set_tracker(trackware.Tracker(exporters=[...])), or "
                "Trackware(app, tracker=...) / TrackwareMiddleware(app, tracker=...).",
            )
            _default = _NoTracker(
                dead_letter=None, register_atexit=False, enabled=False
            )
        return _default


def track(
    name: str, properties: t.Mapping[str, t.Any] | None = None, /, **kwargs: t.Any
) -> Event | None:
    """Track an event with the current tracker. See :meth:`Tracker.track`
    (``properties`` may be given by position or by keyword). Returns ``None``
    when no tracker is configured (counted as ``dropped["no_tracker"]``), and
    for an unknown keyword (counted as invalid, never raised)."""
    tracker = get_tracker()
    try:
        return tracker.track(name, properties, **kwargs)
    except InvalidEventError:
        raise  # a strict tracker's
    except TypeError as exc:
        # Tracker.track raises nothing else: the call itself was refused
        # (an unknown keyword, e.g. a typo).
        tracker._invalid(f"track() was called wrongly: {exc}")
        return None


def flush(timeout: float | None = 10.0) -> bool:
    """Flush the current tracker. See :meth:`Tracker.flush`."""
    return get_tracker().flush(timeout)


def shutdown(timeout: float | None = None) -> bool:
    """Shut the current tracker down. See :meth:`Tracker.shutdown`."""
    return get_tracker().shutdown(timeout)


def stats() -> TrackerStats:
    """The current tracker's counters, in this process (each worker process
    of a server has its own). See :meth:`Tracker.stats`."""
    return get_tracker().stats()


def bridge(
    signal: blinker.Signal,
    name: str,
    *,
    properties: t.Mapping[str, t.Any] | t.Callable[..., t.Any] | None = None,
    sender: t.Any = blinker.ANY,
    **track_kwargs: t.Any,
) -> Bridge:
    """Like :meth:`Tracker.bridge`, delivering to whichever tracker is current
    when the signal is sent."""
    return _connect_bridge(None, signal, name, properties, sender, track_kwargs)


_TRACK_KEYWORDS = frozenset(
    {
        "user_id",
        "anonymous_id",
        "email",
        "phone",
        "traits",
        "context",
        "timestamp",
        "event_id",
    }
)


def _on_action(sender: t.Any, /, **kwargs: t.Any) -> None:
    target = kwargs.pop("tracker", None) or get_tracker()
    name = kwargs.pop("name", None)
    properties = kwargs.pop("properties", None)
    unknown = set(kwargs) - _TRACK_KEYWORDS
    if unknown:
        target._invalid(
            f"signals.action.send() got unknown keyword(s) {sorted(unknown)}; "
            f"it takes name, properties, tracker and {sorted(_TRACK_KEYWORDS)}"
        )
        return
    if isinstance(sender, str) and sender:
        ctx = dict(kwargs.pop("context", None) or {})
        ctx.setdefault("sender", sender)
        kwargs["context"] = ctx
    target.track(t.cast(str, name), properties, **kwargs)


signals.action.connect(_on_action, weak=False)


def _shutdown_all_at_exit() -> None:
    """The exit hook: atexit, multiprocessing's exit finalizers, and SIGTERM
    (trackware._lifecycle). Idempotent: a shut tracker leaves ``_live``."""
    trackers = list(_live)
    for tr in trackers:
        tr._drain()  # recorded page events join the queues before they stop
        for dest in tr.destinations:
            dest.request_stop(time.monotonic() + tr.shutdown_timeout)
    for tr in trackers:
        try:
            tr.shutdown()
        except Exception:  # pragma: no cover - never let exit fail
            _log.error("atexit", "trackware: at-exit shutdown failed", exc_info=True)
    # A SIGTERM held back until now (a server's re-raise) ends the process here.
    _lifecycle.release_held()


def _exit_budget() -> float:
    """The longest the exit hook may take: the trackers' budgets."""
    return sum(tr.shutdown_timeout for tr in list(_live))


def _watch_exit() -> None:
    """For each tracker registered for exit: the hooks that shut it down.

    atexit is registered at import. Ending by SIGTERM skips it: _lifecycle
    installs the SIGTERM side. A multiprocessing child leaves by os._exit(),
    which skips it too: its exit finalizers run our hook instead (a fork
    child's is registered by _after_fork_all; a spawned child's, such as a
    uvicorn worker's, here).
    """
    _lifecycle.install(_shutdown_all_at_exit, _exit_budget)
    mp_process = sys.modules.get("multiprocessing.process")
    if mp_process is not None and mp_process.parent_process() is not None:
        _register_mp_finalizer(None)


def _after_fork_all() -> None:
    global _default_lock
    _default_lock = threading.Lock()  # a parent thread may have held it
    # The child's new threads get the ids of the parent's threads (glibc hands
    # their stacks out again): a request thread must not pass for a trackware
    # worker, on which flush() returns False at once.
    _worker_threads.clear()
    for tr in list(_live):
        tr._after_fork()
    if _default is not None and _default not in _live:
        _default._after_fork()
    # multiprocessing's fork children leave through os._exit(), which skips
    # atexit; its own exit finalizers do run, so deliver from there too.
    # Its bootstrap clears finalizers registered before it runs, then calls
    # the "after forkers": register the finalizer from there.
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.register_after_fork(_mp_hook, _register_mp_finalizer)


class _MPHook:
    """A weak-referenceable key for multiprocessing's after-fork registry."""


_mp_hook = _MPHook()
#: The process whose multiprocessing exit finalizers run our hook.
_mp_finalizer_pid = 0


def _register_mp_finalizer(_: object) -> None:
    global _mp_finalizer_pid
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None and _mp_finalizer_pid != os.getpid():
        _mp_finalizer_pid = os.getpid()
        mp_util.Finalize(None, _shutdown_all_at_exit, exitpriority=100)


def _count_fork() -> None:
    global _forks
    _forks += 1


atexit.register(_shutdown_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_fork)
    os.register_at_fork(after_in_child=_after_fork_all)
