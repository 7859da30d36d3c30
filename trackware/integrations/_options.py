"""The options of the Flask and ASGI integrations (:class:`TrackingOptions`),
their defaults, their validation, and the coercion of values that arrive as
strings (``app.config``, environment variables).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing as t

from .. import _env
from ..exceptions import ConfigurationError
from ._cookies import secrets_of

if t.TYPE_CHECKING:
    from .._tracker import Tracker

__all__ = [
    "DEFAULT_BOT_AGENTS",
    "DEFAULT_EXCLUDED_PATHS",
    "Identity",
    "TrackingOptions",
    "coerce",
    "config_hint",
    "flag",
    "unknown_options",
]

#: Paths never tracked by default: health/readiness probes, static files,
#: favicon and robots.txt, metrics endpoints.
DEFAULT_EXCLUDED_PATHS: tuple[str, ...] = (
    r"^/health",
    r"^/healthz",
    r"^/ready",
    r"^/readyz",
    r"^/livez?",
    r"^/ping$",
    r"^/metrics$",
    r"^/static/",
    r"^/favicon\.ico$",
    r"^/robots\.txt$",
    r"^/apple-touch-icon",
)

#: Substrings (lower-case) of user agents that are crawlers, uptime checkers or
#: load-balancer health checks, not customers.
DEFAULT_BOT_AGENTS: tuple[str, ...] = (
    "bot",
    "crawler",
    "spider",
    "slurp",
    "kube-probe",
    "elb-healthchecker",
    "googlehc",
    "health-check",
    "healthcheck",
    "uptimerobot",
    "pingdom",
    "statuscake",
    "site24x7",
    "datadog synthetics",
    "newrelicpinger",
    "headlesschrome",
    "lighthouse",
    "python-requests",
    "curl/",
    "wget/",
)

#: What an identity callable may return: a user id, a mapping with any of
#: ``user_id``, ``email``, ``phone``, ``traits``, or ``None`` (anonymous).
Identity: t.TypeAlias = "str | int | t.Mapping[str, t.Any] | None"


def unknown_options(
    where: str, options: t.Mapping[str, t.Any], known: t.Iterable[str]
) -> None:
    """Raise :class:`ConfigurationError` for options not in ``known``, naming the
    closest valid one ("did you mean")."""
    valid = sorted(set(known))
    unknown = sorted(set(options) - set(valid))
    if not unknown:
        return
    hints = []
    for name in unknown:
        match = difflib.get_close_matches(name, valid, n=1, cutoff=0.75)
        hints.append(f"{name!r} (did you mean {match[0]!r}?)" if match else repr(name))
    raise ConfigurationError(
        f"{where} got unknown option(s) {', '.join(hints)}; valid options: {valid}"
    )


@dataclasses.dataclass
class TrackingOptions:
    """What the Flask and ASGI integrations track, and how.

    Every option can also be given in Flask's ``app.config`` as
    ``TRACKWARE_<NAME>`` (upper-case).

    Args:
        tracker: where events go (default: the process default at request time).
        page_event: name of the per-request event; ``None`` turns it off.
        sessions: track ``session_start``/``session_end`` with a session cookie.
        session_timeout: inactivity that ends a session, seconds (30 min).
        session_start_event, session_end_event: their event names.
        visitor_cookie, session_cookie, tid_cookie: cookie names.
        cookie_domain, cookie_path: cookie scope.
        visitor_max_age: lifetime of the visitor cookie, seconds (1 year).
        cookie_secure: ``None`` (default) sets ``Secure`` on HTTPS requests;
            ``True``/``False`` force it.
        cookie_secret: the secret trackware derives its cookie signing key
            from (see :class:`CookieSigner`): a str or bytes, or a list of
            them whose first signs and whose others still verify (rotation).
            Unset: the ``TRACKWARE_COOKIE_SECRET`` environment variable; on
            Flask, then ``app.secret_key`` with ``SECRET_KEY_FALLBACKS``.
            With no key at all the integrations refuse to start
            (:class:`~trackware.ConfigurationError`).
        ephemeral_cookie_secret: with no ``cookie_secret`` anywhere, sign
            with a random per-process key (logged as a warning) instead of
            refusing to start: for development; visitors and sessions do not
            survive a restart and differ between worker processes.
        exclude_methods: never tracked (default HEAD and OPTIONS).
        exclude_paths: regular expressions matched against the path (default
            health probes, static files, favicon, robots.txt).
        exclude_routes: route templates never tracked, e.g. ``"/admin/<path:p>"``.
        exclude_endpoints: endpoint names never tracked (Flask, Starlette names).
        exclude_bots: skip known bot and health-check user agents.
        bot_agents: the substrings that identify them.
        query_allow: query-string keys kept in the page event (all others,
            and the query string itself, are dropped).
        capture_ip: add the client address to the event context.
        capture_user_agent: add the full user agent to the event context.
        identity: a callable returning the current user (see :data:`Identity`);
            called when the request starts and again when it ends.
        tid_source: a callable ``(anonymous_id) -> tid | None`` consulted when
            the request carries no MXO tid (e.g. ``InteractionExporter.tid_for``).
    """

    tracker: Tracker | None = None
    page_event: str | None = "page"
    sessions: bool = True
    session_timeout: float = 1800.0
    session_start_event: str = "session_start"
    session_end_event: str = "session_end"
    visitor_cookie: str = "tw_vid"
    session_cookie: str = "tw_sid"
    tid_cookie: str = "tw_tid"
    cookie_domain: str | None = None
    cookie_path: str = "/"
    visitor_max_age: int = 365 * 24 * 3600
    cookie_secure: bool | None = None
    # Never in the repr (nor in a log line: the secrets are registered).
    cookie_secret: str | bytes | t.Sequence[str | bytes] | None = dataclasses.field(
        default=None, repr=False
    )
    ephemeral_cookie_secret: bool = False
    exclude_methods: t.Collection[str] = ("HEAD", "OPTIONS")
    exclude_paths: t.Collection[str | re.Pattern[str]] = DEFAULT_EXCLUDED_PATHS
    exclude_routes: t.Collection[str] = ()
    exclude_endpoints: t.Collection[str] = ()
    exclude_bots: bool = True
    bot_agents: t.Collection[str] = DEFAULT_BOT_AGENTS
    query_allow: t.Collection[str] = ()
    capture_ip: bool = False
    capture_user_agent: bool = False
    identity: t.Callable[[], Identity] | None = None
    tid_source: t.Callable[[str], str | None] | None = None

    def validate(self) -> None:
        if self.session_timeout <= 0:
            raise ConfigurationError("session_timeout must be > 0 seconds")
        for name in ("visitor_cookie", "session_cookie", "tid_cookie"):
            value = getattr(self, name)
            if not isinstance(value, str) or not re.fullmatch(
                r"[A-Za-z0-9_.-]+", value
            ):
                raise ConfigurationError(
                    f"{name} must be a cookie name of letters, digits, '_', '.', '-'"
                )
        names = (self.visitor_cookie, self.session_cookie, self.tid_cookie)
        if len(set(names)) != 3:
            raise ConfigurationError(
                "visitor_cookie, session_cookie and tid_cookie must be three "
                f"different names, not {names}"
            )
        for pattern in self.exclude_paths:
            if isinstance(pattern, str):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ConfigurationError(
                        f"exclude_paths: {pattern!r} is not a valid regex: {exc}"
                    ) from None
        if self.identity is not None and not callable(self.identity):
            raise ConfigurationError("identity must be a callable returning the user")
        secrets_of(self.cookie_secret)


#: The options' fields, by name.
FIELDS = {f.name: f for f in dataclasses.fields(TrackingOptions)}
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
    {
        "sessions",
        "exclude_bots",
        "capture_ip",
        "capture_user_agent",
        "cookie_secure",
        "ephemeral_cookie_secret",
    }
)


def flag(name: str, value: t.Any) -> bool:
    """``value`` as a boolean; strings such as ``"true"``/``"0"``/``"off"``
    read as people mean them.

    Raises:
        ConfigurationError: a string that is neither.
    """
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigurationError(f"{name} must be true or false, not {value!r}")
    return bool(value)


def coerce(name: str, value: t.Any) -> t.Any:
    """Option ``name``'s ``value`` in its type: config values often arrive
    as strings (environment variables)."""
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
        return flag(name, value)
    return value


def config_hint(key: str, known: t.Iterable[str]) -> str:
    """What to say about an unknown ``TRACKWARE_*`` key in ``app.config``:
    the option it most likely misspells, not the list of all of them."""
    if key in _env.KNOWN_VARIABLES:
        return (
            "it is an environment variable trackware reads from the "
            "environment (os.environ), not from app.config"
        )
    match = _env.closest(key, [*known, "TRACKWARE_ENABLED"])
    if match is not None:
        return f"did you mean {match}?"
    return (
        "the options are TRACKWARE_ + the upper-case name of a TrackingOptions "
        "field (listed in the README)"
    )


# The Flask extension's app.config keys look like environment variables: the
# environment check says where they belong when it finds one.
_env.register_config_keys(
    {f"TRACKWARE_{name.upper()}" for name in FIELDS} | {"TRACKWARE_ENABLED"},
    "it is an app.config key of the Flask extension, which reads it "
    "from app.config, not from the environment",
)
