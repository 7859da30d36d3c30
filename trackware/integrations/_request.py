"""The request engine the Flask and ASGI integrations share.

:class:`RequestTracker` decides whether a request is tracked, opens the
request's scope (a :class:`RequestState`) from trackware's cookies, tracks
the session events, and at the end builds the page event
(:func:`~trackware._page.build_page`) and hands it to the tracker's intake.
No framework imports and no I/O: the integrations translate their request
and response objects into plain values.
"""

from __future__ import annotations

import contextvars
import re
import time
import typing as t
import uuid

from .. import _log, get_tracker
from .._context import Scope, scope_var, sendable
from .._page import PageView, build_page
from .._tracker import Tracker
from ._cookies import CookieJar, Session
from ._options import Identity, TrackingOptions

__all__ = ["RequestState", "RequestTracker", "track_in_scope"]


class RequestState(Scope):
    """A tracked request: its bookkeeping, and the :class:`~trackware.Scope`
    bound while it runs (one object per request).

    Made by :meth:`RequestTracker.begin` without ``__init__``. Request fields
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
    session: Session | None = None
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
_new_view = object.__new__
_time = time.time


class RequestTracker:
    """The shared engine behind the Flask extension and the ASGI middleware.

    Args:
        options: what to track, and how.
        state_type: the class of the per-request state (the Flask
            integration's adds its ``start_response``; the ASGI middleware's
            marks its requests).
    """

    def __init__(
        self, options: TrackingOptions, state_type: type[RequestState] | None = None
    ) -> None:
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
        #: Verdicts on paths (bounded: no more once full); read by the
        #: integrations before anything else of a request.
        self.path_cache: dict[str, bool] = {}
        # Verdicts on user agents (bounded: no more once full).
        self._bot_cache: dict[str, bool] = {}
        self._state_type = state_type or RequestState
        self._routes = frozenset(options.exclude_routes)
        self._endpoints = frozenset(options.exclude_endpoints)
        #: Any route or endpoint excluded (else the page event skips the check).
        self._route_filter = bool(self._routes or self._endpoints)
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
        self._timeout = int(options.session_timeout)
        #: The request's cookies: read, verified, remembered and written.
        self.cookies = CookieJar(options)

    # --- decisions ----------------------------------------------------------------
    def path_excluded(self, path: str) -> bool:
        verdict = self.path_cache.get(path)
        if verdict is None:
            verdict = bool(self._path_re and self._path_re.search(path))
            if len(self.path_cache) < 4096:
                self.path_cache[path] = verdict
        return verdict

    def wants(self, method: str, path: str, user_agent: str | None) -> bool:
        """Is this request tracked at all? (Before routing.)"""
        excluded = self.path_cache.get(path)
        if excluded is None:
            excluded = self.path_excluded(path)
        if excluded:
            return False
        return self.admits(method, user_agent)

    def admits(self, method: str, user_agent: str | None) -> bool:
        """:meth:`wants` for a path known not to be excluded."""
        if method in self._methods:
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

    def cookie_rejections(self) -> dict[str, int]:
        """Cookies (``visitor``, ``session``, ``tid``) ignored since start-up
        because their signature did not verify: forged, tampered, signed with
        a key no longer configured, or written by trackware 0.1.0, which did
        not sign the visitor and tid cookies."""
        return self.cookies.rejections()

    def response_cookies(self, state: RequestState) -> list[str]:
        """``Set-Cookie`` header values to add to the response."""
        return self.cookies.response_cookies(state)

    # --- per request ------------------------------------------------------------------
    def begin(
        self,
        method: str,
        path: str,
        cookie_header: str | None,
        user_agent: str | None,
        query: t.Mapping[str, str] | None = None,
        secure: bool = False,
        referrer: str | None = None,
        client_ip: str | None = None,
        identity: Identity = None,
    ) -> RequestState:
        """Open the request's scope (the state itself, bound to the current
        context) and handle the session cookie.

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
        jar = self.cookies
        visitor = raw_session = tid = None
        if cookie_header:
            # Only our own cookies are looked at (first occurrence wins). The
            # values are looked up as sent (the caches hold what we signed);
            # only one not found there is stripped of spaces and quotes.
            v_name, s_name, t_name = jar.names
            for name, value in jar.find(";" + cookie_header):
                if name == v_name:
                    if visitor is None:
                        visitor = value
                elif name == s_name:
                    if raw_session is None:
                        raw_session = value
                elif tid is None:
                    tid = value
        if visitor is None:
            visitor = uuid.uuid4().hex
            state.new_visitor = True
        else:  # a cookie verified recently, else checked now
            visitor = jar.visitors.get(visitor) or jar.open_visitor(visitor, state)
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
        # The MXO tid: the cookie's (verified), else the tid source's.
        if tid is not None:  # a cookie verified recently, else checked now
            known = jar.tids.get(tid)
            if known is not None:
                state.incoming_tid = known
            tid = known or jar.open_tid(tid, state)
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
            session = jar.sessions.get(raw_session) if raw_session else None
            if session is None or not session[1] <= session[2] <= now + 300:
                session = jar.parse_session(raw_session, now, state)
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
        state.traits_cache = None
        state.identity_cache = None
        state.anonymous_id = visitor
        state.tracker = self._tracker
        state.context = context if trusted else sendable(context, "context")
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

    def _session(self, state: RequestState, session: Session | None, new: str) -> None:
        """Track the start of session ``new`` (bound to the request already),
        after the end of ``session``, the expired one, if any."""
        opts = self.options
        tracker = state.tracker or get_tracker()
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

    def finish(
        self,
        state: RequestState,
        status: int | None,
        route: str | None,
        endpoint: str | None,
        blueprint: str | None = None,
        error: BaseException | None = None,
        *,
        close: bool,
    ) -> None:
        """Record the page event (unless excluded); with ``close``, close the
        request's scope (:meth:`close`). Never raises. (The integrations pass
        the others by position: cheaper than keywords.)"""
        try:
            page_event = self._page_name
            if page_event and not (
                self._route_filter
                and (route in self._routes or endpoint in self._endpoints)
            ):
                if self._identity is not None:
                    self.apply_identity(state)
                tracker = state.tracker or get_tracker()
                traits = state.traits
                error_name = None if error is None else type(error).__name__
                duration = _perf_counter() - state.start
                if (
                    type(tracker) is Tracker  # (not a subclass, nor a stand-in)
                    and tracker.pages_deferred
                    and not traits
                    and not (state.query and self._query_allow)
                ):
                    # The common case: the event is built here, now (identity
                    # included: the scope may change after the request), and
                    # waits in the tracker's intake, whose thread routes it
                    # in order with what is tracked next.
                    try:
                        event = build_page(
                            tracker,
                            page_event,
                            state,
                            status,
                            route,
                            endpoint,
                            blueprint,
                            error_name,
                            duration,
                            state.user_id,
                            state.email,
                            state.phone,
                            traits,
                            state.context,
                        )
                    except Exception as exc:
                        _log.error(
                            "track-internal",
                            "trackware: a page event failed internally: %s",
                            type(exc).__name__,
                            exc_info=True,
                        )
                        tracker.count_dropped(None, "internal_error")
                    else:
                        if event is not None:
                            tracker.record_page(event)
                else:
                    view = _new_view(PageView)
                    view.tracker = tracker
                    view.name = page_event
                    view.request = state
                    view.status = status
                    view.route = route
                    view.endpoint = endpoint
                    view.blueprint = blueprint
                    view.error = error_name
                    view.duration = duration
                    view.user_id = state.user_id
                    view.email = state.email
                    view.phone = state.phone
                    view.traits = traits
                    view.context = state.context
                    self._track_page(view)
        except Exception:
            _log.error(
                "finish", "trackware: could not track the page event", exc_info=True
            )
        finally:
            if close:
                self.close(state)

    def _track_page(self, view: PageView) -> None:
        """The page event through ``track()`` (hooks, sampling, an allowed
        query, traits...), on the request's thread."""
        state: RequestState = view.request  # type: ignore[assignment]
        props = view.properties()
        query = state.query if self._query_allow else None
        if query:
            kept = {k: v for k, v in query.items() if k in self._query_allow}
            if kept:
                props["query"] = kept
        track_in_scope(view.tracker, view.name, props, state, state.start_wall)

    def close(self, state: RequestState) -> None:
        """Unbind the request's scope (if still bound)."""
        token = state.token
        if token is not None:
            state.token = None
            try:
                scope_var.reset(token)
            except ValueError:
                # Finished in another context (a streamed body closed on a
                # different thread): nothing of ours is bound there.
                pass


def track_in_scope(
    tracker: Tracker,
    name: str,
    props: dict[str, t.Any],
    scope: Scope,
    timestamp: float | None = None,
) -> None:
    """``track()`` as if in ``scope``, whether or not it is the current one
    (e.g. a streamed body closed outside the request's context)."""
    if scope_var.get() is scope:
        tracker.track(name, props, timestamp=timestamp)
    else:
        tracker.track(
            name,
            props,
            user_id=scope.user_id,
            anonymous_id=scope.anonymous_id,
            email=scope.email,
            phone=scope.phone,
            traits=scope.traits or None,
            context=scope.context,
            timestamp=timestamp,
        )
