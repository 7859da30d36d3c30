"""Tools for testing code that uses trackware.

* :class:`InMemoryExporter`: an exporter that keeps what it receives.
* :func:`capture_events`: a context manager collecting every event tracked
  while it is active, synchronously, without any delivery.
"""

from __future__ import annotations

import contextlib
import threading
import time
import typing as t

from .. import signals
from .._event import Event
from ..exporters import BaseExporter, ExportResult

if t.TYPE_CHECKING:
    from .._tracker import Tracker

__all__ = ["CapturedEvents", "InMemoryExporter", "capture_events"]


class InMemoryExporter(BaseExporter):
    """Keeps exported events in memory, in order. Thread-safe.

    Args:
        name: destination name (default ``"memory"``).
        events: only these event names (default: all).
    """

    default_name = "memory"

    def __init__(
        self,
        *,
        name: str | None = None,
        events: t.Iterable[str] | None = None,
        max_batch_size: int = 1000,
    ) -> None:
        super().__init__(name=name, events=events, max_batch_size=max_batch_size)
        self._events: list[Event] = []
        self._cond = threading.Condition()
        self.batches = 0
        self.closed = False

    def export(self, events: t.Sequence[Event], /) -> ExportResult:
        with self._cond:
            self._events.extend(events)
            self.batches += 1
            self._cond.notify_all()
        return ExportResult.success(events)

    @property
    def events(self) -> list[Event]:
        """A copy of everything exported so far."""
        with self._cond:
            return list(self._events)

    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def clear(self) -> None:
        with self._cond:
            self._events.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` events were exported."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._events) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self) -> None:
        self.closed = True


class CapturedEvents(list[Event]):
    """The list :func:`capture_events` yields, with lookup helpers."""

    def names(self) -> list[str]:
        return [e.name for e in self]

    def named(self, name: str) -> list[Event]:
        return [e for e in self if e.name == name]

    def one(self, name: str) -> Event:
        """The only event named ``name`` (AssertionError otherwise)."""
        found = self.named(name)
        assert len(found) == 1, f"expected one {name!r} event, got {len(found)}"
        return found[0]


@contextlib.contextmanager
def capture_events(tracker: Tracker | None = None) -> t.Iterator[CapturedEvents]:
    """Collect events tracked inside the block (by ``tracker``, or by any).

    Events are captured as they are tracked (after ``before_send`` hooks and
    redaction), on the tracking thread, so assertions need no waiting::

        with capture_events() as events:
            client.post("/offers/o-1/activate")
        assert events.one("offer.activated").properties["offer_id"] == "o-1"
    """
    captured = CapturedEvents()
    lock = threading.Lock()

    def receiver(sender: t.Any, /, *, event: Event, **_: t.Any) -> None:
        with lock:
            captured.append(event)

    if tracker is None:
        signals.event_tracked.connect(receiver, weak=False)
    else:
        signals.event_tracked.connect(receiver, sender=tracker, weak=False)
    try:
        yield captured
    finally:
        signals.event_tracked.disconnect(receiver)
