"""What both metric back-ends share: the metric families, ``stats()``
flattened into samples, and the export attempts (``signals.export_attempted``)
that feed the histograms."""

from __future__ import annotations

import typing as t

from .. import signals
from .._retry import CircuitBreaker

if t.TYPE_CHECKING:
    from .._config import TrackerStats
    from .._tracker import Tracker

__all__ = [
    "BATCH",
    "BATCH_BUCKETS",
    "DURATION",
    "DURATION_BUCKETS",
    "FAMILIES",
    "CIRCUIT_STATES",
    "Family",
    "Histogram",
    "connect_attempts",
    "samples",
]

#: Seconds: vendor calls take from a few milliseconds to their timeout.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
#: Events per export call (the default batch caps are 100 to 500).
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

CIRCUIT_STATES = (CircuitBreaker.CLOSED, CircuitBreaker.HALF_OPEN, CircuitBreaker.OPEN)

#: Label names (Prometheus) and the OpenTelemetry attribute of each.
ATTRIBUTES = {
    "destination": "trackware.destination",
    "outcome": "trackware.outcome",
    "reason": "trackware.reason",
    "state": "trackware.circuit.state",
}


class Family(t.NamedTuple):
    """One metric, named for each ecosystem."""

    key: str
    kind: t.Literal["counter", "gauge"]
    labels: tuple[str, ...]
    #: Prometheus name (counters: without the ``_total`` the client adds).
    prometheus: str
    #: OpenTelemetry instrument name and unit.
    otel: str
    unit: str
    help: str


class Histogram(t.NamedTuple):
    """A histogram fed by the export attempts (label: ``destination``)."""

    prometheus: str
    otel: str
    unit: str
    help: str


_D = ("destination",)

FAMILIES: tuple[Family, ...] = (
    Family(
        "tracked", "counter", (), "trackware_tracked_events",
        "trackware.tracked", "{event}",
        "Events built and routed to the destinations.",
    ),
    Family(
        "unrouted", "counter", (), "trackware_unrouted_events",
        "trackware.unrouted", "{event}",
        "Events tracked that no destination took.",
    ),
    Family(
        "dropped", "counter", ("reason",), "trackware_dropped_events",
        "trackware.dropped", "{event}",
        "Events dropped before reaching any destination, by reason "
        "(invalid, sampled, before_send, hook_error, disabled, shutdown).",
    ),
    Family(
        "events", "counter", ("destination", "outcome", "reason"),
        "trackware_events", "trackware.events", "{event}",
        "What became of the events tracked, per destination: sent, rejected, "
        "failed (retries exhausted), dropped (by reason), not_applicable, "
        "filtered. Events still queued or in flight are not counted yet.",
    ),
    Family(
        "enqueued", "counter", _D, "trackware_enqueued_events",
        "trackware.enqueued", "{event}",
        "Events offered to a destination's queue.",
    ),
    Family(
        "retried", "counter", _D, "trackware_retried_events",
        "trackware.retried", "{event}",
        "Events scheduled for another attempt after a failed one.",
    ),
    Family(
        "dead_lettered", "counter", _D, "trackware_dead_lettered_events",
        "trackware.dead_lettered", "{event}",
        "Events written to the dead letter (rejected or given up).",
    ),
    Family(
        "batches", "counter", _D, "trackware_exported_batches",
        "trackware.batches", "{batch}",
        "Batches delivered.",
    ),
    Family(
        "spooled", "counter", _D, "trackware_spooled_events",
        "trackware.spooled", "{event}",
        "Events written to the destination's durable spool.",
    ),
    Family(
        "recovered", "counter", _D, "trackware_recovered_events",
        "trackware.recovered", "{event}",
        "Events recovered from a spool a previous process left.",
    ),
    Family(
        "queue_depth", "gauge", _D, "trackware_queue_events",
        "trackware.queue.depth", "{event}",
        "Events waiting in the destination's queue.",
    ),
    Family(
        "queue_bytes", "gauge", _D, "trackware_queue_bytes",
        "trackware.queue.size", "By",
        "Approximate bytes of the events waiting in the queue.",
    ),
    Family(
        "in_flight", "gauge", _D, "trackware_in_flight_events",
        "trackware.queue.in_flight", "{event}",
        "Events taken from the queue and not settled yet (exporting or "
        "waiting for a retry).",
    ),
    Family(
        "spool_bytes", "gauge", _D, "trackware_spool_bytes",
        "trackware.spool.size", "By",
        "Bytes of the destination's spool file.",
    ),
    Family(
        "circuit", "gauge", ("destination", "state"), "trackware_circuit_state",
        "trackware.circuit.state", "1",
        "1 for the state the destination's circuit breaker is in (closed, "
        "half_open, open), 0 for the others (Prometheus multi-process mode: "
        "1 if any live process is in it).",
    ),
)  # fmt: skip

DURATION = Histogram(
    "trackware_export_duration_seconds",
    "trackware.export.duration",
    "s",
    "Time each call of a destination's exporter took (one attempt at a batch).",
)
BATCH = Histogram(
    "trackware_export_batch_events",
    "trackware.export.batch.size",
    "{event}",
    "Events per call of a destination's exporter.",
)

Sample = tuple[tuple[str, ...], float]


def samples(stats: TrackerStats) -> dict[str, list[Sample]]:
    """``stats`` as each family's samples (label values, value), by key."""
    out: dict[str, list[Sample]] = {f.key: [] for f in FAMILIES}
    out["tracked"].append(((), stats["tracked"]))
    out["unrouted"].append(((), stats["unrouted"]))
    for reason, n in sorted(stats["dropped"].items()):
        out["dropped"].append(((reason,), n))
    for name, dest in stats["destinations"].items():
        figures = t.cast("t.Mapping[str, t.Any]", dest)
        events = out["events"]
        for outcome in ("sent", "rejected", "failed", "not_applicable", "filtered"):
            events.append(((name, outcome, ""), figures[outcome]))
        for reason, n in sorted(figures["dropped"].items()):
            events.append(((name, "dropped", reason), n))
        for key in ("enqueued", "retried", "dead_lettered"):
            out[key].append(((name,), figures[key]))
        out["batches"].append(((name,), figures["batches"]))
        out["queue_depth"].append(((name,), figures["queue_depth"]))
        out["queue_bytes"].append(((name,), figures["queue_bytes"]))
        out["in_flight"].append(((name,), figures["in_flight"]))
        # Only with a spool (their figures are 0 or absent without one).
        for key in ("spooled", "recovered", "spool_bytes"):
            out[key].append(((name,), figures.get(key) or 0))
        state = figures["circuit"]
        for each in CIRCUIT_STATES:
            out["circuit"].append(((name, each), 1 if each == state else 0))
    return out


Observe = t.Callable[[str, int, float], None]


def connect_attempts(tracker: Tracker, observe: Observe) -> t.Callable[[], None]:
    """Call ``observe(destination, batch_size, seconds)`` for each export
    attempt of ``tracker``'s destinations; returns the disconnecting call."""

    def receiver(
        sender: object,
        /,
        *,
        destination: str,
        events: list[t.Any],
        duration: float,
        **_: t.Any,
    ) -> None:
        observe(destination, len(events), duration)

    signals.export_attempted.connect(receiver, sender=tracker, weak=False)

    def disconnect() -> None:
        # Not per sender: blinker would keep the receiver in ``receivers``
        # (and the worker would go on timing its attempts).
        signals.export_attempted.disconnect(receiver)

    return disconnect
