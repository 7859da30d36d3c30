"""The HTTP machinery shared by the vendor emulators.

A :class:`VendorAPI` declares routes (method, path pattern, handler). The
:class:`EmulatorServer` is a real threaded HTTP/1.1 server on 127.0.0.1 that
hosts several APIs at once, records every request with the answer it got, and
applies scripted faults (:class:`Fault`) before a request reaches its handler.
It can log one line per request (``log=``), and it answers ``GET /`` with a
small HTML page and ``GET /_emulator/received`` with JSON listing what each
vendor received (:meth:`EmulatorServer.received`); these two are not vendor
routes and are not recorded.

Handlers answer by returning a :class:`Reply` or by raising :class:`HTTPError`
(the vendor's documented status and error body).
"""

from __future__ import annotations

import dataclasses
import html
import http.server
import json
import re
import socket
import threading
import time
import typing as t
import urllib.parse

__all__ = [
    "EmulatorServer",
    "Fault",
    "HTTPError",
    "RecordedRequest",
    "Reply",
    "Request",
    "Route",
    "VendorAPI",
]


def _refuse_constant(name: str) -> t.NoReturn:
    raise ValueError(f"{name} is not JSON")


def loads_json(data: bytes) -> t.Any:
    """Parse JSON as strictly as RFC 8259: ``NaN``/``Infinity`` are refused
    (Python's :func:`json.loads` accepts them; a real vendor would not)."""
    return json.loads(data, parse_constant=_refuse_constant)


def _in_scope(route_name: str, scope: str) -> bool:
    """``scope`` is ``route_name`` itself or its vendor (``"cardlytics"``)."""
    return route_name == scope or route_name.startswith(scope + ".")


#: The paths of the emulator's own pages (not vendor routes, not recorded).
PAGE_PATH = "/"
RECEIVED_PATH = "/_emulator/received"

#: Header names whose values are credentials, hidden from the request log.
_SECRET_HEADER_WORDS = ("auth", "token", "key", "secret", "cookie", "password")
#: JSON body keys whose values are credentials (token requests).
_SECRET_BODY_KEYS = frozenset(
    {"apikey", "secret", "clientsecret", "client_secret", "password", "token"}
)


