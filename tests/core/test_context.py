"""Identity and request context flow through contextvars."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import typing as t

import pytest

import trackware
from trackware import identify, request_scope
from trackware.testing import InMemoryExporter, capture_events


@pytest.fixture
def tracker() -> t.Iterator[trackware.Tracker]:
    tr = trackware.Tracker([InMemoryExporter()], dead_letter=None)
    trackware.set_tracker(tr)
    yield tr
    tr.shutdown(timeout=1)


def test_identify_inside_a_scope_reaches_later_events(
    tracker: trackware.Tracker,
) -> None:
    with capture_events(tracker) as events, request_scope(context={"path": "/a"}):
        trackware.track("before")
        identify("c-42", traits={"plan": "gold"}, email="a@example.com")
        trackware.track("after", {"x": 1})
    before, after = events
    assert before.user_id is None and before.context == {"path": "/a"}
    assert after.user_id == "c-42" and after.email == "a@example.com"
    assert after.traits == {"plan": "gold"} and after.context == {"path": "/a"}


def test_scopes_nest_and_are_restored(tracker: trackware.Tracker) -> None:
    assert trackware.current_scope() is None
    with request_scope(user_id="outer") as outer:
        with request_scope(user_id="inner") as inner:
            assert trackware.current_scope() is inner
            assert trackware.track("e").user_id == "inner"  # type: ignore[union-attr]
        assert trackware.current_scope() is outer
        assert trackware.track("e").user_id == "outer"  # type: ignore[union-attr]
    assert trackware.current_scope() is None
    assert trackware.track("e").user_id is None  # type: ignore[union-attr]


def test_explicit_arguments_win_over_the_scope(tracker: trackware.Tracker) -> None:
    with request_scope(user_id="scope", traits={"a": 1}, context={"path": "/p"}):
        event = trackware.track(
            "e", user_id="explicit", traits={"b": 2}, context={"route": "/r"}
        )
    assert event is not None and event.user_id == "explicit"
    assert event.traits == {"a": 1, "b": 2}
    assert event.context == {"path": "/p", "route": "/r"}


def test_asyncio_tasks_inherit_the_scope(tracker: trackware.Tracker) -> None:
    """A task started inside a request sees (and can update) its identity."""

    async def child(n: int) -> trackware.Event | None:
        await asyncio.sleep(0)
        return trackware.track("child", {"n": n})

    async def identify_later() -> None:
        identify("c-7")

    async def main() -> list[trackware.Event | None]:
        with request_scope(anonymous_id="anon-1", context={"path": "/x"}):
            results = list(await asyncio.gather(*(child(n) for n in range(3))))
            await asyncio.create_task(identify_later())
            results.append(trackware.track("after"))
        results.append(trackware.track("outside"))
        return results

    *children, after, outside = asyncio.run(main())
    assert len(children) == 3
    for ev in children:
        assert ev is not None
        assert ev.anonymous_id == "anon-1" and ev.context == {"path": "/x"}
    assert after is not None and after.user_id == "c-7"
    assert outside is not None and outside.anonymous_id is None


def test_copy_context_threads_inherit_the_scope_plain_threads_do_not(
    tracker: trackware.Tracker,
) -> None:
    results: dict[str, trackware.Event | None] = {}

    def work(key: str) -> None:
        results[key] = trackware.track(key)

    with request_scope(user_id="c-1", context={"job": "j"}):
        ctx = contextvars.copy_context()
        copied = threading.Thread(target=ctx.run, args=(work, "copied"))
        plain = threading.Thread(target=work, args=("plain",))
        copied.start()
        plain.start()
        copied.join()
        plain.join()
    copied_ev, plain_ev = results["copied"], results["plain"]
    assert copied_ev is not None and copied_ev.user_id == "c-1"
    assert copied_ev.context == {"job": "j"}
    assert plain_ev is not None and plain_ev.user_id is None


def test_identify_without_a_scope_binds_one_to_the_context(
    tracker: trackware.Tracker,
) -> None:
    def run() -> tuple[str | None, str | None]:
        identify("c-9", traits={"tier": 1})
        ev = trackware.track("e")
        return (ev.user_id if ev else None, str(ev.traits) if ev else None)

    assert contextvars.copy_context().run(run) == ("c-9", "{'tier': 1}")
    # The binding stayed inside the copied context.
    assert trackware.current_scope() is None


def test_identify_traits_merge_and_invalid_values_are_left_out(
    tracker: trackware.Tracker,
) -> None:
    with request_scope() as scope:
        identify(traits={"a": 1, "bad": object()})
        identify(traits={"b": [1, 2]}, phone="+15550100")
        scope.bind(route="/r", broken={1, 2})
        event = trackware.track("e")
    assert event is not None
    assert event.traits == {"a": 1, "b": [1, 2]} and event.phone == "+15550100"
    assert event.context == {"route": "/r"}
    assert tracker.stats()["dropped"] == {}


def test_traits_from_identify_are_redacted(tracker: trackware.Tracker) -> None:
    """The tracker's redaction applies to traits bound by identify()."""
    with request_scope():
        identify("c-1", traits={"password": "hunter2", "plan": "gold"})
        first = trackware.track("e")
        second = trackware.track("e")
        identify(traits={"api_key": "k-123"})
        third = trackware.track("e")
    assert first is not None and second is not None and third is not None
    assert first.traits == {"password": trackware.REDACTED, "plan": "gold"}
    assert second.traits == first.traits
    assert third.traits["api_key"] == trackware.REDACTED
    assert "hunter2" not in str(third.to_dict())


def test_traits_set_directly_on_a_scope_are_validated(
    tracker: trackware.Tracker,
) -> None:
    """Integrations may assign scope.traits; unsendable values are left out."""
    with request_scope() as scope:
        scope.traits = {"plan": "gold", "raw": object(), "token": "t-1"}
        event = trackware.track("e")
    assert event is not None
    assert event.traits == {"plan": "gold", "token": trackware.REDACTED}
    assert tracker.stats()["dropped"] == {}


def test_request_scope_routes_to_its_tracker_and_can_flush() -> None:
    exporter = InMemoryExporter()
    own = trackware.Tracker([exporter], dead_letter=None, flush_interval=60)
    default = trackware.Tracker([InMemoryExporter()], dead_letter=None)
    trackware.set_tracker(default)
    with request_scope(tracker=own, flush=True):
        assert trackware.get_tracker() is own
        trackware.track("job.done")
    # flush=True delivered before the block returned.
    assert exporter.names() == ["job.done"]
    assert trackware.get_tracker() is default
    assert default.stats()["tracked"] == 0
    own.shutdown(timeout=1)
    default.shutdown(timeout=1)


def test_without_a_tracker_events_are_counted_as_no_tracker() -> None:
    """track() before any tracker is configured returns None: the event went
    nowhere, and trackware.stats() counts it (see test_validate)."""
    assert trackware.track("lonely") is None
    stats = trackware.stats()
    assert stats["tracked"] == 0 and stats["dropped"] == {"no_tracker": 1}
    assert trackware.flush(1) is True
