"""Flask integration: automatic page, session and identity tracking.

Usage::

    from trackware.integrations.flask import Trackware

    trackware_ext = Trackware(app, tracker=tracker)     # or:
    trackware_ext = Trackware(tracker=tracker)
    trackware_ext.init_app(app)                         # application factories
"""

from __future__ import annotations

import collections
import gc
import http
import itertools
import os
import typing as t
import urllib.parse
import weakref

try:
    import flask
except ImportError:  # pragma: no cover - exercised by the import-gate test
    raise ImportError(
        "trackware.integrations.flask needs Flask: pip install 'trackware[flask]'"
    ) from None

from flask.globals import _cv_request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response
from werkzeug.wsgi import ClosingIterator as _ClosingIterator
from werkzeug.wsgi import FileWrapper as _FileWrapper

from .. import _log
from .._context import Scope, _scope
from .._decorators import tracked_wrapper_of
from .._worker import _count_value
from ..exceptions import ConfigurationError
from ._cookies import COOKIE_SECRET_ENV, secrets_of
from ._options import (
    FIELDS,
    Identity,
    TrackingOptions,
    coerce,
    config_hint,
    flag,
    unknown_options,
)
from ._request import RequestState, RequestTracker

if t.TYPE_CHECKING:
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from .._config import FlaskOptions
    from .._tracker import Tracker

__all__ = ["Trackware", "flask_login_identity"]

_EXTENSION_KEY = "trackware"
#: environ keys (namespaced, like OpenTelemetry's): the app that accepted the
#: request, its RequestState once begun, and facts noted along the way.
_APP_KEY = "trackware.app"
_STATE_KEY = "trackware.request"
_ERROR_KEY = "trackware.error"
_RULE_KEY = "trackware.url_rule"


def flask_login_identity() -> str | None:
    """Identity callable for Flask-Login: the logged-in user's id, else ``None``."""
    try:
        from flask_login import current_user  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover
        return None
    if getattr(current_user, "is_authenticated", False):
        return t.cast("str | None", current_user.get_id())
    return None


class _AppState:
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
        #: tracked (see _ClosingBody.__del__).
        self.unclosed = itertools.count()
        #: The page events of those the cyclic collector finalised, waiting
        #: for the app's next request or stats() to track them.
        self.orphans: collections.deque[t.Callable[[], None]] = collections.deque()

    def track_orphans(self) -> None:
        """Track the page events that unclosed bodies left (see
        :meth:`_ClosingBody.__del__`); never raises."""
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


