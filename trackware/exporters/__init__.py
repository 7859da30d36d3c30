"""Exporters: where events go.

Built in: :class:`HTTPExporter` (any JSON endpoint), :class:`ConsoleExporter`,
:class:`JSONLinesExporter`. Vendor exporters live in their own modules:
``trackware.exporters.cardlytics``, ``.mxo``, ``.synerise`` and ``.yotpo``.
Write your own by subclassing :class:`BaseExporter` (or
:class:`BaseHTTPExporter` for HTTP APIs, authenticated through
:meth:`BaseHTTPExporter.credentials`: :class:`CachedToken` over a
:class:`~trackware.TokenCache`).
"""

from __future__ import annotations

from .._auth import CachedToken, Credentials, TokenAuth, bearer, no_credentials
from ._base import BaseExporter, Exporter, ExportResult, Rejection, report_progress
from ._http import BaseHTTPExporter, HTTPRequest
from ._local import ConsoleExporter, JSONLinesExporter
from ._webhook import HTTPExporter

__all__ = [
    "BaseExporter",
    "BaseHTTPExporter",
    "CachedToken",
    "ConsoleExporter",
    "Credentials",
    "ExportResult",
    "Exporter",
    "HTTPExporter",
    "HTTPRequest",
    "JSONLinesExporter",
    "Rejection",
    "TokenAuth",
    "bearer",
    "no_credentials",
    "report_progress",
]
