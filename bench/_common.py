"""What the benchmarks share: the properties they track, the median timer,
an exporter that does nothing, a tracker whose queue absorbs a whole run, the
ASGI request they send, and the OpenTelemetry SDK's tracer provider for the
comparisons."""

from __future__ import annotations

import statistics
import time
import typing as t

import trackware
from trackware.exporters import BaseExporter, ExportResult

PROPS = {"offer_id": "o-1", "amount": 3, "channel": "OLB"}
pc = time.perf_counter_ns


def median_ns(fn: t.Callable[[], object], n: int) -> float:
    """Median of ``n`` single-call timings, minus the timer's own cost."""
    samples = []
    for _ in range(n):
        t0 = pc()
        fn()
        samples.append(pc() - t0)
    empty = []
    for _ in range(n):
        t0 = pc()
        empty.append(pc() - t0)
    return statistics.median(samples) - statistics.median(empty)


class NullExporter(BaseExporter):
    """Accepts every batch at once (the worker drains as fast as it can);
    with a long flush interval, the queue absorbs a whole run instead."""

    default_name = "null"

    def export(self, events: t.Sequence[trackware.Event], /) -> ExportResult:
        return ExportResult.success(events)


def sdk_tracer_provider() -> t.Any:
    """The OpenTelemetry SDK's provider, as an instrumented app runs with
    (without it the API's no-op tracer makes OpenTelemetry look far cheaper
    than it is in use)."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        print("  (opentelemetry-sdk not installed: OpenTelemetry uses no-op spans)")
        return None
    return TracerProvider()


def absorbing_tracker() -> trackware.Tracker:
    """A tracker whose exporter never sends during the run: the worker wakes
    early only for a full batch (ten million) and the flush interval is an
    hour, so its queue absorbs every event."""
    return trackware.Tracker(
        [NullExporter(name="absorb", max_batch_size=10_000_000)],
        max_queue_size=5_000_000,
        max_queue_bytes=1 << 34,
        max_batch_size=10_000_000,
        max_batch_bytes=1 << 34,
        flush_interval=3600.0,
        dead_letter=None,
        register_atexit=False,
    )


#: Signs trackware's cookies (the integrations refuse to start without a key).
SECRET = "bench-cookie-secret"

BASE_SCOPE: dict[str, t.Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/items/42",
    "raw_path": b"/items/42",
    "query_string": b"",
    "root_path": "",
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}

HEADERS = [
    (b"host", b"shop.example"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"),
    (b"accept", b"text/html"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"referer", b"https://shop.example/"),
]
