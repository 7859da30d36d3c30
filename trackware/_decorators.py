"""``@tracked``: track a call of any kind of function, with its duration and outcome."""

from __future__ import annotations

import inspect
import time
import typing as t
from collections.abc import Mapping

import wrapt

from . import _log
from ._default import get_tracker
from ._tracker import Tracker

__all__ = ["tracked"]

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

#: Attribute set on an undecorated function, holding its @tracked wrapper: the
#: Flask integration uses it when @tracked was applied *above* @app.route
#: (Flask then registered the undecorated function). The reference is strong:
#: in an application factory the wrapper is a local that would otherwise be
#: collected while Flask still serves the function.
WRAPPER_ATTR = "__trackware_wrapper__"


def tracked_wrapper_of(func: t.Any) -> t.Any | None:
    """The @tracked wrapper of an undecorated function, if any."""
    wrapper = getattr(func, WRAPPER_ATTR, None)
    return wrapper if isinstance(wrapper, wrapt.FunctionWrapper) else None


Properties: t.TypeAlias = "t.Mapping[str, t.Any] | t.Callable[..., t.Any] | None"


@t.overload
def tracked(name: F, /) -> F: ...


@t.overload
def tracked(
    name: str | None = None,
    *,
    properties: Properties = None,
    tracker: Tracker | None = None,
    enabled: bool | t.Callable[[], bool] = True,
) -> t.Callable[[F], F]: ...


def tracked(
    name: t.Any = None,
    *,
    properties: Properties = None,
    tracker: Tracker | None = None,
    enabled: bool | t.Callable[[], bool] = True,
) -> t.Any:
    """Track an event each time the decorated callable finishes.

    Use it as ``@tracked``, ``@tracked()`` or ``@tracked("event.name", ...)``.

    Works on functions, coroutine functions, generators, async generators,
    methods, classmethods and staticmethods (apply it below ``@classmethod`` /
    ``@staticmethod`` or above, either works), and keeps the callable's name,
    signature and ``inspect`` answers. With Flask, put it below ``@app.route``;
    above it works too when the app uses trackware's Flask extension (which
    serves the wrapper Flask did not see).

    The event's properties are ``properties`` (a dict, or a callable receiving
    ``(result, *args, **kwargs)`` — ``result`` is ``None`` when the call raised;
    for methods ``args`` excludes ``self``/``cls``) plus ``duration`` (seconds)
    and ``outcome``: ``"ok"``, the exception's class name, or ``"closed"`` for a
    generator closed before it finished. The app's exception is re-raised
    untouched; tracking itself never raises into the call.

    Args:
        name: the event name (default: ``module.qualname`` of the callable).
        properties: static properties or a callable that computes them.
        tracker: where to send (default: the current tracker at call time).
        enabled: ``False`` (or a callable returning ``False``) turns tracking
            off; with a literal ``False`` the function is returned unwrapped.
    """

    if name is not None and not isinstance(name, str):
        # Bare @tracked: ``name`` is the callable being decorated.
        return tracked()(name)

    def decorate(func: F) -> F:
        target = getattr(func, "__func__", func)  # classmethod / staticmethod
        module = getattr(target, "__module__", "?")
        event_name = name or f"{module}.{getattr(target, '__qualname__', '?')}"

        def record(
            outcome: str, result: t.Any, args: t.Any, kwargs: t.Any, start: float
        ) -> None:
            try:
                props: dict[str, t.Any] = {}
                if callable(properties):
                    try:
                        extra = properties(result, *args, **kwargs)
                    except Exception:
                        _log.error(
                            f"tracked-props:{event_name}",
                            "trackware: properties callable of @tracked(%r) raised; "
                            "tracking without its properties",
                            event_name,
                            exc_info=True,
                        )
                        extra = None
                    if extra and not isinstance(extra, Mapping):
                        # Counted like any invalid event (never raised).
                        (tracker or get_tracker()).reject_invalid(
                            f"properties callable of @tracked({event_name!r}) "
                            f"returned {type(extra).__name__}, not a dict or None"
                        )
                        return
                    if extra:
                        props.update(extra)
                elif properties:
                    props.update(properties)
                props["duration"] = time.perf_counter() - start
                props["outcome"] = outcome
                (tracker or get_tracker()).track(event_name, props)
            except Exception:
                _log.error(
                    f"tracked:{event_name}",
                    "trackware: @tracked(%r) could not track",
                    event_name,
                    exc_info=True,
                )

        if inspect.isasyncgenfunction(target):

            def agen_wrapper(
                wrapped: t.Any, instance: t.Any, args: t.Any, kwargs: t.Any
            ) -> t.Any:
                return _wrap_agen(wrapped(*args, **kwargs), record, args, kwargs)

            wrapper: t.Any = agen_wrapper
        elif inspect.iscoroutinefunction(target):

            async def async_wrapper(
                wrapped: t.Any, instance: t.Any, args: t.Any, kwargs: t.Any
            ) -> t.Any:
                start = time.perf_counter()
                try:
                    result = await wrapped(*args, **kwargs)
                except BaseException as exc:
                    record(type(exc).__name__, None, args, kwargs, start)
                    raise
                record("ok", result, args, kwargs, start)
                return result

            wrapper = async_wrapper
        elif inspect.isgeneratorfunction(target):

            def gen_wrapper(
                wrapped: t.Any, instance: t.Any, args: t.Any, kwargs: t.Any
            ) -> t.Any:
                return _wrap_gen(wrapped(*args, **kwargs), record, args, kwargs)

            wrapper = gen_wrapper
        else:

            def sync_wrapper(
                wrapped: t.Any, instance: t.Any, args: t.Any, kwargs: t.Any
            ) -> t.Any:
                start = time.perf_counter()
                try:
                    result = wrapped(*args, **kwargs)
                except BaseException as exc:
                    record(type(exc).__name__, None, args, kwargs, start)
                    raise
                record("ok", result, args, kwargs, start)
                return result

            wrapper = sync_wrapper
        wrapped = wrapt.decorator(enabled=enabled)(wrapper)(func)
        if wrapped is not func:
            try:
                setattr(func, WRAPPER_ATTR, wrapped)
            except (AttributeError, TypeError):  # builtins, slotted callables
                pass
        return t.cast(F, wrapped)

    return decorate


