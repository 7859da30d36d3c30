"""trackware's figures through OpenTelemetry's metrics API.

Observable counters and up-down counters whose callbacks read
``tracker.stats()`` when the SDK collects (nothing runs between
collections), and two histograms fed by ``signals.export_attempted``. See
docs/metrics.md.
"""

from __future__ import annotations

import typing as t

from .. import __version__, _log
from ..exceptions import ConfigurationError
from . import _common
from ._common import ATTRIBUTES, BATCH, DURATION, FAMILIES, Family, Histogram

if t.TYPE_CHECKING:
    from opentelemetry.metrics import (
        CallbackOptions,
        Meter,
        MeterProvider,
        Observation,
    )

    from .._tracker import Tracker

__all__ = ["OpenTelemetryMetrics", "opentelemetry"]

_EXTRA = "pip install 'trackware[opentelemetry]'"


def opentelemetry(
    tracker: Tracker,
    meter_provider: MeterProvider | None = None,
    *,
    duration_buckets: t.Sequence[float] = _common.DURATION_BUCKETS,
    batch_buckets: t.Sequence[float] = _common.BATCH_BUCKETS,
) -> OpenTelemetryMetrics:
    """Report ``tracker``'s figures through the meter ``trackware`` of
    ``meter_provider`` (default: the global one, ``metrics.get_meter_provider()``).

    Args:
        tracker: the tracker whose ``stats()`` and export attempts are measured.
        meter_provider: the SDK's ``MeterProvider`` (its readers decide when
            the figures are collected and where they go).
        duration_buckets: advised bucket bounds of ``trackware.export.duration`` (s).
        batch_buckets: advised bucket bounds of ``trackware.export.batch.size``.

    Raises:
        ConfigurationError: opentelemetry-api is not installed.
    """
    try:
        from opentelemetry import metrics
    except ImportError:
        raise ConfigurationError(
            f"trackware.metrics.opentelemetry() needs opentelemetry-api: {_EXTRA}"
        ) from None
    provider = (
        meter_provider if meter_provider is not None else metrics.get_meter_provider()
    )
    meter = provider.get_meter("trackware", __version__)
    return OpenTelemetryMetrics(
        metrics, meter, tracker, tuple(duration_buckets), tuple(batch_buckets)
    )


def _histogram(meter: Meter, spec: Histogram, buckets: tuple[float, ...]) -> t.Any:
    """A histogram advising ``buckets`` (opentelemetry-api 1.30+; before,
    the SDK's default bounds or a View decide)."""
    try:
        return meter.create_histogram(
            spec.otel,
            unit=spec.unit,
            description=spec.help,
            explicit_bucket_boundaries_advisory=buckets,
        )
    except TypeError:  # an API older than the advisory parameter
        return meter.create_histogram(spec.otel, unit=spec.unit, description=spec.help)


class OpenTelemetryMetrics:
    """What :func:`opentelemetry` set up. The API cannot remove instruments:
    :meth:`close` makes their callbacks report nothing and stops the histograms."""

    def __init__(
        self,
        api: t.Any,
        meter: Meter,
        tracker: Tracker,
        duration_buckets: tuple[float, ...],
        batch_buckets: tuple[float, ...],
    ) -> None:
        self.tracker = tracker
        self.meter = meter
        self._closed = False
        self._observation = api.Observation
        for family in FAMILIES:
            create = (
                meter.create_observable_counter
                if family.kind == "counter"
                # Queue depth, bytes, in flight and circuit states add up over
                # processes: up-down counters (OpenTelemetry's convention).
                else meter.create_observable_up_down_counter
            )
            create(
                family.otel,
                callbacks=[self._callback(family)],
                unit=family.unit,
                description=family.help,
            )
        self._duration = _histogram(meter, DURATION, duration_buckets)
        self._batch = _histogram(meter, BATCH, batch_buckets)
        self._disconnect = _common.connect_attempts(tracker, self._observe)

    def _callback(
        self, family: Family
    ) -> t.Callable[[CallbackOptions], t.Iterable[Observation]]:
        names = [ATTRIBUTES[label] for label in family.labels]
        key = family.key
        observation = self._observation

        def observe(options: CallbackOptions) -> t.Iterable[Observation]:
            if self._closed:
                return []
            try:
                figures = _common.samples(self.tracker.stats())[key]
            except Exception:  # a collection never fails because of us
                _log.error(
                    "metrics:otel:collect",
                    "trackware: reading stats() for OpenTelemetry failed",
                    exc_info=True,
                )
                return []
            return [
                observation(
                    value, {n: v for n, v in zip(names, labels, strict=True) if v}
                )
                for labels, value in figures
            ]

        return observe

    def _observe(self, destination: str, size: int, seconds: float) -> None:
        attributes = {ATTRIBUTES["destination"]: destination}
        self._duration.record(seconds, attributes)
        self._batch.record(size, attributes)

    def close(self) -> None:
        """Stop reporting (idempotent)."""
        if not self._closed:
            self._closed = True
            self._disconnect()

    def __repr__(self) -> str:
        return f"<OpenTelemetryMetrics {self.tracker!r}>"
