"""Framework-agnostic request tracking shared by the Flask and ASGI integrations.

No framework imports and no I/O here: the integrations translate their
request/response objects into plain values and call :class:`RequestTracker`.

Per request:

1. :meth:`RequestTracker._begin` decides whether the request is tracked at all
   (method, path, bot user agents), reads the visitor, session and MXO ``tid``
   cookies (each signed, see :class:`CookieSigner`; a forged, tampered or
   malformed value is ignored and replaced, never trusted or echoed), opens a
   :class:`~trackware.Scope` bound to the request and, when the previous
   session has expired, tracks ``session_end`` (at the session's real
   last-seen time) and ``session_start``.
2. The app runs; ``track()``, ``@tracked`` and ``identify()`` see the scope.
3. :meth:`RequestTracker.response_cookies` gives the ``Set-Cookie`` values to
   add when the response starts.
4. :meth:`RequestTracker._finish` records the page event when the response
   is complete (after a streamed body closes), then closes the scope. The
   record holds plain values only (the identity included); the tracker's
   intake thread builds the event and queues it (``Tracker._page``).
"""

from __future__ import annotations

import base64
import contextvars
import dataclasses
import difflib
import hashlib
import hmac
import itertools
import logging
import os
import re
import time
import typing as t
import uuid

from .. import _log
from .._context import Scope, _scope, _sendable
from .._event import Event, _fast_bits
from .._tracker import Tracker
from .._worker import _count_value
from ..exceptions import ConfigurationError