class Trackware:
    """The Flask extension. One instance may serve several apps.

    It follows the Flask extension contract: ``Trackware(app)`` or
    ``Trackware().init_app(app)`` in an application factory; the instance is
    registered as ``app.extensions["trackware"]`` and keeps no reference to
    any app (only weak ones), so it can serve several apps in one process,
    each with its own ``app.config``. It wraps ``app.wsgi_app`` of each app it
    is registered on (and ``app.full_dispatch_request`` when an ``identity``
    callable is configured).

    Args:
        app: the app to register with now (or call :meth:`init_app` later).
        tracker: where events go (default: the process default tracker, looked
            up per request). It becomes the process default too when none is
            set (``trackware.set_tracker()`` or ``trackware.init()`` before
            keeps theirs), so ``trackware.track()`` in background jobs,
            ``trackware.stats()`` and ``trackware.flush()`` use it. Sampling
            per event name is the tracker's ``sample_rates`` (e.g.
            ``{"page": 0.1}``).
        options: any :class:`TrackingOptions` field (``page_event``,
            ``session_timeout``, ``identity``, ``exclude_routes``,
            ``tid_source``...). ``TRACKWARE_<FIELD>`` keys in ``app.config``
            fill in what is not given here.

    Raises:
        ConfigurationError: for an unknown option or an invalid value, or
            when no key signs trackware's cookies (no ``cookie_secret``, no
            ``TRACKWARE_COOKIE_SECRET``, no ``app.secret_key``): at
            construction or :meth:`init_app`, never while serving requests.
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        tracker: Tracker | None = None,
        **options: Unpack[FlaskOptions],
    ) -> None:
        unknown_options("Trackware()", options, FIELDS)
        self._tracker = tracker
        self._options = options
        self._apps: weakref.WeakKeyDictionary[flask.Flask, _AppState] = (
            weakref.WeakKeyDictionary()
        )
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Register with ``app`` (as ``app.extensions["trackware"]``).

        Raises:
            ConfigurationError: trackware is already registered on ``app``, or
                an option is invalid.
        """
        if _EXTENSION_KEY in app.extensions:
            raise ConfigurationError(
                "trackware is already registered on this Flask app: call "
                "Trackware(app) or init_app(app) once per app, and reuse "
                "app.extensions['trackware'] elsewhere."
            )
        if not flag("TRACKWARE_ENABLED", app.config.get("TRACKWARE_ENABLED", True)):
            return
        options = self._resolve(app)
        identity = options.identity
        if identity is not None:
            if not callable(identity):
                raise ConfigurationError(
                    "identity must be a callable returning the current user, "
                    "e.g. trackware.integrations.flask.flask_login_identity"
                )
            # Called when the request starts and when its response is made,
            # both inside the request context; never outside one (a streamed
            # body closing), where it could not work.
            options.identity = _in_request_context(identity)
        engine = RequestTracker(options, state_type=_FlaskState)
        state = _AppState(app, engine, identity)
        self._apps[app] = state
        app.extensions[_EXTENSION_KEY] = self
        app.wsgi_app = _TrackwareWSGI(app.wsgi_app, state, app)  # type: ignore[method-assign]
        flask.got_request_exception.connect(_on_exception, app, weak=False)
        if identity is not None:
            app.full_dispatch_request = _wrap_dispatch(  # type: ignore[method-assign]
                state, app.full_dispatch_request
            )
            _connect_login_signals(app)
        if options.tracker is not None:
            # trackware.track()/stats()/flush() outside requests use it too,
            # unless a process default was set already (which is kept).
            from .._tracker import _adopt_default

            _adopt_default(options.tracker)

    def _resolve(self, app: flask.Flask) -> TrackingOptions:
        values: dict[str, t.Any] = {}
        known = {f"TRACKWARE_{name.upper()}": name for name in FIELDS}
        for key, value in app.config.items():
            if not key.startswith("TRACKWARE_"):
                continue
            name = known.get(key)
            if name is not None:
                values[name] = value
            elif key != "TRACKWARE_ENABLED":
                _log.warn(
                    f"flask-config:{key}",
                    "trackware: app.config[%r] is not a trackware option and is "
                    "ignored; %s",
                    key,
                    config_hint(key, known),
                )
        values.update(self._options)
        if self._tracker is not None:
            values["tracker"] = self._tracker
        for name, value in list(values.items()):
            values[name] = coerce(name, value)
        from .._tracker import Tracker

        tracker = values.get("tracker")
        if tracker is not None and not isinstance(tracker, Tracker):
            raise ConfigurationError(
                f"tracker must be a trackware.Tracker, not {type(tracker).__name__}"
            )
        tid_source = values.get("tid_source")
        if tid_source is not None and not callable(tid_source):
            raise ConfigurationError(
                "tid_source must be a callable (anonymous_id) -> tid or None, "
                "e.g. InteractionExporter.tid_for"
            )
        _cookie_secret(app, values)
        values.setdefault("exclude_endpoints", ("static",))
        return TrackingOptions(**values)

    def stats(self, app: flask.Flask | None = None) -> dict[str, int]:
        """The extension's counters for ``app`` (default: ``current_app``).

        ``page_unclosed``: streamed response bodies that were garbage-collected
        without the ``close()`` a WSGI server must call (Flask's test client
        does not call it, for instance). Their page events are tracked all
        the same, when the body is collected (with the status; the duration
        runs until then), so nothing is lost; the counter says that the
        server or client does not close bodies.
        """
        state = self._app_state(app)
        state.track_orphans()
        return {"page_unclosed": _count_value(state.unclosed)}

    def engine(self, app: flask.Flask | None = None) -> RequestTracker:
        """The request tracker serving ``app`` (default: ``current_app``)."""
        return self._app_state(app).engine

    def _app_state(self, app: flask.Flask | None) -> _AppState:
        target = app if app is not None else flask.current_app._get_current_object()  # type: ignore[attr-defined]
        state = self._apps.get(target)
        if state is None:
            raise ConfigurationError(
                "this Flask app is not registered with this Trackware instance: "
                "call Trackware(app) or trackware_ext.init_app(app) first"
            )
        return state


