"""Strict local emulators of the vendor APIs trackware delivers to.

:class:`VendorEmulator` serves all five vendor APIs and their token endpoints
on one local HTTP server, validating requests as strictly as the vendors
document; ``trackware emulate`` runs it in the foreground (:func:`serve`).
How the emulators validate, and where each vendor's rules live, is in
docs/architecture/emulators.md.
"""

from __future__ import annotations

import shlex
import sys
import threading
import typing as t

from ._api import HTTPError, Reply, Request, Route, VendorAPI
from ._records import RECEIVED_PATH, RecordedRequest
from ._server import EmulatorServer, Fault

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

#: The MXO site key the emulator's environment uses: the emulator accepts any
#: key of the form ``ONE-XXXXXXXXXX-NNNN`` unless ``site_keys`` is set.
MXO_SITE_KEY = "ONE-NX8P2RSAAU-1813"
#: A value for ``TRACKWARE_CARDLYTICS_CUSTOMER_ID_KEY``: the key the exporter
#: hashes customer ids with (the client's own; the emulator takes any).
CARDLYTICS_CUSTOMER_ID_KEY = "test-customer-id-hmac-key"
#: The MXO touchpoint ``TRACKWARE_MXO_TOUCHPOINT`` is set to.
MXO_TOUCHPOINT = "web://trackware-demo"


class VendorEmulator(EmulatorServer):
    """All vendor APIs on one local server.

    Attributes:
        cardlytics, mxo, synerise, yotpo: each vendor's emulated API, holding
            its configuration (credentials, strictness, limits) and what it
            accepted (``events``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log: t.Callable[[str], None] | None = None,
    ) -> None:
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
            log=log,
        )

    def __enter__(self) -> VendorEmulator:
        self.start()
        return self

    def credentials(self) -> dict[str, dict[str, str]]:
        """The credentials each emulated vendor accepts (test values, not
        secrets), by vendor: the first of each when several are configured."""
        cardlytics_id, cardlytics_secret = next(
            iter(self.cardlytics.credentials.items()), ("", "")
        )
        store_id, store_secret = next(iter(self.yotpo.stores.items()), ("", ""))
        site_key = sorted(self.mxo.site_keys)[0] if self.mxo.site_keys else MXO_SITE_KEY
        return {
            "cardlytics": {
                "client_id": cardlytics_id,
                "client_secret": cardlytics_secret,
            },
            "mxo": {
                "client_id": self.mxo.client_id,
                "client_secret": self.mxo.client_secret,
                "site_key": site_key,
            },
            "synerise": {
                "api_key": next(iter(self.synerise.api_keys), ""),
                "tracker_key": next(iter(sorted(self.synerise.tracker_keys)), ""),
            },
            "yotpo": {"store_id": store_id, "secret": store_secret},
        }

    def environment(self) -> dict[str, str]:
        """The ``TRACKWARE_*`` variables that make every exporter's
        ``from_env()`` (Cardlytics, MXO Interaction and Lightweight, Synerise,
        Yotpo) and ``trackware send-test`` talk to this emulator with
        credentials it accepts, plus ``TRACKWARE_EMULATOR_URL`` (read by the
        example apps)."""
        url = self.url
        creds = self.credentials()
        return {
            "TRACKWARE_EMULATOR_URL": url,
            "TRACKWARE_CARDLYTICS_BASE_URL": url,
            "TRACKWARE_CARDLYTICS_CLIENT_ID": creds["cardlytics"]["client_id"],
            "TRACKWARE_CARDLYTICS_CLIENT_SECRET": creds["cardlytics"]["client_secret"],
            "TRACKWARE_CARDLYTICS_CUSTOMER_ID_KEY": CARDLYTICS_CUSTOMER_ID_KEY,
            "TRACKWARE_MXO_BASE_URL": url,
            "TRACKWARE_MXO_CLIENT_ID": creds["mxo"]["client_id"],
            "TRACKWARE_MXO_CLIENT_SECRET": creds["mxo"]["client_secret"],
            "TRACKWARE_MXO_SITE_KEY": creds["mxo"]["site_key"],
            "TRACKWARE_MXO_TOUCHPOINT": MXO_TOUCHPOINT,
            "TRACKWARE_SYNERISE_BASE_URL": url,
            "TRACKWARE_SYNERISE_API_KEY": creds["synerise"]["api_key"],
            "TRACKWARE_SYNERISE_TRACKER_KEY": creds["synerise"]["tracker_key"],
            "TRACKWARE_YOTPO_BASE_URL": url,
            "TRACKWARE_YOTPO_STORE_ID": creds["yotpo"]["store_id"],
            "TRACKWARE_YOTPO_SECRET": creds["yotpo"]["secret"],
        }

    def banner(self) -> str:
        """What ``trackware emulate`` prints at start: the URL, the page, the
        credentials each vendor accepts and the ``export`` lines."""
        url = self.url
        creds = self.credentials()
        lines = [
            f"trackware vendor emulators listening on {url}",
            f"  what they received: {url}/ (JSON: {url}{RECEIVED_PATH})",
            "",
            "Credentials the emulators accept (test values, not secrets):",
        ]
        for vendor, values in creds.items():
            pairs = "  ".join(f"{key}={value}" for key, value in values.items())
            lines.append(f"  {vendor:<11} {pairs}")
        lines.append(
            "  (MXO takes any site key of the form ONE-XXXXXXXXXX-NNNN; "
            "the Cardlytics customer id key is yours to choose)"
        )
        lines += [
            "",
            "# For the exporters' from_env() and `trackware send-test`, paste:",
        ]
        lines += [
            f"export {name}={shlex.quote(value)}"
            for name, value in self.environment().items()
        ]
        lines += ["", "Requests (one line each):"]
        return "\n".join(lines)


def serve(host: str = "127.0.0.1", port: int = 8900) -> None:
    """Run :class:`VendorEmulator` in the foreground until interrupted: print
    :meth:`VendorEmulator.banner`, then one line per request, each flushed.

    Raises:
        OSError: the address cannot be listened on (a port in use, say).
    """
    import time

    lock = threading.Lock()

    def log(line: str) -> None:
        with lock:
            try:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):  # the reader went away
                pass

    emulator = VendorEmulator(host=host, port=port, log=log)
    emulator.start()
    log(emulator.banner())
    try:
        # Short sleeps, not one long one: POSIX may deliver a process-directed
        # SIGINT to any thread not blocking it, one of the server's say; Python
        # then runs its handler on the main thread only when that thread next
        # runs bytecode, and a sleep(3600) would hold Ctrl-C off for an hour.
        while True:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
