"""The Flask integration's WSGI wrapper around ``app.wsgi_app``: it decides
before Flask runs whether a request is tracked, opens its scope, adds the
cookies in ``start_response`` and records the page event when the body is
complete or closed. Also what the extension keeps per app.
"""

from __future__ import annotations

import collections
import http
import itertools
import typing as t
import urllib.parse
import weakref

import flask
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import ClosingIterator as _ClosingIterator

from .. import _log
from .._context import TrackerScope, scope_var
from .._decorators import tracked_wrapper_of
from ._options import Identity
from ._request import RequestState, RequestTracker
from ._wsgi_body import ClosingBody, body_complete, list_body

__all__ = ["AppState", "FlaskState", "TrackwareWSGI", "begin_wsgi"]

#: environ keys (namespaced, like OpenTelemetry's): the app that accepted the
#: request, its RequestState once begun, and facts noted along the way.
APP_KEY = "trackware.app"
STATE_KEY = "trackware.request"
ERROR_KEY = "trackware.error"
RULE_KEY = "trackware.url_rule"
#: Where werkzeug's Request puts itself in its environ (``populate_request``).
_REQUEST_KEY = "werkzeug.request"

_new = object.__new__
_has_request_context = flask.has_request_context


class AppState:
    """What the extension keeps per app (the app itself only weakly)."""

    __slots__ = ("app", "engine", "identity", "orphans", "unclosed")

    def __init__(
        self,
        app: flask.Flask,
        engine: RequestTracker,
        identity: t.Callable[[], Identity] | None,
    ) -> None:
        self.app = weakref.ref(app)
        self.engine = engine
        self.identity = identity
        #: Streamed bodies garbage-collected without close() (a server or
        #: client that broke the WSGI contract): counted, their page events
        #: tracked (see ClosingBody.__del__).
        self.unclosed = itertools.count()
        #: The page events of those the cyclic collector finalised, waiting
        #: for the app's next request or stats() to track them.
        self.orphans: collections.deque[t.Callable[[], None]] = collections.deque()

    def track_orphans(self) -> None:
        """Track the page events that unclosed bodies left (see
        :meth:`ClosingBody.__del__`); never raises."""
        orphans = self.orphans
        while orphans:
            try:
                finish = orphans.popleft()
            except IndexError:  # taken by another thread meanwhile
                return
            try:
                finish()
            except Exception:
                _log.error(
                    "flask-unclosed",
                    "trackware: could not track the page event of an unclosed body",
                    exc_info=True,
                )


def begin_wsgi(
    engine: RequestTracker,
    environ: dict[str, t.Any],
    method: str,
    path: str,
    agent: str | None,
) -> RequestState:
    """Open a tracked request's state from its WSGI environ (the wrapper's
    path and ``full_dispatch_request``'s share it)."""
    get = environ.get
    options = engine.options
    query = None
    if options.query_allow and get("QUERY_STRING"):
        query = dict(urllib.parse.parse_qsl(environ["QUERY_STRING"]))
    return engine.begin(
        method,
        path,
        get("HTTP_COOKIE"),
        agent,
        query,
        get("wsgi.url_scheme") == "https",
        get("HTTP_REFERER"),
        get("REMOTE_ADDR") if options.capture_ip else None,
    )


class FlaskState(RequestState):
    """A tracked request's state; its bound :meth:`respond` is the
    ``start_response`` Flask calls: it adds the cookies and notes the status
    (no other object per request)."""

    environ: t.Any  # the request's WSGI environ (None once finished)
    start_response: t.Any
    wsgi: TrackwareWSGI

    def respond(
        self, status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
    ) -> t.Any:
        try:
            wsgi = self.wsgi
            if wsgi.page:
                code = STATUS_CODES.get(status)
                self.status = int(status[:3]) if code is None else code
                # The request context is still pushed: what Flask matched.
                environ = self.environ
                request = environ.get(_REQUEST_KEY)
                if request is None and _has_request_context():
                    request = flask.request  # (an app that copied the environ)
                if request is not None:
                    environ[RULE_KEY] = request.url_rule
            if (
                self.new_visitor
                or self.session_dirty
                or self.context is not self.context0  # a new MXO tid?
            ):
                if wsgi.secure_auto:
                    # Read now: a ProxyFix inside ours has run by now.
                    self.secure = self.environ.get("wsgi.url_scheme") == "https"
                for cookie in wsgi.engine.cookies.response_cookies(self):
                    headers.append(("Set-Cookie", cookie))
        except Exception:
            _log.error(
                "flask-cookies", "trackware: could not set cookies", exc_info=True
            )
        return self.start_response(status, headers, exc_info)


