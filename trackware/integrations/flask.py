"""Flask integration: automatic page, session and identity tracking.

Usage::

    from trackware.integrations.flask import Trackware

    trackware_ext = Trackware(app, tracker=tracker)     # or:
    trackware_ext = Trackware(tracker=tracker)
    trackware_ext.init_app(app)                         # application factories

Options are the fields of :class:`~trackware.integrations._common.TrackingOptions`,
given as keyword arguments or as ``TRACKWARE_<NAME>`` keys in ``app.config``
(keyword arguments win). ``TRACKWARE_ENABLED = False`` turns the extension off.

How a request is tracked:

1. The wrapper around ``app.wsgi_app`` drops the requests that are never
   tracked (HEAD/OPTIONS, health probes, static files, bots) before Flask
   does any work for them.
2. A wrapper around ``app.full_dispatch_request`` (the request context is
   pushed and the URL matched; ``request_started``, ``before_request`` and the
   view have not run yet) applies route and endpoint exclusions, reads the
   cookies, calls the ``identity`` callable and opens the request's
   :class:`~trackware.Scope`, so everything tracked during the request
   carries the visitor, session and user. When the response is made it notes
   whether it is streamed and asks the ``identity`` callable again (a login
   or logout view changed it); Flask-Login's ``user_logged_in`` also updates
   the scope at once.
3. The page event is tracked when ``wsgi_app`` returns, or, for a streamed
   response, when the server closes the body. The scope is closed then, so
   nothing of one request leaks into the next.

Both wrappers are plain function calls: no Flask signal or hook runs per
request on trackware's behalf.
"""

from __future__ import annotations

import dataclasses
import typing as t
import urllib.parse
import weakref

try:
    import flask
except ImportError:  # pragma: no cover - exercised by the import-gate test
    raise ImportError(
        "trackware.integrations.flask needs Flask: pip install 'trackware[flask]'"
    ) from None

from .. import _log
from .._context import Scope, _scope
from .._decorators import tracked_wrapper_of
from ..exceptions import ConfigurationError
from ._common import Identity, RequestState, RequestTracker, TrackingOptions

if t.TYPE_CHECKING:
    from .._tracker import Tracker

__all__ = ["Trackware", "flask_login_identity"]

_EXTENSION_KEY = "trackware"
#: environ keys (namespaced, like OpenTelemetry's): the app that accepted the
#: request, its RequestState once begun, and facts noted along the way.
_APP_KEY = "trackware.app"
_STATE_KEY = "trackware.request"
_STREAMED_KEY = "trackware.streamed"
_ERROR_KEY = "trackware.error"
_BARE_KEY = "trackware.bare_scope"

_FIELDS = {f.name: f for f in dataclasses.fields(TrackingOptions)}
# Options that hold several strings; a plain string is split on commas (a
# single regular expression, for exclude_paths), never iterated per character.
_COLLECTIONS = frozenset(
    {
        "exclude_methods",
        "exclude_paths",
        "exclude_routes",
        "exclude_endpoints",
        "bot_agents",
        "query_allow",
    }
)
_NUMBERS = {"session_timeout": float, "visitor_max_age": int}
_FLAGS = frozenset(
    {"sessions", "exclude_bots", "capture_ip", "capture_user_agent", "cookie_secure"}
)


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

    __slots__ = ("app", "engine", "identity", "seen_views")

    def __init__(
        self,
        app: flask.Flask,
        engine: RequestTracker,
        identity: t.Callable[[], Identity] | None,
    ) -> None:
        self.app = weakref.ref(app)
        self.engine = engine
        self.identity = identity
        self.seen_views = -1


