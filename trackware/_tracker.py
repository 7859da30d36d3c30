"""The Tracker: configuration, routing of prepared events to its destinations,
flush, shutdown and stats.

``Tracker.track`` is :meth:`trackware._prepare.Preparer.track`; page events
recorded by integrations wait in its :class:`~trackware._intake.Intake`.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
import typing as t
import weakref

import blinker

from . import _config, _env, _intake, _lifecycle, _log, signals
from ._backends import Backends, QueueFactory, SpoolOption
from ._bridge import Bridge
from ._config import TrackerStats
from ._event import Event
from ._prepare import EventHook, Preparer
from ._queue import DEFAULT_MAX_BYTES, DEFAULT_MAX_EVENTS
from ._retry import RetryPolicy
from ._settle import count_value
from ._worker import Destination
from .exceptions import ConfigurationError
from .exporters._base import BaseExporter, Exporter

if t.TYPE_CHECKING:
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from ._config import TrackerOptions
    from ._inspect import InspectorClient
    from ._intake import PageRecord

__all__ = ["Bridge", "EventHook", "QueueFactory", "Route", "Tracker"]

#: The trackers registered for exit (and re-made at once after a fork).
_live: weakref.WeakSet[Tracker] = weakref.WeakSet()
_tracked_signal = signals.event_tracked
_getpid = os.getpid


def _takes_all(exporter: Exporter) -> bool:
    """Does ``exporter.applies`` accept every event (``BaseExporter.applies``
    without an ``events=`` list)?"""
    method = getattr(exporter.applies, "__func__", None)
    return (
        method is BaseExporter.applies
        and isinstance(exporter, BaseExporter)
        and exporter.only_events is None
    )


class Route:
    """One destination as routing sees it: bound methods looked up once."""

    __slots__ = ("applies", "dest", "event_filter", "not_applicable", "offer")

    def __init__(self, dest: Destination) -> None:
        #: ``None`` for an exporter that takes every event (the base class's
        #: ``applies`` with no ``events=`` list): no call per event.
        self.applies: t.Callable[[Event], bool] | None = (
            None if _takes_all(dest.exporter) else dest.exporter.applies
        )
        self.event_filter: t.Callable[[Event], bool] | None = dest.event_filter
        self.offer: t.Callable[[Event], None] = dest.offer
        self.dest = dest
        self.not_applicable: t.Callable[[], int] = dest.count_not_applicable


class Tracker(Preparer):
    """Collects events and delivers them to its exporters in the background.

    Each exporter becomes a *destination* with its own bounded queue, worker
    thread, retry policy and circuit breaker, so one slow or failing vendor
    never delays another. ``track()`` only builds the event and puts it on the
    queues; mapping, encoding and I/O happen on the workers.

    Args:
        exporters: where events go.
        max_queue_size: events each destination's queue holds at most
            (default 100,000: a burst of that many ordinary events is held).
        max_queue_bytes: approximate bytes each destination's queue holds at
            most (default 64 MiB).
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
            and before the process ends by SIGTERM (see docs/architecture/front.md).
        queue_factory: builds each destination's queue (default: in memory, or
            as ``spool=``/``queue=`` say; not together with them).
        spool: a folder for the durable SQLite spool of every destination, or
            a mapping of destination name to folder (``None``: in memory);
            see docs/durable.md. ``Tracker.from_env()``: ``TRACKWARE_SPOOL``.
        durability: ``"batch"`` (default: events reach the spool in group
            commits at least every ``spool_commit_interval`` seconds) or
            ``"always"`` (in the spool file before ``track()`` returns).
        spool_commit_interval: the batch mode's commit interval, seconds.
        spool_max_bytes: the size limit of each spool file.
        spool_fsync: fsync every commit (power-loss safety, at a cost).
        spool_adopt_interval: how often, in seconds, spool files left by dead
            processes in the same folder are looked for and delivered.
        queue: a Redis URL (``redis://host:port/db``): the app only appends to
            Redis Streams and ``trackware worker`` processes deliver (see
            docs/scaling.md). ``Tracker.from_env()``: ``TRACKWARE_REDIS_URL``.
        redis_namespace: the streams are ``trackware:{namespace}:{destination}``.
        redis_maxlen: the approximate length bound of each stream (trimmed
            events are counted as dropped, reason ``redis_trimmed``).
        inspector: the URL of a ``trackware inspect`` sidecar to send a copy
            of every event and outcome to (development; see docs/inspector.md).
            Default: ``$TRACKWARE_INSPECTOR`` (read by every tracker, not
            only ``from_env()``).
        inspector_token: the sidecar's token, when it is not on loopback
            (default ``$TRACKWARE_INSPECTOR_TOKEN``).
    """

    def __init__(
        self,
        exporters: Exporter | t.Iterable[Exporter] = (),
        *,
        max_queue_size: int = DEFAULT_MAX_EVENTS,
        max_queue_bytes: int = DEFAULT_MAX_BYTES,
        max_batch_size: int | None = None,
        max_batch_bytes: int = 1024 * 1024,
        flush_interval: float = 1.0,
        queue_full_policy: str = "drop_oldest",
        block_timeout: float = 0.1,
        retry: RetryPolicy | None = None,
        dead_letter: t.Any = _config.DEFAULT_DEAD_LETTER,
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
        spool: SpoolOption = None,
        durability: str = "batch",
        spool_commit_interval: float = 0.01,
        spool_max_bytes: int = 256 * 1024 * 1024,
        spool_fsync: bool = False,
        spool_adopt_interval: float = 30.0,
        queue: str | None = None,
        redis_namespace: str = "default",
        redis_maxlen: int = 1_000_000,
        inspector: str | None = None,
        inspector_token: str | None = None,
    ) -> None:
        exporters = _config.checked_arguments(
            exporters,
            max_batch_size=max_batch_size,
            max_batch_bytes=max_batch_bytes,
            flush_interval=flush_interval,
            shutdown_timeout=shutdown_timeout,
            sample_rates=sample_rates,
            filters=filters,
        )
        Preparer.__init__(
            self,
            strict=strict,
            max_event_bytes=max_batch_bytes,
            before_send=before_send,
            redact_keys=redact_keys,
            redact_allow=redact_allow,
            sample_rates=sample_rates,
        )
        _env.check_environment()  # a misspelt TRACKWARE_DISABLED is reported
        self.enabled = enabled and os.environ.get("TRACKWARE_DISABLED", "") not in (
            "1",
            "true",
            "yes",
        )
        self.shutdown_timeout = shutdown_timeout
        self.backends = Backends(
            factory=queue_factory,
            max_queue_size=max_queue_size,
            max_queue_bytes=max_queue_bytes,
            policy=queue_full_policy,
            block_timeout=block_timeout,
            spool=spool,
            durability=durability,
            spool_commit_interval=spool_commit_interval,
            spool_max_bytes=spool_max_bytes,
            spool_fsync=spool_fsync,
            spool_adopt_interval=spool_adopt_interval,
            queue=queue,
            redis_namespace=redis_namespace,
            redis_maxlen=redis_maxlen,
        )
        self.backends.check_names([e.name for e in exporters])
        queues = [self.backends.queue_for(exporter) for exporter in exporters]
        if dead_letter is _config.DEFAULT_DEAD_LETTER:
            # With a spool, dead letters are kept beside it (replayable).
            dead_letter = self.backends.default_dead_letter() or dead_letter
        self.dead_letter = _config.dead_letter_from(dead_letter)
        retry = retry or RetryPolicy()
        self.destinations: tuple[Destination, ...] = tuple(
            Destination(
                self,
                exporter,
                queue,
                max_batch_size=max_batch_size or exporter.max_batch_size,
                max_batch_bytes=max_batch_bytes,
                flush_interval=flush_interval,
                retry=retry,
                dead_letter=self.dead_letter,
                event_filter=(filters or {}).get(exporter.name),
            )
            for exporter, queue in zip(exporters, queues, strict=True)
        )
        self._routes = tuple(Route(d) for d in self.destinations)
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
            and not self.backends.pages_on_request_thread
        )
        self._init_intake()
        self._tracked = itertools.count()
        self._unrouted = itertools.count()
        self._dropped: collections.Counter[str] = collections.Counter()
        self._pid = os.getpid()
        self._forks_seen = _lifecycle.forks  # this process's, as of now
        self._shut = False
        self._accepting = self.enabled
        self._shutdown_lock = threading.Lock()
        self._bridges: list[Bridge] = []
        #: The ``trackware inspect`` client, when ``inspector=`` is set.
        self.inspector: InspectorClient | None = None
        # Like TRACKWARE_DISABLED, read by every tracker: a development aid.
        inspector = inspector or os.environ.get("TRACKWARE_INSPECTOR") or None
        inspector_token = inspector_token or os.environ.get("TRACKWARE_INSPECTOR_TOKEN")
        if inspector:
            from . import _inspect

            self.inspector = _inspect.attach(self, inspector, token=inspector_token)
        if register_atexit:
            _live.add(self)
            _lifecycle.watch_exit()

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
        return _config.from_env(cls, exporters, environ, options)

    def _route(self, event: Event) -> Event:
        """Offer a finished event to every destination that takes it (the last
        step of :meth:`track` and of recorded page events)."""
        routed = False
        for route in self._routes:
            try:
                applies = route.applies
                if applies is not None and not applies(event):
                    route.not_applicable()
                    continue
                flt = route.event_filter
                if flt is not None and not flt(event):
                    route.dest.count_filtered()
                    continue
            except Exception:
                # A broken filter (or exporter check) costs this event this
                # destination only, never the others.
                self._route_failed(route.dest, event)
                continue
            route.offer(event)
            routed = True
        next(self._tracked)  # itertools.count: atomic without a lock
        if not routed:
            next(self._unrouted)
        if _tracked_signal.receivers:
            signals.event_tracked.send(self, event=event)
        return event

    # --- page events recorded by the integrations ----------------------------------
    def record_page(self, record: PageRecord) -> None:
        """For integrations: track the page event ``record`` describes.

        ``record.build()`` returns the :class:`Event` (or ``None`` when it
        tracked it through :meth:`track` itself); every value in ``record`` is
        taken when the request ended, so the build normally happens later, in
        order, on the tracker's intake thread. Only for a tracker whose
        ``pages_deferred`` is true. Built on this thread instead when an
        ``event_tracked`` receiver listens, when the tracker is not accepting,
        after a fork, or when too many records wait (back-pressure).
        """
        pending = self._pending
        if (
            self._accepting
            and self._forks_seen == _lifecycle.forks
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
        elif self._admit():  # (after a fork, with a fresh intake)
            self._pending.append(record)  # after what waits: the order is kept
            self._pages.drain()

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
        if self._forks_seen != _lifecycle.forks:
            self._forks_seen = _lifecycle.forks
            if self._pid != _getpid():
                self._after_fork()
        if not self._accepting:
            self.count_dropped(None, "shutdown" if self._shut else "disabled")
            return False
        return True

    def _init_intake(self) -> None:
        self._pages = _intake.Intake(self._route_many, self.count_dropped)
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

    def _build_offer_many(self) -> tuple[t.Callable[[list[Event]], None], ...] | None:
        """Each destination's ``offer_many``, when every one takes every event
        (see :meth:`_route_many`); ``None`` otherwise, or with no destination
        (the events are counted as unrouted one by one)."""
        if not self._routes or any(
            r.applies is not None or r.event_filter is not None for r in self._routes
        ):
            return None
        return tuple(d.offer_many for d in self.destinations)

    def count_dropped(
        self, event: Event | None, reason: str, detail: str | None = None
    ) -> None:
        """Count ``event`` (``None``: one not built) as dropped for ``reason``
        and announce it on ``signals.event_dropped``. For code that tracks
        for others (bridges, integrations) and drops an event itself."""
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
        handle = Bridge(signal, name, properties, sender, track_kwargs, lambda: self)
        self._bridges.append(handle)
        return handle

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
        if not self.backends.close(deadline):
            ok = False
        for b in self._bridges:
            b.disconnect()
        _live.discard(self)
        if _log.logger.isEnabledFor(logging.INFO):
            # Every exit says what happened to this tracker's events.
            _log.logger.info(
                "trackware: shut down (pid %d): %s",
                self._pid,
                _config.summary(self.stats()),
            )
        if self.inspector is not None:
            self.inspector.close(deadline)
        if not ok:
            spooled = {
                d.name: d.queue.depth()
                for d in self.destinations
                if getattr(d.queue, "durable", False) and d.queue.depth()
            }
            _log.warn(
                "shutdown-incomplete",
                "trackware: shutdown budget of %.1fs ran out; undelivered events are "
                "in the dead letter%s",
                budget,
                f", or stay in the spool for the next process: {spooled}"
                if spooled
                else "",
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
            tracked = count_value(self._tracked) + self._tracked_in_batches
            unrouted = count_value(self._unrouted)
            dropped = dict(self._dropped)
        destinations = {d.name: _config.destination_stats(d) for d in self.destinations}
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
        self._routes = tuple(Route(d) for d in self.destinations)
        self._offer_many = self._build_offer_many()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        names = ", ".join(d.name for d in self.destinations)
        return f"<Tracker destinations=[{names}]>"


# --- process lifecycle (trackware._lifecycle calls these) ---------------------------


def _shutdown_all_at_exit() -> None:
    """The exit callback: shut down every tracker registered for exit.
    Idempotent: a shut tracker leaves ``_live``."""
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


def _exit_budget() -> float:
    """The longest the exit callback may take: the trackers' budgets."""
    return sum(tr.shutdown_timeout for tr in list(_live))


def _after_fork_all() -> None:
    for tr in list(_live):
        tr._after_fork()


def after_fork(tracker: Tracker) -> None:
    """In a forked child: make ``tracker`` fresh now, not at its next event
    (for the process default, which may not be registered for exit)."""
    if tracker not in _live:
        tracker._after_fork()


_lifecycle.at_exit(_shutdown_all_at_exit, _exit_budget)
_lifecycle.on_fork(_after_fork_all)
