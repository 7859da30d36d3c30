"""Flask integration: automatic page, session and identity tracking.

Usage::

    from trackware.integrations.flask import Trackware

    trackware_ext = Trackware(app, tracker=tracker)     # or:
    trackware_ext = Trackware(tracker=tracker)
    trackware_ext.init_app(app)                         # application factories

Options are the fields of :class:`~trackware.integrations._common.TrackingOptions`,
given as keyword arguments or as ``TRACKWARE_<NAME>`` keys in ``app.config``
(keyword arguments win). ``TRACKWARE_ENABLED = False`` turns the extension off.
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
from .._decorators import tracked_wrapper_of
from ..exceptions import ConfigurationError
from ._common import RequestState, RequestTracker, TrackingOptions

if t.TYPE_CHECKING:
    from .._tracker import Tracker

__all__ = ["Trackware", "flask_login_identity"]

_EXTENSION_KEY = "trackware"
_ENVIRON_KEY = "trackware.request"


def flask_login_identity() -> str | None:
    """Identity callable for Flask-Login: the logged-in user's id, else ``None``."""
    try:
        from flask_login import current_user  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover
        return None
    if getattr(current_user, "is_authenticated", False):
        return t.cast("str | None", current_user.get_id())
    return None


class _AppState:
    __slots__ = ("app", "engine", "identity", "seen_views", "wsgi")

    def __init__(self, app: flask.Flask, engine: RequestTracker) -> None:
        self.app = weakref.ref(app)
        self.engine = engine
        self.identity = engine.options.identity is not None
        self.seen_views = -1
        self.wsgi: _TrackwareWSGI | None = None


class Trackware:
    """The Flask extension. One instance may serve several apps.

    It wraps ``app.wsgi_app`` (so it sees the whole response, streamed bodies
    included, and costs no Flask hook per request) and, when an ``identity``
    callable is configured, listens to Flask's ``request_started`` and
    ``request_tearing_down`` signals to call it inside the request context.

    Args:
        app: the app to register with now (or call :meth:`init_app` later).
        tracker: where events go (default: the process default tracker).
        options: any :class:`TrackingOptions` field (``page_event``,
            ``session_timeout``, ``identity``, ``exclude_paths``...).
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        tracker: Tracker | None = None,
        **options: t.Any,
    ) -> None:
        names = {f.name for f in dataclasses.fields(TrackingOptions)}
        unknown = set(options) - names
        if unknown:
            raise ConfigurationError(
                f"Trackware() got unknown option(s) {sorted(unknown)}; "
                f"valid options: {sorted(names)}"
            )
        self._tracker = tracker
        self._options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Register with ``app`` (``app.extensions["trackware"]``)."""
        if _EXTENSION_KEY in app.extensions:
            raise ConfigurationError(
                "trackware is already registered on this Flask app: create one "
                "Trackware(...) per app and call init_app once (reuse the "
                "existing app.extensions['trackware'])."
            )
        if not app.config.get("TRACKWARE_ENABLED", True):
            return
        values: dict[str, t.Any] = {}
        for field in dataclasses.fields(TrackingOptions):
            key = f"TRACKWARE_{field.name.upper()}"
            if key in app.config:
                values[field.name] = app.config[key]
        values.update(self._options)
        if self._tracker is not None:
            values["tracker"] = self._tracker
        if not values.get("cookie_secret") and app.secret_key:
            values["cookie_secret"] = app.secret_key
        values.setdefault("exclude_endpoints", ("static",))
        engine = RequestTracker(TrackingOptions(**values))
        state = _AppState(app, engine)
        app.extensions[_EXTENSION_KEY] = state
        state.wsgi = _TrackwareWSGI(app.wsgi_app, state)
        app.wsgi_app = state.wsgi  # type: ignore[method-assign]
        if state.identity:
            flask.request_started.connect(_on_request_started, app, weak=False)
            flask.request_tearing_down.connect(_on_tearing_down, app, weak=False)

    @staticmethod
    def engine(app: flask.Flask) -> RequestTracker:
        """The request tracker registered on ``app`` (for advanced use and tests)."""
        try:
            return t.cast(_AppState, app.extensions[_EXTENSION_KEY]).engine
        except KeyError:
            raise ConfigurationError(
                "this Flask app has no trackware extension: call "
                "Trackware(app) or Trackware().init_app(app)"
            ) from None


def _on_request_started(sender: flask.Flask, **_: t.Any) -> None:
    state: RequestState | None = flask.request.environ.get(_ENVIRON_KEY)
    if state is not None:
        sender.extensions[_EXTENSION_KEY].engine.apply_identity(state.scope)