def _cookie_secret(app: flask.Flask, values: dict[str, t.Any]) -> None:
    """The key trackware's cookies are signed with, by precedence: the
    ``cookie_secret`` option (argument or ``TRACKWARE_COOKIE_SECRET`` in
    ``app.config``), the ``TRACKWARE_COOKIE_SECRET`` environment variable,
    ``app.secret_key`` with ``SECRET_KEY_FALLBACKS`` (the fallbacks verify
    only, as for Flask's own session), a per-process key when
    ``ephemeral_cookie_secret`` is set (see ``cookie_signer``).

    Raises:
        ConfigurationError: none of these: the app would have to send its
            cookies unsigned.
    """
    if secrets_of(values.get("cookie_secret")) or os.environ.get(COOKIE_SECRET_ENV):
        return
    if app.secret_key:
        fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or []
        values["cookie_secret"] = [
            app.secret_key,
            *secrets_of(fallbacks, "SECRET_KEY_FALLBACKS"),
        ]
    elif not values.get("ephemeral_cookie_secret"):
        raise ConfigurationError(
            "trackware signs its visitor, session and MXO tid cookies with a key "
            "derived from app.secret_key, and this app has none: set "
            "app.secret_key (SECRET_KEY in app.config) before Trackware(app) or "
            "init_app(app), or give trackware a key of its own with "
            "TRACKWARE_COOKIE_SECRET (in app.config or the environment) or "
            "cookie_secret=. For development only, "
            "TRACKWARE_EPHEMERAL_COOKIE_SECRET = True (ephemeral_cookie_secret"
            "=True) signs with a random per-process key."
        )


def _in_request_context(
    identity: t.Callable[[], Identity],
) -> t.Callable[[], Identity]:
    has_request_context = flask.has_request_context

    def identity_in_request() -> Identity:
        return identity() if has_request_context() else None

    return identity_in_request


# --- inside Flask: the request context is pushed, the URL matched ---------------------

_request_context = _cv_request.get
_new = object.__new__


def _wrap_dispatch(
    app_state: _AppState, dispatch: t.Callable[[], flask.Response]
) -> t.Callable[[], flask.Response]:
    """Wrap ``app.full_dispatch_request`` (only with an ``identity`` callable):
    the one call per request that runs inside the request context, before
    ``request_started`` and every hook, and that returns the final response."""
    engine = app_state.engine

    def full_dispatch_request() -> flask.Response:
        state = None
        try:
            environ = _request_context().request.environ
            if environ.get(_APP_KEY) is app_state:
                get = environ.get
                state = environ[_STATE_KEY] = _begin_wsgi(
                    engine,
                    environ,
                    get("REQUEST_METHOD", "GET"),
                    get("PATH_INFO") or "/",
                    get("HTTP_USER_AGENT"),
                )
        except Exception:
            _log.error(
                "flask-begin", "trackware: could not start tracking", exc_info=True
            )
        response = dispatch()
        if state is not None:  # a login or logout view may have changed it
            try:
                engine.apply_identity(state)
            except Exception:
                _log.error("flask-response", "trackware: identity", exc_info=True)
        return response

    return full_dispatch_request


def _begin_wsgi(
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
        query=query,
        secure=get("wsgi.url_scheme") == "https",
        referrer=get("HTTP_REFERER"),
        client_ip=get("REMOTE_ADDR") if options.capture_ip else None,
    )


