"""A minimal loopback HTTP sink that counts events in JSON batch bodies.

Run it as its own process (``RemoteSink``) so that its JSON parsing does not
compete with the code being measured for the GIL, as a real vendor would not.
"""

from __future__ import annotations

import gzip
import http.server
import sys
import threading
import typing as t


class CountingSink:
    """Accepts POSTs on any path; counts events in ``events``/``batch`` arrays."""

    def __init__(self, port: int = 0) -> None:
        self.count = 0
        self.cond = threading.Condition()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: t.Any) -> None:
                pass

            def do_GET(self) -> None:
                out = str(sink.count).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                # Count events without parsing the whole body: each trackware
                # event has one "event_id" key, each Segment message one
                # "messageId". Parsing would make the sink, not the client, the
                # bottleneck being measured.
                n = body.count(b'"event_id"') + body.count(b'"messageId"')
                with sink.cond:
                    sink.count += n
                    sink.cond.notify_all()
                out = b'{"success":true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.count >= n, timeout)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RemoteSink:
    """A :class:`CountingSink` in a child process; ``count`` asks it over HTTP."""

    def __init__(self) -> None:
        import socket
        import subprocess
        import time
        import urllib.request

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._proc = subprocess.Popen([sys.executable, __file__, str(port)])
        self._urlopen = urllib.request.urlopen
        deadline = time.monotonic() + 10
        while True:
            try:
                _ = self.count
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def count(self) -> int:
        with self._urlopen(self.url + "/count", timeout=5) as resp:
            return int(resp.read())

    def wait_for(self, n: int, timeout: float) -> bool:
        import time

        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


if __name__ == "__main__":
    sink = CountingSink(int(sys.argv[1]))
    threading.Event().wait()
