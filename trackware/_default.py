"""The process default tracker and the module-level functions that use it
(``trackware.track``, ``flush``, ``shutdown``, ``stats``, ``bridge``,
``init``, ``set_tracker``, ``get_tracker``), :func:`request_scope`, and the
receiver of ``signals.action``.
"""

from __future__ import annotations

import contextlib
import threading
import typing as t

import blinker

from . import _lifecycle, _log, _tracker, signals
from ._config import TrackerStats
from ._context import Scope, scope_var
from ._event import Event
from ._tracker import Bridge, Tracker
from .exceptions import ConfigurationError, InvalidEventError
from .exporters._base import Exporter

if t.TYPE_CHECKING:
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from ._config import TrackerOptions

__all__ = [
    "adopt_default",
    "bridge",
    "flush",
    "get_tracker",
    "init",
    "request_scope",
    "set_tracker",
    "shutdown",
    "stats",
    "track",
]

#: The process default (``None``: none yet; see :func:`get_tracker`).
current: Tracker | None = None
_lock = threading.Lock()


def set_tracker(tracker: Tracker) -> None:
    """Make ``tracker`` the process default used by :func:`track` and friends."""
    global current
    if not isinstance(tracker, Tracker):
        raise ConfigurationError(f"set_tracker() needs a Tracker, not {tracker!r}")
    current = tracker


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


def adopt_default(tracker: Tracker) -> bool:
    """Make ``tracker`` the process default unless one was set (the stand-in
    :func:`get_tracker` makes does not count). The integrations call it with
    the tracker they are given; returns whether it became the default."""
    global current
    if not isinstance(tracker, Tracker):
        return False
    with _lock:
        previous = current
        if previous is not None and type(previous) is not _NoTracker:
            return previous is tracker
        current = tracker
    if previous is not None:
        # What the stand-in counted stays visible in its own stats() only:
        # say so, once, rather than let the counts seem to vanish.
        dropped = previous.stats()["dropped"].get("no_tracker", 0)
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
    scope = scope_var.get()
    if scope is not None and scope.tracker is not None:
        return scope.tracker
    tracker = current
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
        self.count_dropped(None, "no_tracker")
        return False


def _make_fallback() -> Tracker:
    global current
    with _lock:
        if current is None:
            _log.warn(
                "no-tracker",
                "trackware: no tracker configured, so events go nowhere: they are "
                "counted as dropped['no_tracker'] in trackware.stats(). Configure "
                "one at start-up: trackware.init() (from TRACKWARE_* variables), "
                "trackware.set_tracker(trackware.Tracker(exporters=[...])), or "
                "Trackware(app, tracker=...) / TrackwareMiddleware(app, tracker=...).",
            )
            current = _NoTracker(dead_letter=None, register_atexit=False, enabled=False)
        return current


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
        tracker.reject_invalid(f"track() was called wrongly: {exc}")
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
    return Bridge(signal, name, properties, sender, track_kwargs, get_tracker)


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
        target.reject_invalid(
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


@contextlib.contextmanager
def request_scope(
    *,
    flush: bool = False,
    flush_timeout: float = 5.0,
    tracker: Tracker | None = None,
    **identity: t.Any,
) -> t.Iterator[Scope]:
    """Bind a fresh scope for a block of work (a request, a job, a function).

    Args:
        flush: flush the tracker when the block ends: use it in serverless
            handlers and short-lived jobs whose process may be frozen after
            they return.
        flush_timeout: how long that flush may take.
        tracker: the tracker events in this block go to (default: the
            process default).
        identity: ``user_id``, ``anonymous_id``, ``email``, ``phone``,
            ``traits``, ``context`` for the new scope.
    """
    scope = Scope(tracker=tracker, **identity)
    token = scope_var.set(scope)
    try:
        yield scope
    finally:
        scope_var.reset(token)
        if flush:
            (tracker or get_tracker()).flush(timeout=flush_timeout)


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # a parent thread may have held it
    if current is not None:
        _tracker.after_fork(current)


_lifecycle.on_fork(_after_fork)
