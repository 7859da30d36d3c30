"""WSGI entry point of the example shop, for real servers::

    trackware emulate --port 8900 &
    gunicorn -w 2 --preload --pythonpath example_apps flask_shop.wsgi:app

``TRACKWARE_EMULATOR_URL`` points the five exporters at the vendor emulators
(default ``http://127.0.0.1:8900``). With ``--preload`` the tracker is built in
the gunicorn master; each forked worker delivers its own events, and a
SIGTERM delivers what is still queued before the workers exit.
"""

from __future__ import annotations

import os

from destinations import DEMO_RETRY, build_exporters

import trackware
from flask_shop.app import create_app

tracker = trackware.Tracker(
    build_exporters(os.environ.get("TRACKWARE_EMULATOR_URL", "http://127.0.0.1:8900")),
    retry=DEMO_RETRY,
    flush_interval=0.2,
)
trackware.set_tracker(tracker)
app = create_app(tracker)
