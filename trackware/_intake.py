"""The intake: page events the integrations record, routed in order on a
thread of the tracker's own (``trackware-intake``), off the request thread
(and built there first when recorded as a record to build).

A :class:`Tracker` owns one :class:`Intake`; integrations reach it through
``Tracker.record_page(record)``, where ``record`` is a :class:`PageRecord`.
docs/architecture/front.md says when a record is built on the recording thread instead.
"""

from __future__ import annotations

import collections
import threading
import time
import typing as t

from . import _log
from ._event import Event

__all__ = ["PENDING_MAX", "Intake", "PageRecord"]

#: Page events recorded and waiting for the intake thread, at most (beyond it
#: they are built on the recording thread: back-pressure, not unbounded memory).
PENDING_MAX = 4096
#: How long the intake thread lets page events gather after it is woken.
GATHER = 0.05


class Buildable(t.Protocol):
    """A record to build later, on another thread: every value taken when the
    request ended (its identity included)."""

    def build(self) -> Event | None:
        """The page event; ``None`` when the record tracked it through
        ``Tracker.track()`` itself instead."""
        ...


#: What an integration records when a request ends: its page event, built
#: (the integrations' common case: the intake thread only routes it, in
#: order), or a record the intake thread builds first.
PageRecord: t.TypeAlias = "Event | Buildable"


class Intake:
    """The waiting records of one tracker and the thread that builds them.

    ``pending`` holds records (and events ``track()`` built while records
    waited, to keep the order); :meth:`drain` builds and routes them, in
    order, on any thread; ``route_many`` gets each built batch and ``drop``
    counts a record whose build failed.
    """

    def __init__(
        self,
        route_many: t.Callable[[list[Event]], None],
        drop: t.Callable[[Event | None, str], None],
    ) -> None:
        self._route_many = route_many
        self._drop = drop
        self.pending: collections.deque[t.Any] = collections.deque()
        # Held while records are built and routed, so that flush() and stats()
        # (which drain first) see them queued. Reentrant: an event_tracked
        # receiver may call stats().
        self.lock = threading.RLock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        #: Set by :meth:`close`: the thread ends and no new one starts.
        self.closed = False

    def wake(self) -> None:
        """Start the intake thread if needed, and wake it."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None and not self.closed:
                    thread = threading.Thread(
                        target=self._run, name="trackware-intake", daemon=True
                    )
                    try:
                        thread.start()
                    except RuntimeError:
                        # Interpreter shutdown: no new threads; the at-exit
                        # shutdown drains on its own thread.
                        return
                    self._thread = thread
        self._wake.set()

    def close(self) -> None:
        """Let the intake thread end (after the caller's last drain)."""
        self.closed = True
        self._wake.set()

    def _run(self) -> None:
        wake = self._wake
        while not self.closed:
            # Woken when the first record arrives; the timeout is a safety net
            # for a record whose wake-up raced with the previous drain.
            wake.wait(1.0)
            wake.clear()
            if self.pending and not self.closed:
                time.sleep(GATHER)
                try:
                    self.drain()
                except Exception:  # pragma: no cover - defensive: never die
                    _log.error(
                        "intake",
                        "trackware: the intake thread hit an internal error",
                        exc_info=True,
                    )

    def drain(self) -> None:
        """Build and route every waiting record, in order (on any thread)."""
        pending = self.pending
        if not pending:
            return
        with self.lock:
            popleft = pending.popleft
            while pending:
                events: list[Event] = []
                append = events.append
                # Only this drain takes records (it holds the lock); others
                # only append.
                for _ in range(min(len(pending), 1024)):
                    record = popleft()
                    if type(record) is Event:  # track() built it already
                        append(record)
                        continue
                    try:
                        event = record.build()
                    except Exception as exc:
                        _log.error(
                            "track-internal",
                            "trackware: a page event failed internally: %s",
                            type(exc).__name__,
                            exc_info=True,
                        )
                        self._drop(None, "internal_error")
                        continue
                    if event is not None:
                        append(event)
                if events:
                    self._route_many(events)
