"""trackware's signal bus (blinker): apps emit events through :data:`action`;
trackware announces what happens to events through the other signals. All
live in trackware's own :class:`blinker.Namespace`, and a receiver that
raises is logged (rate-limited) and skipped: it never reaches the sender.
"""

from __future__ import annotations

import typing as t

import blinker

from . import _log

__all__ = [
    "action",
    "batch_exported",
    "event_dropped",
    "event_tracked",
    "export_attempted",
    "export_failed",
]


class _SafeSignal(blinker.NamedSignal):
    """A named signal whose ``send`` isolates receivers from each other."""

    def send(
        self,
        sender: t.Any | None = None,
        /,
        *,
        _async_wrapper: t.Any = None,
        **kwargs: t.Any,
    ) -> list[tuple[t.Callable[..., t.Any], t.Any]]:
        if self.is_muted or not self.receivers:
            return []
        results: list[tuple[t.Callable[..., t.Any], t.Any]] = []
        for receiver in self.receivers_for(sender):
            try:
                results.append((receiver, receiver(sender, **kwargs)))
            except Exception:
                _log.error(
                    f"receiver:{self.name}:{getattr(receiver, '__qualname__', '?')}",
                    "trackware: a receiver of signal %r raised; ignored",
                    self.name,
                    exc_info=True,
                )
        return results


class _Namespace(blinker.Namespace):
    def signal(self, name: str, doc: str | None = None) -> _SafeSignal:
        try:
            return t.cast(_SafeSignal, self[name])
        except KeyError:
            result = self.setdefault(name, _SafeSignal(name, doc))
            return t.cast(_SafeSignal, result)


_signals = _Namespace()

#: Emit an event through the bus: ``action.send(sender, name="offer.viewed",
#: properties={...}, user_id=..., ...)``. The keyword arguments are those of
#: :func:`trackware.track`; the event goes to the tracker of the current
#: request (or the process default). ``sender`` is anything; it is recorded as
#: the ``sender`` context key when it is a string.
action = _signals.signal("action")

#: Sent after an event has been built and queued. Sender: the
#: :class:`~trackware.Tracker`. Keyword arguments: ``event``.
#: Runs on the application's thread: keep receivers cheap.
event_tracked = _signals.signal("event-tracked")

#: Sent when an event is dropped. Sender: the tracker. Keyword arguments:
#: ``event`` (may be ``None`` when no event could be built), ``reason``
#: (e.g. ``"queue_full"``, ``"invalid"``, ``"sampled"``, ``"before_send"``,
#: ``"hook_error"``, ``"disabled"``, ``"shutdown"``), ``destination`` (a name,
#: or ``None`` for all), ``detail`` (a human-readable explanation, e.g. why an
#: event was invalid, or ``None``). May run on the application's thread.
event_dropped = _signals.signal("event-dropped")

#: Sent by a destination's worker after a batch was delivered. Sender: the
#: tracker. Keyword arguments: ``destination`` (name), ``events`` (list).
batch_exported = _signals.signal("batch-exported")

#: Sent by a destination's worker when events were rejected or given up on
#: (and dead-lettered), or when an attempt failed and will be retried.
#: Sender: the tracker. Keyword arguments: ``destination``, ``events``,
#: ``reason``, ``status`` (HTTP status or ``None``), ``final`` (``True`` when
#: the events will not be retried).
export_failed = _signals.signal("export-failed")

#: Sent by a destination's worker after each call of its exporter: one
#: attempt at a batch, whatever came of it (a first attempt or a retry).
#: Sent before the outcome is settled, so a ``flush()`` that returns has seen
#: every attempt that decided its events. Sender: the tracker. Keyword
#: arguments: ``destination`` (name), ``events`` (the batch, a list) and
#: ``duration`` (the seconds ``export()`` took, a float). Runs on the
#: worker's thread; the time is only measured while a receiver is connected.
#: (``trackware.metrics`` feeds its export-latency and batch-size histograms
#: from it.)
export_attempted = _signals.signal("export-attempted")
