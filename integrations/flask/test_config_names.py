"""A misspelt TRACKWARE_* key in a Flask app's config is named with the closest
option, not a list of every option (in tests/ the framework is not installed)."""

from __future__ import annotations

import logging

import flask
import pytest

from trackware import Tracker
from trackware.integrations.flask import Trackware


def warnings_about(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "trackware" and name in r.getMessage()
    ]


def test_flask_config_key_names_the_closest_option(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = flask.Flask("config")
    app.secret_key = "test-secret-key-not-for-production"
    app.config["TRACKWARE_SESION_TIMEOUT"] = 60
    app.config["TRACKWARE_SYNERISE_API_KEY"] = "must-not-be-logged-0001"
    tracker = Tracker([], dead_letter=None, register_atexit=False)
    try:
        with caplog.at_level(logging.WARNING, logger="trackware"):
            Trackware(app, tracker=tracker)
    finally:
        tracker.shutdown(timeout=5)
    (misspelt,) = warnings_about(caplog, "TRACKWARE_SESION_TIMEOUT")
    assert "did you mean TRACKWARE_SESSION_TIMEOUT?" in misspelt
    assert "PAGE_EVENT" not in misspelt  # no list of every option
    (env_name,) = warnings_about(caplog, "TRACKWARE_SYNERISE_API_KEY")
    assert "environment variable" in env_name
    assert "must-not-be-logged-0001" not in caplog.text
