"""The emulators' server: the request record is bounded, and what it forgets
is counted (a long ``trackware emulate`` must not grow without end); HTTPS and
mutual TLS with ``ssl_context``."""

from __future__ import annotations

import ssl

import httpx
import pytest

from trackware.testing.emulators import EmulatorServer, Reply, Request, VendorAPI


class Echo(VendorAPI):
    """A vendor with one route that answers 200, or 400 for ``?bad``."""

    vendor = "echo"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, str]] = []
        self.route("echo.ping", "POST", r"/ping", self._ping)

    def _ping(self, request: Request) -> Reply:
        if "bad" in request.query:
            return Reply(400, {"error": "bad"})
        with self.lock:
            self.events.append({"n": request.query.get("n", "")})
        return Reply(200, {"ok": True})


def test_the_record_keeps_the_last_max_requests_and_counts_the_rest() -> None:
    with EmulatorServer([Echo()], max_requests=3) as server:
        with httpx.Client(base_url=server.url) as client:
            for n in range(5):
                assert client.post(f"/ping?n={n}").status_code == 200
            assert client.post("/ping?bad=1").status_code == 400
            assert client.get("/nowhere").status_code == 404
        assert [r.query.get("n") for r in server.recorded()] == ["4", None, None]
        assert [r.status for r in server.recorded()] == [200, 400, 404]
        assert server.requests_dropped == 4
        received = server.received()
        echo = received["vendors"]["echo"]
        assert echo["requests"] == 6
        assert echo["by_route"] == {"echo.ping": {"200": 5, "400": 1}}
        assert echo["events"] == 5
        assert [r["status"] for r in echo["last_requests"]] == [200, 400]
        assert received["unrouted"]["requests"] == 1

        server.reset()
        assert server.recorded() == []
        assert server.requests_dropped == 0
        assert server.received()["vendors"]["echo"]["requests"] == 0
        assert server.received()["vendors"]["echo"]["by_route"] == {}


def test_by_default_the_record_is_bounded_and_none_keeps_everything() -> None:
    assert EmulatorServer([]).requests.maxlen == 10_000
    assert EmulatorServer([], max_requests=None).requests.maxlen is None
    with EmulatorServer([Echo()], max_requests=None) as server:
        with httpx.Client(base_url=server.url) as client:
            for n in range(5):
                client.post(f"/ping?n={n}")
        assert len(server.recorded()) == 5
        assert server.requests_dropped == 0


def test_ssl_context_serves_https_and_can_require_a_client_certificate(
    pki: dict[str, str],
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki["ca.crt"])
    context.load_cert_chain(pki["server.crt"], pki["server.key"])
    with EmulatorServer([Echo()], ssl_context=context) as server:
        assert server.url.startswith("https://127.0.0.1:")
        with httpx.Client(base_url=server.url, verify=pki["ca.crt"]) as client:
            assert client.post("/ping?n=1").status_code == 200
        context.verify_mode = ssl.CERT_REQUIRED
        with httpx.Client(base_url=server.url, verify=pki["ca.crt"]) as anonymous:
            with pytest.raises(httpx.HTTPError):
                anonymous.post("/ping?n=2")
        mutual = ssl.create_default_context(cafile=pki["ca.crt"])
        mutual.load_cert_chain(pki["client.crt"], pki["client.key"])
        with httpx.Client(base_url=server.url, verify=mutual) as client:
            assert client.post("/ping?n=3").status_code == 200
        assert [r.query["n"] for r in server.recorded()] == ["1", "3"]