class Exchange:
    """The ``start_response`` of a request whose state ``full_dispatch_request``
    opens (with an ``identity`` callable), if it does."""

    __slots__ = ("environ", "start_response", "wsgi")

    environ: dict[str, t.Any]
    start_response: t.Any
    wsgi: TrackwareWSGI

    def start(
        self, status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
    ) -> t.Any:
        state: FlaskState | None = self.environ.get(STATE_KEY)
        if state is None:
            return self.start_response(status, headers, exc_info)
        state.environ = self.environ
        state.start_response = self.start_response
        state.wsgi = self.wsgi
        return state.respond(status, headers, exc_info)


class TrackwareWSGI:
    """Wraps ``app.wsgi_app``; per-request state lives in locals (and, when the
    scope is opened inside Flask, in the environ)."""

    def __init__(self, wsgi_app: t.Any, app_state: AppState, app: flask.Flask) -> None:
        self.wsgi_app = wsgi_app
        self.app_state = app_state
        engine = self.engine = app_state.engine
        options = engine.options
        self.views = app.view_functions
        self.seen_views = -1
        #: Literal beginnings (as PATH_INFO carries them) of the excluded rules.
        self.prefixes: tuple[str, ...] = ()
        self.inside = app_state.identity is not None
        self.page = bool(options.page_event)
        self.secure_auto = options.cookie_secure is None
        self.tracker = options.tracker
        #: The engine's verdicts on paths (read first on every request).
        self.paths = engine.path_cache

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        get = environ.get
        path = get("PATH_INFO") or "/"
        # A path known to be excluded first: nothing else is read of its
        # request (a dict lookup; try costs nothing until something raises).
        try:
            known = self.paths.get(path) and len(self.views) == self.seen_views
        except Exception:  # (an unhashable PATH_INFO: a broken server)
            known = False
        if known:
            return self._untracked(environ, start_response)
        engine = self.engine
        state: t.Any = None  # a FlaskState (the engine's _state_type)
        inside = False
        try:
            if len(self.views) != self.seen_views:
                self._refresh()
            excluded = engine.path_cache.get(path)
            if excluded is None:
                excluded = engine.path_excluded(path)
            if excluded:
                pass
            else:
                method = get("REQUEST_METHOD", "GET")
                agent = get("HTTP_USER_AGENT")
                if not engine.admits(method, agent) or (
                    self.prefixes
                    and path.startswith(self.prefixes)
                    and self._rule_excluded(environ)
                ):
                    pass
                elif self.inside:  # the scope is opened by full_dispatch_request
                    inside = True
                else:
                    state = begin_wsgi(engine, environ, method, path, agent)
        except Exception:
            _log.error(
                "flask-begin", "trackware: could not start tracking", exc_info=True
            )
        if state is None:
            if inside:
                return self._call_inside(environ, start_response)
            return self._untracked(environ, start_response)
        state.environ = environ
        state.start_response = start_response
        state.wsgi = self
        try:
            body = self.wsgi_app(environ, state.respond)
        except BaseException as exc:
            self._finish(state, environ, exc)
            raise
        # The common case: a response made from a list (not streamed).
        if type(body) is _ClosingIterator and list_body(body):
            self._finish(state, environ, None)
            return body
        return self._closing(body, state, environ)

    def _call_inside(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        """A tracked request whose scope ``full_dispatch_request`` opens."""
        environ[APP_KEY] = self.app_state
        exchange = _new(Exchange)
        exchange.environ = environ
        exchange.start_response = start_response
        exchange.wsgi = self
        try:
            body = self.wsgi_app(environ, exchange.start)
        except BaseException as exc:
            state = environ.get(STATE_KEY)
            if state is not None:
                self._finish(state, environ, exc)
            raise
        state = environ.get(STATE_KEY)
        if state is None:
            return body
        return self._closing(body, state, environ)

    def _untracked(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        tracker = self.tracker
        if tracker is None:  # events go to the process default, as when tracked
            return self.wsgi_app(environ, start_response)
        # Not tracked, but what the app tracks still goes to our tracker: a
        # scope naming only the tracker (a new one: identify() writes to it),
        # bound while Flask runs and while a streamed body produces its chunks.
        scope = _new(TrackerScope)
        scope.tracker = tracker
        token = scope_var.set(scope)
        try:
            body = self.wsgi_app(environ, start_response)
        finally:
            scope_var.reset(token)
        if type(body) is _ClosingIterator and list_body(body):
            return body  # the common case: a response made from a list
        if body_complete(body, environ):
            return body
        return ClosingBody(body, scope, None)

    def _closing(
        self, body: t.Any, state: FlaskState, environ: dict[str, t.Any]
    ) -> t.Any:
        """The page event of a body not known to be complete waits for its close."""
        if body_complete(body, environ):
            self._finish(state, environ, None)
            return body
        # Unbind the scope now (a body that is never closed must not leak it
        # into the thread's next request); the body binds it again while the
        # app's generator produces each chunk.
        self.engine.close(state)
        return ClosingBody(
            body, state, lambda: self._finish(state, environ, None), self
        )

    def _finish(
        self,
        state: FlaskState,
        environ: dict[str, t.Any],
        error: BaseException | None,
    ) -> None:
        if state.deferred:  # finished already (close() called twice)
            return
        state.deferred = True
        # The page record keeps the state a while: not the server's objects.
        state.environ = state.start_response = None
        if not self.page:  # no page event: only the scope to close
            self.engine.close(state)
            return
        status = state.status
        if error is None:
            if ERROR_KEY in environ:
                error = environ.pop(ERROR_KEY)
        elif status is None:
            status = 500
        route = endpoint = blueprint = None
        rule = environ.get(RULE_KEY)
        if rule is not None:
            route = rule.rule
            endpoint = rule.endpoint
            if "." in endpoint:  # as Request.blueprint
                blueprint = endpoint.rpartition(".")[0]
        self.engine.finish(state, status, route, endpoint, blueprint, error, close=True)

    def _refresh(self) -> None:
        """The app's views changed (or this is its first request, or an
        unclosed body left a page event to track: see ClosingBody.__del__)."""
        app = self.app_state.app()
        if app is None:  # pragma: no cover - the app is being collected
            return
        use_tracked_wrappers(app)
        engine = self.engine
        prefixes = set()
        for rule in app.url_map.iter_rules():
            if rule_excluded_by(engine, rule.rule, rule.endpoint):
                literal = rule.rule.split("<", 1)[0]
                # PATH_INFO carries the UTF-8 bytes of the path as latin-1.
                prefixes.add(literal.encode("utf-8").decode("latin-1"))
        self.prefixes = tuple(sorted(prefixes))
        self.seen_views = len(self.views)
        # After the store above: a body finalised meanwhile sets seen_views
        # to -1 after queueing its page event, so none waits unnoticed.
        self.app_state.track_orphans()

    def _rule_excluded(self, environ: dict[str, t.Any]) -> bool:
        """Match the URL as Flask will (rarely: the path could be an excluded
        route's); is its rule excluded?"""
        app = self.app_state.app()
        if app is None:  # pragma: no cover - the app is being collected
            return False
        try:
            request = flask.Request(environ, populate_request=False, shallow=True)
            adapter = app.create_url_adapter(request)
            if adapter is None:
                return False
            rule, _ = adapter.match(return_rule=True)
        except HTTPException:  # not found, redirected...: not an excluded rule
            return False
        return rule_excluded_by(self.engine, rule.rule, rule.endpoint)


#: ``int(status[:3])`` of the common status lines, looked up instead.
STATUS_CODES = {f"{s.value} {s.phrase}": s.value for s in http.HTTPStatus}


def rule_excluded_by(engine: RequestTracker, route: str, endpoint: t.Any) -> bool:
    return engine.route_excluded(route, endpoint) or (
        isinstance(endpoint, str) and endpoint.endswith(".static")
    )


def use_tracked_wrappers(app: flask.Flask) -> None:
    """Serve @tracked wrappers for views decorated with @tracked above @app.route."""
    for endpoint, view in list(app.view_functions.items()):
        wrapper = tracked_wrapper_of(view)
        if wrapper is not None and wrapper is not view:
            app.view_functions[endpoint] = wrapper
