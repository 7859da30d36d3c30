"""ASGI integration: page, session, identity and websocket tracking.

Usage (Starlette, FastAPI, Django, Quart, or any ASGI 2/3 app)::

    from trackware.integrations.asgi import TrackwareMiddleware

    app = TrackwareMiddleware(app, tracker=tracker)
    # or, in Starlette/FastAPI: app.add_middleware(TrackwareMiddleware, tracker=tracker)

Options are the fields of :class:`~trackware.integrations._common.TrackingOptions`
(``page_event``, ``session_timeout``, ``exclude_paths``, ``query_allow``...),
with the same defaults as the Flask extension, plus:

* ``identity``: a callable taking the ASGI scope, sync or ``async``, returning
  the current user (a user id, a mapping with ``user_id``/``email``/``phone``/
  ``traits``, or ``None``). It is called when the request starts and again when
  the response is complete; ``trackware.identify()`` inside endpoints,
  dependencies (also sync ones FastAPI runs in a thread pool) and background
  tasks works too.
* ``websocket_connect_event`` / ``websocket_disconnect_event``: event names
  (``None`` turns one off).
* ``flush_on_shutdown``: shut the tracker down, within its ``shutdown_timeout``,
  in a thread when the server sends ``lifespan.shutdown`` (default ``True``):
  what it cannot deliver in time is dead-lettered, since servers such as
  uvicorn end the process by a signal afterwards, where no atexit hook runs.

The visitor, session and MXO tid cookies are signed with a key derived from
``cookie_secret=`` (a list rotates keys: the first signs, all verify), else
from the ``TRACKWARE_COOKIE_SECRET`` environment variable; with neither the
middleware raises :class:`~trackware.ConfigurationError` (or, with
``ephemeral_cookie_secret=True``, signs with a per-process key and warns).

The middleware is pure ASGI: it imports no framework and never buffers a
body. Per request it reads the headers once, binds a
:class:`~trackware.Scope`, adds ``Set-Cookie`` headers to
``http.response.start`` and tracks the page event when the last body chunk is
sent (streamed responses and server-sent events included), with the route
template when the framework exposes it (Starlette/FastAPI ``scope["route"]``,
Django's URL resolver, Quart's URL map). Exceptions from the app are recorded
(status 500) and re-raised untouched. A client that disconnects before the
response is complete is recorded with the context flag ``client_disconnected``
(status 499 when no response had started). Websockets get
``websocket_connect`` (when accepted) and ``websocket_disconnect`` (``code``,
``initiator``, ``accepted``, ``duration``) events instead of a page event.

Wrapping an app twice tracks once: a marker in the scope plus a ContextVar
guard (the tracked request's own scope, or a flag when it is not tracked;
so an ASGI app called from inside a tracked request, e.g. through
``httpx.ASGITransport``, is not tracked a second time either). On
``lifespan.shutdown`` the tracker is shut down on a thread, never on the event
loop; apps without lifespan support (Django) get it answered for them.

Route and endpoint exclusions (``exclude_routes``/``exclude_endpoints``) are
known only after routing: they suppress the page and websocket events, while
the session cookie of such a request is still maintained. Exclusion never
changes where the app's own events go: a request excluded before routing
(method, path, bot user agent) runs with a scope naming the middleware's
``tracker``, so ``trackware.track()`` in it reaches that tracker as it would
in a tracked request (without a visitor or session).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
import sys
import threading
import time
import typing as t
import urllib.parse

try:
    from asgiref.compatibility import guarantee_single_callable
except ImportError:  # pragma: no cover - exercised by the import-gate test
    raise ImportError(
        "trackware.integrations.asgi needs asgiref: pip install 'trackware[asgi]'"
    ) from None

from .. import _log
from .._context import Scope as ContextScope  # (Scope is the ASGI scope here)
from .._context import _scope
from ..exceptions import ConfigurationError
from ._common import (
    Identity,
    RequestState,
    RequestTracker,
    TrackingOptions,
    _get_tracker,
    _track_in_scope,
    unknown_options,
)

if t.TYPE_CHECKING:
    from asgiref.typing import (
        ASGI3Application,
        ASGIApplication,
        ASGIReceiveCallable,
        ASGIReceiveEvent,
        ASGISendCallable,
        ASGISendEvent,
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


class _RequestScope(RequestState):
    """A request a TrackwareMiddleware tracks (its state and its scope): bound
    to ``_scope`` while it runs, it is also the double-tracking guard (no
    ``_active`` to set and reset per tracked request)."""


#: What the identity callable of the middleware may be.
IdentityCallable: t.TypeAlias = (
    "t.Callable[[t.Mapping[str, t.Any]], Identity | t.Awaitable[Identity]]"
)

_RouteFinder: t.TypeAlias = (
    "t.Callable[[dict[str, t.Any], str, str, str], tuple[str | None, str | None]]"
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


def _with_cookies(engine: RequestTracker, state: RequestState, message: t.Any) -> t.Any:
    """``message`` (a response start or websocket accept) with our ``Set-Cookie``
    headers added; never raises (a failure is logged and the message kept)."""
    try:
        cookies = engine.response_cookies(state)
    except Exception:
        _log.error("asgi-cookies", "trackware: could not set cookies", exc_info=True)
        return message
    if not cookies:
        return message
    headers = list(message.get("headers") or ())
    headers.extend((b"set-cookie", value.encode("latin-1")) for value in cookies)
    return {**message, "headers": headers}


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
        options: any :class:`~trackware.integrations._common.TrackingOptions`
            field.
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
        self.engine = RequestTracker(TrackingOptions(tracker=tracker, **options))
        self.engine._state_type = _RequestScope
        if tracker is not None:
            # trackware.track()/stats()/flush() outside requests use it too,
            # unless a process default was set already (which is kept).
            from .._tracker import _adopt_default

            _adopt_default(tracker)
        self.identity = identity
        self.websocket_connect_event = websocket_connect_event
        self.websocket_disconnect_event = websocket_disconnect_event
        self.flush_on_shutdown = flush_on_shutdown
        self._query = bool(self.engine.options.query_allow)
        self._capture_ip = self.engine.options.capture_ip
        self._find_route = _route_finder(app)

    # --- dispatch ----------------------------------------------------------------
    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            if (
                SCOPE_KEY in scope
                or _active.get()
                or type(_scope.get()) is _RequestScope
            ):
                # An outer TrackwareMiddleware handles this connection already.
                await self.app(scope, receive, send)
            elif kind == "http":
                await self._http(scope, receive, send)
            else:
                await self._websocket(scope, receive, send)
        elif kind == "lifespan" and self.flush_on_shutdown and SCOPE_KEY not in scope:
            await self._lifespan(scope, receive, send)
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
        if not self.engine.wants(method, path, user_agent):
            return None
        return path, cookie, user_agent, referrer

    def _start(
        self,
        scope: t.Any,
        read: tuple[str, str | None, str | None, str | None],
        method: str,
        who: Identity,
    ) -> RequestState | None:
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
            return self.engine._begin(
                method,
                path,
                query,
                cookie,
                scope.get("scheme") in _SECURE,
                referrer,
                user_agent,
                client_ip,
                None,
                _scope,
                who,
            )
        except Exception:
            _log.error(
                "asgi-begin", "trackware: could not start tracking", exc_info=True
            )
            return None

    async def _open(
        self, scope: t.Any, inner: t.Any, method: str
    ) -> RequestState | None:
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
            # No Exception escapes. A tracked request's _RequestScope, bound
            # to _scope, guards against double tracking; an untracked one
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
            if guard is None:
                guard = _active.set(True)
            await self._untracked(inner, receive, send, guard)
            return
        inner[SCOPE_KEY] = state
        engine = self.engine
        root_path: str = scope.get("root_path") or ""
        # [complete, finished, disconnected, trailers]: per-request flags in a
        # local list the closures share.
        flags = [False, False, False, False]

        async def tracking_receive() -> t.Any:
            message = await receive()
            if message["type"] == "http.disconnect" and not flags[0]:
                flags[2] = True
            return message

        async def tracking_send(message: t.Any) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                try:
                    await send(message)
                except OSError:  # e.g. uvicorn's ClientDisconnected
                    flags[2] = True
                    raise
                if flags[0] or message.get("more_body") or flags[3]:
                    return
            elif kind == "http.response.start":
                state.status = message["status"]
                if message.get("trailers"):
                    flags[3] = True
                if (  # the common case (nothing to set) without a call
                    state.new_visitor
                    or state.session_dirty
                    or state.context is not state.context0  # a new MXO tid?
                ):
                    message = _with_cookies(engine, state, message)
                await send(message)
                return
            else:
                await send(message)
                if flags[0]:
                    return
                if kind == "http.response.trailers":
                    if message.get("more_trailers"):
                        return
                elif kind != "http.response.pathsend":
                    return
            # The response is complete.
            flags[0] = True
            if self.identity is not None:
                await self._identify(inner, state)
            flags[1] = True
            self._finish_http(state, inner, root_path, None, False)

        error: BaseException | None = None
        try:
            await self.app(inner, tracking_receive, tracking_send)
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                if not flags[1]:
                    flags[1] = True
                    self._finish_http(state, inner, root_path, error, flags[2])
            finally:
                self.engine.close(state)
                if guard is not None:
                    _active.reset(guard)

    async def _untracked(
        self,
        inner: t.Any,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        guard: contextvars.Token[bool],
    ) -> None:
        """Run the app for a connection that is not tracked (excluded by
        method, path or bot user agent, or its tracking failed to start).

        Not tracked, but what the app tracks still goes to this middleware's
        tracker, as in a tracked request: a scope naming only the tracker is
        bound (a new one per connection, since ``identify()`` writes to it).
        Without ``tracker=`` none is bound, and events go to the process
        default, as a tracked request's do.
        """
        tracker = self.engine.options.tracker
        token = None if tracker is None else _scope.set(ContextScope(tracker=tracker))
        try:
            await self.app(inner, receive, send)
        finally:
            if token is not None:
                _scope.reset(token)
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
            self.engine._finish(
                state, status, route, endpoint, None, error, _scope, False
            )
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
            state = await self._open(scope, inner, "GET")
        except BaseException:
            _active.reset(guard)
            raise
        if state is None:
            await self._untracked(inner, receive, send, guard)
            return
        inner[SCOPE_KEY] = state
        engine = self.engine
        root_path: str = scope.get("root_path") or ""
        # [accepted, ended]
        flags = [False, False]

        def ended(code: int, initiator: str, error: BaseException | None) -> None:
            flags[1] = True
            name = self.websocket_disconnect_event
            if name is None:
                return
            props: dict[str, t.Any] = {
                "code": code,
                "initiator": initiator,
                "accepted": flags[0],
                "duration": time.perf_counter() - state.start,
            }
            if error is not None:
                props["error"] = type(error).__name__
            self._track_ws(state, inner, root_path, name, props)

        async def tracking_receive() -> t.Any:
            message = await receive()
            if message["type"] == "websocket.disconnect" and not flags[1]:
                ended(int(message.get("code") or 1005), "client", None)
            return message

        async def tracking_send(msg: t.Any) -> None:
            message = msg
            kind = msg["type"]
            if kind == "websocket.accept" and not flags[0]:
                message = _with_cookies(engine, state, msg)
                await send(message)
                flags[0] = True
                name = self.websocket_connect_event
                if name is not None:
                    props: dict[str, t.Any] = {}
                    if msg.get("subprotocol"):
                        props["subprotocol"] = msg["subprotocol"]
                    self._track_ws(state, inner, root_path, name, props)
                return
            try:
                await send(message)
            except OSError:  # the client is gone (1006: closed abnormally)
                if not flags[1]:
                    ended(1006, "client", None)
                raise
            if flags[1]:
                return
            if kind == "websocket.close":
                ended(int(msg.get("code") or 1000), "server", None)
            elif kind == "websocket.http.response.start":
                state.status = msg.get("status")
                ended(1008, "server", None)

        error: BaseException | None = None
        try:
            await self.app(inner, tracking_receive, tracking_send)
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                if not flags[1]:
                    ended(1011 if error is not None else 1000, "server", error)
            except Exception:
                _log.error(
                    "asgi-websocket",
                    "trackware: could not track the websocket event",
                    exc_info=True,
                )
            finally:
                self.engine.close(state)
                _active.reset(guard)

    def _track_ws(
        self,
        state: RequestState,
        inner: dict[str, t.Any],
        root_path: str,
        name: str,
        props: dict[str, t.Any],
    ) -> None:
        try:
            route, endpoint = self._find_route(inner, root_path, "GET", state.path)
        except Exception:
            route = endpoint = None
        if self.engine.route_excluded(route, endpoint):
            return
        props = {"path": state.path, "route": route, "endpoint": endpoint, **props}
        if state.status is not None:
            props["status"] = state.status
        tracker = state.tracker or _get_tracker()
        try:
            _track_in_scope(tracker, name, props, state)
        except Exception:
            _log.error(
                "asgi-websocket",
                "trackware: could not track the websocket event",
                exc_info=True,
            )

    # --- lifespan ----------------------------------------------------------------
    async def _lifespan(
        self,
        scope: t.Any,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        used = [False]

        async def lifespan_receive() -> ASGIReceiveEvent:
            used[0] = True
            return await receive()

        async def lifespan_send(message: ASGISendEvent) -> None:
            used[0] = True
            if message["type"] in (
                "lifespan.shutdown.complete",
                "lifespan.shutdown.failed",
            ):
                await self._shutdown_tracker()
            await send(message)

        inner: t.Any = dict(scope)
        inner[SCOPE_KEY] = None  # an inner TrackwareMiddleware leaves it to us
        try:
            await self.app(inner, lifespan_receive, lifespan_send)
        except Exception:
            if used[0]:
                raise
            # The app does not speak lifespan (Django's ASGIHandler raises):
            # answer it ourselves so that the tracker is shut down with it.
        else:
            if used[0]:
                return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown_tracker()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _shutdown_tracker(self) -> None:
        """Shut the tracker down within its budget on a thread (never blocking
        the loop): delivered or dead-lettered, every event has an outcome.

        A flush is not enough: the app's lifespan ends just before the server
        process does, and uvicorn ends it by re-raising SIGTERM, where no
        atexit hook runs; events a flush could not deliver (vendor down or
        hung) would vanish uncounted. A shutdown dead-letters them.
        """
        tracker = self.engine.options.tracker
        if tracker is None:
            from .. import _tracker

            tracker = _tracker._default
        if tracker is None:
            return
        try:
            await _in_thread(tracker.shutdown, tracker.shutdown_timeout)
        except Exception:
            _log.error(
                "asgi-lifespan-shutdown",
                "trackware: shutting the tracker down on lifespan shutdown failed",
                exc_info=True,
            )


async def _in_thread(fn: t.Callable[[float], bool], timeout: float) -> bool:
    """Run ``fn(timeout)`` on a new daemon thread and await its result."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: trio (e.g. hypercorn -k trio)
        trio = sys.modules.get("trio")
        if trio is None:
            return False
        return t.cast(bool, await trio.to_thread.run_sync(fn, timeout))
    future: asyncio.Future[bool] = loop.create_future()

    def settle(result: bool | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(bool(result))

    def run() -> None:
        try:
            result = fn(timeout)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="trackware-lifespan-flush", daemon=True).start()
    return await future


