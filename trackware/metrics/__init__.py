"""trackware's figures as Prometheus or OpenTelemetry metrics.

``trackware.metrics.prometheus(tracker)`` (extra ``prometheus``) and
``trackware.metrics.opentelemetry(tracker, meter_provider=...)`` (extra
``opentelemetry``) expose the same figures, named after each ecosystem's
conventions: what became of the events per destination, outcome and reason;
queue depth, bytes, in flight and circuit state; export latency and batch
size. This package imports without either library; each function raises
:class:`~trackware.ConfigurationError` naming the extra to install when its
library is missing. See docs/metrics.md.
"""

from __future__ import annotations

from ._otel import OpenTelemetryMetrics, opentelemetry
from ._prometheus import PrometheusMetrics, prometheus

__all__ = ["OpenTelemetryMetrics", "PrometheusMetrics", "opentelemetry", "prometheus"]
