"""The page event of a request an integration tracked: :class:`PageView`, a
typed view of what the request ended with, and its one builder.

The Flask and ASGI integrations make a view when a request ends; the tracker
builds its event (:meth:`PageView.build`) on its intake thread, off the
request thread (see ``Tracker.record_page``).
"""

from __future__ import annotations

import typing as t

from ._event import Event, make_event

if t.TYPE_CHECKING:
    from ._tracker import Tracker

__all__ = ["PageRequest", "PageView"]


class PageRequest(t.Protocol):
    """What a page view reads of its request (an integration's request state)."""

    method: str
    path: str
    referrer: str | None
    anonymous_id: str | None
    #: When the request started, epoch seconds (the event's time).
    start_wall: float


class PageView:
    """A request's page event as plain values taken when the request ended
    (its identity included), so that it can be built on another thread.

    Made without ``__init__`` by the integrations (every field is set).
    """

    __slots__ = (
        "blueprint",
        "context",
        "duration",
        "email",
        "endpoint",
        "error",
        "name",
        "phone",
        "request",
        "route",
        "status",
        "tracker",
        "traits",
        "user_id",
    )

    #: Where the event goes.
    tracker: Tracker
    #: The event's name (the integration's ``page_event``).
    name: str
    request: PageRequest
    #: The response's status (``None``: no response, recorded as 500).
    status: int | None
    #: The matched route template, endpoint and blueprint, when known.
    route: str | None
    endpoint: str | None
    blueprint: str | None
    #: The class name of the exception the request ended with.
    error: str | None
    #: Seconds from the request's start to its end.
    duration: float
    user_id: str | None
    email: str | None
    phone: str | None
    traits: dict[str, t.Any]
    context: dict[str, t.Any]

    def properties(self) -> dict[str, t.Any]:
        """The page event's properties: the only place that writes their keys,
        each of them one of ``trackware._redact.PAGE_KEYS`` (page events skip
        ``track()``'s per-key redaction pass only while no page key is
        redacted; a key added here must be added there)."""
        request = self.request
        status = self.status
        props: dict[str, t.Any] = {
            "method": request.method,
            "path": request.path,
            "route": self.route,
            "endpoint": self.endpoint,
            "status": 500 if status is None else status,
            "duration": self.duration,
        }
        if self.blueprint:
            props["blueprint"] = self.blueprint
        referrer = request.referrer
        if referrer:
            if "?" in referrer:  # never the query string
                referrer = referrer.partition("?")[0]
            props["referrer"] = referrer
        if self.error is not None:
            props["error"] = self.error
        return props

    def build(self) -> Event | None:
        """The page event, made without ``track()``'s per-key pass (its keys
        are known, its values plain); or ``None`` when a value of an
        unexpected type (a framework's odd route object, say) sent it through
        ``track()`` instead, which validates it."""
        request = self.request
        path = request.path
        status = self.status
        route = self.route
        endpoint = self.endpoint
        # Values from the server, the framework or the app may be odd.
        if not (
            (status is None or type(status) is int)
            and type(path) is str
            and type(request.method) is str
            and (route is None or type(route) is str)
            and (endpoint is None or type(endpoint) is str)
        ):
            self.tracker.track(
                self.name,
                self.properties(),
                user_id=self.user_id,
                anonymous_id=request.anonymous_id,
                email=self.email,
                phone=self.phone,
                traits=self.traits or None,
                context=self.context,
                timestamp=request.start_wall,
            )
            return None
        props = self.properties()
        # Near what check_properties() counts (routes and endpoints are short).
        size = 300 + len(self.name) + len(path)
        referrer = props.get("referrer")
        if referrer:
            size += len(referrer)
        return make_event(
            self.name,
            props,
            self.user_id,
            request.anonymous_id,
            self.email,
            self.phone,
            self.traits,
            self.context,
            request.start_wall,
            size,
        )
