"""Events as bytes, for queues that keep them outside the process's memory
(the SQLite spool, Redis Streams) and bring them back exactly.

``encode`` writes one compact JSON array (a format version, then the event's
slots in order); ``decode`` rebuilds the :class:`~trackware._event.Event` with
the same id (so a redelivered or replayed event carries the same vendor
idempotency key), the same float timestamp and the same size. Events are
encoded after ``track()`` checked and redacted them: what is stored is what
would be sent. Values JSON has no type for (a ``datetime`` property, say) come
back as the text the exporters would have written for them.
"""

from __future__ import annotations

import json
import typing as t

from ._event import Event, make_event
from ._json import dumps

__all__ = ["FORMAT", "decode", "encode"]

#: The first element of every encoded event; ``decode`` refuses others.
FORMAT = 1

_loads = json.loads
_OPTIONAL_TEXT = (str, type(None))


def encode(event: Event) -> bytes:
    """``event`` as UTF-8 JSON bytes (raises ``TypeError``/``ValueError`` for a
    value JSON cannot carry, e.g. a lone surrogate or NaN)."""
    return dumps([FORMAT, event.event_id, *event[1:]]).encode("utf-8", "strict")


def decode(data: bytes | str) -> Event:
    """The event ``encode`` wrote. Raises ``ValueError`` for anything else
    (a truncated record, garbage, another format): the caller counts it."""
    try:
        fields = _loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not an encoded event: {exc}") from None
    if type(fields) is not list or len(fields) != 12 or fields[0] != FORMAT:
        raise ValueError("not an encoded event (wrong shape or format)")
    _, event_id, name, props, uid, anon, email, phone, traits, ctx, ts, size = fields
    if (
        type(event_id) is not str
        or type(name) is not str
        or type(props) is not dict
        or type(traits) is not dict
        or type(ctx) is not dict
        or not isinstance(uid, _OPTIONAL_TEXT)
        or not isinstance(anon, _OPTIONAL_TEXT)
        or not isinstance(email, _OPTIONAL_TEXT)
        or not isinstance(phone, _OPTIONAL_TEXT)
        or type(ts) not in (float, int)
        or type(size) is not int
    ):
        raise ValueError("not an encoded event (a field has the wrong type)")
    return make_event(
        name,
        t.cast("dict[str, t.Any]", props),
        uid,
        anon,
        email,
        phone,
        traits,
        ctx,
        float(ts),
        size,
        event_id,
    )
