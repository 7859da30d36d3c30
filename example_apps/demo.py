"""trackware demo: ``make demo``.

Runs on embedded defaults, with no external service: tracks a short customer
journey through the decorator, the signal bus and ``track()``, delivers it to
the console, a JSON-lines file and an HTTP endpoint served in this process
(which fails once, to show a retry), then prints the per-destination
statistics. Exits non-zero if any event is unaccounted for.
"""

from __future__ import annotations

import http.server
import io
import json
import pathlib
import sys
import tempfile
import threading
import typing as t

import trackware
from trackware.exporters import ConsoleExporter, HTTPExporter, JSONLinesExporter


class _Endpoint(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: t.ClassVar[list[dict[str, t.Any]]] = []
    fail_next: t.ClassVar[bool] = True

    def log_message(self, *args: t.Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if _Endpoint.fail_next:  # one transient outage: trackware retries
            _Endpoint.fail_next = False
            status, out = 503, b'{"error":"warming up"}'
        else:
            _Endpoint.received.extend(json.loads(body)["events"])
            status, out = 200, b'{"ok":true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        if status == 503:
            self.send_header("Retry-After", "0.2")
        self.end_headers()
        self.wfile.write(out)


def main() -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="trackware-demo-"))
    console = io.StringIO()
    tracker = trackware.Tracker(
        [
            ConsoleExporter(console),
            JSONLinesExporter(workdir / "events.jsonl"),
            HTTPExporter(
                f"http://127.0.0.1:{server.server_address[1]}/events",
                headers={"Authorization": "Bearer demo-secret-token"},
            ),
        ],
        dead_letter=workdir / "dead-letter.jsonl",
        flush_interval=0.2,
    )
    trackware.set_tracker(tracker)

    @trackware.tracked(
        "order.placed", properties=lambda order, cart: {"total": order["total"]}
    )
    def place_order(cart: list[float]) -> dict[str, float]:
        return {"total": sum(cart)}

    with trackware.request_scope(anonymous_id="v-1001", context={"path": "/offers"}):
        trackware.track("page", {"title": "Offers"})
        trackware.identify("c-42", traits={"tier": "gold"})
        trackware.track("offer.viewed", {"offer_id": "o-1", "section": "LatestOffers"})
        trackware.signals.action.send(
            "offers", name="offer.activated", properties={"offer_id": "o-1"}
        )
        trackware.track("login", {"method": "password", "password": "hunter2"})
        place_order([12.5, 7.5])

    delivered = tracker.flush(timeout=10)
    stats = tracker.stats()
    tracker.shutdown()
    server.shutdown()

    print("Events as the console exporter printed them:")
    for line in console.getvalue().splitlines():
        event = json.loads(line)
        print(
            f"  {event['name']:<16} user={event['user_id']!s:<5} "
            f"properties={json.dumps(event['properties'])}"
        )
    print(f"\nJSON-lines file: {workdir / 'events.jsonl'}")
    print(f"HTTP endpoint received {len(_Endpoint.received)} events (after one 503)\n")
    print(
        f"{'destination':<10} {'enqueued':>8} {'sent':>6} {'retried':>8} "
        f"{'rejected':>8} {'dropped':>8} {'queued':>7}"
    )
    ok = delivered
    for name, d in stats["destinations"].items():
        dropped = sum(d["dropped"].values())
        print(
            f"{name:<10} {d['enqueued']:>8} {d['sent']:>6} {d['retried']:>8} "
            f"{d['rejected']:>8} {dropped:>8} {d['queue_depth']:>7}"
        )
        ok = ok and d["sent"] == d["enqueued"] == stats["tracked"]
    print(f"\ntracked={stats['tracked']} dropped={stats['dropped']}")
    print("OK: every event accounted for" if ok else "FAILED: events unaccounted for")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
