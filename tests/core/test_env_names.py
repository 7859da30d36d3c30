"""Misspelt TRACKWARE_* environment variables are reported, never ignored in
silence: one registry of the names trackware reads (trackware/_env.py), a
warning with the closest known name when a from_env(), a Tracker or the
command line reads the environment. Real environment variables, the real
exporters and the real command line (a subprocess)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import typing as t

import pytest

import trackware.integrations._options  # noqa: F401  (registers the Flask keys)
from trackware import Tracker, _env
from trackware.exporters.cardlytics import ClientEventExporter
from trackware.exporters.mxo import InteractionExporter, LightweightExporter
from trackware.exporters.synerise import SyneriseExporter
from trackware.exporters.yotpo import CustomEventExporter

SECRET_VALUE = "https://value-that-must-not-be-logged.example"


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no name reported yet (once per process)."""
    monkeypatch.setattr(_env, "_warned", set())


def warnings_about(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "trackware" and name in r.getMessage()
    ]


def test_misspelt_synerise_base_url_names_the_right_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TRACKWARE_SYNERISE_API_KEY", "synerise-test-api-key")
    monkeypatch.setenv("TRACKWARE_SYNERISE_BASEURL", SECRET_VALUE)
    with caplog.at_level(logging.WARNING, logger="trackware"):
        exporter = SyneriseExporter.from_env()
    exporter.close()
    (message,) = warnings_about(caplog, "TRACKWARE_SYNERISE_BASEURL")
    assert "did you mean TRACKWARE_SYNERISE_BASE_URL?" in message
    assert SECRET_VALUE not in caplog.text
    assert "synerise-test-api-key" not in caplog.text
    # What the warning is about: the misspelt URL was not used.
    assert "value-that-must-not-be-logged" not in exporter.base_url


def test_each_name_is_reported_once_per_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TRACKWARE_SYNERISE_API_KEY", "synerise-test-api-key")
    monkeypatch.setenv("TRACKWARE_SYNERISE_BASEURL", SECRET_VALUE)
    monkeypatch.setenv("TRACKWARE_SYNERISE_APIKEY", "another-secret-value")
    with caplog.at_level(logging.WARNING, logger="trackware"):
        for _ in range(3):
            SyneriseExporter.from_env().close()
    assert len(warnings_about(caplog, "TRACKWARE_SYNERISE_BASEURL")) == 1
    (apikey,) = warnings_about(caplog, "TRACKWARE_SYNERISE_APIKEY")
    assert "did you mean TRACKWARE_SYNERISE_API_KEY?" in apikey
    assert "another-secret-value" not in caplog.text


