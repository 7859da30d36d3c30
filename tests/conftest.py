"""Shared fixtures (defined in _support.py, shared with integrations/)."""

from _support import _isolate, emulator, pki, sink

__all__ = ["_isolate", "emulator", "pki", "sink"]
