"""The page event of a request an integration tracked: its one builder
(:func:`build_page`, :func:`page_properties`) and :class:`PageView`, a typed
view of what the request ended with, for a build elsewhere or later.

The Flask and ASGI integrations build the event when a request ends (a
handful of dict and tuple operations) and hand it to the tracker's intake
(``Tracker.record_page``), whose thread routes it in order; the view is
what goes through ``track()`` when hooks, sampling or traits apply.
"""

from __future__ import annotations

import typing as t

from ._event import Event, make_event

if t.TYPE_CHECKING:
    from ._tracker import Tracker

__all__ = ["PageRequest", "PageView", "build_page", "page_properties"]


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
        """The page event's properties (see :func:`page_properties`)."""
        request = self.request
        return page_properties(
            request.method,
            request.path,
            request.referrer,
            self.status,
            self.route,
            self.endpoint,
            self.blueprint,
            self.error,
            self.duration,
        )

    def build(self) -> Event | None:
        """The page event (see :func:`build_page`)."""
        return build_page(
            self.tracker,
            self.name,
            self.request,
            self.status,
            self.route,
            self.endpoint,
            self.blueprint,
            self.error,
            self.duration,
            self.user_id,
            self.email,
            self.phone,
            self.traits,
            self.context,
        )


def page_properties(
    method: str,
    path: str,
    referrer: str | None,
    status: int | None,
    route: str | None,
    endpoint: str | None,
    blueprint: str | None,
    error: str | None,
    duration: float,
) -> dict[str, t.Any]:
    """A page event's properties: the only place that writes their keys,
    each of them one of ``trackware._redact.PAGE_KEYS`` (page events skip
    ``track()``'s per-key redaction pass only while no page key is
    redacted; a key added here must be added there)."""
    props: dict[str, t.Any] = {
        "method": method,
        "path": path,
        "route": route,
        "endpoint": endpoint,
        "status": 500 if status is None else status,
        "duration": duration,
    }
    if blueprint:
        props["blueprint"] = blueprint
    if referrer:
        if "?" in referrer:  # never the query string
            referrer = referrer.partition("?")[0]
        props["referrer"] = referrer
    if error is not None:
        props["error"] = error
    return props


def build_page(
    tracker: Tracker,
    name: str,
    request: PageRequest,
    status: int | None,
    route: str | None,
    endpoint: str | None,
    blueprint: str | None,
    error: str | None,
    duration: float,
    user_id: str | None,
    email: str | None,
    phone: str | None,
    traits: dict[str, t.Any],
    context: dict[str, t.Any],
) -> Event | None:
    """The page event of ``request``, made without ``track()``'s per-key
    pass (its keys are known, its values plain); or ``None`` when a value of
    an unexpected type (a framework's odd route object, say) sent it through
    ``tracker.track()`` instead, which validates it. The identity given is
    the one the request ended with."""
    path = request.path
    method = request.method
    props = page_properties(
        method,
        path,
        request.referrer,
        status,
        route,
        endpoint,
        blueprint,
        error,
        duration,
    )
    # Values from the server, the framework or the app may be odd.
    if not (
        (status is None or type(status) is int)
        and type(path) is str
        and type(method) is str
        and (route is None or type(route) is str)
        and (endpoint is None or type(endpoint) is str)
    ):
        tracker.track(
            name,
            props,
            user_id=user_id,
            anonymous_id=request.anonymous_id,
            email=email,
            phone=phone,
            traits=traits or None,
            context=context,
            timestamp=request.start_wall,
        )
        return None
    # Near what check_properties() counts (routes and endpoints are short).
    size = 300 + len(name) + len(path)
    referrer = props.get("referrer")
    if referrer:
        size += len(referrer)
    return make_event(
        name,
        props,
        user_id,
        request.anonymous_id,
        email,
        phone,
        traits,
        context,
        request.start_wall,
        size,
    )
