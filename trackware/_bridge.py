"""A connection from a blinker signal to a tracker: :class:`Bridge`."""

from __future__ import annotations

import typing as t

import blinker

from . import _log
from .exceptions import ConfigurationError

__all__ = ["Bridge", "Trackable"]


class Trackable(t.Protocol):
    """What a bridge delivers to (a :class:`~trackware.Tracker`)."""

    @property
    def track(self) -> t.Callable[..., t.Any]: ...

    def count_dropped(
        self, event: t.Any, reason: str, detail: str | None = None
    ) -> None: ...


class Bridge:
    """A connection from a blinker signal to a tracker: each time ``signal``
    is sent, an event named ``name`` is tracked with the tracker ``target()``
    returns. ``disconnect()`` undoes it. Made by :meth:`Tracker.bridge` and
    :func:`trackware.bridge`."""

    def __init__(
        self,
        signal: blinker.Signal,
        name: str,
        properties: t.Mapping[str, t.Any] | t.Callable[..., t.Any] | None,
        sender: t.Any,
        track_kwargs: dict[str, t.Any],
        target: t.Callable[[], Trackable],
    ) -> None:
        if not isinstance(signal, blinker.Signal):
            raise ConfigurationError(f"bridge() needs a blinker signal, not {signal!r}")
        if not isinstance(name, str) or not name:
            raise ConfigurationError("bridge() needs a non-empty event name")

        def receiver(sent_by: t.Any, /, **kwargs: t.Any) -> None:
            tracker = target()
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
                tracker.count_dropped(None, "hook_error")
                return
            tracker.track(name, props, **track_kwargs)

        signal.connect(receiver, sender=sender, weak=False)
        self.signal = signal
        self.receiver = receiver

    def disconnect(self) -> None:
        self.signal.disconnect(self.receiver)
