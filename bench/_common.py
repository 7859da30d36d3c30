"""What the benchmarks share: an exporter that does nothing, and the
OpenTelemetry SDK's tracer provider for the comparisons."""

from __future__ import annotations

import typing as t

import trackware
from trackware.exporters import BaseExporter, ExportResult


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
