"""Framework test suites; they need the flask and asgi extras (make test).

The isolation and sink fixtures are the core suite's (tests/_support.py).
"""

from _support import _isolate, emulator, sink

__all__ = ["_isolate", "emulator", "sink"]