def _on_exception(sender: flask.Flask, exception: t.Any = None, **_: t.Any) -> None:
    """Flask's got_request_exception (sent only for an unhandled exception):
    the page event names the error."""
    try:
        context = _request_context(None)
        if context is not None:
            request = context.request
            request.environ[_RULE_KEY] = request.url_rule
            if exception is not None:
                request.environ[_ERROR_KEY] = exception
    except Exception:  # pragma: no cover - defensive
        _log.error("flask-error", "trackware: got_request_exception", exc_info=True)


def _on_login(sender: flask.Flask, **_: t.Any) -> None:
    """Flask-Login's user_logged_in: events after login_user() carry the user."""
    try:
        environ = flask.request.environ
        state: RequestState | None = environ.get(_STATE_KEY)
        if state is not None:
            environ[_APP_KEY].engine.apply_identity(state)
    except Exception:
        _log.error("flask-login", "trackware: user_logged_in", exc_info=True)


def _connect_login_signals(app: flask.Flask) -> None:
    try:
        from flask_login import signals as login_signals  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return
    login_signals.user_logged_in.connect(_on_login, app, weak=False)


# --- the WSGI wrapper ---------------------------------------------------------------


class _FlaskState(RequestState):
    """A tracked request's state; its bound :meth:`respond` is the
    ``start_response`` Flask calls: it adds the cookies and notes the status
    (no other object per request)."""

    environ: t.Any  # the request's WSGI environ (None once finished)
    start_response: t.Any
    wsgi: _TrackwareWSGI

    def respond(
        self, status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
    ) -> t.Any:
        try:
            wsgi = self.wsgi
            if wsgi.page:
                code = _STATUS_CODES.get(status)
                self.status = int(status[:3]) if code is None else code
                # The request context is still pushed: what Flask matched.
                context = _request_context(None)
                if context is not None:
                    self.environ[_RULE_KEY] = context.request.url_rule
            if (
                self.new_visitor
                or self.session_dirty
                or self.context is not self.context0  # a new MXO tid?
            ):
                if wsgi.secure_auto:
                    # Read now: a ProxyFix inside ours has run by now.
                    self.secure = self.environ.get("wsgi.url_scheme") == "https"
                for cookie in wsgi.engine.response_cookies(self):
                    headers.append(("Set-Cookie", cookie))
        except Exception:
            _log.error(
                "flask-cookies", "trackware: could not set cookies", exc_info=True
            )
        return self.start_response(status, headers, exc_info)


class _Exchange:
    """The ``start_response`` of a request whose state ``full_dispatch_request``
    opens (with an ``identity`` callable), if it does."""

    __slots__ = ("environ", "start_response", "wsgi")

    environ: dict[str, t.Any]
    start_response: t.Any
    wsgi: _TrackwareWSGI

    def start(
        self, status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
    ) -> t.Any:
        state: _FlaskState | None = self.environ.get(_STATE_KEY)
        if state is None:
            return self.start_response(status, headers, exc_info)
        state.environ = self.environ
        state.start_response = self.start_response
        state.wsgi = self.wsgi
        return state.respond(status, headers, exc_info)