class Trackware:
    """The Flask extension. One instance may serve several apps.

    It follows the Flask extension contract: ``Trackware(app)`` or
    ``Trackware().init_app(app)`` in an application factory; the instance is
    registered as ``app.extensions["trackware"]`` and keeps no reference to
    any app (only weak ones), so it can serve several apps in one process,
    each with its own ``app.config``. It wraps ``app.wsgi_app`` and
    ``app.full_dispatch_request`` of each app it is registered on.

    Args:
        app: the app to register with now (or call :meth:`init_app` later).
        tracker: where events go (default: the process default tracker, looked
            up per request). Sampling per event name is the tracker's
            ``sample_rates`` (e.g. ``{"page": 0.1}``).
        options: any :class:`TrackingOptions` field (``page_event``,
            ``session_timeout``, ``identity``, ``exclude_routes``,
            ``tid_source``...). ``TRACKWARE_<FIELD>`` keys in ``app.config``
            fill in what is not given here.

    Raises:
        ConfigurationError: for an unknown option or an invalid value (at
            construction or :meth:`init_app`, never while serving requests).
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        tracker: Tracker | None = None,
        **options: t.Any,
    ) -> None:
        unknown = set(options) - set(_FIELDS)
        if unknown:
            raise ConfigurationError(
                f"Trackware() got unknown option(s) {sorted(unknown)}; "
                f"valid options: {sorted(_FIELDS)}"
            )
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
        if not _flag("TRACKWARE_ENABLED", app.config.get("TRACKWARE_ENABLED", True)):
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
        engine = RequestTracker(options)
        state = _AppState(app, engine, identity)
        self._apps[app] = state
        app.extensions[_EXTENSION_KEY] = self
        app.wsgi_app = _TrackwareWSGI(app.wsgi_app, state)  # type: ignore[method-assign]
        app.full_dispatch_request = _wrap_dispatch(  # type: ignore[method-assign]
            state, app.full_dispatch_request
        )
        if identity is not None:
            _connect_login_signals(app)

    def _resolve(self, app: flask.Flask) -> TrackingOptions:
        values: dict[str, t.Any] = {}
        known = {f"TRACKWARE_{name.upper()}": name for name in _FIELDS}
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
                    "ignored; options are TRACKWARE_ + one of %s",
                    key,
                    ", ".join(n.upper() for n in sorted(_FIELDS)),
                )
        values.update(self._options)
        if self._tracker is not None:
            values["tracker"] = self._tracker
        for name, value in list(values.items()):
            values[name] = _coerce(name, value)
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
        if not values.get("cookie_secret") and app.secret_key:
            values["cookie_secret"] = app.secret_key
        values.setdefault("exclude_endpoints", ("static",))
        return TrackingOptions(**values)

    def engine(self, app: flask.Flask | None = None) -> RequestTracker:
        """The request tracker serving ``app`` (default: ``current_app``)."""
        target = app if app is not None else flask.current_app._get_current_object()  # type: ignore[attr-defined]
        state = self._apps.get(target)
        if state is None:
            raise ConfigurationError(
                "this Flask app is not registered with this Trackware instance: "
                "call Trackware(app) or trackware_ext.init_app(app) first"
            )
        return state.engine


def _flag(name: str, value: t.Any) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigurationError(f"{name} must be true or false, not {value!r}")
    return bool(value)


def _coerce(name: str, value: t.Any) -> t.Any:
    """Config values often arrive as strings (environment variables)."""
    if name in _COLLECTIONS and isinstance(value, str):
        if name == "exclude_paths":
            return (value,)
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if name in _NUMBERS:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigurationError(f"{name} must be a number, not {value!r}")
        try:
            return _NUMBERS[name](value)
        except ValueError:
            raise ConfigurationError(
                f"{name} must be a number, not {value!r}"
            ) from None
    if name in _FLAGS and isinstance(value, str):
        return _flag(name, value)
    return value


def _in_request_context(
    identity: t.Callable[[], Identity],
) -> t.Callable[[], Identity]:
    has_request_context = flask.has_request_context

    def identity_in_request() -> Identity:
        return identity() if has_request_context() else None

    return identity_in_request


# --- inside Flask: the request context is pushed, the URL matched ---------------------

_current_request = flask.request._get_current_object  # type: ignore[attr-defined]
_request_context: t.Callable[[], t.Any] | None
try:  # the request context's ContextVar: one C call instead of the proxy's
    from flask.globals import _cv_request

    _request_context = _cv_request.get
except ImportError:  # pragma: no cover - a Flask without it
    _request_context = None


def _wrap_dispatch(
    app_state: _AppState, dispatch: t.Callable[[], flask.Response]
) -> t.Callable[[], flask.Response]:
    """Wrap ``app.full_dispatch_request``: the one call per request that runs
    inside the request context, before ``request_started`` and every hook, and
    that returns the final response (cheaper than two signal receivers)."""
    engine = app_state.engine

    def full_dispatch_request() -> flask.Response:
        state = environ = None
        try:
            request = (
                _current_request()
                if _request_context is None
                else _request_context().request
            )
            environ = request.environ
            if environ.get(_APP_KEY) is app_state:
                state = _begin(app_state, request, environ)
        except Exception:
            _log.error(
                "flask-begin", "trackware: could not start tracking", exc_info=True
            )
        if state is None or environ is None:
            return dispatch()
        try:
            response = dispatch()
        except Exception as exc:  # unhandled: Flask answers 500 or re-raises
            environ[_ERROR_KEY] = exc
            raise
        try:
            if (
                type(response.response) is not list  # the common case, not streamed
                and response.is_streamed
                and not response.direct_passthrough
            ):
                # A generator of the app's runs while the body is sent (files
                # do not): the page event waits for the body to close.
                environ[_STREAMED_KEY] = True
            if app_state.identity is not None:  # a login or logout view ran
                engine.apply_identity(state.scope)
        except Exception:
            _log.error("flask-response", "trackware: response hook", exc_info=True)
        return response

    return full_dispatch_request


def _begin(
    app_state: _AppState, request: flask.Request, environ: dict[str, t.Any]
) -> RequestState | None:
    engine = app_state.engine
    rule = request.url_rule
    route = endpoint = None
    if rule is not None:
        route, endpoint = rule.rule, rule.endpoint
        if (
            endpoint.endswith(".static")
            or route in engine._routes
            or endpoint in engine._endpoints
        ):
            tracker = engine.options.tracker
            if tracker is not None:
                # Not tracked, but what the view tracks goes to our tracker.
                environ[_BARE_KEY] = _scope.set(Scope(tracker=tracker))
            return None
    options = engine.options
    query = None
    if options.query_allow and environ.get("QUERY_STRING"):
        query = dict(urllib.parse.parse_qsl(environ["QUERY_STRING"]))
    get = environ.get
    state = engine._begin(
        get("REQUEST_METHOD", "GET"),
        get("PATH_INFO") or "/",
        query,
        get("HTTP_COOKIE"),
        get("wsgi.url_scheme") == "https",
        get("HTTP_REFERER"),
        get("HTTP_USER_AGENT"),
        get("REMOTE_ADDR") if options.capture_ip else None,
        None,
        _scope,
        None,
    )
    if endpoint is not None:
        state.route = route
        state.endpoint = endpoint
        if "." in endpoint:  # as Request.blueprint
            state.blueprint = endpoint.rpartition(".")[0]
    environ[_STATE_KEY] = state
    return state


def _on_login(sender: flask.Flask, **_: t.Any) -> None:
    """Flask-Login's user_logged_in: events after login_user() carry the user."""
    try:
        environ = flask.request.environ
        state: RequestState | None = environ.get(_STATE_KEY)
        if state is not None:
            environ[_APP_KEY].engine.apply_identity(state.scope)
    except Exception:
        _log.error("flask-login", "trackware: user_logged_in", exc_info=True)


