"""Configuration: Tracker.from_env() and trackware.init() build their
destinations from TRACKWARE_* variables (delivering to the real vendor
emulators and a real HTTP sink), keyword options win over variables, the
errors name what to set, the typed option objects catch typos under
``mypy --strict``, and stats() has the shape its TypedDicts declare."""

from __future__ import annotations

import inspect
import json
import logging
import pathlib
import textwrap
import typing as t

import pytest
from _support import Sink, mypy_flags

import trackware
from trackware import ConfigurationError, Tracker, _config, _default, _env
from trackware.exporters.mxo import InteractionExporter, LightweightExporter

MXO_SITE_KEY = "ONE-NX8P2RSAAU-1813"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TRACKWARE_* variable of the developer's shell leaks in (the dead
    letter path the isolation fixture sets is kept), and each misspelt name
    is reported afresh."""
    import os

    for name in list(os.environ):
        if name.startswith("TRACKWARE_") and name != "TRACKWARE_DEAD_LETTER_PATH":
            monkeypatch.delenv(name)
    monkeypatch.setattr(_env, "_warned", set())


def vendor_env(emulator: t.Any) -> dict[str, str]:
    """Synerise and Yotpo pointed at the emulators (their test credentials)."""
    return {
        "TRACKWARE_SYNERISE_BASE_URL": emulator.url,
        "TRACKWARE_SYNERISE_API_KEY": "test-synerise-api-key",
        "TRACKWARE_YOTPO_BASE_URL": emulator.url,
        "TRACKWARE_YOTPO_STORE_ID": "yotpo-test-store",
        "TRACKWARE_YOTPO_SECRET": "yotpo-test-secret-0001",
        "TRACKWARE_YOTPO_EVENTS": "order.shipped=order_shipped",
    }


def test_init_builds_the_configured_destinations_and_sets_the_default(
    emulator: t.Any,
    sink: Sink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name, value in vendor_env(emulator).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TRACKWARE_HTTP_URL", sink.url)
    monkeypatch.setenv("TRACKWARE_FLUSH_INTERVAL", "0.05")
    with caplog.at_level(logging.INFO, logger="trackware"):
        tracker = trackware.init()
    try:
        assert trackware.get_tracker() is tracker
        assert [d.name for d in tracker.destinations] == ["synerise", "yotpo", "http"]
        assert {d.flush_interval for d in tracker.destinations} == {0.05}
        assert "delivers to synerise, yotpo, http" in caplog.text
        assert "test-synerise-api-key" not in caplog.text
        event = trackware.track(
            "order.shipped", {"order_id": "o-1"}, user_id="c-1", email="a@example.com"
        )
        assert event is not None
        assert trackware.flush(20)
        assert sink.wait_for(1)
        assert sink.ids == [event.event_id]
        assert len(emulator.synerise.events) == 1
        assert len(emulator.yotpo.events) == 1
        stats = trackware.stats()
        assert stats["tracked"] == 1
        assert {n: d["sent"] for n, d in stats["destinations"].items()} == {
            "synerise": 1,
            "yotpo": 1,
            "http": 1,
        }
    finally:
        tracker.shutdown(5)


def test_keyword_options_win_over_variables(sink: Sink, tmp_path: pathlib.Path) -> None:
    environ = {
        "TRACKWARE_HTTP_URL": sink.url,
        "TRACKWARE_FLUSH_INTERVAL": "5",
        "TRACKWARE_MAX_QUEUE_SIZE": "7",
        "TRACKWARE_MAX_BATCH_SIZE": "3",
        "TRACKWARE_SHUTDOWN_TIMEOUT": "2.5",
        "TRACKWARE_QUEUE_FULL_POLICY": "drop_newest",
        "TRACKWARE_STRICT": "yes",
        "TRACKWARE_DEAD_LETTER_PATH": str(tmp_path / "from-env.jsonl"),
    }
    tracker = Tracker.from_env(environ=environ, flush_interval=0.25)
    try:
        (dest,) = tracker.destinations
        assert dest.flush_interval == 0.25  # the keyword
        assert dest.max_batch_size == 3
        assert dest.queue.max_events == 7  # type: ignore[attr-defined]
        assert dest.queue.policy == "drop_newest"  # type: ignore[attr-defined]
        assert tracker.shutdown_timeout == 2.5
        assert tracker.strict is True
        assert tracker.enabled is True
        assert tracker.dead_letter is not None
        assert tracker.dead_letter.path == tmp_path / "from-env.jsonl"  # type: ignore[attr-defined]
    finally:
        tracker.shutdown(1)
    # The default (not set by init()) is untouched by from_env().
    assert _default.current is None


def test_extra_exporters_join_those_from_the_environment(sink: Sink) -> None:
    from trackware.exporters import HTTPExporter

    mine = HTTPExporter(sink.url, name="mine")
    tracker = Tracker.from_env(mine, environ={"TRACKWARE_HTTP_URL": sink.url})
    try:
        assert [d.name for d in tracker.destinations] == ["http", "mine"]
    finally:
        tracker.shutdown(1)
    # Only exporters= is enough: no variable needed.
    alone = Tracker.from_env([HTTPExporter(sink.url)], environ={})
    assert [d.name for d in alone.destinations] == ["http"]
    alone.shutdown(1)


def test_mxo_interactions_with_credentials_else_lightweight() -> None:
    base = {
        "TRACKWARE_MXO_BASE_URL": "http://127.0.0.1:9",
        "TRACKWARE_MXO_SITE_KEY": MXO_SITE_KEY,
        "TRACKWARE_MXO_TOUCHPOINT": "web://shop",
    }
    light = Tracker.from_env(environ=base)
    full = Tracker.from_env(
        environ={
            **base,
            "TRACKWARE_MXO_CLIENT_ID": "mxo-client-id",
            "TRACKWARE_MXO_CLIENT_SECRET": "mxo-client-secret",
        }
    )
    try:
        (light_dest,) = light.destinations
        (full_dest,) = full.destinations
        assert type(light_dest.exporter) is LightweightExporter
        assert type(full_dest.exporter) is InteractionExporter
    finally:
        light.shutdown(1)
        full.shutdown(1)


def test_a_vendor_configured_in_part_names_what_is_missing() -> None:
    with pytest.raises(ConfigurationError) as info:
        Tracker.from_env(
            environ={"TRACKWARE_CARDLYTICS_BASE_URL": "https://cardlytics.test"}
        )
    message = str(info.value)
    for missing in ("CLIENT_ID", "CLIENT_SECRET", "CUSTOMER_ID_KEY"):
        assert f"TRACKWARE_CARDLYTICS_{missing}" in message
    with pytest.raises(ConfigurationError, match="TRACKWARE_YOTPO_SECRET"):
        trackware.init(environ={"TRACKWARE_YOTPO_STORE_ID": "store"})
    assert _default.current is None  # init() failed: nothing was set


def test_no_destination_is_an_error_naming_the_variables() -> None:
    with pytest.raises(ConfigurationError) as info:
        trackware.init(environ={})
    message = str(info.value)
    for name in (
        "TRACKWARE_HTTP_URL",
        "TRACKWARE_SYNERISE_API_KEY",
        "TRACKWARE_DISABLED=1",
        "docs/configuration.md",
    ):
        assert name in message
    assert _default.current is None


@pytest.mark.parametrize(
    ("environ", "options"),
    [({"TRACKWARE_DISABLED": "1"}, {}), ({}, {"enabled": False})],
    ids=["variable", "keyword"],
)
def test_disabled_without_destinations_is_allowed(
    environ: dict[str, str], options: dict[str, t.Any]
) -> None:
    tracker = trackware.init(environ=environ, **options)
    assert trackware.get_tracker() is tracker
    assert tracker.destinations == ()
    assert tracker.enabled is False
    assert trackware.track("app.event") is None
    assert trackware.stats()["dropped"] == {"disabled": 1}
    tracker.shutdown(1)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "TRACKWARE_FLUSH_INTERVAL",
            "soon",
            "TRACKWARE_FLUSH_INTERVAL must be a number",
        ),
        (
            "TRACKWARE_MAX_QUEUE_SIZE",
            "1.5",
            "TRACKWARE_MAX_QUEUE_SIZE must be an integer",
        ),
        (
            "TRACKWARE_STRICT",
            "maybe",
            "TRACKWARE_STRICT must be 1/true/yes or 0/false/no",
        ),
        ("TRACKWARE_QUEUE_FULL_POLICY", "drop_all", "queue_full_policy must be one of"),
    ],
)
def test_a_value_that_does_not_parse_is_named(
    sink: Sink, name: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        Tracker.from_env(environ={"TRACKWARE_HTTP_URL": sink.url, name: value})


def test_a_misspelt_option_is_refused_with_the_right_name(sink: Sink) -> None:
    """For callers the type checker does not see (options from a dict)."""
    options: dict[str, t.Any] = {"flush_intervl": 0.5}
    with pytest.raises(ConfigurationError, match="did you mean 'flush_interval'"):
        trackware.init(environ={"TRACKWARE_HTTP_URL": sink.url}, **options)
    assert _default.current is None
    with pytest.raises(ConfigurationError, match="the options are"):
        Tracker.from_env(environ={}, **{"zzz": 1})  # type: ignore[typeddict-unknown-key]


def test_a_misspelt_variable_is_reported_with_the_right_name(
    sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    environ = {"TRACKWARE_HTTP_URL": sink.url, "TRACKWARE_FLUSH_INTERVL": "0.1"}
    with caplog.at_level(logging.WARNING, logger="trackware"):
        tracker = Tracker.from_env(environ=environ)
    tracker.shutdown(1)
    assert "did you mean TRACKWARE_FLUSH_INTERVAL?" in caplog.text
    # ... and the misspelt value was not used.
    assert tracker.destinations[0].flush_interval == 1.0


def test_every_variable_read_is_registered() -> None:
    read = {*_config.TRACKER_VARIABLES, _config.HTTP_URL}
    read |= {"TRACKWARE_DISABLED", "TRACKWARE_DEAD_LETTER_PATH"}
    assert read <= _env.KNOWN_VARIABLES
    for vendor in _config.VENDOR_PREFIXES:
        assert any(n.startswith(f"TRACKWARE_{vendor}_") for n in _env.KNOWN_VARIABLES)


def test_tracker_options_are_exactly_the_trackers_keywords() -> None:
    params = inspect.signature(Tracker.__init__).parameters
    keywords = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert set(_config.TrackerOptions.__annotations__) == keywords
    assert _config.TrackerOptions.__total__ is False


def test_exporter_options_are_exactly_what_the_base_takes() -> None:
    """The exporters' **options TypedDicts follow BaseHTTPExporter's keywords
    (less those each exporter names itself)."""
    from trackware.exporters import BaseHTTPExporter, _options

    params = inspect.signature(BaseHTTPExporter.__init__).parameters
    keywords = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    http = set(_options.HTTPExporterOptions.__annotations__)
    vendor = set(_options.ExporterOptions.__annotations__)
    light = set(_options.LightweightExporterOptions.__annotations__)
    assert http == keywords - {"base_url", "name", "max_batch_size"}
    assert vendor == http | {"name"}
    assert light == vendor | {"max_batch_size"}


def test_stats_have_the_declared_shape_and_serialise(sink: Sink) -> None:
    tracker = Tracker.from_env(environ={"TRACKWARE_HTTP_URL": sink.url})
    try:
        tracker.track("app.event")
        assert tracker.flush(20)
        stats = tracker.stats()
        assert set(stats) == set(trackware.TrackerStats.__annotations__)
        (dest,) = stats["destinations"].values()
        assert set(dest) == set(trackware.DestinationStats.__annotations__)
        assert json.loads(json.dumps(stats)) == stats
    finally:
        tracker.shutdown(1)


def test_option_typos_fail_the_type_checker(tmp_path: pathlib.Path) -> None:
    """The typed options: a misspelt keyword of from_env()/init() or of an
    exporter's **options fails ``mypy --strict``; the right one passes."""
    pytest.importorskip("mypy")  # a development tool, not a dependency
    good = textwrap.dedent(
        """\
        import trackware
        from trackware.exporters import HTTPExporter
        from trackware.exporters.synerise import SyneriseExporter

        options: trackware.TrackerOptions = {"flush_interval": 0.5, "enabled": False}
        tracker = trackware.Tracker.from_env(environ={}, **options)
        trackware.init(environ={}, enabled=False, shutdown_timeout=2.0)
        HTTPExporter("https://example.com/events", timeout=3.0, events=["a"])
        SyneriseExporter(api_key="k", name="s", connect_timeout=1.0)
        stats: trackware.TrackerStats = tracker.stats()
        sent: int = stats["destinations"]["http"]["sent"]
        """
    )
    bad = textwrap.dedent(
        """\
        import trackware
        from trackware.exporters import HTTPExporter
        from trackware.exporters.synerise import SyneriseExporter

        trackware.Tracker.from_env(flush_intervl=0.5)
        trackware.init(shutdown_timeout="2")
        HTTPExporter("https://example.com/events", timeot=3.0)
        SyneriseExporter(api_key="k", conect_timeout=1.0)
        trackware.stats()["destinations"]["http"]["snet"]
        """
    )
    out, bad_lines = mypy_flags(tmp_path, good, bad)
    assert bad_lines == {"5", "6", "7", "8", "9"}, out
    for typo in ("flush_intervl", "timeot", "conect_timeout", "snet"):
        assert typo in out, out
