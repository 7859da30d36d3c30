"""trackware's figures as Prometheus metrics (prometheus-client).

One process: a collector reads ``tracker.stats()`` when scraped (exact, and
costs nothing between scrapes). Under a multi-process server
(``PROMETHEUS_MULTIPROC_DIR``: the scrape aggregates every process's files and
runs no custom collector), real counters and gauges are kept instead,
brought up to ``stats()`` by a daemon thread every ``interval`` seconds and at
exit. The histograms are real histograms in both modes, fed by
``signals.export_attempted``. See docs/metrics.md.
"""

from __future__ import annotations

import os
import threading
import typing as t
import weakref

from .. import _lifecycle, _log
from .._tracker import after_fork
from ..exceptions import ConfigurationError
from . import _common
from ._common import BATCH, DURATION, FAMILIES, Family

if t.TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import Counter, Gauge
    from prometheus_client.metrics import Histogram as PromHistogram
    from prometheus_client.registry import Collector

    from .._tracker import Tracker

__all__ = ["PrometheusMetrics", "prometheus"]

_EXTRA = "pip install 'trackware[prometheus]'"

#: Held while metric values are written: a fork waits for it, so no child
#: inherits prometheus-client's value lock (or a metric's) held by a thread
#: of ours that does not exist there.
_write_lock = threading.Lock()
#: Multi-process handles, for the fork and exit callbacks.
_synced: weakref.WeakSet[PrometheusMetrics] = weakref.WeakSet()


def _client() -> t.Any:
    try:
        import prometheus_client
        import prometheus_client.core
        import prometheus_client.values
    except ImportError:
        raise ConfigurationError(
            f"trackware.metrics.prometheus() needs prometheus-client: {_EXTRA}"
        ) from None
    return prometheus_client


def _multiprocess_mode(client: t.Any) -> bool:
    """Is prometheus-client writing values to ``PROMETHEUS_MULTIPROC_DIR``
    (decided when it was imported)?"""
    value_class = getattr(client.values, "ValueClass", None)
    flag = getattr(value_class, "_multiprocess", None)
    if isinstance(flag, bool):
        return flag
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


def prometheus(
    tracker: Tracker,
    registry: CollectorRegistry | None = None,
    *,
    multiprocess: bool | None = None,
    interval: float = 1.0,
    duration_buckets: t.Sequence[float] = _common.DURATION_BUCKETS,
    batch_buckets: t.Sequence[float] = _common.BATCH_BUCKETS,
) -> PrometheusMetrics:
    """Expose ``tracker``'s figures as Prometheus metrics on ``registry``
    (default: prometheus-client's ``REGISTRY``).

    Args:
        tracker: the tracker whose ``stats()`` and export attempts are measured.
        registry: where the collector (one process) or the metrics
            (multi-process) are registered.
        multiprocess: ``None`` (default): as prometheus-client is, i.e. when
            ``PROMETHEUS_MULTIPROC_DIR`` was set before it was imported.
            ``True`` requires that mode.
        interval: multi-process mode only: how often (seconds) the counters
            and gauges are brought up to ``stats()``.
        duration_buckets: bucket bounds of the export-latency histogram (s).
        batch_buckets: bucket bounds of the batch-size histogram (events).

    Raises:
        ConfigurationError: prometheus-client is not installed; ``multiprocess``
            is true but prometheus-client is not in multi-process mode; the
            registry already has trackware's metrics; ``interval`` <= 0.
    """
    client = _client()
    mode = _multiprocess_mode(client)
    if multiprocess and not mode:
        raise ConfigurationError(
            "trackware.metrics.prometheus(multiprocess=True): prometheus-client "
            "is not in multi-process mode; set PROMETHEUS_MULTIPROC_DIR in the "
            "environment before the server starts (see docs/metrics.md)"
        )
    if not interval > 0:
        raise ConfigurationError("trackware.metrics.prometheus(): interval must be > 0")
    return PrometheusMetrics(
        client,
        tracker,
        client.REGISTRY if registry is None else registry,
        mode if multiprocess is None else bool(multiprocess),
        interval,
        tuple(duration_buckets),
        tuple(batch_buckets),
    )


