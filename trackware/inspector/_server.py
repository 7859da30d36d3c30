"""The inspector sidecar's HTTP server (stdlib ``ThreadingHTTPServer``).

Apps POST ``/api/ingest``; browsers load ``/`` (the page), read
``/api/events``, ``/api/events/<id>``, ``/api/destinations``, follow
``/api/stream`` (server-sent events) and POST ``/api/replay``.

Safety: it binds loopback unless given a token; with a token every request
must carry it (``Authorization: Bearer``, or the cookie the page sets after
being opened once as ``/?token=...``). Without a token, a ``Host`` header that
is not a loopback name is refused (DNS rebinding), and so is any POST whose
``Origin`` is another site's.
"""

from __future__ import annotations

import hmac
import http.server
import ipaddress
import json
import pathlib
import queue
import socket
import threading
import typing as t
import urllib.parse

from ._state import InspectorState

__all__ = ["DEFAULT_PORT", "InspectorServer", "is_loopback"]

DEFAULT_PORT = 8969
MAX_BODY = 8 * 1024 * 1024
COOKIE = "trackware_inspector"
STATIC = pathlib.Path(__file__).resolve().parent / "static"
_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
#: How often an idle stream gets a comment line (keeps proxies and the
#: browser's EventSource from timing out), seconds.
HEARTBEAT = 10.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) is a loopback interface."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    inspector: InspectorServer

    def handle_error(self, request: t.Any, client_address: t.Any) -> None:
        # A browser or app that hangs up mid-answer is normal: no traceback.
        pass


class InspectorServer:
    """The sidecar: ``start()`` serves in a thread (tests), ``serve_forever()``
    in the caller's (the command line).

    Raises:
        ValueError: ``host`` is not a loopback address and no ``token`` is
            given.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        state: InspectorState | None = None,
    ) -> None:
        if not is_loopback(host) and not token:
            raise ValueError(
                f"refusing to listen on {host!r} (not a loopback interface) "
                "without a token: give --token (apps then set "
                "TRACKWARE_INSPECTOR_TOKEN) or keep the default 127.0.0.1"
            )
        self.token = token or None
        self.state = state or InspectorState()
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        server_class = type("_Server", (_Server,), {"address_family": family})
        self._server: _Server = server_class((host.strip("[]"), port), _Handler)
        self._server.inspector = self
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        host = self.host.strip("[]")
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> InspectorServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="trackware-inspect",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self.stop()

    def stop(self) -> None:
        self.stopping.set()
        for q in list(self.state._subscribers):
            try:
                q.put_nowait(None)
            except queue.Full:  # pragma: no cover
                pass
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> InspectorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "trackware-inspect"
    #: Seconds a connection may sit idle or half-sent (a stuck app or browser).
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: t.Any) -> None:
        pass

    # --- plumbing --------------------------------------------------------------------
    @property
    def inspector(self) -> InspectorServer:
        return self.server.inspector

    def _send(
        self,
        status: int,
        body: bytes,
        kind: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: t.Any) -> None:
        self._send(status, json.dumps(data, default=str).encode("utf-8"))

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _authorised(self, query: dict[str, str]) -> bool:
        token = self.inspector.token
        if token is None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            if host and not is_loopback(host):
                return False
            return True
        given = ""
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given:
            for part in (self.headers.get("Cookie") or "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE:
                    given = urllib.parse.unquote(value)
        if not given:
            given = query.get("token", "")
        return hmac.compare_digest(given.encode(), token.encode())

    def _same_origin(self) -> bool:
        origin = self.headers.get("Origin")
        if not origin:
            return True
        netloc = urllib.parse.urlsplit(origin).netloc
        return netloc == (self.headers.get("Host") or "")

    def _read_json(self) -> t.Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw)

    # --- routes ----------------------------------------------------------------------
    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(parts.query).items()}
        path = parts.path
        if not self._authorised(query):
            self._error(403, "token required (open the page as /?token=...)")
            return
        if path == "/" and "token" in query and self.inspector.token:
            # Remember the token in a cookie and drop it from the address bar.
            cookie = (
                f"{COOKIE}={urllib.parse.quote(query['token'])}; HttpOnly; "
                "SameSite=Strict; Path=/"
            )
            self._send(303, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})
            return
        if path in _FILES:
            name, kind = _FILES[path]
            self._send(
                200,
                (STATIC / name).read_bytes(),
                kind,
                {
                    "Content-Security-Policy": "default-src 'self'; "
                    "style-src 'self'; script-src 'self'; img-src 'self' data:"
                },
            )
            return
        state = self.inspector.state
        if path == "/api/events":
            try:
                limit = min(max(int(query.get("limit", "500")), 1), 2000)
            except ValueError:
                limit = 500
            self._json(200, {"events": state.list_events(limit)})
        elif path.startswith("/api/events/"):
            event = state.event(urllib.parse.unquote(path[len("/api/events/") :]))
            if event is None:
                self._error(404, "no such event (it may have left the ring)")
            else:
                self._json(200, event)
        elif path == "/api/destinations":
            self._json(200, state.destinations())
        elif path.startswith("/api/replay/"):
            result = state.result(path[len("/api/replay/") :])
            if result is None:
                self._error(404, "no such replay")
            else:
                self._json(200, result)
        elif path == "/api/stream":
            self._stream()
        elif path == "/health":
            self._json(200, {"ok": True, "received": state.received})
        else:
            self._error(404, "not found")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        if not self._authorised({}) or not self._same_origin():
            self._error(403, "token required, or a request from another site")
            self.close_connection = True
            return
        try:
            data = self._read_json()
        except (ValueError, OSError):
            self._error(400, "a JSON body is required")
            self.close_connection = True
            return
        state = self.inspector.state
        if parts.path == "/api/ingest":
            try:
                commands = state.ingest(data if isinstance(data, dict) else {})
            except ValueError as exc:
                self._error(400, str(exc))
                return
            self._json(200, {"commands": commands})
        elif parts.path == "/api/replay":
            if not isinstance(data, dict):
                self._error(400, "a JSON object is required")
                return
            keys = [str(k) for k in data.get("keys") or []]
            destination = data.get("destination")
            try:
                command_id = state.queue_replay(
                    str(data.get("process")),
                    str(destination) if destination else None,
                    keys,
                )
            except KeyError:
                self._error(404, "that process is gone")
                return
            self._json(202, {"id": command_id})
        else:
            self._error(404, "not found")

    def _stream(self) -> None:
        state = self.inspector.state
        q = state.subscribe()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(b"retry: 1000\n: connected\n\n")
            self.wfile.flush()
            stopping = self.inspector.stopping
            while not stopping.is_set():
                try:
                    message = q.get(timeout=HEARTBEAT)
                except queue.Empty:
                    self.wfile.write(b": ping\n\n")
                    self.wfile.flush()
                    continue
                if message is None:
                    return
                kind, data = message
                text = json.dumps(data, default=str)
                self.wfile.write(f"event: {kind}\ndata: {text}\n\n".encode())
                self.wfile.flush()
        except OSError:
            return
        finally:
            state.unsubscribe(q)
