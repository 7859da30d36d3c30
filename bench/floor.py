"""The floor: a hand-written, minimal page + session tracker, measured in every
run beside trackware (``bench/callgrind.py``, ``bench/serve.py``).

What it does per request is the least a tracker with trackware's guarantees
must do, written straight for one framework at a time and nothing else:

* one regex finds the visitor and session cookies in the Cookie header;
* the cookies are signed (HMAC-SHA256, as trackware's) and a verified value
  is remembered (a dict lookup on the next request: cached validation);
* the session cookie is renewed at most once a second (its last-seen second
  changes), new visitors and new sessions get their cookies
  (``HttpOnly; SameSite=Lax``, ``Secure`` on HTTPS);
* a new session tracks ``session_start``; every request tracks a page event,
  built inline (a dict with a random 128-bit id, the time, the visitor, the
  session, method, path, route, status, duration, referrer) and appended to a
  deque (what a tracker's queue would hold; nothing delivers it).

It has no options, no exclusions, no identity, no MXO tid, no hooks and no
error handling: a lower bound, not a product. Its cookies are trackware's
(same names, same number), so that the framework's own cookie parsing costs
the same for both.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import random
import re
import time
import typing as t

__all__ = ["FloorASGI", "FloorTracker", "FloorWSGI"]

_b64 = base64.urlsafe_b64encode
_random_bits = random.getrandbits
_time = time.time
_perf = time.perf_counter


class FloorTracker:
    """Cookies and events of the floor (shared by its WSGI and ASGI fronts)."""

    def __init__(
        self,
        secret: str | bytes,
        *,
        visitor_cookie: str = "tw_vid",
        session_cookie: str = "tw_sid",
        timeout: int = 1800,
    ) -> None:
        key = hmac.digest(
            secret.encode() if isinstance(secret, str) else secret,
            b"floor",
            "sha256",
        )
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key.ljust(64, b"\0")))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key.ljust(64, b"\0")))
        self.v_name = visitor_cookie
        self.s_name = session_cookie
        self.find = re.compile(
            rf"(?:^|;)\s*({re.escape(visitor_cookie)}|{re.escape(session_cookie)})"
            r"=([^;]*)"
        ).findall
        #: Verified cookie values: visitor cookie -> id, session cookie ->
        #: (sid, start, last).
        self.visitors: dict[str, str] = {}
        self.sessions: dict[str, tuple[str, int, int]] = {}
        self.signed: dict[tuple[str, int, int], str] = {}
        self.timeout = timeout
        self.events: collections.deque[dict[str, t.Any]] = collections.deque()
        self.attrs = "; Path=/; HttpOnly; SameSite=Lax"

    def _sign(self, name: str, value: str) -> str:
        h = self._inner.copy()
        h.update(f"{name}={value}".encode())
        o = self._outer.copy()
        o.update(h.digest())
        return f"{value}.{_b64(o.digest())[:43].decode()}"

    def _verify(self, name: str, raw: str) -> str | None:
        value = raw.rpartition(".")[0]
        if value and hmac.compare_digest(self._sign(name, value), raw):
            return value
        return None

    def begin(
        self, header: str | None, secure: bool
    ) -> tuple[str, str, list[str] | None]:
        """The visitor id, the session id and the ``Set-Cookie`` values (or
        ``None``) of a request whose Cookie header is ``header``."""
        visitor = session = None
        if header:
            for name, value in self.find(header):
                if name == self.v_name:
                    visitor = self.visitors.get(value)
                    if visitor is None:
                        visitor = self._verify(name, value)
                        if visitor is not None:
                            if len(self.visitors) >= 4096:
                                self.visitors.clear()
                            self.visitors[value] = visitor
                else:
                    session = self.sessions.get(value)
                    if session is None:
                        payload = self._verify(name, value)
                        if payload is not None:
                            sid, start, last = payload.split(".")
                            session = (sid, int(start, 16), int(last, 16))
                            if len(self.sessions) >= 4096:
                                self.sessions.clear()
                            self.sessions[value] = session
        now = int(_time())
        cookies = None
        attrs = self.attrs + "; Secure" if secure else self.attrs
        if visitor is None:
            visitor = f"{_random_bits(128):032x}"
            value = self._sign(self.v_name, visitor)
            cookies = [f"{self.v_name}={value}; Max-Age=31536000{attrs}"]
        if session is None or now - session[2] > self.timeout:
            sid = f"{_random_bits(128):032x}"
            session = (sid, now, now)
            renew = True
            self.events.append(
                {
                    "id": _random_bits(128),
                    "name": "session_start",
                    "time": _time(),
                    "anonymous_id": visitor,
                    "session_id": sid,
                    "properties": {"session_id": sid},
                }
            )
        else:
            renew = session[2] != now  # renewed at most once a second
        sid = session[0]
        if renew:  # signed once per session and second
            renewed = (sid, session[1], now)
            signed = self.signed.get(renewed)
            if signed is None:
                signed = self._sign(self.s_name, f"{sid}.{session[1]:x}.{now:x}")
                if len(self.signed) >= 4096:  # bounded, as every cache here
                    self.signed.clear()
                self.signed[renewed] = signed
                self.sessions[signed] = renewed
            cookie = f"{self.s_name}={signed}; Max-Age={self.timeout}{attrs}"
            if cookies is None:
                cookies = [cookie]
            else:
                cookies.append(cookie)
        return visitor, sid, cookies

    def page(
        self,
        visitor: str,
        sid: str,
        method: str,
        path: str,
        route: str | None,
        status: int,
        started: float,
        wall: float,
        referrer: str | None,
    ) -> None:
        """The page event, built inline."""
        props: dict[str, t.Any] = {
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration": _perf() - started,
        }
        if referrer:
            props["referrer"] = referrer.partition("?")[0]
        self.events.append(
            {
                "id": _random_bits(128),
                "name": "page",
                "time": wall,
                "anonymous_id": visitor,
                "session_id": sid,
                "properties": props,
            }
        )


class FloorWSGI:
    """The floor around a WSGI app (Flask: ``app.wsgi_app = FloorWSGI(...)``)."""

    def __init__(self, app: t.Any, floor: FloorTracker) -> None:
        self.app = app
        self.floor = floor

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        started = _perf()
        wall = _time()
        get = environ.get
        visitor, sid, cookies = self.floor.begin(
            get("HTTP_COOKIE"), get("wsgi.url_scheme") == "https"
        )
        status = [500]

        def respond(
            line: str, headers: list[tuple[str, str]], exc_info: t.Any = None
        ) -> t.Any:
            status[0] = int(line[:3])
            if cookies:
                headers.extend(("Set-Cookie", c) for c in cookies)
            return start_response(line, headers, exc_info)

        body = self.app(environ, respond)
        request = get("werkzeug.request")
        rule = None if request is None else request.url_rule
        self.floor.page(
            visitor,
            sid,
            get("REQUEST_METHOD", "GET"),
            get("PATH_INFO") or "/",
            None if rule is None else rule.rule,
            status[0],
            started,
            wall,
            get("HTTP_REFERER"),
        )
        return body


class FloorASGI:
    """The floor as ASGI middleware (HTTP only)."""

    def __init__(self, app: t.Any, floor: FloorTracker) -> None:
        self.app = app
        self.floor = floor

    async def __call__(self, scope: t.Any, receive: t.Any, send: t.Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = _perf()
        wall = _time()
        header = referrer = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                header = value.decode("latin-1")
            elif name == b"referer":
                referrer = value.decode("latin-1")
        floor = self.floor
        visitor, sid, cookies = floor.begin(header, scope.get("scheme") == "https")
        status = 500

        async def floor_send(message: t.Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if cookies:
                    message = dict(message)
                    message["headers"] = [
                        *message.get("headers", ()),
                        *((b"set-cookie", c.encode("latin-1")) for c in cookies),
                    ]
            await send(message)

        await self.app(scope, receive, floor_send)
        route = scope.get("route")
        floor.page(
            visitor,
            sid,
            scope["method"],
            scope["path"],
            getattr(route, "path", None),
            status,
            started,
            wall,
            referrer,
        )
