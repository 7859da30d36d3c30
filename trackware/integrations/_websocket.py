"""Websocket tracking of the ASGI middleware: ``websocket_connect`` when the
app accepts, ``websocket_disconnect`` (code, initiator, duration) when either
side closes, with the route when the framework exposes it.
"""

from __future__ import annotations

import time
import typing as t

from .. import _log, get_tracker
from ._connection import Connection, with_cookies
from ._request import RequestState, RequestTracker, track_in_scope
from ._routes import RouteFinder

if t.TYPE_CHECKING:
    from asgiref.typing import ASGI3Application, ASGIReceiveCallable, ASGISendCallable

__all__ = ["WebsocketTracking"]


class WebsocketTracking:
    """Runs a tracked websocket connection through the app and tracks its
    events (one per middleware)."""

    def __init__(
        self,
        app: ASGI3Application,
        engine: RequestTracker,
        find_route: RouteFinder,
        connect_event: str | None,
        disconnect_event: str | None,
    ) -> None:
        self.app = app
        self.engine = engine
        self.find_route = find_route
        self.connect_event = connect_event
        self.disconnect_event = disconnect_event

    async def run(
        self,
        state: Connection,
        inner: t.Any,
        root_path: str,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        """Run the app on the connection (its scope ``inner``, already open
        as ``state``) and close the scope after."""
        engine = self.engine

        def ended(code: int, initiator: str, error: BaseException | None) -> None:
            state.finished = True
            name = self.disconnect_event
            if name is None:
                return
            props: dict[str, t.Any] = {
                "code": code,
                "initiator": initiator,
                "accepted": state.accepted,
                "duration": time.perf_counter() - state.start,
            }
            if error is not None:
                props["error"] = type(error).__name__
            self.track(state, inner, root_path, name, props)

        async def tracking_receive() -> t.Any:
            message = await receive()
            if message["type"] == "websocket.disconnect" and not state.finished:
                ended(int(message.get("code") or 1005), "client", None)
            return message

        async def tracking_send(msg: t.Any) -> None:
            message = msg
            kind = msg["type"]
            if kind == "websocket.accept" and not state.accepted:
                message = with_cookies(engine, state, msg)
                await send(message)
                state.accepted = True
                name = self.connect_event
                if name is not None:
                    props: dict[str, t.Any] = {}
                    if msg.get("subprotocol"):
                        props["subprotocol"] = msg["subprotocol"]
                    self.track(state, inner, root_path, name, props)
                return
            try:
                await send(message)
            except OSError:  # the client is gone (1006: closed abnormally)
                if not state.finished:
                    ended(1006, "client", None)
                raise
            if state.finished:
                return
            if kind == "websocket.close":
                ended(int(msg.get("code") or 1000), "server", None)
            elif kind == "websocket.http.response.start":
                state.status = msg.get("status")
                ended(1008, "server", None)

        error: BaseException | None = None
        try:
            await self.app(inner, tracking_receive, tracking_send)
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                if not state.finished:
                    ended(1011 if error is not None else 1000, "server", error)
            except Exception:
                _log.error(
                    "asgi-websocket",
                    "trackware: could not track the websocket event",
                    exc_info=True,
                )
            finally:
                engine.close(state)

    def track(
        self,
        state: RequestState,
        inner: dict[str, t.Any],
        root_path: str,
        name: str,
        props: dict[str, t.Any],
    ) -> None:
        try:
            route, endpoint = self.find_route(inner, root_path, "GET", state.path)
        except Exception:
            route = endpoint = None
        if self.engine.route_excluded(route, endpoint):
            return
        props = {"path": state.path, "route": route, "endpoint": endpoint, **props}
        if state.status is not None:
            props["status"] = state.status
        tracker = state.tracker or get_tracker()
        try:
            track_in_scope(tracker, name, props, state)
        except Exception:
            _log.error(
                "asgi-websocket",
                "trackware: could not track the websocket event",
                exc_info=True,
            )
