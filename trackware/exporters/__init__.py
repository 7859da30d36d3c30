"""Exporters: where events go.

Built in: :class:`HTTPExporter` (any JSON endpoint), :class:`ConsoleExporter`,
:class:`JSONLinesExporter`. Vendor exporters live in their own modules:
``trackware.exporters.cardlytics``, ``.mxo``, ``.synerise`` and ``.yotpo``.
Write your own by subclassing :class:`BaseExporter` (or
:class:`BaseHTTPExporter` for HTTP APIs).
"""

from __future__ import annotations

from ._base import BaseExporter, Exporter, ExportResult, Rejection, report_progress
from ._http import BaseHTTPExporter, HTTPRequest
from ._local import ConsoleExporter, JSONLinesExporter
from ._webhook import HTTPExporter

__all__ = [
    "BaseExporter",
    "BaseHTTPExporter",
    "ConsoleExporter",
    "ExportResult",
    "Exporter",
    "HTTPExporter",
    "HTTPRequest",
    "JSONLinesExporter",
    "Rejection",
    "report_progress",
]
