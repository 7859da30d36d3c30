"""Shared fixtures (defined in _support.py, shared with integrations/)."""

from _support import _isolate, emulator, sink

__all__ = ["_isolate", "emulator", "sink"]