def rule_broken(body: t.Any) -> str | None:
    """The rule an emulator's error body names, on one line, or None.

    Reads each vendor's error shape: Synerise ``errors`` (strings), Yotpo
    ``errors`` (``{rule, field, message}``), Cardlytics ``validationErrors``
    (or its ``title``), MXO ``{error: <rule>, message}`` and the server's own
    ``{error}`` (404, 405).
    """
    text: str | None = None
    if isinstance(body, dict):
        for key in ("errors", "validationErrors"):
            items = body.get(key)
            if isinstance(items, list) and items:
                first = items[0]
                if isinstance(first, dict):
                    head = " ".join(
                        str(first[k]) for k in ("rule", "field") if first.get(k)
                    )
                    message = first.get("message")
                    text = f"{head}: {message}" if head and message else head
                    text = text or str(message or first)
                else:
                    text = str(first)
                if len(items) > 1:
                    text += f" (+{len(items) - 1} more)"
                break
        if text is None:
            error, message = body.get("error"), body.get("message")
            if isinstance(error, str) and isinstance(message, str) and message:
                text = f"{error}: {message}"
            elif isinstance(error, str):
                text = error
            elif isinstance(body.get("title"), str):
                text = body["title"]
    elif isinstance(body, str) and body:
        text = body
    if not text:
        return None
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _secret_values(request: Request) -> list[str]:
    """Credential values a request carries (headers, query, token bodies),
    longest first, so that the request log can hide them."""
    found: set[str] = set()
    for name, value in request.headers.items():
        if any(word in name.lower() for word in _SECRET_HEADER_WORDS):
            found.add(value)
            found.add(value.partition(" ")[2].strip())  # after "Bearer"/"Basic"
    for name, value in request.query.items():
        if any(word in name.lower() for word in _SECRET_HEADER_WORDS):
            found.add(value)
    if request.body and len(request.body) <= 65536:
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict):
            for key, value in body.items():
                if isinstance(value, str) and key.lower() in _SECRET_BODY_KEYS:
                    found.add(value)
        else:  # a form body (OAuth2 token requests)
            try:
                form = urllib.parse.parse_qs(request.body.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                form = {}
            for key, values in form.items():
                if key.lower() in _SECRET_BODY_KEYS:
                    found.update(values)
    return sorted((v for v in found if len(v) >= 4), key=len, reverse=True)


def request_log_line(
    route: str | None, request: Request, status: int, reply: t.Any, note: str = ""
) -> str:
    """One line describing a request and its answer: time, vendor, route name,
    method, path (query values hidden), status, and the rule broken for a 4xx.
    Credentials the request carried never appear in it."""
    vendor = route.split(".", 1)[0] if route else "-"
    path = request.path if len(request.path) <= 200 else request.path[:197] + "..."
    if request.query:
        path += "?" + "&".join(f"{key}=..." for key in request.query)
    line = (
        f"{time.strftime('%H:%M:%S')} {vendor} {route or '-'} "
        f"{request.method} {path} -> {status or 'no answer'}"
    )
    if note:
        line += f" ({note})"
    if 400 <= status < 500:
        rule = rule_broken(reply)
        if rule:
            line += f" rule: {rule}"
    for secret in _secret_values(request):
        line = line.replace(secret, "***")
    return line.encode("ascii", "backslashreplace").decode("ascii")


class Headers:
    """Case-insensitive, read-only view of request headers."""

    def __init__(self, items: t.Iterable[tuple[str, str]]) -> None:
        self._items = list(items)
        self._map: dict[str, str] = {}
        for key, value in self._items:
            self._map.setdefault(key.lower(), value)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._map.get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._map

    def __getitem__(self, key: str) -> str:
        return self._map[key.lower()]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def to_dict(self) -> dict[str, str]:
        return dict(self._items)


@dataclasses.dataclass
class Request:
    """One request as a handler sees it.

    ``params`` holds the path parameters captured by the route pattern's named
    groups; ``query`` maps each query parameter to its first value.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: bytes
    params: dict[str, str] = dataclasses.field(default_factory=dict)

    def json(self) -> t.Any:
        """The body as JSON, or :class:`HTTPError` 400 (``malformed JSON``)."""
        try:
            return loads_json(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, {"error": f"malformed JSON: {exc}"}) from None

    def credentials(self, scheme: str) -> str | None:
        """The value of ``Authorization: <scheme> <value>`` (``scheme`` in
        lower case, matched in any case), or None."""
        auth = self.headers.get("Authorization") or ""
        found, _, value = auth.partition(" ")
        if found.lower() != scheme:
            return None
        return value.strip() or None

    @property
    def content_type(self) -> str:
        """The media type without parameters, lowercased (``""`` when absent)."""
        value = self.headers.get("Content-Type") or ""
        return value.split(";", 1)[0].strip().lower()


@dataclasses.dataclass
class Reply:
    """An answer: ``body`` is JSON-encoded unless it is ``bytes`` or ``None``."""

    status: int = 200
    body: t.Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


class HTTPError(Exception):
    """Raised by a handler to answer with an error status and body."""

    def __init__(
        self, status: int, body: t.Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.reply = Reply(status, body, dict(headers or {}))


@dataclasses.dataclass(frozen=True)
class Route:
    """``methods`` a ``pattern`` (a regex matched against the whole path) accepts.

    A path that matches the pattern with another method is answered 405.
    """

    name: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: t.Callable[[Request], Reply]


class VendorAPI:
    """Base of one vendor's emulated API: its routes and its recorded state.

    Subclasses fill ``routes`` in ``__init__`` with :meth:`route`. ``vendor`` is
    the short name used in faults and recorded requests.
    """

    vendor: t.ClassVar[str] = "vendor"

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.lock = threading.RLock()

    def route(
        self,
        name: str,
        methods: str | t.Iterable[str],
        pattern: str,
        handler: t.Callable[[Request], Reply],
    ) -> None:
        if isinstance(methods, str):
            methods = [methods]
        self.routes.append(
            Route(
                name,
                frozenset(m.upper() for m in methods),
                re.compile(pattern),
                handler,
            )
        )

    def reset(self) -> None:
        """Forget recorded events and issued tokens (configuration stays)."""


@dataclasses.dataclass
class Fault:
    """A scripted misbehaviour for requests whose route name matches ``route``.

    ``route`` is a route name (``"cardlytics.clientEvent"``) or a vendor name
    (``"cardlytics"``), or ``"*"`` for every route. ``times`` faults are served
    (``None``: until removed). Kinds:

    * ``status`` set: answer with it, ``headers`` and ``body`` without calling
      the handler;
    * ``delay`` set (and no status): sleep, then handle normally;
    * ``drop``: close the connection without answering;
    * ``partial``: send headers and part of a body, then close.
    """

    route: str
    status: int | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: t.Any = None
    delay: float = 0.0
    drop: bool = False
    partial: bool = False
    times: int | None = 1

    def matches(self, route_name: str) -> bool:
        return self.route == "*" or _in_scope(route_name, self.route)


@dataclasses.dataclass
class RecordedRequest:
    """A request the emulator received and what it answered."""

    route: str | None
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int
    reply: t.Any
    at: float

    def json(self) -> t.Any:
        return json.loads(self.body)


_Action: t.TypeAlias = "Reply | Fault | None"


class EmulatorServer:
    """A real HTTP server on 127.0.0.1 hosting several :class:`VendorAPI` s.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    ``port=0`` picks a free port; :attr:`url` is the base URL. ``log``, when
    given, is called with one line per request (see :func:`request_log_line`;
    credentials are hidden); an exception it raises is ignored.
    """

    def __init__(
        self,
        apis: t.Iterable[VendorAPI],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log: t.Callable[[str], None] | None = None,
    ) -> None:
        self.apis = list(apis)
        self.log = log
        self._routes = [route for api in self.apis for route in api.routes]
        self._faults: list[Fault] = []
        self._lock = threading.Condition()
        self.requests: list[RecordedRequest] = []
        self._host = host
        self._port = port
        self._server: http.server.ThreadingHTTPServer | None = None

    # --- lifecycle ---------------------------------------------------------------
    def start(self) -> EmulatorServer:
        if self._server is not None:
            return self
        server = _QuietServer((self._host, self._port), _make_handler(self))
        self._server = server
        self._port = int(server.server_address[1])
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="trackware-emulator",
            daemon=True,
        ).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    # --- faults and records --------------------------------------------------------
    def fault(self, route: str, **kwargs: t.Any) -> Fault:
        """Script a :class:`Fault` (see its fields); returns it for removal."""
        fault = Fault(route, **kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def recorded(self, route: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, optionally only those of a route or vendor."""
        with self._lock:
            items = list(self.requests)
        if route is None:
            return items
        return [r for r in items if r.route is not None and _in_scope(r.route, route)]

    def wait_for(self, predicate: t.Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` is true; re-checked after every request."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.2))
        return True

    def reset(self) -> None:
        """Forget requests, faults and every API's recorded state."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()
        for api in self.apis:
            api.reset()

    def received(self, last: int = 20) -> dict[str, t.Any]:
        """What each vendor received, JSON-serialisable (served at
        ``/_emulator/received``): per vendor the number of requests, their
        count by route and status, the number of accepted ``events`` and the
        last ``last`` of them, and the last ``last`` requests (method, path
        without query values, status, rule broken). Headers, and so
        credentials, are never included."""
        last = max(0, last)
        requests = self.recorded()
        vendors: dict[str, t.Any] = {}
        for api in self.apis:
            mine = [
                r
                for r in requests
                if r.route is not None and _in_scope(r.route, api.vendor)
            ]
            by_route: dict[str, dict[str, int]] = {}
            for r in mine:
                counts = by_route.setdefault(t.cast(str, r.route), {})
                counts[str(r.status)] = counts.get(str(r.status), 0) + 1
            with api.lock:
                events = getattr(api, "events", None)
                accepted = list(events) if isinstance(events, list) else []
            vendors[api.vendor] = {
                "requests": len(mine),
                "by_route": by_route,
                "events": len(accepted),
                "last_events": accepted[-last:] if last else [],
                "last_requests": [_summary(r) for r in mine[-last:]] if last else [],
            }
        unrouted = [r for r in requests if r.route is None]
        return {
            "url": self.url,
            "vendors": vendors,
            "unrouted": {
                "requests": len(unrouted),
                "last_requests": (
                    [_summary(r) for r in unrouted[-last:]] if last else []
                ),
            },
        }

    # --- dispatch --------------------------------------------------------------------
    def _take_fault(self, route_name: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(route_name):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def dispatch(self, request: Request) -> tuple[str | None, _Action]:
        """Find the route, apply faults, call the handler."""
        allowed: set[str] = set()
        for route in self._routes:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            if request.method not in route.methods:
                allowed |= route.methods
                continue
            fault = self._take_fault(route.name)
            if fault is not None:
                if fault.drop or fault.partial or fault.status is not None:
                    return route.name, fault
                if fault.delay:
                    time.sleep(fault.delay)
            request.params = {k: v for k, v in match.groupdict().items() if v}
            try:
                return route.name, route.handler(request)
            except HTTPError as exc:
                return route.name, exc.reply
        if allowed:
            return None, Reply(
                405,
                {"error": "method not allowed"},
                {"Allow": ", ".join(sorted(allowed))},
            )
        return None, Reply(404, {"error": f"no such endpoint: {request.path}"})

    def _record(
        self,
        route: str | None,
        request: Request,
        status: int,
        reply: t.Any,
        note: str = "",
    ) -> None:
        log = self.log
        if log is not None:
            try:
                log(request_log_line(route, request, status, reply, note))
            except Exception:  # a log must not break the answer
                pass
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    route,
                    request.method,
                    request.path,
                    dict(request.query),
                    request.headers.to_dict(),
                    request.body,
                    status,
                    reply,
                    time.time(),
                )
            )
            self._lock.notify_all()


def _summary(r: RecordedRequest) -> dict[str, t.Any]:
    return {
        "at": r.at,
        "route": r.route,
        "method": r.method,
        "path": r.path,
        "query": sorted(r.query),
        "status": r.status,
        "rule": rule_broken(r.reply) if 400 <= r.status < 500 else None,
    }


def _page(received: dict[str, t.Any]) -> bytes:
    """The HTML page at ``/``: :meth:`EmulatorServer.received`, readable."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<meta http-equiv='refresh' content='3'>",
        "<title>trackware vendor emulators</title>",
        "<style>body{font-family:sans-serif;margin:2em}"
        "td,th{padding:2px 8px;text-align:left}"
        "pre{background:#f4f4f4;padding:4px;white-space:pre-wrap}</style>",
        "</head><body><h1>trackware vendor emulators</h1>",
        f"<p>{esc(received['url'])}: what each vendor received (this page "
        f"reloads every 3 s; JSON at <a href='{RECEIVED_PATH}'>{RECEIVED_PATH}"
        "</a>).</p>",
    ]
    for vendor, info in received["vendors"].items():
        parts.append(
            f"<h2>{esc(vendor)}: {info['events']} event(s) accepted, "
            f"{info['requests']} request(s)</h2>"
        )
        if info["by_route"]:
            parts.append("<table><tr><th>route</th><th>answers</th></tr>")
            for route, counts in info["by_route"].items():
                answers = ", ".join(f"{n}&times; {esc(s)}" for s, n in counts.items())
                parts.append(f"<tr><td>{esc(route)}</td><td>{answers}</td></tr>")
            parts.append("</table>")
        refused = [r for r in info["last_requests"] if r["rule"]]
        for r in refused[-5:]:
            parts.append(
                f"<p>{esc(r['method'])} {esc(r['path'])} &rarr; {r['status']}: "
                f"{esc(r['rule'])}</p>"
            )
        for event in reversed(info["last_events"]):
            text = json.dumps(event, indent=1, default=str, ensure_ascii=False)
            parts.append(f"<pre>{esc(text)}</pre>")
    unrouted = received["unrouted"]
    if unrouted["requests"]:
        parts.append(f"<h2>no such endpoint: {unrouted['requests']} request(s)</h2>")
        for r in unrouted["last_requests"]:
            parts.append(
                f"<p>{esc(r['method'])} {esc(r['path'])} &rarr; {r['status']}</p>"
            )
    parts.append("</body></html>")
    return "".join(parts).encode("utf-8")


class _QuietServer(http.server.ThreadingHTTPServer):
    """Ignores clients that went away (a test's timeout during a delay fault)."""

    daemon_threads = True

    def handle_error(self, request: t.Any, client_address: t.Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def _encode(body: t.Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    return json.dumps(body).encode("utf-8")


def _make_handler(emulator: EmulatorServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        server_version = "trackware-emulator"

        def log_message(self, format: str, *args: t.Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parsed = urllib.parse.urlsplit(self.path)
            query = {
                k: v[0]
                for k, v in urllib.parse.parse_qs(
                    parsed.query, keep_blank_values=True
                ).items()
            }
            if self.command == "GET" and parsed.path in (PAGE_PATH, RECEIVED_PATH):
                self._own_page(parsed.path, query)
                return
            request = Request(
                self.command,
                parsed.path,
                query,
                Headers(self.headers.items()),
                body,
            )
            route, action = emulator.dispatch(request)
            if isinstance(action, Fault):
                self._fault(route, request, action)
                return
            reply = action if action is not None else Reply(204)
            emulator._record(route, request, reply.status, reply.body)
            payload = _encode(reply.body)
            self.send_response(reply.status)
            headers = dict(reply.headers)
            if payload and not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _own_page(self, path: str, query: dict[str, str]) -> None:
            try:
                last = int(query.get("last", "20"))
            except ValueError:
                last = 20
            received = emulator.received(min(max(last, 0), 1000))
            if path == RECEIVED_PATH:
                payload = json.dumps(received, default=str).encode("utf-8")
                kind = "application/json"
            else:
                payload = _page(received)
                kind = "text/html; charset=utf-8"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _fault(self, route: str | None, request: Request, fault: Fault) -> None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop:
                emulator._record(route, request, 0, "dropped", "fault: dropped")
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault.partial:
                emulator._record(route, request, 0, "partial", "fault: partial answer")
                self.close_connection = True
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 100\r\n\r\n{"statusCode":'
                )
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status = int(fault.status or 500)
            body = fault.body if fault.body is not None else {"error": "injected"}
            emulator._record(route, request, status, body, "fault")
            payload = _encode(body)
            self.send_response(status)
            for key, value in fault.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Handler