__all__ = [
    "COOKIE_SECRET_ENV",
    "CookieSigner",
    "DEFAULT_BOT_AGENTS",
    "DEFAULT_EXCLUDED_PATHS",
    "Identity",
    "RequestState",
    "RequestTracker",
    "TrackingOptions",
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

# What the signed part of each cookie may be (checked before its signature).
_VISITOR_RE = re.compile(r"^[0-9a-f]{32}\Z")
_SESSION_RE = re.compile(r"^([0-9a-f]{32})\.([0-9a-f]{1,12})\.([0-9a-f]{1,12})\Z")
_TID_RE = re.compile(r"^[0-9A-Za-z-]{8,64}\Z")

#: The environment variable read when no ``cookie_secret`` is given.
COOKIE_SECRET_ENV = "TRACKWARE_COOKIE_SECRET"

_KEY_CONTEXT = b"trackware.cookie.v1"
_SIG_LEN = 43  # an HMAC-SHA256 in unpadded base64url
_SIG_RE = re.compile(r"^[A-Za-z0-9_-]{43}\Z")
_b64 = base64.urlsafe_b64encode

_NO_SECRET = (
    "trackware signs its visitor, session and MXO tid cookies and has no key: "
    "pass cookie_secret= (a str or bytes; or a list, whose first key signs and "
    "the others still verify, for key rotation) or set the "
    f"{COOKIE_SECRET_ENV} environment variable. For development only, "
    "ephemeral_cookie_secret=True signs with a random per-process key "
    "(visitors and sessions then restart with the process and differ between "
    "worker processes)."
)


class CookieSigner:
    """The one signing codec of the visitor, session and MXO tid cookies.

    A cookie ``name`` holding ``value`` is sent as ``value "." signature``,
    the signature being ``HMAC-SHA256(key, name "=" value)`` in unpadded
    base64url (43 characters). The cookie's name is signed with its value, so
    the signature of one cookie cannot be replayed as another (a visitor id
    is also a well-formed tid). Comparisons are constant-time.

    The keys are derived from the configured secrets with domain separation,
    ``HMAC-SHA256(secret, "trackware.cookie.v1")``: the app's own secret
    (Flask's ``secret_key``) never keys trackware's MACs directly, so they
    cannot be confused with the app's signatures. The first key signs; every
    key verifies (key rotation: the old secrets stay listed until the
    cookies they signed have been re-signed or have expired).
    """

    __slots__ = ("_keys", "_pads")

    def __init__(self, secrets: t.Sequence[bytes]) -> None:
        if not secrets:
            raise ConfigurationError(_NO_SECRET)
        self._keys = tuple(hmac.digest(s, _KEY_CONTEXT, "sha256") for s in secrets)
        # HMAC (RFC 2104) with SHA-256 states precomputed over the padded key,
        # as the hmac module's own Python implementation keeps them: copying
        # them costs about a third of hmac.digest()'s per-call key setup.
        # (The keys are 32 bytes, under SHA-256's 64-byte block: zero-padded.)
        self._pads = tuple(
            (
                hashlib.sha256(bytes(b ^ 0x36 for b in key.ljust(64, b"\0"))),
                hashlib.sha256(bytes(b ^ 0x5C for b in key.ljust(64, b"\0"))),
            )
            for key in self._keys
        )

    def _mac(self, index: int, name: str, value: str) -> str:
        """``HMAC-SHA256(keys[index], name "=" value)``, unpadded base64url."""
        inner, outer = self._pads[index]
        h = inner.copy()
        h.update(f"{name}={value}".encode())
        o = outer.copy()
        o.update(h.digest())
        return _b64(o.digest())[:_SIG_LEN].decode("ascii")

    def sign(self, name: str, value: str) -> str:
        """The cookie value to send for ``value``, signed with the first key."""
        return f"{value}.{self._mac(0, name, value)}"

    def verify(self, name: str, value: str, signature: str) -> int:
        """Which key signed ``value`` as cookie ``name``: 0 for the current
        key, more for a fallback (the cookie is to be re-signed), -1 for none.
        ``signature`` must already be 43 base64url characters (ASCII, for
        the constant-time comparison)."""
        for index in range(len(self._pads)):
            if hmac.compare_digest(signature, self._mac(index, name, value)):
                return index
        return -1

    def open(
        self, name: str, raw: str, value_re: re.Pattern[str]
    ) -> tuple[str, int] | None:
        """The value of the signed cookie ``raw`` and the index of the key
        that verified it, or ``None``: unsigned, malformed (``value_re`` does
        not match), or not signed by any key."""
        value, dot, signature = raw.rpartition(".")
        if (
            not dot
            or len(signature) != _SIG_LEN
            or not _SIG_RE.match(signature)
            or not value_re.match(value)
        ):
            return None
        index = self.verify(name, value, signature)
        return None if index < 0 else (value, index)


def secrets_of(value: t.Any, option: str = "cookie_secret") -> list[bytes]:
    """The secrets ``value`` (a ``cookie_secret``) names, first the signing
    one; ``[]`` when it is unset (``None``, empty).

    Raises:
        ConfigurationError: not a str/bytes or a sequence of non-empty ones.
    """
    if value is None or (isinstance(value, (str, bytes, list, tuple)) and not value):
        return []
    items = [value] if isinstance(value, (str, bytes)) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigurationError(
            f"{option} must be a str or bytes, or a list of them (the first "
            f"signs, the others still verify), not {type(value).__name__}"
        )
    out: list[bytes] = []
    for item in items:
        if isinstance(item, str):
            item = item.encode("utf-8")
        if not isinstance(item, bytes) or not item:
            raise ConfigurationError(
                f"{option}: every key must be a non-empty str or bytes"
            )
        out.append(item)
    return out


def cookie_signer(options: TrackingOptions) -> CookieSigner:
    """The signer for ``options``: ``cookie_secret``, else the
    ``TRACKWARE_COOKIE_SECRET`` environment variable, else (only with
    ``ephemeral_cookie_secret``) a random per-process key.

    Raises:
        ConfigurationError: no key, and no ephemeral one asked for. Cookies
            are never sent unsigned, nor read back unverified.
    """
    secrets = secrets_of(options.cookie_secret)
    if not secrets:
        secrets = secrets_of(os.environ.get(COOKIE_SECRET_ENV), COOKIE_SECRET_ENV)
    if secrets:
        for secret in secrets:
            _log.register_secret(secret)
        return CookieSigner(secrets)
    if not options.ephemeral_cookie_secret:
        raise ConfigurationError(_NO_SECRET)
    # A choice the issue left open: refuse (above) unless asked for this.
    _log.log_throttled(
        logging.WARNING,
        "ephemeral-cookie-secret",
        "trackware: no cookie secret configured; signing cookies with a random "
        "per-process key (ephemeral_cookie_secret). Visitors and sessions "
        "restart whenever the process restarts and are not recognised by other "
        "worker processes: set cookie_secret= or %s in production.",
        COOKIE_SECRET_ENV,
    )
    return CookieSigner([os.urandom(32)])


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


class RequestState(Scope):
    """A tracked request: its bookkeeping, and the :class:`~trackware.Scope`
    bound while it runs (one object per request).

    Made by :meth:`RequestTracker._begin` without ``__init__``. Request fields
    that usually keep their default are class attributes: a request sets only
    what differs (fewer stores on the request path).
    """

    #: The context dict the request's scope started with: scopes replace
    #: theirs, never mutate it, so "still this one" means no new MXO tid.
    context0: dict[str, t.Any] | None = None
    deferred = False
    #: The tid the request's cookie carried, signed with the current key (a
    #: tid other than this one is written to the cookie).
    incoming_tid: str | None = None
    #: The visitor cookie is to be written: a new visitor, or one whose
    #: cookie a fallback key signed (re-signed with the current key).
    new_visitor = False
    #: The tid cookie failed verification: expire it (unless a tid is set).
    drop_tid = False
    session: tuple[str, int, int] | None = None
    session_dirty = False
    status: int | None = None
    token: contextvars.Token[Scope | None] | None = None

    start: float
    start_wall: float
    method: str
    path: str
    query: t.Mapping[str, str] | None
    referrer: str | None
    secure: bool


_perf_counter = time.perf_counter
_new_state = object.__new__
_time = time.time


def _cookie_finder(names: t.Iterable[str]) -> t.Callable[[str], list[t.Any]]:
    """``findall`` of ``(name, value)`` pairs for only these cookie names, to
    call with the header prefixed by ``";"``.

    The same pairs as splitting the header at ``;`` and each part, stripped,
    at its first ``=``, without splitting the other cookies (values are
    stripped of spaces and quotes by the caller). The leading ``";"`` stands
    for the start of the header: a pattern that begins with a literal is
    searched for faster than ``(?:^|;)``.
    """
    alternatives = "|".join(re.escape(n) for n in sorted(set(names), key=len)[::-1])
    return re.compile(rf";\s*({alternatives})=([^;]*)").findall


class RequestTracker:
    """The shared engine behind the Flask extension and the ASGI middleware."""

    def __init__(self, options: TrackingOptions) -> None:
        options.validate()
        self.options = options
        self._methods = frozenset(m.upper() for m in options.exclude_methods)
        patterns = [
            p if isinstance(p, re.Pattern) else re.compile(p)
            for p in options.exclude_paths
        ]
        self._path_re: re.Pattern[str] | None = (
            re.compile("|".join(f"(?:{p.pattern})" for p in patterns))
            if patterns
            else None
        )
        self._path_cache: dict[str, bool] = {}
        # Verdicts on user agents, and the cookies (visitor, session, tid)
        # whose signature by the current key was verified, or that were
        # signed here, with their values: browsers repeat them on every
        # request. Bounded (cleared when full); only verified cookies are
        # kept, so nothing a client invents takes room.
        self._bot_cache: dict[str, bool] = {}
        self._session_cache: dict[str, tuple[str, int, int]] = {}
        self._visitors: dict[str, str] = {}
        self._tids: dict[str, str] = {}
        self._rejected = {
            "visitor": itertools.count(),
            "session": itertools.count(),
            "tid": itertools.count(),
        }
        #: The class of the per-request state (the Flask integration's adds
        #: its ``start_response``; the ASGI middleware's marks its requests).
        self._state_type: type[RequestState] = RequestState
        self._signed: dict[tuple[str, int, int], str] = {}
        self._routes = frozenset(options.exclude_routes)
        self._endpoints = frozenset(options.exclude_endpoints)
        self._bots = tuple(b.lower() for b in options.bot_agents)
        self._query_allow = frozenset(options.query_allow)
        # Options read per request, as attributes of their own.
        self._page_name = options.page_event
        self._exclude_bots = options.exclude_bots
        self._identity = options.identity
        self._tracker = options.tracker
        self._sessions = options.sessions
        self._secure = options.cookie_secure
        self._tid_source = options.tid_source
        self._more_context = options.capture_ip or options.capture_user_agent
        self._signer = cookie_signer(options)
        self._timeout = int(options.session_timeout)
        self._cookie_names = (
            options.visitor_cookie,
            options.session_cookie,
            options.tid_cookie,
        )
        self._find_cookies = _cookie_finder(self._cookie_names)

    # --- decisions ----------------------------------------------------------------
    def path_excluded(self, path: str) -> bool:
        verdict = self._path_cache.get(path)
        if verdict is None:
            verdict = bool(self._path_re and self._path_re.search(path))
            if len(self._path_cache) < 4096:
                self._path_cache[path] = verdict
        return verdict

    def wants(self, method: str, path: str, user_agent: str | None) -> bool:
        """Is this request tracked at all? (Before routing.)"""
        if method in self._methods:
            return False
        excluded = self._path_cache.get(path)
        if excluded is None:
            excluded = self.path_excluded(path)
        if excluded:
            return False
        if self._exclude_bots and user_agent:
            is_bot = self._bot_cache.get(user_agent)
            if is_bot is None:
                ua = user_agent.lower()
                is_bot = any(bot in ua for bot in self._bots)
                if len(self._bot_cache) < 4096:
                    self._bot_cache[user_agent] = is_bot
            return not is_bot
        return True

    def route_excluded(self, route: str | None, endpoint: str | None) -> bool:
        return (route is not None and route in self._routes) or (
            endpoint is not None and endpoint in self._endpoints
        )

    # --- cookies --------------------------------------------------------------------
    # Verified cookies are remembered (bounded); the first request with a
    # cookie costs one HMAC-SHA256 per key tried, the next ones a dict lookup.

    def cookie_rejections(self) -> dict[str, int]:
        """Cookies (``visitor``, ``session``, ``tid``) ignored since start-up
        because their signature did not verify: forged, tampered, signed with
        a key no longer configured, or written by trackware 0.1.0, which did
        not sign the visitor and tid cookies."""
        return {kind: _count_value(n) for kind, n in self._rejected.items()}

    def _reject(self, kind: str, name: str) -> None:
        """Count and log (rate-limited, never the value) a rejected cookie."""
        next(self._rejected[kind])
        _log.log_throttled(
            logging.INFO,
            f"cookie-rejected:{name}",
            "trackware: ignored a %s cookie (%s) whose signature did not verify "
            "(forged, tampered, signed with a key no longer configured, or "
            "unsigned from trackware 0.1.0); %s",
            name,
            kind,
            "it is expired" if kind == "tid" else "a new one is issued",
        )

    def _sign_cookie(self, name: str, value: str) -> str:
        return self._signer.sign(name, value)

    def _open_visitor(self, raw: str, state: RequestState) -> str:
        """The visitor id of visitor cookie ``raw`` (not in the cache), or a
        new visitor when it does not verify."""
        name = self._cookie_names[0]
        opened = self._signer.open(name, raw, _VISITOR_RE) if len(raw) < 100 else None
        if opened is None:
            if raw:
                self._reject("visitor", name)
            state.new_visitor = True
            return uuid.uuid4().hex
        visitor, key = opened
        if key:  # a fallback key: re-signed with the current one
            state.new_visitor = True
        else:
            if len(self._visitors) >= 4096:
                self._visitors.clear()
            self._visitors[raw] = visitor
        return visitor

    def _open_tid(self, raw: str, state: RequestState) -> str | None:
        """The MXO tid of tid cookie ``raw`` (not in the cache), or ``None``
        when it does not verify (the cookie is then expired)."""
        name = self._cookie_names[2]
        opened = self._signer.open(name, raw, _TID_RE) if len(raw) < 120 else None
        if opened is None:
            if raw:  # (an empty one is what expiring it leaves, if anything)
                self._reject("tid", name)
                state.drop_tid = True
            return None
        tid, key = opened
        if not key:
            if len(self._tids) >= 4096:
                self._tids.clear()
            self._tids[raw] = tid
            state.incoming_tid = tid
        # else signed with a fallback key: not incoming, so written again.
        return tid

    def _parse_session(
        self, value: str | None, now: int, state: RequestState | None = None
    ) -> tuple[str, int, int] | None:
        """The session of session cookie ``value``, or ``None``: none, not
        verified, or its times are impossible. With ``state``, a cookie a
        fallback key signed marks the session to be re-signed."""
        if not value:
            return None
        session = self._session_cache.get(value)
        if session is None:
            name = self._cookie_names[1]
            opened = (
                self._signer.open(name, value, _SESSION_RE)
                if len(value) < 120
                else None
            )
            if opened is None:
                self._reject("session", name)
                return None
            payload, key = opened
            sid, start_hex, last_hex = payload.split(".")
            session = (sid, int(start_hex, 16), int(last_hex, 16))
            if key:
                if state is not None:
                    state.session_dirty = True
            else:
                if len(self._session_cache) >= 4096:
                    self._session_cache.clear()
                self._session_cache[value] = session
        if not session[1] <= session[2] <= now + 300:
            return None
        return session

    def _session_value(self, session: tuple[str, int, int]) -> str:
        sid, start, last = session
        return self._signer.sign(self._cookie_names[1], f"{sid}.{start:x}.{last:x}")

    # --- per request ------------------------------------------------------------------
    def _begin(
        self,
        method: str,
        path: str,
        query: t.Mapping[str, str] | None,
        cookie_header: str | None,
        secure: bool,
        referrer: str | None,
        user_agent: str | None,
        client_ip: str | None,
        tracker: Tracker | None,
        scope_var: contextvars.ContextVar[Scope | None],
        identity: Identity,
    ) -> RequestState:
        """Open the request's scope (the state itself) and handle the session
        cookie.

        ``identity``: the user, already resolved by the caller (the ASGI
        middleware awaits its identity callable before calling this).
        """
        state = _new_state(self._state_type)
        state.start = _perf_counter()
        wall = state.start_wall = _time()
        state.method = method
        state.path = path
        state.query = query
        state.referrer = referrer
        state.secure = secure if self._secure is None else self._secure
        tracker = tracker or self._tracker
        visitor = raw_session = tid = None
        if cookie_header:
            # Only our own cookies are looked at (first occurrence wins).
            v_name, s_name, t_name = self._cookie_names
            for name, value in self._find_cookies(";" + cookie_header):
                if name == v_name:
                    if visitor is None:
                        visitor = value.strip().strip('"')
                elif name == s_name:
                    if raw_session is None:
                        raw_session = value.strip().strip('"')
                elif tid is None:
                    tid = value.strip().strip('"')
        if visitor is None:
            visitor = uuid.uuid4().hex
            state.new_visitor = True
        else:  # a cookie verified recently, else checked now
            visitor = self._visitors.get(visitor) or self._open_visitor(visitor, state)
        state.anonymous_id = visitor
        # Built from plain strings only (anything else is validated below), so
        # the scope takes it as is.
        context: dict[str, t.Any] = {"path": path}
        trusted = type(path) is str
        if self._more_context:
            opts = self.options
            if opts.capture_ip and client_ip:
                context["ip"] = client_ip
                trusted = trusted and type(client_ip) is str
            if opts.capture_user_agent and user_agent:
                context["user_agent"] = user_agent
                trusted = trusted and type(user_agent) is str
        if tid is not None:  # a cookie verified recently, else checked now
            known = self._tids.get(tid)
            if known is not None:
                state.incoming_tid = known
            tid = known or self._open_tid(tid, state)
        if tid is not None:
            context["mxo_tid"] = tid
        elif self._tid_source is not None:
            try:
                remembered = self._tid_source(visitor)
            except Exception:
                remembered = None
            if remembered:
                context["mxo_tid"] = remembered
                trusted = trusted and type(remembered) is str
                tid = remembered  # not in the cookie yet: context stays unset
        session = None
        live = False
        if self._sessions:
            now = int(wall)
            # A session cookie verified before (the cache holds only those).
            session = self._session_cache.get(raw_session) if raw_session else None
            if session is None or not session[1] <= session[2] <= now + 300:
                session = self._parse_session(raw_session, now, state)
            if session is not None and now - session[2] <= self._timeout:
                # The common case: a live session, no event to track here.
                sid = session[0]
                if now != session[2]:  # seen again: the cookie is renewed
                    state.session = (sid, session[1], now)
                    state.session_dirty = True
                else:
                    state.session = session
                session = None
                live = True
            else:  # a new session; its events are tracked below
                sid = uuid.uuid4().hex
                state.session = (sid, now, now)
                state.session_dirty = True
            context["session_id"] = sid
        # The request's scope is the state itself (as Scope.__init__ would
        # make it; the context is taken as is when built from strings only).
        state.user_id = None
        state.email = None
        state.phone = None
        state.traits = {}
        state._clean_traits = None
        state._checked_ids = None
        state.anonymous_id = visitor
        state.tracker = tracker
        state.context = context if trusted else _sendable(context, "context")
        if (tid is None and not state.drop_tid) or tid is state.incoming_tid:
            # No cookie to write for the tid (unless the request binds one).
            state.context0 = state.context
        state.token = scope_var.set(state)
        # Identity first, so that session_start/session_end carry the user too.
        if self._identity is not None:
            self.apply_identity(state)
        if identity is not None:
            self.bind_identity(state, identity)
        if not live and self._sessions:
            self._session(state, session, sid)
        return state

    def _session(
        self, state: RequestState, session: tuple[str, int, int] | None, new: str
    ) -> None:
        """Track the start of session ``new`` (bound to the request already),
        after the end of ``session``, the expired one, if any."""
        opts = self.options
        tracker = state.tracker or _get_tracker()
        if session is not None:
            sid, start, last = session
            tracker.track(
                opts.session_end_event,
                {
                    "session_id": sid,
                    "duration": float(last - start),
                    "reason": "timeout",
                },
                timestamp=float(last),
                context={"session_id": sid},
            )
        tracker.track(
            opts.session_start_event,
            {"session_id": new, "landing_path": state.path},
        )

    def apply_identity(self, scope: Scope) -> None:
        """Call the identity callable and bind what it returns to ``scope``."""
        callback = self.options.identity
        if callback is None:
            return
        try:
            who = callback()
        except Exception:
            _log.error(
                "identity-callable",
                "trackware: the identity callable raised; the request is tracked "
                "anonymously",
                exc_info=True,
            )
            return
        self.bind_identity(scope, who)

    @staticmethod
    def bind_identity(scope: Scope, who: Identity) -> None:
        """Bind what an identity callable returned to ``scope`` (used by ASGI,
        whose identity callables take the ASGI scope and may be async)."""
        if who is None:
            return
        if isinstance(who, (str, int)):
            scope.user_id = str(who)
            return
        if isinstance(who, t.Mapping):
            if who.get("user_id") is not None:
                scope.user_id = str(who["user_id"])
            if who.get("email"):
                scope.email = str(who["email"])
            if who.get("phone"):
                scope.phone = str(who["phone"])
            traits = who.get("traits")
            if traits:
                merged = dict(scope.traits)
                merged.update(traits)
                scope.traits = merged

    def response_cookies(self, state: RequestState) -> list[str]:
        """``Set-Cookie`` header values to add to the response."""
        if not state.new_visitor and not state.session_dirty:
            # The common case: a returning visitor within the same second.
            tid = state.context.get("mxo_tid")
            if (not tid or tid == state.incoming_tid) and not state.drop_tid:
                return []
        opts = self.options
        out: list[str] = []
        attrs = f"; Path={opts.cookie_path}; HttpOnly; SameSite=Lax"
        if opts.cookie_domain:
            attrs += f"; Domain={opts.cookie_domain}"
        if state.secure:
            attrs += "; Secure"
        if state.new_visitor:
            visitor = str(state.anonymous_id)
            value = self._signer.sign(opts.visitor_cookie, visitor)
            # The browser sends it back next: signed by us, so verified.
            if len(self._visitors) >= 4096:
                self._visitors.clear()
            self._visitors[value] = visitor
            out.append(
                f"{opts.visitor_cookie}={value}; Max-Age={opts.visitor_max_age}" + attrs
            )
        session = state.session
        if session is not None and state.session_dirty:
            # Signed once per session and second (concurrent requests share it).
            signed = self._signed.get(session)
            if signed is None:
                signed = self._session_value(session)
                if len(self._signed) >= 4096:
                    self._signed.clear()
                self._signed[session] = signed
                # The browser sends it back next: signed by us, so verified.
                if len(self._session_cache) >= 4096:
                    self._session_cache.clear()
                self._session_cache[signed] = session
            out.append(
                f"{opts.session_cookie}={signed}; Max-Age={self._timeout}" + attrs
            )
            state.session_dirty = False
        tid = state.context.get("mxo_tid")
        if tid and tid != state.incoming_tid and _TID_RE.match(str(tid)):
            tid = str(tid)
            value = self._signer.sign(opts.tid_cookie, tid)
            if len(self._tids) >= 4096:
                self._tids.clear()
            self._tids[value] = tid
            out.append(
                f"{opts.tid_cookie}={value}; Max-Age={opts.visitor_max_age}" + attrs
            )
            state.incoming_tid = tid
        elif state.drop_tid:  # a forged one: the browser forgets it
            out.append(f"{opts.tid_cookie}=; Max-Age=0" + attrs)
        state.drop_tid = False
        return out

    def _finish(
        self,
        state: RequestState,
        status: int | None,
        route: str | None,
        endpoint: str | None,
        blueprint: str | None,
        error: BaseException | None,
        scope_var: contextvars.ContextVar[Scope | None],
        reset: bool,
    ) -> None:
        """Record the page event (unless excluded); with ``reset``, close the
        request's scope (:meth:`close`)."""
        try:
            page_event = self._page_name
            if (
                page_event
                and route not in self._routes
                and endpoint not in self._endpoints
            ):
                if self._identity is not None:
                    self.apply_identity(state)
                tracker = state.tracker or _get_tracker()
                # Identity is taken now: the scope may change after the request.
                record = (
                    _page_event,
                    page_event,
                    state,
                    status,
                    route,
                    endpoint,
                    blueprint,
                    None if error is None else type(error).__name__,
                    _perf_counter() - state.start,
                    state.user_id,
                    state.email,
                    state.phone,
                    state.traits,
                    state.context,
                )
                if (
                    type(tracker) is Tracker
                    and tracker._defer_pages
                    and not state.traits
                    and not (state.query and self._query_allow)
                ):
                    # The common case: built and routed by the tracker's
                    # intake thread (see Tracker._page).
                    tracker._page(record)
                else:
                    self._track_page(tracker, record, scope_var)
        except Exception:
            _log.error(
                "finish", "trackware: could not track the page event", exc_info=True
            )
        finally:
            if reset:
                self.close(state, scope_var)

    def _track_page(
        self,
        tracker: Tracker,
        record: tuple[t.Any, ...],
        scope_var: contextvars.ContextVar[Scope | None],
    ) -> None:
        """The recorded page event through ``track()`` (hooks, sampling, an
        allowed query, traits...), on the request's thread."""
        state: RequestState = record[2]
        props = _page_properties(*record[2:9])
        query = state.query if self._query_allow else None
        if query:
            kept = {k: v for k, v in query.items() if k in self._query_allow}
            if kept:
                props["query"] = kept
        _track_in_scope(tracker, record[1], props, state, scope_var, state.start_wall)

    def close(
        self,
        state: RequestState,
        scope_var: contextvars.ContextVar[Scope | None] = _scope,
    ) -> None:
        token = state.token
        if token is not None:
            state.token = None
            try:
                scope_var.reset(token)
            except ValueError:
                # Finished in another context (a streamed body closed on a
                # different thread): nothing of ours is bound there.
                pass


def _page_properties(
    state: RequestState,
    status: int | None,
    route: str | None,
    endpoint: str | None,
    blueprint: str | None,
    error_name: str | None,
    duration: float,
) -> dict[str, t.Any]:
    props: dict[str, t.Any] = {
        "method": state.method,
        "path": state.path,
        "route": route,
        "endpoint": endpoint,
        "status": status if status is not None else 500,
        "duration": duration,
    }
    if blueprint:
        props["blueprint"] = blueprint
    referrer = state.referrer
    if referrer:
        props["referrer"] = referrer.split("?", 1)[0]
    if error_name is not None:
        props["error"] = error_name
    return props


def _page_event(record: tuple[t.Any, ...]) -> Event | None:
    """Build the page event :meth:`RequestTracker._finish` recorded (on the
    tracker's intake thread, usually; see ``Tracker._page``).

    Its properties are known keys (``PAGE_KEYS``, none redacted by the
    tracker) with plain values, so the event is made without ``track()``'s
    per-key pass (the same dict as :func:`_page_properties`, built inline);
    a value of an unexpected type (a framework's odd route object, say)
    takes ``track()``, which validates it.
    """
    (
        _,
        name,
        state,
        status,
        route,
        endpoint,
        blueprint,
        error_name,
        duration,
        user_id,
        email,
        phone,
        traits,
        context,
    ) = record
    method = state.method
    path = state.path
    if status is None:
        status = 500
    # Values from the server, the framework or the app may be odd.
    if not (
        type(status) is int
        and type(path) is str
        and type(method) is str
        and (route is None or type(route) is str)
        and (endpoint is None or type(endpoint) is str)
    ):
        _track_as(
            state.tracker or _get_tracker(),
            name,
            _page_properties(*record[2:9]),
            (user_id, state.anonymous_id, email, phone, traits, context),
            state.start_wall,
        )
        return None
    props = {
        "method": method,
        "path": path,
        "route": route,
        "endpoint": endpoint,
        "status": status,
        "duration": duration,
    }
    # Near what check_properties() counts (routes and endpoints are short).
    size = 300 + len(name) + len(path)
    if blueprint:
        props["blueprint"] = blueprint
    referrer = state.referrer
    if referrer:
        if "?" in referrer:  # never the query string
            referrer = referrer.partition("?")[0]
        props["referrer"] = referrer
        size += len(referrer)
    if error_name is not None:
        props["error"] = error_name
    return _new_event(
        Event,
        (
            _fast_bits(128),
            name,
            props,
            user_id,
            state.anonymous_id,
            email,
            phone,
            traits,
            context,
            state.start_wall,
            size,
        ),
    )


_new_event = tuple.__new__


def _track_in_scope(
    tracker: Tracker,
    name: str,
    props: dict[str, t.Any],
    scope: Scope,
    scope_var: contextvars.ContextVar[Scope | None] = _scope,
    timestamp: float | None = None,
) -> None:
    """``track()`` as if in ``scope``, whether or not it is the current one
    (e.g. a streamed body closed outside the request's context)."""
    if scope_var.get() is scope:
        tracker.track(name, props, timestamp=timestamp)
    else:
        who = (
            scope.user_id,
            scope.anonymous_id,
            scope.email,
            scope.phone,
            scope.traits,
            scope.context,
        )
        _track_as(tracker, name, props, who, timestamp)


def _track_as(
    tracker: Tracker,
    name: str,
    props: dict[str, t.Any],
    who: tuple[t.Any, ...],
    timestamp: float | None,
) -> None:
    """``track()`` with the identity ``who`` (user, visitor, email, phone,
    traits, context) given explicitly."""
    user_id, anonymous_id, email, phone, traits, context = who
    tracker.track(
        name,
        props,
        user_id=user_id,
        anonymous_id=anonymous_id,
        email=email,
        phone=phone,
        traits=traits or None,
        context=context,
        timestamp=timestamp,
    )


def _get_tracker() -> Tracker:
    from .._tracker import get_tracker

    return get_tracker()