def _on_tearing_down(sender: flask.Flask, **_: t.Any) -> None:
    state: RequestState | None = flask.request.environ.get(_ENVIRON_KEY)
    if state is not None:
        sender.extensions[_EXTENSION_KEY].engine.apply_identity(state.scope)


class _TrackwareWSGI:
    """Wraps ``app.wsgi_app``: per-request state lives in locals and the environ."""

    def __init__(self, wsgi_app: t.Any, app_state: _AppState) -> None:
        self.wsgi_app = wsgi_app
        self.app_state = app_state
        self.engine = app_state.engine
        options = app_state.engine.options
        # Route and endpoint exclusions must be known before the session
        # cookie is touched, which needs an early URL match: only paid for
        # when such exclusions are configured.
        self.match_early = bool(options.exclude_routes) or bool(
            set(options.exclude_endpoints) - {"static"}
        )

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        engine = self.engine
        try:
            state = self._begin(environ)
        except Exception:
            _log.error(
                "flask-begin", "trackware: could not start tracking", exc_info=True
            )
            state = None
        if state is None:
            return self.wsgi_app(environ, start_response)

        def tracking_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
        ) -> t.Any:
            try:
                state.status = int(status[:3])
                for cookie in engine.response_cookies(state):
                    headers.append(("Set-Cookie", cookie))
            except Exception:
                _log.error(
                    "flask-cookies", "trackware: could not set cookies", exc_info=True
                )
            return start_response(status, headers, exc_info)

        try:
            body = self.wsgi_app(environ, tracking_start_response)
        except BaseException as exc:
            self._finish(state, environ, exc)
            raise
        return _ClosingBody(body, lambda: self._finish(state, environ, None))

    def _begin(self, environ: dict[str, t.Any]) -> RequestState | None:
        engine = self.engine
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO") or "/"
        if not engine.wants(method, path, environ.get("HTTP_USER_AGENT")):
            return None
        route = endpoint = None
        app_state = self.app_state
        app = app_state.app()
        if app is not None and len(app.view_functions) != app_state.seen_views:
            _use_tracked_wrappers(app, app_state)
        if self.match_early and app is not None:
            try:
                rule, _ = app.url_map.bind_to_environ(environ).match(return_rule=True)
                route, endpoint = rule.rule, rule.endpoint
            except Exception:  # 404/405/redirects: Flask will answer
                pass
            if engine.route_excluded(route, endpoint):
                return None
        options = engine.options
        query = None
        if options.query_allow and environ.get("QUERY_STRING"):
            query = dict(urllib.parse.parse_qsl(environ["QUERY_STRING"]))
        state = engine.begin(
            method=method,
            path=path,
            query=query,
            cookie_header=environ.get("HTTP_COOKIE"),
            secure=environ.get("wsgi.url_scheme") == "https",
            referrer=environ.get("HTTP_REFERER"),
            user_agent=environ.get("HTTP_USER_AGENT"),
            client_ip=environ.get("REMOTE_ADDR") if options.capture_ip else None,
        )
        environ[_ENVIRON_KEY] = state
        return state

    def _finish(
        self,
        state: RequestState,
        environ: dict[str, t.Any],
        error: BaseException | None,
    ) -> None:
        if state.deferred:  # finished already (close() called twice)
            return
        state.deferred = True
        route = endpoint = blueprint = None
        request = environ.get("werkzeug.request")
        rule = getattr(request, "url_rule", None)
        if rule is not None:
            route, endpoint = rule.rule, rule.endpoint
            blueprint = getattr(request, "blueprint", None)
        status = state.status
        if error is not None and status is None:
            status = 500
        self.engine.finish(
            state,
            status=status,
            route=route,
            endpoint=endpoint,
            extra={"blueprint": blueprint} if blueprint else None,
            error=error,
        )


class _ClosingBody:
    """The app's response iterable, calling ``on_close`` once when it is closed."""

    __slots__ = ("_body", "_on_close")

    def __init__(self, body: t.Any, on_close: t.Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close

    def __iter__(self) -> t.Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


def _use_tracked_wrappers(app: flask.Flask, app_state: _AppState) -> None:
    """Serve @tracked wrappers for views decorated with @tracked above @app.route."""
    for endpoint, view in list(app.view_functions.items()):
        wrapper = tracked_wrapper_of(view)
        if wrapper is not None:
            app.view_functions[endpoint] = wrapper
    app_state.seen_views = len(app.view_functions)