# --- route templates ------------------------------------------------------------


#: Route objects seen in ``scope["route"]``, by id: (route, template, name,
#: is_mount). The route is kept so that its id cannot be reused.
_route_info: dict[int, tuple[t.Any, str | None, str | None, bool]] = {}


def _describe(route: t.Any) -> tuple[t.Any, str | None, str | None, bool]:
    template = getattr(route, "path", None)
    name = getattr(route, "name", None)
    info = (
        route,
        template if isinstance(template, str) else None,
        name if isinstance(name, str) else None,
        hasattr(route, "routes"),  # a Mount (or Host)
    )
    if len(_route_info) < 4096:
        _route_info[id(route)] = info
    return info


def _scope_route(
    inner: dict[str, t.Any], root_path: str, method: str, path: str
) -> tuple[str | None, str | None]:
    """Starlette/FastAPI: the router leaves the matched route in ``scope["route"]``."""
    route = inner.get("route")
    if route is None:
        return None, None
    info = _route_info.get(id(route))
    if info is None or info[0] is not route:
        info = _describe(route)
    _, template, endpoint, is_mount = info
    if template is None:
        return None, endpoint
    if is_mount:
        # A Mount answering itself (static files, a plain ASGI sub-app).
        return template.rstrip("/") + "/{path:path}", endpoint
    mounted = inner.get("root_path") or ""
    if mounted != root_path and mounted.startswith(root_path):
        # Inside a mounted sub-app: the mount's part of the path comes first.
        template = mounted[len(root_path) :].rstrip("/") + template
    return template, endpoint


