"""ASGI entry point of the example store, for real servers::

    trackware emulate --port 8900 &
    uvicorn --app-dir example_apps --workers 2 asgi_store.asgi:app

``TRACKWARE_EMULATOR_URL`` points the five exporters at the vendor emulators
(default ``http://127.0.0.1:8900``). Each uvicorn worker builds its own
tracker; on shutdown the middleware shuts it down (lifespan): what it cannot
deliver within its budget is dead-lettered. Without a lifespan (``--lifespan
off``), trackware's SIGTERM handler does the same before the worker exits.

To watch it live: run ``trackware inspect`` and start uvicorn with
``TRACKWARE_INSPECTOR=http://127.0.0.1:8969``; both workers feed the one page
(docs/inspector.md).
"""

from __future__ import annotations

from destinations import server_tracker

from asgi_store.app import create_app

tracker = server_tracker()
app = create_app(tracker)
