"""@tracked on every kind of callable: outcome, duration, properties, inspect."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import subprocess
import sys
import typing as t

import pytest

import trackware
from trackware import tracked
from trackware.testing import InMemoryExporter, capture_events


class Boom(Exception):
    pass


@pytest.fixture
def tracker() -> t.Iterator[trackware.Tracker]:
    tr = trackware.Tracker([InMemoryExporter()], dead_letter=None, flush_interval=60)
    trackware.set_tracker(tr)
    yield tr
    tr.shutdown(timeout=1)


# --- the subjects ---------------------------------------------------------------------


@tracked("fn")
def fn(x: int, fail: bool = False) -> int:
    """Doc of fn."""
    if fail:
        raise Boom(x)
    return x * 2


@tracked("coro")
async def coro(x: int, fail: bool = False) -> int:
    await asyncio.sleep(0)
    if fail:
        raise Boom(x)
    return x * 2


@tracked("gen")
def gen(x: int, fail: bool = False) -> t.Iterator[int]:
    yield x
    if fail:
        raise Boom(x)
    yield x * 2


@tracked("agen")
async def agen(x: int, fail: bool = False) -> t.AsyncIterator[int]:
    yield x
    await asyncio.sleep(0)
    if fail:
        raise Boom(x)
    yield x * 2


class Service:
    factor = 2

    @tracked("method")
    def method(self, x: int, fail: bool = False) -> int:
        if fail:
            raise Boom(x)
        return x * self.factor

    @tracked("async_method")
    async def async_method(self, x: int, fail: bool = False) -> int:
        await asyncio.sleep(0)
        if fail:
            raise Boom(x)
        return x * self.factor

    @tracked("cm_above")
    @classmethod
    def cm_above(cls, x: int, fail: bool = False) -> int:
        if fail:
            raise Boom(x)
        return x * cls.factor

    @classmethod
    @tracked("cm_below")
    def cm_below(cls, x: int, fail: bool = False) -> int:
        if fail:
            raise Boom(x)
        return x * cls.factor

    @tracked("sm_above")
    @staticmethod
    def sm_above(x: int, fail: bool = False) -> int:
        if fail:
            raise Boom(x)
        return x * 2

    @staticmethod
    @tracked("sm_below")
    def sm_below(x: int, fail: bool = False) -> int:
        if fail:
            raise Boom(x)
        return x * 2

    @classmethod
    @tracked("async_cm")
    async def async_cm(cls, x: int, fail: bool = False) -> int:
        await asyncio.sleep(0)
        if fail:
            raise Boom(x)
        return x * cls.factor


def call_fn(fail: bool) -> t.Any:
    return fn(3, fail=fail)


def call_coro(fail: bool) -> t.Any:
    return asyncio.run(coro(3, fail=fail))


def call_gen(fail: bool) -> t.Any:
    return list(gen(3, fail=fail))


def call_agen(fail: bool) -> t.Any:
    async def consume() -> list[int]:
        return [v async for v in agen(3, fail=fail)]

    return asyncio.run(consume())


KINDS: dict[str, tuple[t.Callable[[bool], t.Any], t.Any]] = {
    "fn": (call_fn, 6),
    "coro": (call_coro, 6),
    "gen": (call_gen, [3, 6]),
    "agen": (call_agen, [3, 6]),
    "method": (lambda fail: Service().method(3, fail=fail), 6),
    "async_method": (
        lambda fail: asyncio.run(Service().async_method(3, fail=fail)),
        6,
    ),
    "cm_above": (lambda fail: Service.cm_above(3, fail=fail), 6),
    "cm_below": (lambda fail: Service().cm_below(3, fail=fail), 6),
    "sm_above": (lambda fail: Service().sm_above(3, fail=fail), 6),
    "sm_below": (lambda fail: Service.sm_below(3, fail=fail), 6),
    "async_cm": (lambda fail: asyncio.run(Service.async_cm(3, fail=fail)), 6),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_success_is_tracked_with_duration_and_ok(
    tracker: trackware.Tracker, kind: str
) -> None:
    call, expected = KINDS[kind]
    with capture_events() as events:
        assert call(False) == expected
    event = events.one(kind)
    assert event.properties["outcome"] == "ok"
    assert isinstance(event.properties["duration"], float)
    assert event.properties["duration"] >= 0


@pytest.mark.parametrize("kind", list(KINDS))
def test_exception_is_tracked_and_reraised_untouched(
    tracker: trackware.Tracker, kind: str
) -> None:
    call, _ = KINDS[kind]
    with capture_events() as events, pytest.raises(Boom) as info:
        call(True)
    event = events.one(kind)
    assert event.properties["outcome"] == "Boom"
    assert info.value.args == (3,)
    # The traceback still reaches the function that raised.
    assert kind in [f.name for f in info.traceback]


def test_the_very_same_exception_object_is_reraised(
    tracker: trackware.Tracker,
) -> None:
    err = Boom("mine")

    @tracked()
    def raiser() -> None:
        raise err

    with pytest.raises(Boom) as info:
        raiser()
    assert info.value is err
    assert err.__context__ is None and err.__cause__ is None


@pytest.mark.parametrize(
    ("subject", "check"),
    [
        (fn, inspect.isfunction),
        (coro, inspect.iscoroutinefunction),
        (gen, inspect.isgeneratorfunction),
        (agen, inspect.isasyncgenfunction),
        (Service.async_method, inspect.iscoroutinefunction),
        (Service.async_cm, inspect.iscoroutinefunction),
    ],
    ids=["function", "coroutine", "generator", "asyncgen", "amethod", "acm"],
)
def test_inspect_answers_are_kept(subject: t.Any, check: t.Any) -> None:
    assert check(subject)
    others = {
        inspect.iscoroutinefunction,
        inspect.isgeneratorfunction,
        inspect.isasyncgenfunction,
    } - {check}
    assert not any(other(subject) for other in others)
    assert asyncio.iscoroutinefunction(subject) == (
        check is inspect.iscoroutinefunction
    )


def test_signatures_names_and_docs_are_kept() -> None:
    expected = "(x: 'int', fail: 'bool' = False) -> 'int'"
    assert str(inspect.signature(fn)) == expected
    assert fn.__name__ == "fn" and fn.__doc__ == "Doc of fn."
    assert fn.__qualname__ == "fn" and fn.__module__ == __name__
    assert str(inspect.signature(Service().method)) == expected
    assert str(inspect.signature(Service.cm_above)) == expected
    assert str(inspect.signature(Service.cm_below)) == expected
    assert str(inspect.signature(Service.sm_above)) == expected
    assert str(inspect.signature(Service.sm_below)) == expected
    assert str(inspect.signature(Service.method)) == (
        "(self, x: 'int', fail: 'bool' = False) -> 'int'"
    )
    assert inspect.ismethod(Service.cm_above) and inspect.ismethod(Service.cm_below)
    assert inspect.ismethod(Service().method)


def test_properties_from_a_dict_and_from_a_callable(
    tracker: trackware.Tracker,
) -> None:
    @tracked("static", properties={"team": "growth"})
    def static(x: int) -> int:
        return x

    seen: list[tuple[t.Any, ...]] = []

    def compute(result: t.Any, *args: t.Any, **kwargs: t.Any) -> dict[str, t.Any]:
        seen.append((result, args, kwargs))
        return {"result": result, "x": args[0]}

    class Shop:
        @tracked("buy", properties=compute)
        def buy(self, x: int, *, coupon: str = "") -> int:
            return x + 1

        @tracked("fail", properties=compute)
        def fail(self, x: int) -> int:
            raise Boom(x)

    with capture_events() as events:
        static(1)
        Shop().buy(5, coupon="c")
        with pytest.raises(Boom):
            Shop().fail(7)
    assert events.one("static").properties["team"] == "growth"
    assert events.one("buy").properties["result"] == 6
    assert events.one("buy").properties["x"] == 5
    fail = events.one("fail").properties
    assert fail["result"] is None and fail["outcome"] == "Boom"
    # args exclude self; kwargs are passed through.
    assert seen[0] == (6, (5,), {"coupon": "c"})


def test_tracking_failures_never_reach_the_call(tracker: trackware.Tracker) -> None:
    """A raising properties callable or invalid properties never break the call."""

    @tracked("bad_props", properties=lambda r, *a, **k: 1 / 0)
    def one() -> int:
        return 1

    @tracked("invalid_props", properties=lambda r, *a, **k: {"obj": object()})
    def two() -> int:
        return 2

    strict = trackware.Tracker([InMemoryExporter()], dead_letter=None, strict=True)

    @tracked("strict", properties={"s": {1}}, tracker=strict)
    def three() -> int:
        return 3

    with capture_events() as events:
        assert (one(), two(), three()) == (1, 2, 3)
    assert events.one("bad_props").properties["outcome"] == "ok"
    assert "invalid_props" not in events.names()
    assert tracker.stats()["dropped"] == {"invalid": 1}
    strict.shutdown(timeout=1)


def test_default_name_is_module_and_qualname(tracker: trackware.Tracker) -> None:
    @tracked
    def bare() -> str:
        return "b"

    @tracked()
    def empty() -> str:
        return "e"

    with capture_events() as events:
        assert bare() == "b" and empty() == "e"
    assert events.names() == [
        f"{__name__}.test_default_name_is_module_and_qualname.<locals>.bare",
        f"{__name__}.test_default_name_is_module_and_qualname.<locals>.empty",
    ]


def test_enabled_switch(tracker: trackware.Tracker) -> None:
    def plain() -> int:
        return 1

    assert tracked("off", enabled=False)(plain) is plain
    switch = {"on": False}

    @tracked("toggled", enabled=lambda: switch["on"])
    def toggled() -> int:
        return 2

    with capture_events() as events:
        toggled()
        switch["on"] = True
        toggled()
    assert events.names() == ["toggled"]


def test_explicit_tracker_is_used(tracker: trackware.Tracker) -> None:
    other_exporter = InMemoryExporter()
    other = trackware.Tracker([other_exporter], dead_letter=None)

    @tracked("mine", tracker=other)
    def mine() -> None:
        return None

    mine()
    assert other.flush(5)
    assert other_exporter.names() == ["mine"]
    assert tracker.stats()["tracked"] == 0
    other.shutdown(timeout=1)


def test_generator_closed_early_is_tracked_as_closed(
    tracker: trackware.Tracker,
) -> None:
    with capture_events() as events:
        g = gen(1)
        assert next(g) == 1
        g.close()
    assert events.one("gen").properties["outcome"] == "closed"


def test_generator_send_and_return_value_pass_through(
    tracker: trackware.Tracker,
) -> None:
    @tracked("echo")
    def echo() -> t.Generator[int, int, str]:
        got = yield 0
        got = yield got * 10
        return f"done {got}"

    with capture_events() as events:
        g = echo()
        assert next(g) == 0
        assert g.send(4) == 40
        with pytest.raises(StopIteration) as stop:
            g.send(5)
    assert stop.value.value == "done 5"
    assert events.one("echo").properties["outcome"] == "ok"


def test_async_generator_closed_early_and_athrow(tracker: trackware.Tracker) -> None:
    @tracked("handles")
    async def handles() -> t.AsyncGenerator[str, None]:
        try:
            yield "first"
        except Boom:
            yield "recovered"
        yield "last"

    async def main() -> list[str]:
        out = []
        a = agen(1)
        out.append(str(await a.__anext__()))
        await a.aclose()
        h = handles()
        out.append(await h.__anext__())
        out.append(await h.athrow(Boom()))
        out.append(await h.__anext__())
        with pytest.raises(StopAsyncIteration):
            await h.__anext__()
        return out

    with capture_events() as events:
        assert asyncio.run(main()) == ["1", "first", "recovered", "last"]
    assert events.one("agen").properties["outcome"] == "closed"
    assert events.one("handles").properties["outcome"] == "ok"


def test_cancelled_coroutine_is_tracked(tracker: trackware.Tracker) -> None:
    @tracked("slow")
    async def slow() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.create_task(slow())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture_events() as events:
        asyncio.run(main())
    assert events.one("slow").properties["outcome"] == "CancelledError"


def test_works_with_functools_partial_and_lambdas(tracker: trackware.Tracker) -> None:
    add = tracked("add")(functools.partial(lambda a, b: a + b, 1))
    with capture_events() as events:
        assert add(2) == 3
    assert events.one("add").properties["outcome"] == "ok"


def test_decorator_module_imports_no_framework() -> None:
    """Checked in a fresh interpreter: this process may have imported flask."""
    code = (
        "import json, sys\n"
        "import trackware._decorators\n"
        "print(json.dumps(['trackware._decorators' in sys.modules,"
        " 'flask' in sys.modules, 'trackware.integrations.flask' in sys.modules]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    decorators, flask_loaded, integration_loaded = json.loads(proc.stdout)
    assert decorators
    assert not flask_loaded and not integration_loaded
