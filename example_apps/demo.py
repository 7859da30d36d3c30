"""trackware demo: ``make demo`` (and ``make demo-serve``).

Starts the local vendor emulators, the Flask example shop and the FastAPI
example store in this process (real HTTP servers on 127.0.0.1, no external
service), drives a scripted customer journey through each with real HTTP
requests, and prints a table per destination: events the mapping sends there,
events the emulator accepted, rejected, retried and dead-lettered. Two
transient vendor faults are injected to show retries.

Exits 0 only if every destination received exactly what its mapping says.
``--serve`` keeps the shop, the store and the emulators running afterwards for
a person to click through. With ``trackware inspect`` running and
``TRACKWARE_INSPECTOR=http://127.0.0.1:8969`` set, the inspector page shows
every event of the journeys, its vendor payloads and outcomes, live.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import typing as t
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from asgi_store.app import create_app as create_store  # noqa: E402
from destinations import DEMO_RETRY, accepted, build_exporters  # noqa: E402
from flask_shop.app import create_app as create_shop  # noqa: E402
from websockets.sync.client import connect  # noqa: E402
from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: E402

import trackware  # noqa: E402
from trackware.testing import capture_events  # noqa: E402
from trackware.testing.emulators import VendorEmulator  # noqa: E402

USER_AGENT = "Mozilla/5.0 (trackware demo customer)"


def journey(
    base_url: str, customer: str, password: str, *, live: bool = False
) -> list[int]:
    """One customer's visit: browse, log in, offers, recommendations, buy.

    ``live``: also read the order stream and the offers websocket (the store).
    """
    statuses: list[int] = []
    with httpx.Client(
        base_url=base_url, headers={"User-Agent": USER_AGENT}, timeout=10.0
    ) as client:

        def go(method: str, path: str, **kwargs: t.Any) -> httpx.Response:
            response = client.request(method, path, **kwargs)
            statuses.append(response.status_code)
            return response

        go("GET", "/")
        go("GET", "/health")  # excluded from tracking by default
        go("POST", "/login", json={"user_id": customer, "password": password})
        go("GET", "/products/p-100")
        go("GET", "/offers")
        go("POST", "/offers/o-1/activate")
        go("POST", "/offers/o-2/park")
        go("GET", "/recommendations")
        go("POST", "/recommendations/p-200/click")
        go("POST", "/cart", json={"sku": "p-100", "quantity": 2})
        go("POST", "/cart", json={"sku": "p-200"})
        order = go("POST", "/checkout").json()
        go("POST", f"/orders/{order['id']}/ship")
        if live:
            # The store streams the order history and pushes live offer updates.
            with client.stream("GET", "/orders/stream") as stream:
                statuses.append(stream.status_code)
                assert order["id"] in stream.read().decode()
            ws_url = base_url.replace("http://", "ws://") + "/ws/offers"
            cookies = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
            with connect(ws_url, additional_headers={"Cookie": cookies}) as ws:
                updates = [json.loads(ws.recv()) for _ in range(2)]
                assert {u["offer"] for u in updates} == {"o-1", "o-2"}
                ws.send("bye")
    return statuses


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: t.Any, **kwargs: t.Any) -> None:
        pass


class _Uvicorn:
    """The ASGI store under a real uvicorn server, in a thread."""

    def __init__(self, app: t.Any) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="keep running")
    args = parser.parse_args(argv)

    emulator = VendorEmulator().start()
    dead = trackware.MemoryDeadLetter()
    tracker = trackware.Tracker(
        build_exporters(emulator.url),
        dead_letter=dead,
        flush_interval=0.2,
        retry=DEMO_RETRY,
    )
    trackware.set_tracker(tracker)
    shop = make_server(
        "127.0.0.1",
        0,
        create_shop(tracker),
        threaded=True,
        request_handler=_QuietHandler,
    )
    threading.Thread(target=shop.serve_forever, daemon=True).start()
    shop_url = f"http://127.0.0.1:{shop.server_port}"
    store = _Uvicorn(create_store(tracker))
    store_url = store.start()

    # Two transient vendor faults: trackware retries both.
    emulator.fault("synerise.batch", status=503, headers={"Retry-After": "0.1"})
    emulator.fault("cardlytics.clientEvent", status=429)

    with capture_events(tracker) as events:
        statuses = journey(shop_url, "c-42", "correct horse")
        statuses += journey(store_url, "c-43", "battery staple", live=True)
    delivered = tracker.flush(timeout=30.0)
    failed_requests = [s for s in statuses if s >= 400]

    stats = tracker.stats()["destinations"]
    got = accepted(emulator)
    ok = delivered and not failed_requests
    print(f"\ntrackware demo: {len(events)} events tracked from 2 apps")
    print(f"  Flask shop {shop_url}, FastAPI store {store_url}")
    print(f"  vendor emulators {emulator.url}\n")
    header = ("destination", "mapped", "accepted", "rejected", "retried", "dead")
    print("{:<16} {:>7} {:>9} {:>9} {:>8} {:>5}".format(*header))
    print("-" * 60)
    for exporter in [d.exporter for d in tracker.destinations]:
        name = exporter.name
        expected = sum(1 for e in events if exporter.applies(e))
        row = stats[name]
        dead_count = row["dead_lettered"]
        print(
            f"{name:<16} {expected:>7} {got[name]:>9} {row['rejected']:>9} "
            f"{row['retried']:>8} {dead_count:>5}"
        )
        if got[name] != expected or row["rejected"] or dead_count:
            ok = False
    for record in dead.records:
        print(f"  dead letter: {record.destination}: {record.reason}")
    if failed_requests:
        print(f"  HTTP errors from the apps: {failed_requests}")
    print("\nevery destination received exactly its mapped events" if ok else "")
    print("" if ok else "DEMO FAILED: see the table above")

    if args.serve:
        print(f"serving; open {shop_url} or {store_url} (Ctrl-C stops)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    store.stop()
    shop.shutdown()
    tracker.shutdown()
    emulator.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
