"""The emulators' HTTP server: dispatch, scripted faults, the request record.

:class:`EmulatorServer` is a real threaded HTTP/1.1 server on 127.0.0.1 that
hosts several :class:`~trackware.testing.emulators.VendorAPI` s at once,
applies scripted :class:`Fault` s before a request reaches its handler, and
records every request with its answer (the last ``max_requests`` of them).
"""

from __future__ import annotations

import collections
import dataclasses
import http.server
import json
import socket
import ssl
import sys
import threading
import time
import typing as t
import urllib.parse

from ._api import Headers, HTTPError, Reply, Request, VendorAPI, in_scope
from ._records import (
    PAGE_PATH,
    RECEIVED_PATH,
    RecordedRequest,
    received_page,
    received_summary,
    request_log_line,
)

__all__ = ["Dispatched", "EmulatorServer", "Fault"]

#: How many requests an :class:`EmulatorServer` keeps by default.
MAX_REQUESTS = 10_000


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
        return self.route == "*" or in_scope(route_name, self.route)


class Dispatched(t.NamedTuple):
    """What :meth:`EmulatorServer.dispatch` decided: the route (None: no
    route matched) and the answer, or the fault to act out."""

    route: str | None
    action: Reply | Fault | None


class EmulatorServer:
    """A real HTTP server on 127.0.0.1 hosting several :class:`VendorAPI` s.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    ``port=0`` picks a free port; :attr:`url` is the base URL. ``log``, when
    given, is called with one line per request (time, route, method, path,
    status and the rule broken; credentials hidden); an exception it raises is
    ignored.

    :attr:`requests` keeps the last ``max_requests`` :class:`RecordedRequest` s
    (``None``: all); :attr:`requests_dropped` counts the older ones forgotten.
    :meth:`received` still counts every request.

    ``ssl_context`` (server side) serves HTTPS instead; make it require client
    certificates to emulate mutual TLS.
    """

    def __init__(
        self,
        apis: t.Iterable[VendorAPI],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log: t.Callable[[str], None] | None = None,
        max_requests: int | None = MAX_REQUESTS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.apis = list(apis)
        self.ssl_context = ssl_context
        self.log = log
        self._routes = [route for api in self.apis for route in api.routes]
        self._faults: list[Fault] = []
        self._lock = threading.Condition()
        self.requests: collections.deque[RecordedRequest] = collections.deque(
            maxlen=max_requests
        )
        self.requests_dropped = 0
        self._answered: dict[tuple[str | None, int], int] = {}
        self._host = host
        self._port = port
        self._server: http.server.ThreadingHTTPServer | None = None

    # --- lifecycle ---------------------------------------------------------------
    def start(self) -> EmulatorServer:
        if self._server is not None:
            return self
        server = _QuietServer((self._host, self._port), _make_handler(self))
        if self.ssl_context is not None:
            server.socket = self.ssl_context.wrap_socket(
                server.socket, server_side=True
            )
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
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://{self._host}:{self._port}"

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
        return [r for r in items if r.route is not None and in_scope(r.route, route)]

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
            self.requests_dropped = 0
            self._answered.clear()
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
        with self._lock:
            requests = list(self.requests)
            answered = dict(self._answered)
        return received_summary(self.url, self.apis, requests, answered, last)

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

    def dispatch(self, request: Request) -> Dispatched:
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
                    return Dispatched(route.name, fault)
                if fault.delay:
                    time.sleep(fault.delay)
            request.params = {k: v for k, v in match.groupdict().items() if v}
            try:
                return Dispatched(route.name, route.handler(request))
            except HTTPError as exc:
                return Dispatched(route.name, exc.reply)
        if allowed:
            return Dispatched(
                None,
                Reply(
                    405,
                    {"error": "method not allowed"},
                    {"Allow": ", ".join(sorted(allowed))},
                ),
            )
        return Dispatched(
            None, Reply(404, {"error": f"no such endpoint: {request.path}"})
        )

    def record(
        self,
        route: str | None,
        request: Request,
        status: int,
        reply: t.Any,
        note: str = "",
    ) -> None:
        """Log and keep one answered request (called by the request handler)."""
        log = self.log
        if log is not None:
            try:
                log(request_log_line(route, request, status, reply, note))
            except Exception:  # a log must not break the answer
                pass
        recorded = RecordedRequest(
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
        with self._lock:
            requests = self.requests
            if requests.maxlen is not None and len(requests) == requests.maxlen:
                self.requests_dropped += 1
            requests.append(recorded)
            key = (route, status)
            self._answered[key] = self._answered.get(key, 0) + 1
            self._lock.notify_all()


class _QuietServer(http.server.ThreadingHTTPServer):
    """Ignores clients that went away (a test's timeout during a delay fault)."""

    daemon_threads = True

    def handle_error(self, request: t.Any, client_address: t.Any) -> None:
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
            emulator.record(route, request, reply.status, reply.body)
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
                payload = received_page(received)
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
                emulator.record(route, request, 0, "dropped", "fault: dropped")
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault.partial:
                emulator.record(route, request, 0, "partial", "fault: partial answer")
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
            emulator.record(route, request, status, body, "fault")
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
