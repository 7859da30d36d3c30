"""A cheap hook registry for the HTTP exchanges exporters make (the inspector's view).

:func:`add` registers a *tap*: a callable receiving one :class:`Exchange` per
HTTP request an exporter's pooled client made (the request as sent, the
status and the vendor's answer), on the thread that made it (a destination's
worker thread, ``trackware-<name>``). While no tap is registered, the clients
carry no hook at all: ``trackware.exporters._client`` installs httpx event
hooks on its clients only while :func:`active` is true (it is told through
:func:`on_change`), so the cost when nothing listens is zero.

A tap must be cheap and must not raise (an exception is logged, rate-limited,
and the request goes on): it runs inside the exporter's request. An
:class:`Exchange` holds what went over the wire *unredacted* (credentials in
headers, tokens in a token endpoint's answer): whoever keeps or shows one
must redact it first (the inspector client does).
"""

from __future__ import annotations

import threading
import time
import typing as t

from . import _log

__all__ = ["Exchange", "active", "add", "on_change", "remove", "taps"]


class Exchange(t.NamedTuple):
    """One HTTP request and its answer, as the exporter's client saw them."""

    method: str
    url: str
    request_headers: tuple[tuple[str, str], ...]
    request_body: bytes
    status: int
    response_headers: tuple[tuple[str, str], ...]
    response_body: bytes
    #: Seconds from the request hook to the response hook.
    elapsed: float
    #: The name of the thread that made the request.
    thread: str


Tap = t.Callable[[Exchange], None]

#: The registered taps (a tuple, replaced on change: read without a lock).
taps: tuple[Tap, ...] = ()
_listeners: list[t.Callable[[bool], None]] = []
_lock = threading.Lock()


def active() -> bool:
    """Whether any tap is registered."""
    return bool(taps)


def add(tap: Tap) -> None:
    """Register ``tap`` (idempotent)."""
    global taps
    with _lock:
        if tap in taps:
            return
        was = bool(taps)
        taps = (*taps, tap)
    if not was:
        _changed(True)


def remove(tap: Tap) -> None:
    """Unregister ``tap`` (no error when it is not registered)."""
    global taps
    with _lock:
        if tap not in taps:
            return
        taps = tuple(x for x in taps if x != tap)
        now = bool(taps)
    if not now:
        _changed(False)


def on_change(listener: t.Callable[[bool], None]) -> None:
    """Call ``listener(active)`` whenever taps go from none to some or back."""
    _listeners.append(listener)


def _changed(state: bool) -> None:
    for listener in list(_listeners):
        try:
            listener(state)
        except Exception:  # pragma: no cover - defensive
            _log.error(
                "tap:listener", "trackware: a tap listener failed", exc_info=True
            )


# --- the httpx side (installed on clients only while a tap is registered) ----------

_START = "trackware_tap_start"


def request_hook(request: t.Any) -> None:
    """httpx ``request`` event hook: note when the request left."""
    try:
        request.extensions[_START] = time.monotonic()
    except Exception:  # pragma: no cover - defensive
        pass


def response_hook(response: t.Any) -> None:
    """httpx ``response`` event hook: hand the exchange to every tap."""
    current = taps
    if not current:
        return
    try:
        request = response.request
        body = response.read()
        started = request.extensions.get(_START)
        exchange = Exchange(
            request.method,
            str(request.url),
            tuple(request.headers.items()),
            bytes(request.content),
            int(response.status_code),
            tuple(response.headers.items()),
            bytes(body),
            time.monotonic() - started if started is not None else 0.0,
            threading.current_thread().name,
        )
    except Exception:
        _log.error("tap:build", "trackware: could not record an HTTP exchange")
        return
    for tap in current:
        try:
            tap(exchange)
        except Exception:
            _log.error("tap:call", "trackware: an HTTP tap raised; ignored")