def _wrap_gen(
    gen: t.Generator[t.Any, t.Any, t.Any],
    record: t.Callable[..., None],
    args: t.Any,
    kwargs: t.Any,
) -> t.Generator[t.Any, t.Any, t.Any]:
    start = time.perf_counter()
    try:
        result = yield from gen
    except GeneratorExit:
        record("closed", None, args, kwargs, start)
        raise
    except BaseException as exc:
        record(type(exc).__name__, None, args, kwargs, start)
        raise
    record("ok", result, args, kwargs, start)
    return result


async def _wrap_agen(
    agen: t.AsyncGenerator[t.Any, t.Any],
    record: t.Callable[..., None],
    args: t.Any,
    kwargs: t.Any,
) -> t.AsyncGenerator[t.Any, t.Any]:
    start = time.perf_counter()
    outcome = "ok"
    try:
        to_send: t.Any = None
        while True:
            try:
                value = await agen.asend(to_send)
            except StopAsyncIteration:
                return
            while True:
                try:
                    to_send = yield value
                    break
                except GeneratorExit:
                    outcome = "closed"
                    await agen.aclose()
                    raise
                except BaseException as exc:
                    # Forward what the consumer threw in; the generator may
                    # handle it and yield again, or finish, or raise.
                    try:
                        value = await agen.athrow(exc)
                    except StopAsyncIteration:
                        return
    except GeneratorExit:
        raise
    except BaseException as exc:
        outcome = type(exc).__name__
        raise
    finally:
        record(outcome, None, args, kwargs, start)
