"""MXO real-time answers: whom an ``interact()`` call is for, and its result."""

from __future__ import annotations

import base64
import dataclasses
import typing as t

import httpx

from ..._ambient import AmbientScope
from ..._event import Event
from .._http import response_json, response_text
from ._mapping import TID_RE, is_2xx

__all__ = ["Caller", "InteractionResult", "caller", "read_answer"]


@dataclasses.dataclass(frozen=True)
class InteractionResult:
    """What :meth:`InteractionExporter.interact` got back.

    Attributes:
        optimizations: MXO's optimization points (``data`` is base64), empty
            on failure.
        tid: the visitor's MXO identifier (remembered for later calls).
        error: why the call failed, or ``None``.
        status: the HTTP status MXO answered, if it answered.
    """

    optimizations: list[dict[str, t.Any]] = dataclasses.field(default_factory=list)
    tid: str | None = None
    error: str | None = None
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def decoded(self) -> list[str | None]:
        """Each optimization's base64 ``data`` decoded as UTF-8 text (or None)."""
        out: list[str | None] = []
        for item in self.optimizations:
            data = item.get("data") if isinstance(item, dict) else None
            try:
                out.append(base64.b64decode(data).decode("utf-8") if data else None)
            except (ValueError, TypeError):
                out.append(None)
        return out


class Caller(t.NamedTuple):
    """Whom an ``interact()`` call is for."""

    #: the current trackware scope (its tid is updated from the answer).
    scope: AmbientScope | None
    #: the visitor whose tid is used and remembered.
    visitor: str | None
    customer_key: str | None
    #: the tid to send (a valid MXO tid) or ``None``.
    tid: str | None


def caller(
    scope: AmbientScope | None,
    *,
    visitor_id: str | None,
    customer_key: str | None,
    tid: str | None,
    key_of: t.Callable[[Event], str | None],
    tid_for: t.Callable[[str], str | None],
) -> Caller:
    """Fill what the caller of ``interact()`` left out from ``scope``: the
    visitor (its ``anonymous_id``), the customer key (``key_of`` applied to
    the scope's identity) and the tid (the scope's ``mxo_tid``, else the one
    remembered for the visitor)."""
    visitor = visitor_id or (scope.anonymous_id if scope is not None else None)
    if customer_key is None and scope is not None:
        probe = Event(
            "mxo.interact",
            user_id=scope.user_id,
            anonymous_id=scope.anonymous_id,
            email=scope.email,
            phone=scope.phone,
            traits=scope.traits,
            context=scope.context,
        )
        customer_key = key_of(probe)
    if tid is None and scope is not None:
        scoped = scope.context.get("mxo_tid")
        tid = scoped if isinstance(scoped, str) else None
    if tid is None and visitor:
        tid = tid_for(visitor)
    if tid is not None and not TID_RE.match(tid):
        tid = None
    return Caller(scope, visitor, customer_key, tid)


def read_answer(
    response: httpx.Response,
    who: Caller,
    remember_tid: t.Callable[[str, str], None],
) -> InteractionResult:
    """The result of MXO's answer; the tid it gives is remembered for the
    visitor and bound to the scope (the integrations persist it in the
    visitor's tid cookie)."""
    status = response.status_code
    body = response_json(response) or {}
    if not (200 <= status < 300 and is_2xx(body.get("statusCode"))):
        return InteractionResult(
            error=f"HTTP {status}: {response_text(response)[:300]}",
            status=status,
        )
    new_tid = body.get("tid")
    new_tid = new_tid if isinstance(new_tid, str) else who.tid
    if new_tid is not None:
        if who.visitor:
            remember_tid(who.visitor, new_tid)
        scope = who.scope
        if (
            scope is not None
            and scope.context.get("mxo_tid") != new_tid
            and TID_RE.match(new_tid)
        ):
            scope.bind(mxo_tid=new_tid)
    optimizations = body.get("optimizations")
    return InteractionResult(
        optimizations=[o for o in optimizations if isinstance(o, dict)]
        if isinstance(optimizations, list)
        else [],
        tid=new_tid,
        status=status,
    )
