"""Flask integration: automatic page, session and identity tracking.

Usage::

    from trackware.integrations.flask import Trackware

    trackware_ext = Trackware(app, tracker=tracker)     # or:
    trackware_ext = Trackware(tracker=tracker)
    trackware_ext.init_app(app)                         # application factories
"""

from __future__ import annotations

import os
import typing as t
import weakref

try:
    import flask
except ImportError:  # pragma: no cover - exercised by the import-gate test
    raise ImportError(
        "trackware.integrations.flask needs Flask: pip install 'trackware[flask]'"
    ) from None

from .. import _log
from .._default import adopt_default
from .._settle import count_value
from ..exceptions import ConfigurationError
from ._cookies import COOKIE_SECRET_ENV, secrets_of
from ._flask_wsgi import (
    APP_KEY,
    ERROR_KEY,
    RULE_KEY,
    STATE_KEY,
    AppState,
    FlaskState,
    TrackwareWSGI,
    begin_wsgi,
)
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


def flask_login_identity() -> str | None:
    """Identity callable for Flask-Login: the logged-in user's id, else ``None``."""
    try:
        from flask_login import current_user  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover
        return None
    if getattr(current_user, "is_authenticated", False):
        return t.cast("str | None", current_user.get_id())
    return None


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
        options: any :class:`~trackware.integrations.TrackingOptions` field
            (``page_event``, ``session_timeout``, ``identity``,
            ``exclude_routes``, ``tid_source``...). ``TRACKWARE_<FIELD>`` keys
            in ``app.config`` fill in what is not given here.

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
        self._apps: weakref.WeakKeyDictionary[flask.Flask, AppState] = (
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
        engine = RequestTracker(options, state_type=FlaskState)
        state = AppState(app, engine, identity)
        self._apps[app] = state
        app.extensions[_EXTENSION_KEY] = self
        app.wsgi_app = TrackwareWSGI(app.wsgi_app, state, app)  # type: ignore[method-assign]
        flask.got_request_exception.connect(_on_exception, app, weak=False)
        if identity is not None:
            app.full_dispatch_request = _wrap_dispatch(  # type: ignore[method-assign]
                state, app.full_dispatch_request
            )
            _connect_login_signals(app)
        if options.tracker is not None:
            # trackware.track()/stats()/flush() outside requests use it too,
            # unless a process default was set already (which is kept).
            adopt_default(options.tracker)

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
        return {"page_unclosed": count_value(state.unclosed)}

    def engine(self, app: flask.Flask | None = None) -> RequestTracker:
        """The request tracker serving ``app`` (default: ``current_app``)."""
        return self._app_state(app).engine

    def _app_state(self, app: flask.Flask | None) -> AppState:
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


def _wrap_dispatch(
    app_state: AppState, dispatch: t.Callable[[], flask.Response]
) -> t.Callable[[], flask.Response]:
    """Wrap ``app.full_dispatch_request`` (only with an ``identity`` callable):
    the one call per request that runs inside the request context, before
    ``request_started`` and every hook, and that returns the final response.

    A public method of Flask's, replaced on the app instance (as a subclass
    would override it): Flask's signals cannot take its place, since blinker
    does not order receivers (an app's own ``request_started`` receiver
    could run before the scope is open), and ``before_request`` runs after
    ``request_started`` and the URL value preprocessors.
    """
    engine = app_state.engine
    request = flask.request

    def full_dispatch_request() -> flask.Response:
        state = None
        try:
            environ = request.environ
            if environ.get(APP_KEY) is app_state:
                get = environ.get
                state = environ[STATE_KEY] = begin_wsgi(
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


def _on_exception(sender: flask.Flask, exception: t.Any = None, **_: t.Any) -> None:
    """Flask's got_request_exception (sent only for an unhandled exception):
    the page event names the error."""
    try:
        if flask.has_request_context():
            request = flask.request
            request.environ[RULE_KEY] = request.url_rule
            if exception is not None:
                request.environ[ERROR_KEY] = exception
    except Exception:  # pragma: no cover - defensive
        _log.error("flask-error", "trackware: got_request_exception", exc_info=True)


def _on_login(sender: flask.Flask, **_: t.Any) -> None:
    """Flask-Login's user_logged_in: events after login_user() carry the user."""
    try:
        environ = flask.request.environ
        state: RequestState | None = environ.get(STATE_KEY)
        if state is not None:
            environ[APP_KEY].engine.apply_identity(state)
    except Exception:
        _log.error("flask-login", "trackware: user_logged_in", exc_info=True)


def _connect_login_signals(app: flask.Flask) -> None:
    try:
        from flask_login import signals as login_signals  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return
    login_signals.user_logged_in.connect(_on_login, app, weak=False)
