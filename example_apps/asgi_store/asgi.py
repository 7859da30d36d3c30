"""ASGI entry point of the example store, for real servers::

    trackware emulate --port 8900 &
    uvicorn --app-dir example_apps --workers 2 asgi_store.asgi:app

``TRACKWARE_EMULATOR_URL`` points the five exporters at the vendor emulators
(default ``http://127.0.0.1:8900``). Each uvicorn worker builds its own
tracker; on shutdown the middleware flushes it (lifespan) and the rest is
delivered at exit.
"""

from __future__ import annotations

from destinations import server_tracker

from asgi_store.app import create_app

tracker = server_tracker()
app = create_app(tracker)
