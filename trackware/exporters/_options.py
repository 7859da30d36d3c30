"""The typed ``**options`` of the exporters (``typing.TypedDict`` s).

They let a type checker catch a misspelt option where keyword arguments are
passed on (the exporters' ``**options`` go to ``BaseHTTPExporter``). Modules
that use them import ``Unpack`` only for the type checker (3.10 has none, and
``typing_extensions`` is not a dependency). docs/configuration.md lists them.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    import ssl

    import httpx

    from .._retry import RetryPolicy

__all__ = ["ExporterOptions", "HTTPExporterOptions", "LightweightExporterOptions"]


class HTTPExporterOptions(t.TypedDict, total=False):
    """The connection options every HTTP exporter passes on to
    :class:`~trackware.exporters.BaseHTTPExporter` (``HTTPExporter``'s
    ``**options``)."""

    timeout: float
    connect_timeout: float
    verify: bool | str | ssl.SSLContext
    cert: str | tuple[str, str] | None
    events: t.Iterable[str] | None
    retry: RetryPolicy | None
    transport: httpx.BaseTransport | None


class ExporterOptions(HTTPExporterOptions, total=False):
    """The ``**options`` of the vendor exporters (Synerise, Yotpo, MXO
    interactions): the connection options and the destination ``name``."""

    name: str | None


class LightweightExporterOptions(ExporterOptions, total=False):
    """The ``**options`` of MXO's ``LightweightExporter``."""

    max_batch_size: int
