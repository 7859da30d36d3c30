"""Strict local emulators of the vendor APIs trackware delivers to.

:class:`VendorEmulator` is a real HTTP server on 127.0.0.1 hosting all five
APIs (Cardlytics clientEvent, MXO Interaction and Lightweight, Synerise v4 and
AI events, Yotpo custom customer events) plus each vendor's token endpoint.
Every request is validated as strictly as the vendors document (see the README
of each emulator module), answered with the vendor's status codes and error
bodies, and recorded. Faults can be scripted per route::

    from trackware.testing.emulators import VendorEmulator

    with VendorEmulator() as emu:
        emu.fault("synerise.batch", status=503, times=2)
        ...  # point exporters at emu.url
        assert len(emu.synerise.events) == 10

Also runnable as ``trackware emulate --port 8900``.
"""

from __future__ import annotations

import typing as t

from ._server import (
    EmulatorServer,
    Fault,
    HTTPError,
    RecordedRequest,
    Reply,
    Request,
    Route,
    VendorAPI,
)

if t.TYPE_CHECKING:
    from ._cardlytics import CardlyticsAPI
    from ._mxo import MXOAPI
    from ._synerise import SyneriseAPI
    from ._yotpo import YotpoAPI

__all__ = [
    "EmulatorServer",
    "Fault",
    "HTTPError",
    "RecordedRequest",
    "Reply",
    "Request",
    "Route",
    "VendorAPI",
    "VendorEmulator",
    "serve",
]


class VendorEmulator(EmulatorServer):
    """All vendor APIs on one local server.

    Attributes:
        cardlytics, mxo, synerise, yotpo: each vendor's emulated API, holding
            its configuration (credentials, strictness, limits) and what it
            accepted (``events``).
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        from ._cardlytics import CardlyticsAPI
        from ._mxo import MXOAPI
        from ._synerise import SyneriseAPI
        from ._yotpo import YotpoAPI

        self.cardlytics: CardlyticsAPI = CardlyticsAPI()
        self.mxo: MXOAPI = MXOAPI()
        self.synerise: SyneriseAPI = SyneriseAPI()
        self.yotpo: YotpoAPI = YotpoAPI()
        super().__init__(
            [self.cardlytics, self.mxo, self.synerise, self.yotpo],
            host=host,
            port=port,
        )

    def __enter__(self) -> VendorEmulator:
        self.start()
        return self


def serve(host: str = "127.0.0.1", port: int = 8900) -> None:
    """Run :class:`VendorEmulator` in the foreground until interrupted."""
    import time

    emulator = VendorEmulator(host=host, port=port).start()
    print(f"trackware vendor emulators listening on {emulator.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
