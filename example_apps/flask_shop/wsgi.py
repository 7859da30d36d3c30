"""WSGI entry point of the example shop, for real servers::

    trackware emulate --port 8900 &
    gunicorn -w 2 --preload --pythonpath example_apps flask_shop.wsgi:app

``TRACKWARE_EMULATOR_URL`` points the five exporters at the vendor emulators
(default ``http://127.0.0.1:8900``). With ``--preload`` the tracker is built in
the gunicorn master; each forked worker delivers its own events, and a
SIGTERM delivers what is still queued before the workers exit.

To watch it live: run ``trackware inspect`` and start gunicorn with
``TRACKWARE_INSPECTOR=http://127.0.0.1:8969``; every worker (and the master)
feeds the one page (docs/inspector.md).
"""

from __future__ import annotations

from destinations import server_tracker

from flask_shop.app import create_app

tracker = server_tracker()
app = create_app(tracker)