@pytest.mark.parametrize(
    ("build", "env", "misspelt", "meant"),
    [
        (
            ClientEventExporter.from_env,
            {
                "TRACKWARE_CARDLYTICS_BASE_URL": "https://cardlytics.test",
                "TRACKWARE_CARDLYTICS_CLIENT_ID": "client",
                "TRACKWARE_CARDLYTICS_CLIENT_SECRET": "secret-0001",
                "TRACKWARE_CARDLYTICS_CUSTOMER_ID_KEY": "hmac-key",
                "TRACKWARE_CARDLYTICS_REQUIRE_CERT": "false",
            },
            "TRACKWARE_CARDLYTICS_CA_BUNDEL",
            "TRACKWARE_CARDLYTICS_CA_BUNDLE",
        ),
        (
            InteractionExporter.from_env,
            {
                "TRACKWARE_MXO_BASE_URL": "https://mxo.test",
                "TRACKWARE_MXO_SITE_KEY": "ONE-NX8P2RSAAU-1813",
                "TRACKWARE_MXO_TOUCHPOINT": "web://test",
                "TRACKWARE_MXO_CLIENT_ID": "client",
                "TRACKWARE_MXO_CLIENT_SECRET": "secret-0001",
            },
            "TRACKWARE_MXO_TOUCH_POINT",
            "TRACKWARE_MXO_TOUCHPOINT",
        ),
        (
            LightweightExporter.from_env,
            {
                "TRACKWARE_MXO_BASE_URL": "https://mxo.test",
                "TRACKWARE_MXO_SITE_KEY": "ONE-NX8P2RSAAU-1813",
                "TRACKWARE_MXO_TOUCHPOINT": "web://test",
            },
            "TRACKWARE_MXO_CUSTOMERKEY",
            "TRACKWARE_MXO_CUSTOMER_KEY",
        ),
        (
            CustomEventExporter.from_env,
            {
                "TRACKWARE_YOTPO_STORE_ID": "store",
                "TRACKWARE_YOTPO_SECRET": "secret-0001",
            },
            "TRACKWARE_YOTPO_EVENT",
            "TRACKWARE_YOTPO_EVENTS",
        ),
    ],
    ids=["cardlytics", "mxo", "mxo-lightweight", "yotpo"],
)
def test_every_from_env_reports_a_misspelt_name(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    build: t.Callable[[], t.Any],
    env: dict[str, str],
    misspelt: str,
    meant: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(misspelt, SECRET_VALUE)
    with caplog.at_level(logging.WARNING, logger="trackware"):
        build().close()
    (message,) = warnings_about(caplog, misspelt)
    assert f"did you mean {meant}?" in message
    assert SECRET_VALUE not in caplog.text


def test_from_env_checks_the_mapping_it_is_given(
    caplog: pytest.LogCaptureFixture,
) -> None:
    environ = {
        "TRACKWARE_SYNERISE_API_KEY": "synerise-test-api-key",
        "TRACKWARE_SYNERISE_TRACKERKEY": SECRET_VALUE,
    }
    with caplog.at_level(logging.WARNING, logger="trackware"):
        SyneriseExporter.from_env(environ).close()
    (message,) = warnings_about(caplog, "TRACKWARE_SYNERISE_TRACKERKEY")
    assert "did you mean TRACKWARE_SYNERISE_TRACKER_KEY?" in message


def test_a_tracker_reports_a_misspelt_disabled(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """TRACKWARE_DISABLE=1 would leave tracking on without a word."""
    monkeypatch.setenv("TRACKWARE_DISABLE", "1")
    with caplog.at_level(logging.WARNING, logger="trackware"):
        tracker = Tracker([], dead_letter=None, register_atexit=False)
    tracker.shutdown(timeout=5)
    assert tracker.enabled  # the misspelt name has no effect...
    (message,) = warnings_about(caplog, "TRACKWARE_DISABLE ")  # ...and says so
    assert "did you mean TRACKWARE_DISABLED?" in message


def test_known_names_and_far_off_names(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    known = {name: "x" for name in _env.KNOWN_VARIABLES}
    with caplog.at_level(logging.WARNING, logger="trackware"):
        assert _env.check_environment(known) == []
        assert caplog.records == []
        # Nothing close: no guess, a pointer to the list instead.
        assert _env.check_environment({"TRACKWARE_ZZZ": "x"}) == ["TRACKWARE_ZZZ"]
        # A Flask option set in the environment: it is read from app.config.
        _env.check_environment({"TRACKWARE_SESSION_TIMEOUT": "60"})
    (far,) = warnings_about(caplog, "TRACKWARE_ZZZ")
    assert "did you mean" not in far
    assert "docs/configuration.md" in far  # the reference page
    (flask_key,) = warnings_about(caplog, "TRACKWARE_SESSION_TIMEOUT")
    assert "app.config" in flask_key


def test_registered_config_keys_get_their_owners_hint(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The layers above the core register keys that look like variables (the
    core may not import them): such a name found in the environment is still
    reported, with the owner's hint instead of a guess."""
    monkeypatch.setattr(_env, "_config_keys", dict(_env._config_keys))
    _env.register_config_keys(
        ["TRACKWARE_WIDGET_COLOUR", "TRACKWARE_DISABLEDD"], "it is a widget option"
    )
    assert {"TRACKWARE_WIDGET_COLOUR", "TRACKWARE_DISABLEDD"} <= _env.config_keys()
    with caplog.at_level(logging.WARNING, logger="trackware"):
        found = _env.check_environment(
            {"TRACKWARE_WIDGET_COLOUR": "red", "TRACKWARE_DISABLEDD": "1"}
        )
    assert found == ["TRACKWARE_DISABLEDD", "TRACKWARE_WIDGET_COLOUR"]
    (colour,) = warnings_about(caplog, "TRACKWARE_WIDGET_COLOUR")
    assert colour.endswith("it is a widget option")
    # The registered hint wins over the closest known name.
    (disabled,) = warnings_about(caplog, "TRACKWARE_DISABLEDD")
    assert "did you mean" not in disabled
    assert disabled.endswith("it is a widget option")


class _Recording(dict[str, str]):
    """An environment that notes every name read from it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: t.Any = None) -> t.Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)


def test_the_registry_is_exactly_what_the_from_envs_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each from_env() is given every registered name of its vendor (with
    values that let it read on to the end): every name it reads must be
    registered, and every registered vendor name read by some from_env()."""
    values = {
        "BASE_URL": "https://vendor.test",
        "CLIENT_ID": "client",
        "CLIENT_SECRET": "secret-0001",
        "CUSTOMER_ID_KEY": "hmac-key",
        "CERT": "client.crt",
        "CERT_KEY": "client.key",
        "CA_BUNDLE": "ca.pem",
        "MAPPING": "app.event=ClientEvent",
        "SESSION_EVENT": "session_start",
        "DEFAULT_CHANNEL": "OLB",
        "DEFAULT_SECTION": "home",
        "HEADER_STYLE": "bearer",
        "SEND_ANONYMOUS": "true",
        "REQUIRE_CERT": "false",
        "MAX_BATCH_SIZE": "10",
        "SITE_KEY": "ONE-NX8P2RSAAU-1813",
        "TOUCHPOINT": "web://test",
        "CUSTOMER_KEY": "user_id",
        "CUSTOMER_KEY_NAME": "customerKey",
        "TIMESTAMP_FIELD": "timestamp",
        "TOKEN_URL": "https://vendor.test/token",
        "PROPERTIES_FORMAT": "array",
        "API_KEY": "api-key-0001",
        "TRACKER_KEY": "tracker-key",
        "WORKSPACE_GUID": "0b0e7a1c-6d1e-4b8e-9a53-0f1f2a3b4c5d",
        "CLIENT_ID_TRAIT": "client_id",
        "AI_ENDPOINT": "events/v1",
        "AI_PATH_PREFIX": "/ai",
        "STORE_ID": "store",
        "SECRET": "secret-0001",
        "SOURCE": "web",
        "IDENTITY_PREFERENCE": "email",
        "DEFAULT_COUNTRY_CODE": "44",
        "DEFAULT_REGION": "GB",
        "NESTED_PROPERTIES": "flatten",
        "EVENTS": "order.shipped=order_shipped",
        "ALL_EVENTS": "1",
        "EVENT_PATH": "/core/v2/events",
        "EVENT_METHOD": "POST",
    }
    builders = {
        "CARDLYTICS": [ClientEventExporter.from_env],
        "MXO": [InteractionExporter.from_env, LightweightExporter.from_env],
        "SYNERISE": [SyneriseExporter.from_env],
        "YOTPO": [CustomEventExporter.from_env],
    }
    vendor_names = {n for n in _env.KNOWN_VARIABLES if n.split("_")[1] in builders}
    read: set[str] = set()
    for vendor, froms in builders.items():
        prefix = f"TRACKWARE_{vendor}_"
        registered = {n for n in _env.KNOWN_VARIABLES if n.startswith(prefix)}
        for from_env in froms:
            environ = _Recording(
                {n: values.get(n[len(prefix) :], "x") for n in registered}
            )
            try:
                from_env(environ).close()
            except Exception:
                # Some values may not suit the exporter; the names were read.
                pass
            read |= {n for n in environ.read if n.startswith("TRACKWARE_")}
    assert read - _env.KNOWN_VARIABLES == set(), "read but not registered"
    assert vendor_names - read == set(), "registered but read by no from_env()"
    assert warnings_about(caplog, "environment variable") == []


def test_the_command_line_reports_a_misspelt_name_once() -> None:
    """`trackware send-test` with a misspelt base URL: the warning (naming the
    right variable, without the value) comes before the vendor is called;
    the missing API key stops it here before any network call."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKWARE_")}
    env["TRACKWARE_SYNERISE_BASEURL"] = SECRET_VALUE
    proc = subprocess.run(
        [sys.executable, "-m", "trackware._cli", "send-test", "synerise"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("TRACKWARE_SYNERISE_BASEURL") == 1, proc.stderr
    assert "did you mean TRACKWARE_SYNERISE_BASE_URL?" in proc.stderr
    assert "TRACKWARE_SYNERISE_API_KEY" in proc.stderr  # the configuration error
    assert SECRET_VALUE not in proc.stderr + proc.stdout


def test_the_command_line_checks_at_start_whatever_the_command(
    tmp_path: t.Any,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKWARE_")}
    env["TRACKWARE_DEAD_LETTER_PAHT"] = str(tmp_path / "dead.jsonl")
    proc = subprocess.run(
        [sys.executable, "-m", "trackware._cli", "dead-letter"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "did you mean TRACKWARE_DEAD_LETTER_PATH?" in proc.stderr
    assert str(tmp_path) not in proc.stderr


def test_the_command_line_says_where_a_flask_key_belongs() -> None:
    """A Flask option set in the environment: the command line says it is an
    app.config key (the integrations register those keys with the core)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKWARE_")}
    env["TRACKWARE_SESSION_TIMEOUT"] = "60"
    proc = subprocess.run(
        [sys.executable, "-m", "trackware._cli", "dead-letter"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "TRACKWARE_SESSION_TIMEOUT" in proc.stderr
    assert "it is an app.config key of the Flask extension" in proc.stderr


def test_every_trackware_name_in_the_source_is_registered() -> None:
    """A name spelt out in trackware's source (``os.environ.get("TRACKWARE_X")``,
    ``COOKIE_SECRET_ENV = "TRACKWARE_COOKIE_SECRET"``...) is a variable read
    somewhere: it must be in the registry (or be a Flask app.config key, or a
    vendor prefix a from_env() completes)."""
    import ast
    import pathlib

    import trackware

    allowed = _env.KNOWN_VARIABLES | _env.config_keys()
    found: dict[str, str] = {}
    root = pathlib.Path(trackware.__file__).parent
    for path in root.rglob("*.py"):
        if path.name == "_env.py":  # the registry itself
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("TRACKWARE_")
                and node.value.rstrip("_").replace("_", "").isalnum()
                and node.value.upper() == node.value
            ):
                found[node.value] = str(path.relative_to(root))
    # The scan sees what it should: the core's names and from_env()'s.
    assert {"TRACKWARE_DISABLED", "TRACKWARE_MXO_SITE_KEY"} <= set(found)
    unregistered = {
        name: where
        for name, where in found.items()
        if name not in allowed and not name.endswith("_")
    }
    assert unregistered == {}
