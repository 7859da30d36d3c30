"""Shared fixtures for the core tests."""

from __future__ import annotations

import typing as t

import pytest
from _support import Sink


@pytest.fixture
def sink() -> t.Iterator[Sink]:
    s = Sink()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _isolate(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> t.Iterator[None]:
    """Every test gets its own dead-letter path and no process-default tracker."""
    monkeypatch.setenv("TRACKWARE_DEAD_LETTER_PATH", str(tmp_path / "dead.jsonl"))
    monkeypatch.delenv("TRACKWARE_DISABLED", raising=False)
    from trackware import _log, _tracker

    monkeypatch.setattr(_tracker, "_default", None)
    monkeypatch.setattr(_log, "_throttle", _log._Throttle())
    yield