class PrometheusMetrics:
    """What :func:`prometheus` set up; :meth:`close` takes it down."""

    def __init__(
        self,
        client: t.Any,
        tracker: Tracker,
        registry: CollectorRegistry,
        multiprocess: bool,
        interval: float,
        duration_buckets: tuple[float, ...],
        batch_buckets: tuple[float, ...],
    ) -> None:
        self.tracker = tracker
        self.registry = registry
        #: Whether the values are kept in prometheus-client's multi-process
        #: files (synced from stats()) rather than read at scrape time.
        self.multiprocess = multiprocess
        self.interval = interval
        self._closed = False
        self._registered: list[t.Any] = []
        self._metrics: dict[str, Counter | Gauge] = {}
        #: The values last written, by (family key, label values).
        self._last: dict[tuple[str, tuple[str, ...]], float] = {}
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._duration: PromHistogram = client.Histogram(
                DURATION.prometheus,
                DURATION.help,
                ["destination"],
                registry=registry,
                buckets=duration_buckets,
            )
            self._registered.append(self._duration)
            self._batch: PromHistogram = client.Histogram(
                BATCH.prometheus,
                BATCH.help,
                ["destination"],
                registry=registry,
                buckets=batch_buckets,
            )
            self._registered.append(self._batch)
            if multiprocess:
                for family in FAMILIES:
                    metric = self._make(client, family, registry)
                    self._metrics[family.key] = metric
                    self._registered.append(metric)
            else:
                collector = _StatsCollector(client, tracker)
                registry.register(t.cast("Collector", collector))
                self._registered.append(collector)
        except ValueError as exc:  # "Duplicated timeseries in CollectorRegistry"
            self._unregister()
            raise ConfigurationError(
                f"trackware.metrics.prometheus(): the registry already has "
                f"trackware's metrics ({exc}); one tracker per registry"
            ) from None
        _arm()
        with _write_lock:
            for dest in tracker.destinations:  # every series from the start, at 0
                self._duration.labels(dest.name)
                self._batch.labels(dest.name)
        self._disconnect = _common.connect_attempts(tracker, self._observe)
        if multiprocess:
            self.sync()
            _synced.add(self)
            _watch()
            self._start()

    @staticmethod
    def _make(client: t.Any, family: Family, registry: CollectorRegistry) -> t.Any:
        if family.kind == "counter":
            return client.Counter(
                family.prometheus, family.help, family.labels, registry=registry
            )
        # Over the live processes (a dead one's files are removed by
        # mark_process_dead in gunicorn's child_exit hook): queue figures add
        # up; a circuit state is 1 when any process is in it (a gunicorn
        # master that preloaded the app has a tracker too, idle and closed).
        mode = "livemax" if family.key == "circuit" else "livesum"
        return client.Gauge(
            family.prometheus,
            family.help,
            family.labels,
            registry=registry,
            multiprocess_mode=mode,
        )

    # --- the histograms (worker threads) ---------------------------------------------
    def _observe(self, destination: str, size: int, seconds: float) -> None:
        with _write_lock:
            self._duration.labels(destination).observe(seconds)
            self._batch.labels(destination).observe(size)

    # --- multi-process: counters and gauges kept up to stats() -----------------------
    def sync(self) -> None:
        """Multi-process mode: bring the counters and gauges up to
        ``tracker.stats()`` now (the thread does it every ``interval``).
        Does nothing in one-process mode or once closed; never raises."""
        if not self.multiprocess or self._closed:
            return
        try:
            with self._sync_lock:
                self._sync()
        except Exception:
            _log.error(
                "metrics:prometheus:sync",
                "trackware: updating the Prometheus metrics failed",
                exc_info=True,
            )

    def _sync(self) -> None:
        figures = _common.samples(self.tracker.stats())
        last = self._last
        with _write_lock:
            for family in FAMILIES:
                metric = self._metrics[family.key]
                for labels, value in figures[family.key]:
                    key = (family.key, labels)
                    before = last.get(key)
                    if before is not None and value == before:
                        continue  # (every series is written once, at 0 too)
                    child = metric.labels(*labels) if labels else metric
                    if family.kind == "gauge":
                        t.cast("Gauge", child).set(value)
                        last[key] = value
                        continue
                    # Counters only go up; a lower figure means the tracker
                    # started its accounts over (it was forked): all of it is new.
                    delta = (
                        value if before is None or value < before else value - before
                    )
                    t.cast("Counter", child).inc(delta)
                    last[key] = value

    def _start(self) -> None:
        thread = threading.Thread(
            target=self._run, name="trackware-metrics", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down
            return
        self._thread = thread

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.interval):
            self.sync()

    def _after_fork(self) -> None:
        """In a forked child: the tracker's accounts start over, and so do
        prometheus-client's values (files of this process); a new thread."""
        after_fork(self.tracker)  # a tracker not registered for exit, too
        self._last = {}
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if not self._closed:
            self._start()

    # --- closing ---------------------------------------------------------------------
    def close(self) -> None:
        """Stop measuring: unregister the metrics, disconnect, stop the thread
        (a last sync first). Idempotent."""
        if self._closed:
            return
        self.sync()
        self._closed = True
        _synced.discard(self)
        self._stop.set()
        self._disconnect()
        self._unregister()

    def _unregister(self) -> None:
        for item in self._registered:
            try:
                self.registry.unregister(item)
            except KeyError:
                pass
        self._registered = []

    def __repr__(self) -> str:
        mode = "multiprocess" if self.multiprocess else "collector"
        return f"<PrometheusMetrics {mode} {self.tracker!r}>"


