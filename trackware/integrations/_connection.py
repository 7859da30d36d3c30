"""The ASGI middleware's per-connection state (:class:`Connection`: the
request's scope with named flags) and the ``Set-Cookie`` headers it adds to
a response start or websocket accept.
"""

from __future__ import annotations

import typing as t

from .. import _log
from ._request import RequestState, RequestTracker

__all__ = ["Connection", "with_cookies"]


class Connection(RequestState):
    """A request a TrackwareMiddleware tracks (its state and its scope): bound
    to ``scope_var`` while it runs, it is also the double-tracking guard (no
    ``_active`` to set and reset per tracked request).

    Its flags are shared by the send and receive wrappers of the request;
    the HTTP ones are stored when a request is tracked (read per message),
    the websocket ones keep their class defaults until they change.
    """

    #: HTTP: the response is complete (its last body chunk or trailer sent).
    complete = False
    #: HTTP: the page event is recorded (or is being). Websocket: it ended.
    finished = False
    #: HTTP: the client went away before the response was complete.
    disconnected = False
    #: HTTP: the response announced trailers (it ends with the last one).
    trailers = False
    #: Websocket: the connection was accepted.
    accepted = False


def with_cookies(engine: RequestTracker, state: RequestState, message: t.Any) -> t.Any:
    """``message`` (a response start or websocket accept) with our ``Set-Cookie``
    headers added; never raises (a failure is logged and the message kept)."""
    try:
        cookies = engine.cookies.response_cookies(state)
    except Exception:
        _log.error("asgi-cookies", "trackware: could not set cookies", exc_info=True)
        return message
    if not cookies:
        return message
    headers = list(message.get("headers") or ())
    headers.extend((b"set-cookie", value.encode("latin-1")) for value in cookies)
    return {**message, "headers": headers}