def _connect_login_signals(app: flask.Flask) -> None:
    try:
        from flask_login import signals as login_signals  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return
    login_signals.user_logged_in.connect(_on_login, app, weak=False)


# --- the WSGI wrapper ---------------------------------------------------------------


class _TrackwareWSGI:
    """Wraps ``app.wsgi_app``; per-request state lives in the environ."""

    def __init__(self, wsgi_app: t.Any, app_state: _AppState) -> None:
        self.wsgi_app = wsgi_app
        self.app_state = app_state
        self.engine = app_state.engine

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        try:
            app_state = self.app_state
            app = app_state.app()
            if app is not None and len(app.view_functions) != app_state.seen_views:
                _use_tracked_wrappers(app, app_state)
            wanted = self.engine.wants(
                environ.get("REQUEST_METHOD", "GET"),
                environ.get("PATH_INFO") or "/",
                environ.get("HTTP_USER_AGENT"),
            )
        except Exception:
            _log.error("flask-wants", "trackware: request filter failed", exc_info=True)
            wanted = False
        if not wanted:
            tracker = self.engine.options.tracker
            if tracker is None:
                return self.wsgi_app(environ, start_response)
            # Not tracked, but what the view tracks still goes to our tracker.
            token = _scope.set(Scope(tracker=tracker))
            try:
                return self.wsgi_app(environ, start_response)
            finally:
                _scope.reset(token)
        environ[_APP_KEY] = app_state
        engine = self.engine
        secure_auto = engine.options.cookie_secure is None

        def tracking_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
        ) -> t.Any:
            state: RequestState | None = environ.get(_STATE_KEY)
            if state is not None:
                try:
                    state.status = int(status[:3])
                    tid = state.scope.context.get("mxo_tid")
                    if (
                        state.new_visitor
                        or state.session_dirty
                        or (tid and tid != state.incoming_tid)
                    ):
                        if secure_auto:
                            # Read now: a ProxyFix inside ours has run by now.
                            state.secure = environ.get("wsgi.url_scheme") == "https"
                        for cookie in engine.response_cookies(state):
                            headers.append(("Set-Cookie", cookie))
                except Exception:
                    _log.error(
                        "flask-cookies",
                        "trackware: could not set cookies",
                        exc_info=True,
                    )
            return start_response(status, headers, exc_info)

        try:
            body = self.wsgi_app(environ, tracking_start_response)
        except BaseException as exc:
            state = environ.get(_STATE_KEY)
            if state is not None:
                self._finish(state, environ, exc)
            else:
                _reset_bare(environ)
            raise
        state = environ.get(_STATE_KEY)
        if state is None:
            _reset_bare(environ)
            return body
        if environ.get(_STREAMED_KEY):
            # Unbind the scope now (a body that is never closed must not leak
            # it into the thread's next request); the body binds it again
            # while the app's generator produces each chunk.
            engine.close(state)
            return _ClosingBody(
                body, state.scope, lambda: self._finish(state, environ, None)
            )
        self._finish(state, environ, None)
        return body

    def _finish(
        self,
        state: RequestState,
        environ: dict[str, t.Any],
        error: BaseException | None,
    ) -> None:
        if state.deferred:  # finished already (close() called twice)
            return
        state.deferred = True
        status = state.status
        if error is None:
            if _ERROR_KEY in environ:
                error = environ.pop(_ERROR_KEY)
        elif status is None:
            status = 500
        blueprint = state.blueprint
        self.engine._finish(
            state,
            status,
            state.route,
            state.endpoint,
            {"blueprint": blueprint} if blueprint else None,
            error,
            _scope,
            True,
        )


def _reset_bare(environ: dict[str, t.Any]) -> None:
    token = environ.pop(_BARE_KEY, None)
    if token is not None:
        try:
            _scope.reset(token)
        except ValueError:  # pragma: no cover - set in another context
            pass


class _ClosingBody:
    """A streamed response body: the request's scope is bound while each chunk
    is produced, and ``on_close`` runs once when the server closes it."""

    __slots__ = ("_body", "_iterator", "_on_close", "_scope")

    def __init__(
        self, body: t.Any, scope: Scope, on_close: t.Callable[[], None]
    ) -> None:
        self._body = body
        self._scope = scope
        self._on_close = on_close
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
            self._on_close()


def _use_tracked_wrappers(app: flask.Flask, app_state: _AppState) -> None:
    """Serve @tracked wrappers for views decorated with @tracked above @app.route."""
    for endpoint, view in list(app.view_functions.items()):
        wrapper = tracked_wrapper_of(view)
        if wrapper is not None and wrapper is not view:
            app.view_functions[endpoint] = wrapper
    app_state.seen_views = len(app.view_functions)