class _TrackwareWSGI:
    """Wraps ``app.wsgi_app``; per-request state lives in locals (and, when the
    scope is opened inside Flask, in the environ)."""

    def __init__(self, wsgi_app: t.Any, app_state: _AppState, app: flask.Flask) -> None:
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

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        engine = self.engine
        state: t.Any = None  # a _FlaskState (the engine's _state_type)
        inside = False
        try:
            if len(self.views) != self.seen_views:
                self._refresh()
            get = environ.get
            method = get("REQUEST_METHOD", "GET")
            path = get("PATH_INFO") or "/"
            agent = get("HTTP_USER_AGENT")
            if not engine.wants(method, path, agent) or (
                self.prefixes
                and path.startswith(self.prefixes)
                and self._rule_excluded(environ)
            ):
                pass
            elif self.inside:  # the scope is opened by full_dispatch_request
                inside = True
            else:
                state = _begin_wsgi(engine, environ, method, path, agent)
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
        if type(body) is _ClosingIterator:
            try:  # the common case: a response made from a list (not streamed)
                close: t.Any = body._callbacks[-1]  # the werkzeug response's close
                plain = type(close.__self__.response) is list
            except Exception:
                plain = False
            if plain:
                self._finish(state, environ, None)
                return body
        return self._closing(body, state, environ)

    def _call_inside(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        """A tracked request whose scope ``full_dispatch_request`` opens."""
        environ[_APP_KEY] = self.app_state
        exchange = _new(_Exchange)
        exchange.environ = environ
        exchange.start_response = start_response
        exchange.wsgi = self
        try:
            body = self.wsgi_app(environ, exchange.start)
        except BaseException as exc:
            state = environ.get(_STATE_KEY)
            if state is not None:
                self._finish(state, environ, exc)
            raise
        state = environ.get(_STATE_KEY)
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
        scope = Scope(tracker=tracker)
        token = _scope.set(scope)
        try:
            body = self.wsgi_app(environ, start_response)
        finally:
            _scope.reset(token)
        if type(body) is _ClosingIterator:
            try:  # the common case, checked inline: a response made from a list
                close: t.Any = body._callbacks[-1]  # the werkzeug response's close
                if type(close.__self__.response) is list:
                    return body
            except Exception:
                pass
        if _complete(body, environ):
            return body
        return _ClosingBody(body, scope, None)

    def _closing(
        self, body: t.Any, state: _FlaskState, environ: dict[str, t.Any]
    ) -> t.Any:
        """The page event of a body not known to be complete waits for its close."""
        if _complete(body, environ):
            self._finish(state, environ, None)
            return body
        # Unbind the scope now (a body that is never closed must not leak it
        # into the thread's next request); the body binds it again while the
        # app's generator produces each chunk.
        self.engine.close(state)
        return _ClosingBody(
            body, state, lambda: self._finish(state, environ, None), self
        )

    def _finish(
        self,
        state: _FlaskState,
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
            if _ERROR_KEY in environ:
                error = environ.pop(_ERROR_KEY)
        elif status is None:
            status = 500
        route = endpoint = blueprint = None
        rule = environ.get(_RULE_KEY)
        if rule is not None:
            route = rule.rule
            endpoint = rule.endpoint
            if "." in endpoint:  # as Request.blueprint
                blueprint = endpoint.rpartition(".")[0]
        self.engine.finish(
            state,
            status,
            route=route,
            endpoint=endpoint,
            blueprint=blueprint,
            error=error,
            close=True,
        )

    def _refresh(self) -> None:
        """The app's views changed (or this is its first request, or an
        unclosed body left a page event to track: see _ClosingBody.__del__)."""
        app = self.app_state.app()
        if app is None:  # pragma: no cover - the app is being collected
            return
        _use_tracked_wrappers(app)
        engine = self.engine
        prefixes = set()
        for rule in app.url_map.iter_rules():
            if _excluded(engine, rule.rule, rule.endpoint):
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
        return _excluded(self.engine, rule.rule, rule.endpoint)


#: ``int(status[:3])`` of the common status lines, looked up instead.
_STATUS_CODES = {f"{s.value} {s.phrase}": s.value for s in http.HTTPStatus}


def _excluded(engine: RequestTracker, route: str, endpoint: t.Any) -> bool:
    return engine.route_excluded(route, endpoint) or (
        isinstance(endpoint, str) and endpoint.endswith(".static")
    )


def _streamed(body: t.Any) -> bool:
    """Is this werkzeug response body produced while it is sent (an app's
    generator; files are not)?"""
    try:
        response = body._callbacks[-1].__self__
    except (AttributeError, IndexError):
        return True
    if not isinstance(response, Response):
        return True
    inner = response.response
    if type(inner) is list:  # the common case
        return False
    if type(inner) is _ClosingIterator:
        # Flask made the response by running a WSGI app (``force_type``):
        # werkzeug's error page for an unhandled HTTP error or exception
        # (raise -> 500, abort(404), unknown URLs), or an app the view
        # returned. Such a response is marked streamed, but what it wraps
        # may be complete already (the error page's is a list).
        return not _wraps_complete(inner)
    return response.is_streamed and not response.direct_passthrough


def _wraps_complete(iterator: _ClosingIterator) -> bool:
    """Does this ``ClosingIterator`` of ``run_wsgi_app`` wrap a body that is
    complete (a werkzeug response made from a list)?

    Each ``ClosingIterator`` ends its close callbacks with the close of what
    it wraps: another ``ClosingIterator`` (``run_wsgi_app`` wraps the app's
    iterator) or the response that made it (``Response.__call__``). Followed
    a few levels down, to a response's own body: a list or tuple is
    complete; anything else (a generator, a file, an unknown object) may run
    app code as it is sent, so the page event waits for ``close()``.
    """
    current: t.Any = iterator
    for _ in range(4):
        try:
            owner = current._callbacks[-1].__self__
        except (AttributeError, IndexError):
            return False
        if type(owner) is _ClosingIterator:
            current = owner
        elif isinstance(owner, Response):
            inner = owner.response
            if type(inner) is list or type(inner) is tuple:
                return True
            if type(inner) is not _ClosingIterator:
                return False
            current = inner
        else:
            return False
    return False


def _complete(body: t.Any, environ: dict[str, t.Any]) -> bool:
    """A body that is not an app's generator: a list, or a file sent as is."""
    if type(body) is list or type(body) is tuple:
        return True
    if type(body) is _ClosingIterator:
        return not _streamed(body)
    file_wrapper = environ.get("wsgi.file_wrapper", _FileWrapper)
    return isinstance(body, _FileWrapper) or (
        isinstance(file_wrapper, type) and isinstance(body, file_wrapper)
    )


class _ClosingBody:
    """A streamed response body: the request's scope is bound while each chunk
    is produced, and ``on_close`` (the page event) runs once when the server
    closes it, or when the body is garbage-collected unclosed (see
    :meth:`__del__`)."""

    __slots__ = ("_body", "_iterator", "_on_close", "_owner", "_scope")

    def __init__(
        self,
        body: t.Any,
        scope: Scope,
        on_close: t.Callable[[], None] | None,
        owner: _TrackwareWSGI | None = None,
    ) -> None:
        self._body = body
        self._scope = scope
        self._on_close = on_close
        self._owner = owner
        self._iterator: t.Iterator[bytes] | None = None

    def __iter__(self) -> _ClosingBody:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = iter(self._body)
        token = _scope.set(self._scope)
        try:
            return next(self._iterator)
        finally:
            _scope.reset(token)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                token = _scope.set(self._scope)
                try:
                    close()
                finally:
                    _scope.reset(token)
        finally:
            on_close = self._on_close
            if on_close is not None:
                self._on_close = None
                on_close()

    def __del__(self) -> None:
        """Garbage-collected without ``close()`` (which a WSGI server must
        call; Flask's test client does not): count it, and track the page
        event (status as sent, duration until now) rather than lose it.

        Where the last reference goes (CPython's reference counting: the
        server's or the test's code) the event is tracked at once. The
        cyclic collector, though, may run at any allocation, also inside a
        lock trackware holds; then only lock-free work happens here (a
        counter, a deque) and the app's next request, or ``stats()``,
        tracks the event. Never raises.
        """
        try:
            on_close = self._on_close
            owner = self._owner
            if on_close is None or owner is None:  # closed, or not tracked
                return
            self._on_close = None
            state = owner.app_state
            next(state.unclosed)
            if _collecting:
                state.orphans.append(on_close)
                owner.seen_views = -1  # the next request runs _refresh()
            else:
                on_close()
        except Exception:  # pragma: no cover - defensive (e.g. at interpreter exit)
            pass


#: True while the cyclic garbage collector runs (see ``_ClosingBody.__del__``).
_collecting = False


def _on_gc(phase: str, info: dict[str, t.Any]) -> None:
    global _collecting
    _collecting = phase == "start"


gc.callbacks.append(_on_gc)


def _use_tracked_wrappers(app: flask.Flask) -> None:
    """Serve @tracked wrappers for views decorated with @tracked above @app.route."""
    for endpoint, view in list(app.view_functions.items()):
        wrapper = tracked_wrapper_of(view)
        if wrapper is not None and wrapper is not view:
            app.view_functions[endpoint] = wrapper
