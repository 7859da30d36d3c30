"""ASGI integration: page, session, identity and websocket tracking.

Usage (Starlette, FastAPI, Django, Quart, or any ASGI 2/3 app)::

    from trackware.integrations.asgi import TrackwareMiddleware

    app = TrackwareMiddleware(app, tracker=tracker)
    # or, in Starlette/FastAPI: app.add_middleware(TrackwareMiddleware, tracker=tracker)
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import typing as t
import urllib.parse

try:
    from asgiref.compatibility import guarantee_single_callable
except ImportError:  # pragma: no cover - exercised by the import-gate test
    raise ImportError(
        "trackware.integrations.asgi needs asgiref: pip install 'trackware[asgi]'"
    ) from None

from .. import _log
from .._context import TrackerScope, scope_var
from .._default import adopt_default
from ..exceptions import ConfigurationError
from ._connection import Connection, with_cookies
from ._lifespan import run_lifespan
from ._options import Identity, TrackingOptions, unknown_options
from ._request import RequestState, RequestTracker
from ._routes import route_finder
from ._websocket import WebsocketTracking

if t.TYPE_CHECKING:
    from asgiref.typing import (
        ASGI3Application,
        ASGIApplication,
        ASGIReceiveCallable,
        ASGISendCallable,
        Scope,
    )
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from .._config import IntegrationOptions
    from .._tracker import Tracker

__all__ = ["TrackwareMiddleware"]

#: Key in the ASGI scope marking a connection an outer TrackwareMiddleware
#: handles (its value: the request's state, or ``None`` when not tracked).
SCOPE_KEY = "trackware"

#: Set while a TrackwareMiddleware handles a connection in this context: the
#: guard against double tracking when something between two wrappers rebuilt
#: the scope without our marker.
_active: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "trackware_asgi_active", default=False
)


class Untracked(TrackerScope):
    """The scope bound while a TrackwareMiddleware runs a connection it does
    not track: names only the middleware's tracker (``None``: the process
    default), and marks the connection as handled (no other middleware
    tracks it)."""


_new = object.__new__
#: Scope types that mark a connection a TrackwareMiddleware handles.
_HANDLED = (Connection, Untracked)


#: What the identity callable of the middleware may be.
IdentityCallable: t.TypeAlias = (
    "t.Callable[[t.Mapping[str, t.Any]], Identity | t.Awaitable[Identity]]"
)

_SECURE = frozenset({"https", "wss"})

_EXTRA_OPTIONS = frozenset(
    {
        "identity",
        "websocket_connect_event",
        "websocket_disconnect_event",
        "flush_on_shutdown",
    }
)


class TrackwareMiddleware:
    """Track pages, sessions, identity and websockets of an ASGI app.

    Args:
        app: the ASGI application (ASGI 3, or ASGI 2 double-callable).
        tracker: where events go (default: the process default tracker). It
            becomes the process default too when none is set (an earlier
            ``trackware.set_tracker()`` or ``trackware.init()`` is kept), so
            ``trackware.track()`` in background tasks, ``trackware.stats()``
            and ``trackware.flush()`` use it.
        identity: a sync or async callable ``(scope) -> Identity``.
        websocket_connect_event: name of the event tracked when a websocket
            is accepted (``None``: not tracked).
        websocket_disconnect_event: name of the event tracked when it closes,
            with ``code``, ``duration`` and who closed it (``None``: not tracked).
        flush_on_shutdown: shut the tracker down on ``lifespan.shutdown``
            (deliver within its ``shutdown_timeout``, dead-letter the rest).
        options: any :class:`~trackware.integrations.TrackingOptions` field.
    """

    def __init__(
        self,
        app: ASGIApplication | t.Any,
        *,
        tracker: Tracker | None = None,
        identity: IdentityCallable | None = None,
        websocket_connect_event: str | None = "websocket_connect",
        websocket_disconnect_event: str | None = "websocket_disconnect",
        flush_on_shutdown: bool = True,
        **options: Unpack[IntegrationOptions],
    ) -> None:
        names = {f.name for f in dataclasses.fields(TrackingOptions)} - {
            "tracker",
            "identity",
        }
        unknown_options(
            "TrackwareMiddleware()", options, names | _EXTRA_OPTIONS | {"tracker"}
        )
        if identity is not None and not callable(identity):
            raise ConfigurationError(
                "identity must be a callable taking the ASGI scope and returning "
                "the user (it may be async)"
            )
        if app is None or not callable(app):
            raise ConfigurationError(
                "TrackwareMiddleware needs the ASGI app to wrap: "
                "TrackwareMiddleware(app, tracker=...)"
            )
        self.app: ASGI3Application = guarantee_single_callable(app)  # type: ignore[no-untyped-call]
        self.engine = RequestTracker(
            TrackingOptions(tracker=tracker, **options), state_type=Connection
        )
        if tracker is not None:
            # trackware.track()/stats()/flush() outside requests use it too,
            # unless a process default was set already (which is kept).
            adopt_default(tracker)
        self.identity = identity
        self.websocket_connect_event = websocket_connect_event
        self.websocket_disconnect_event = websocket_disconnect_event
        self.flush_on_shutdown = flush_on_shutdown
        self._paths = self.engine.path_cache
        self._tracker = tracker
        self._query = bool(self.engine.options.query_allow)
        self._capture_ip = self.engine.options.capture_ip
        self._find_route = route_finder(app)
        self._websockets = WebsocketTracking(
            self.app,
            self.engine,
            self._find_route,
            websocket_connect_event,
            websocket_disconnect_event,
        )

    # --- dispatch ----------------------------------------------------------------
    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            if SCOPE_KEY in scope or _active.get() or type(scope_var.get()) in _HANDLED:
                # An outer TrackwareMiddleware handles this connection already.
                await self.app(scope, receive, send)
            elif kind == "http":
                # An excluded path first: nothing else is read of its request.
                path: str = scope.get("path") or "/"  # type: ignore[assignment]
                excluded = self._paths.get(path)
                if excluded is None:
                    excluded = self.engine.path_excluded(path)
                if excluded:
                    scope[SCOPE_KEY] = None  # type: ignore[literal-required]
                    untracked = _new(Untracked)
                    untracked.tracker = self._tracker
                    token = scope_var.set(untracked)
                    try:
                        await self.app(scope, receive, send)
                    finally:
                        scope_var.reset(token)
                else:
                    await self._http(scope, receive, send)
            else:
                await self._websocket(scope, receive, send)
        elif kind == "lifespan" and self.flush_on_shutdown and SCOPE_KEY not in scope:
            await run_lifespan(
                self.app, self.engine.options.tracker, scope, receive, send, SCOPE_KEY
            )
        else:
            await self.app(scope, receive, send)

    # --- per connection ------------------------------------------------------------
    def _read(
        self, scope: t.Any, method: str
    ) -> tuple[str, str | None, str | None, str | None] | None:
        """Path, cookie, user agent and referrer, or ``None`` when not tracked."""
        cookie = user_agent = referrer = None
        for name, value in scope.get("headers") or ():
            if name == b"cookie":
                text = value.decode("latin-1")
                cookie = text if cookie is None else f"{cookie}; {text}"
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"referer":
                referrer = value.decode("latin-1")
        path: str = scope.get("path") or "/"
        if not self.engine.admits(method, user_agent):  # (path not excluded)
            return None
        return path, cookie, user_agent, referrer

    def _start(
        self,
        scope: t.Any,
        read: tuple[str, str | None, str | None, str | None],
        method: str,
        who: Identity,
    ) -> Connection | None:
        """Open the request's scope and handle its cookies (``None``: failed)."""
        try:
            path, cookie, user_agent, referrer = read
            query = None
            if self._query:
                raw = scope.get("query_string")
                if raw:
                    query = dict(urllib.parse.parse_qsl(raw.decode("latin-1")))
            client_ip = None
            if self._capture_ip:
                client = scope.get("client")
                client_ip = client[0] if client else None
            return self.engine.begin(
                method,
                path,
                cookie,
                user_agent,
                query=query,
                secure=scope.get("scheme") in _SECURE,
                referrer=referrer,
                client_ip=client_ip,
                identity=who,
            )  # type: ignore[return-value]  # (its state_type)
        except Exception:
            _log.error(
                "asgi-begin", "trackware: could not start tracking", exc_info=True
            )
            return None

    async def _open(self, scope: t.Any, inner: t.Any, method: str) -> Connection | None:
        """Decide whether the connection is tracked and start tracking it."""
        try:
            read = self._read(scope, method)
        except Exception:
            _log.error(
                "asgi-begin", "trackware: could not start tracking", exc_info=True
            )
            return None
        if read is None:
            return None
        who = await self._identity_of(inner) if self.identity is not None else None
        return self._start(scope, read, method, who)

    async def _http(
        self, scope: t.Any, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        # The marker goes into the request's own scope (servers make one per
        # request; middleware may add keys): copying it would cost more.
        inner: t.Any = scope
        inner[SCOPE_KEY] = None
        method = scope.get("method") or "GET"
        guard: contextvars.Token[bool] | None = None
        if self.identity is None:
            # No Exception escapes. A tracked request's Connection, bound
            # to scope_var, guards against double tracking; an untracked one
            # sets _active.
            try:
                read = self._read(scope, method)
            except Exception:
                _log.error(
                    "asgi-begin", "trackware: could not start tracking", exc_info=True
                )
                read = None
            state = None if read is None else self._start(scope, read, method, None)
        else:
            guard = _active.set(True)
            try:
                state = await self._open(scope, inner, method)
            except BaseException:
                _active.reset(guard)
                raise
        if state is None:
            await self._untracked(inner, receive, send, guard)
            return
        inner[SCOPE_KEY] = state
        # Read on every message: stored on the instance (a read that falls
        # back to the class default costs several times more).
        state.complete = state.finished = state.disconnected = state.trailers = False
        engine = self.engine
        root_path: str = scope.get("root_path") or ""

        async def tracking_receive() -> t.Any:
            message = await receive()
            if message["type"] == "http.disconnect" and not state.complete:
                state.disconnected = True
            return message

        async def tracking_send(message: t.Any) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                try:
                    await send(message)
                except OSError:  # e.g. uvicorn's ClientDisconnected
                    state.disconnected = True
                    raise
                if state.complete or message.get("more_body") or state.trailers:
                    return
            elif kind == "http.response.start":
                state.status = message["status"]
                if message.get("trailers"):
                    state.trailers = True
                if (  # the common case (nothing to set) without a call
                    state.new_visitor
                    or state.session_dirty
                    or state.context is not state.context0  # a new MXO tid?
                ):
                    message = with_cookies(engine, state, message)
                await send(message)
                return
            else:
                await send(message)
                if state.complete:
                    return
                if kind == "http.response.trailers":
                    if message.get("more_trailers"):
                        return
                elif kind != "http.response.pathsend":
                    return
            # The response is complete.
            state.complete = True
            if self.identity is not None:
                await self._identify(inner, state)
            state.finished = True
            self._finish_http(state, inner, root_path, None, False)

        error: BaseException | None = None
        try:
            await self.app(inner, tracking_receive, tracking_send)
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                if not state.finished:
                    state.finished = True
                    self._finish_http(
                        state, inner, root_path, error, state.disconnected
                    )
            finally:
                self.engine.close(state)
                if guard is not None:
                    _active.reset(guard)

    async def _untracked(
        self,
        inner: t.Any,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        guard: contextvars.Token[bool] | None,
    ) -> None:
        """Run the app for a connection that is not tracked (excluded by
        method or bot user agent, or its tracking failed to start; an
        excluded path does the same in :meth:`__call__`).

        Not tracked, but what the app tracks still goes to this middleware's
        tracker, as in a tracked request: an :class:`Untracked` scope naming
        only the tracker is bound (a new one per connection, since
        ``identify()`` writes to it); without ``tracker=`` it names none, and
        events go to the process default, as a tracked request's do. It is
        also the double-tracking guard of the connection.
        """
        untracked = _new(Untracked)
        untracked.tracker = self._tracker
        token = scope_var.set(untracked)
        try:
            await self.app(inner, receive, send)
        finally:
            scope_var.reset(token)
            if guard is not None:
                _active.reset(guard)

    def _finish_http(
        self,
        state: RequestState,
        inner: dict[str, t.Any],
        root_path: str,
        error: BaseException | None,
        disconnected: bool,
    ) -> None:
        """Track the page event. Never raises (it runs inside the app's send
        and while the app's own exception propagates)."""
        try:
            try:
                route, endpoint = self._find_route(
                    inner, root_path, state.method, state.path
                )
            except Exception:
                route = endpoint = None
            status = state.status
            if disconnected:
                state.bind(client_disconnected=True)
                if status is None:
                    status = 499  # the client left before a response started
            elif error is not None:
                status = 500
            self.engine.finish(state, status, route, endpoint, None, error, close=False)
        except Exception:
            _log.error(
                "asgi-finish",
                "trackware: could not track the page event",
                exc_info=True,
            )

    async def _identity_of(self, inner: t.Any) -> Identity:
        """Call the identity callable (sync or async); ``None`` when it fails."""
        callback = self.identity
        if callback is None:
            return None
        try:
            who = callback(inner)
            if inspect.isawaitable(who):
                who = await who
        except Exception:
            _log.error(
                "identity-callable",
                "trackware: the identity callable raised; the request is tracked "
                "anonymously",
                exc_info=True,
            )
            return None
        return who

    async def _identify(self, inner: t.Any, state: RequestState) -> None:
        """Call the identity callable again (the request may have logged in)."""
        who = await self._identity_of(inner)
        if who is not None:
            RequestTracker.bind_identity(state, who)

    # --- websocket ---------------------------------------------------------------
    async def _websocket(
        self, scope: t.Any, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        guard = _active.set(True)
        inner: t.Any = dict(scope)
        inner[SCOPE_KEY] = None
        try:
            state = (
                None
                if self.engine.path_excluded(scope.get("path") or "/")
                else await self._open(scope, inner, "GET")
            )
        except BaseException:
            _active.reset(guard)
            raise
        if state is None:
            await self._untracked(inner, receive, send, guard)
            return
        inner[SCOPE_KEY] = state
        try:
            await self._websockets.run(
                state, inner, scope.get("root_path") or "", receive, send
            )
        finally:
            _active.reset(guard)
