"""The integrations' options are typed: a type checker catches a misspelt
option of ``Trackware(...)`` or ``TrackwareMiddleware(...)``, and at run time
one is refused with the closest valid name."""

from __future__ import annotations

import dataclasses
import pathlib
import textwrap

import flask
import pytest
from _support import mypy_flags
from starlette.applications import Starlette

from trackware import ConfigurationError
from trackware._config import FlaskOptions, IntegrationOptions
from trackware.integrations._options import TrackingOptions
from trackware.integrations.asgi import TrackwareMiddleware
from trackware.integrations.flask import Trackware


def test_the_typed_options_are_the_tracking_options() -> None:
    fields = {f.name for f in dataclasses.fields(TrackingOptions)}
    shared = set(IntegrationOptions.__annotations__)
    assert shared == fields - {"tracker", "identity"}
    assert set(FlaskOptions.__annotations__) | shared == fields - {"tracker"}


def test_a_misspelt_flask_option_names_the_right_one() -> None:
    app = flask.Flask("options")
    app.secret_key = "options-test-secret-key"
    with pytest.raises(ConfigurationError, match=r"did you mean 'sessions'\?"):
        Trackware(app, sesions=False)  # type: ignore[call-arg]


def test_a_misspelt_middleware_option_names_the_right_one() -> None:
    with pytest.raises(ConfigurationError, match=r"did you mean 'exclude_paths'\?"):
        TrackwareMiddleware(Starlette(), cookie_secret="k" * 16, exclude_path=["/x"])  # type: ignore[call-arg]


def test_option_typos_fail_the_type_checker(tmp_path: pathlib.Path) -> None:
    good = textwrap.dedent(
        """\
        import flask
        from starlette.applications import Starlette

        import trackware
        from trackware.integrations.asgi import TrackwareMiddleware
        from trackware.integrations.flask import Trackware

        tracker = trackware.Tracker([])
        app = flask.Flask("good")
        Trackware(app, tracker=tracker, sessions=False, exclude_paths=[r"^/x"])
        TrackwareMiddleware(Starlette(), tracker=tracker, capture_ip=True)
        """
    )
    bad = textwrap.dedent(
        """\
        import flask
        from starlette.applications import Starlette

        from trackware.integrations.asgi import TrackwareMiddleware
        from trackware.integrations.flask import Trackware

        Trackware(flask.Flask("bad"), sesions=False)
        TrackwareMiddleware(Starlette(), cookie_secret="k", captur_ip=True)
        Trackware(flask.Flask("bad"), session_timeout="30")
        """
    )
    out, bad_lines = mypy_flags(tmp_path, good, bad)
    assert bad_lines == {"7", "8", "9"}, out