class _StatsCollector:
    """One process: every scrape reads ``tracker.stats()``."""

    def __init__(self, client: t.Any, tracker: Tracker) -> None:
        self._core = client.core
        self._tracker = tracker

    def _families(self, with_samples: bool) -> list[t.Any]:
        core = self._core
        figures = _common.samples(self._tracker.stats()) if with_samples else {}
        out = []
        for family in FAMILIES:
            cls = (
                core.CounterMetricFamily
                if family.kind == "counter"
                else core.GaugeMetricFamily
            )
            metric = cls(family.prometheus, family.help, labels=family.labels)
            for labels, value in figures.get(family.key, ()):
                metric.add_metric(labels, value)
            out.append(metric)
        return out

    def describe(self) -> list[t.Any]:
        return self._families(False)

    def collect(self) -> list[t.Any]:
        try:
            return self._families(True)
        except Exception:  # a scrape never fails because of us
            _log.error(
                "metrics:prometheus:collect",
                "trackware: reading stats() for Prometheus failed",
                exc_info=True,
            )
            return []


# --- process lifecycle ---------------------------------------------------------------
_armed = False
_watching = False


def _arm() -> None:
    """At the first handle: forks wait for the write lock (not before, so
    importing this module costs a fork nothing)."""
    global _armed
    if not _armed:
        _armed = True
        _lifecycle.hold_across_fork(_write_lock)


def _watch() -> None:
    """Register the fork and exit callbacks (once, at the first multi-process
    handle: after the tracker's, so the exit sync sees its final figures)."""
    global _watching
    if _watching:
        return
    _watching = True
    _lifecycle.on_fork(_after_fork_all)
    _lifecycle.at_exit(_sync_all, lambda: 0.5)


def _after_fork_all() -> None:
    for handle in list(_synced):
        handle._after_fork()


def _sync_all() -> None:
    """At exit: the last figures of each tracker reach the files."""
    for handle in list(_synced):
        handle.sync()