def _route_finder(app: t.Any) -> _RouteFinder:
    """Pick how route templates are found for ``app`` (duck-typed, no imports)."""
    target = getattr(app, "__self__", app)  # a bound method like quart_app.asgi_app
    module = type(target).__module__ or ""
    if module.startswith("django."):
        return _with_fallback(_django_route)
    url_map = getattr(target, "url_map", None)
    if url_map is not None and callable(getattr(url_map, "bind", None)):
        return _with_fallback(_werkzeug_route(url_map))
    return _scope_route


def _with_fallback(finder: _RouteFinder) -> _RouteFinder:
    def find(
        inner: dict[str, t.Any], root_path: str, method: str, path: str
    ) -> tuple[str | None, str | None]:
        if "route" in inner:
            return _scope_route(inner, root_path, method, path)
        return finder(inner, root_path, method, path)

    return find


def _relative(path: str, root_path: str) -> str:
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path


def _django_route(
    inner: dict[str, t.Any], root_path: str, method: str, path: str
) -> tuple[str | None, str | None]:
    """Django: resolve the path with the URLconf Django itself uses."""
    urls = sys.modules.get("django.urls")
    if urls is None:
        return None, None
    try:
        match = urls.resolve(_relative(path, root_path))
    except Exception:  # Resolver404 and friends: no route
        return None, None
    route = getattr(match, "route", None)
    view_name = getattr(match, "view_name", None)
    return (
        "/" + route.lstrip("^/") if isinstance(route, str) else None,
        view_name if isinstance(view_name, str) else None,
    )


def _werkzeug_route(url_map: t.Any) -> _RouteFinder:
    """Quart (and other werkzeug-routed ASGI apps): match against ``url_map``."""

    def find(
        inner: dict[str, t.Any], root_path: str, method: str, path: str
    ) -> tuple[str | None, str | None]:
        try:
            adapter = url_map.bind("localhost")
            rule, _ = adapter.match(
                _relative(path, root_path),
                method=method,
                return_rule=True,
                websocket=inner.get("type") == "websocket",
            )
        except Exception:  # 404, 405, redirects: no route
            return None, None
        return str(rule.rule), str(rule.endpoint)

    return find
