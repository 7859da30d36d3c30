"""The Tracker's event pipeline: hooks, redaction, filters, sampling, module API."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import typing as t

import pytest

import trackware
from trackware import REDACTED, ConfigurationError, Event
from trackware.testing import InMemoryExporter, capture_events

MODULE_API = [
    "Tracker",
    "track",
    "tracked",
    "identify",
    "set_tracker",
    "get_tracker",
    "flush",
    "shutdown",
    "stats",
    "bridge",
    "request_scope",
    "current_scope",
    "signals",
    "Event",
    "ExportResult",
]


def make(**kw: t.Any) -> tuple[trackware.Tracker, InMemoryExporter]:
    exporter = InMemoryExporter()
    options: dict[str, t.Any] = {"dead_letter": None, "flush_interval": 60}
    options.update(kw)
    return trackware.Tracker([exporter], **options), exporter


def test_module_api_names_exist() -> None:
    for name in MODULE_API:
        assert hasattr(trackware, name), name
        assert name in trackware.__all__, name


def test_module_functions_use_the_default_tracker() -> None:
    tracker, exporter = make()
    trackware.set_tracker(tracker)
    assert trackware.get_tracker() is tracker
    event = trackware.track("e", {"a": 1}, user_id="u")
    assert isinstance(event, Event)
    assert trackware.flush(5) is True
    assert exporter.names() == ["e"]
    assert trackware.stats()["destinations"]["memory"]["sent"] == 1
    assert trackware.shutdown(1) is True
    assert trackware.track("late") is None
    assert tracker.stats()["dropped"] == {"shutdown": 1}


def test_set_tracker_refuses_other_objects() -> None:
    with pytest.raises(ConfigurationError, match="needs a Tracker"):
        trackware.set_tracker(object())  # type: ignore[arg-type]


def test_before_send_can_modify_and_drop() -> None:
    def add_env(event: Event) -> Event:
        return event.replace(properties={**event.properties, "env": "test"})

    def drop_health(event: Event) -> Event | None:
        return None if event.name == "health" else event

    tracker, exporter = make(before_send=[add_env, drop_health])
    kept = tracker.track("page", {"path": "/"})
    assert tracker.track("health") is None
    assert kept is not None and kept.properties == {"path": "/", "env": "test"}
    assert tracker.flush(5)
    assert [(e.name, e.properties) for e in exporter.events] == [
        ("page", {"path": "/", "env": "test"})
    ]
    assert kept.event_id == exporter.events[0].event_id
    assert tracker.stats()["dropped"] == {"before_send": 1}
    tracker.shutdown(timeout=1)


def test_a_broken_hook_drops_the_event_counted_never_raised() -> None:
    def broken(event: Event) -> Event:
        raise RuntimeError("hook bug")

    tracker, _ = make(before_send=broken)
    assert tracker.track("e") is None
    wrong, _ = make(before_send=lambda e: {"not": "an event"})  # type: ignore[arg-type,return-value]
    assert wrong.track("e") is None
    assert tracker.stats()["dropped"] == {"hook_error": 1}
    assert wrong.stats()["dropped"] == {"hook_error": 1}


def test_hook_output_is_validated_and_redacted() -> None:
    """A hook cannot smuggle unsendable values or secrets past the checks."""
    tracker, exporter = make(
        before_send=lambda e: e.replace(
            properties={**e.properties, "password": "hunter2"}
        )
    )
    event = tracker.track("login", {"user": "a"})
    assert event is not None and event.properties["password"] == REDACTED
    bad, _ = make(before_send=lambda e: e.replace(properties={"x": float("nan")}))
    assert bad.track("e") is None
    assert bad.stats()["dropped"] == {"invalid": 1}
    tracker.shutdown(timeout=1)


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "userPassword",
        "token",
        "access_token",
        "secret",
        "client-secret",
        "authorization",
        "Authorization",
        "card",
        "card_number",
        "cardNumber",
        "cvv",
        "ssn",
        "api_key",
        "X-Api-Key",
    ],
)
def test_default_redaction_covers_the_usual_words(key: str) -> None:
    tracker, _ = make()
    event = tracker.track("e", {key: "s3cr3t", "nested": [{key: "s3cr3t"}]})
    assert event is not None
    assert event.properties[key] == REDACTED
    assert event.properties["nested"][0][key] == REDACTED
    assert "s3cr3t" not in str(event.to_dict())


@pytest.mark.parametrize("key", ["discard", "cardlytics_offer", "tokenizer_version"])
def test_redaction_spares_lookalike_keys(key: str) -> None:
    tracker, _ = make()
    event = tracker.track("e", {key: "v"})
    assert event is not None and event.properties[key] == "v"


def test_redaction_applies_to_traits_context_and_deep_values() -> None:
    tracker, _ = make()
    event = tracker.track(
        "e",
        {"order": {"payment": {"cvv": "123", "items": [{"secret": 1}]}}},
        traits={"password": "p", "name": "n"},
        context={"headers": {"Authorization": "Bearer x"}},
    )
    assert event is not None
    assert event.properties["order"]["payment"]["cvv"] == REDACTED
    assert event.properties["order"]["payment"]["items"][0]["secret"] == REDACTED
    assert event.traits == {"password": REDACTED, "name": "n"}
    assert event.context["headers"]["Authorization"] == REDACTED


def test_custom_redaction_words_and_allow_list() -> None:
    tracker, _ = make(redact_keys=["dob"], redact_allow=["password_hint"])
    event = tracker.track("e", {"dob": "1990", "password": "p", "password_hint": "h"})
    assert event is not None
    # Custom words replace the default list.
    assert event.properties == {"dob": REDACTED, "password": "p", "password_hint": "h"}
    default, _ = make()
    event = default.track("e", {"serveToken": "st-1"})
    assert event is not None and event.properties["serveToken"] == "st-1"


def test_per_destination_filters() -> None:
    everything, marketing = InMemoryExporter(name="all"), InMemoryExporter(name="mkt")
    tracker = trackware.Tracker(
        [everything, marketing],
        dead_letter=None,
        filters={"mkt": lambda e: e.properties.get("consent") is True},
    )
    tracker.track("a", {"consent": True})
    tracker.track("b", {"consent": False})
    tracker.track("c")
    assert tracker.flush(5)
    assert everything.names() == ["a", "b", "c"]
    assert marketing.names() == ["a"]
    stats = tracker.stats()
    assert stats["tracked"] == 3
    assert stats["destinations"]["mkt"]["filtered"] == 2
    assert stats["destinations"]["mkt"]["enqueued"] == 1
    tracker.shutdown(timeout=1)


def test_exporter_event_names_route_events() -> None:
    only_orders = InMemoryExporter(name="orders", events=["order.placed"])
    tracker = trackware.Tracker([only_orders], dead_letter=None)
    tracker.track("order.placed")
    tracker.track("page")
    assert tracker.flush(5)
    assert only_orders.names() == ["order.placed"]
    assert tracker.stats()["unrouted"] == 1
    tracker.shutdown(timeout=1)


def test_sampling() -> None:
    tracker, _ = make(sample_rates={"noisy": 0.0, "kept": 1.0})
    for _ in range(20):
        tracker.track("noisy")
        tracker.track("kept")
    stats = tracker.stats()
    assert stats["tracked"] == 20 and stats["dropped"] == {"sampled": 20}


def test_disabled_tracker_counts_and_returns_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    off, _ = make(enabled=False)
    assert off.track("e") is None
    assert off.stats()["dropped"] == {"disabled": 1}
    monkeypatch.setenv("TRACKWARE_DISABLED", "1")
    env_off, _ = make()
    assert env_off.track("e") is None
    assert env_off.stats()["dropped"] == {"disabled": 1}


def test_capture_events_sees_events_synchronously() -> None:
    tracker, _ = make(before_send=lambda e: e.replace(name="renamed"))
    with capture_events(tracker) as events:
        tracker.track("original", {"password": "x"})
    event = events.one("renamed")
    assert event.properties == {"password": REDACTED}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"flush_interval": -1}, "flush_interval"),
        ({"sample_rates": {"e": 2}}, "between 0 and 1"),
        ({"filters": {"nope": bool}}, "unknown destination"),
        ({"dead_letter": 42}, "dead_letter must be"),
        ({"queue_full_policy": "explode"}, "queue_full_policy"),
        ({"max_queue_size": 0}, "max_queue_size"),
    ],
)
def test_misconfiguration_raises_naming_the_fix(
    kwargs: dict[str, t.Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        trackware.Tracker([InMemoryExporter()], **kwargs)


def test_duplicate_names_and_non_exporters_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="name=..."):
        trackware.Tracker([InMemoryExporter(), InMemoryExporter()])
    with pytest.raises(ConfigurationError, match="not an exporter"):
        trackware.Tracker([object()])  # type: ignore[list-item]


def test_stats_account_for_every_event() -> None:
    """tracked + dropped(before routing) == calls; per destination it balances."""
    tracker, exporter = make(max_queue_size=5, before_send=lambda e: e)
    tracker.destinations[0]._start = lambda: None  # type: ignore[method-assign]
    calls = 0
    for i in range(12):
        tracker.track("e", {"i": i})
        tracker.track("e", {"bad": {i}})
        calls += 2
    stats = tracker.stats()
    assert stats["tracked"] + sum(stats["dropped"].values()) == calls
    dest = stats["destinations"]["memory"]
    assert dest["enqueued"] == stats["tracked"] == 12
    assert dest["queue_depth"] + sum(dest["dropped"].values()) == 12
    tracker.shutdown(timeout=0)


def test_a_broken_filter_costs_only_its_destination() -> None:
    """A filter or applies() that raises skips that destination, not the others."""

    class Broken(InMemoryExporter):
        def applies(self, event: Event, /) -> bool:
            raise RuntimeError("applies bug")

    healthy = InMemoryExporter(name="healthy")
    tracker = trackware.Tracker(
        [Broken(name="broken"), healthy, InMemoryExporter(name="filtered")],
        dead_letter=None,
        filters={"filtered": lambda e: e.properties["missing"]},
    )
    event = tracker.track("e")
    assert event is not None
    assert tracker.flush(5)
    assert healthy.names() == ["e"]
    stats = tracker.stats()
    assert stats["tracked"] == 1 and stats["dropped"] == {}
    assert stats["destinations"]["broken"]["filtered"] == 1
    assert stats["destinations"]["filtered"]["filtered"] == 1
    tracker.shutdown(timeout=1)


def test_track_never_raises_on_internal_errors() -> None:
    """A queue that raises costs that event (counted), never the caller."""

    class BrokenQueue(trackware.MemoryQueue):
        def put(self, event: Event, /) -> list[Event] | None:
            raise RuntimeError("queue bug")

    tracker = trackware.Tracker(
        [InMemoryExporter()], dead_letter=None, queue_factory=lambda e: BrokenQueue()
    )
    assert tracker.track("e") is None
    assert tracker.stats()["dropped"] == {"internal_error": 1}
    tracker.shutdown(timeout=1)


#: Every module of the package but the framework integrations (the vendor
#: exporter packages and the emulators included): found by walking the files,
#: so a new module is covered without being listed.
_ROOT = pathlib.Path(trackware.__file__).parent
CORE_MODULES = sorted(
    ".".join(p.relative_to(_ROOT.parent).with_suffix("").parts).removesuffix(
        ".__init__"
    )
    for p in _ROOT.rglob("*.py")
    if "integrations" not in p.relative_to(_ROOT).parts and p.name != "__main__.py"
)
FRAMEWORKS = [
    "flask",
    "werkzeug",
    "asgiref",
    "starlette",
    "fastapi",
    "django",
    "quart",
    "uvicorn",
    "gunicorn",
    "redis",
]


def test_core_imports_no_web_framework_even_when_installed() -> None:
    """`import trackware` and every core module load without any framework."""
    code = textwrap.dedent(
        f"""
        import importlib, json, sys
        import trackware
        mods = {CORE_MODULES!r}
        assert len(mods) > 50 and "trackware._settle" in mods, mods
        for name in mods:
            importlib.import_module(name)
        t = trackware.Tracker([], dead_letter=None, register_atexit=False)
        t.track("e")
        @trackware.tracked
        def f():
            return 1
        f()
        print(json.dumps(sorted(
            m for m in {FRAMEWORKS!r} if m in sys.modules
        )))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
