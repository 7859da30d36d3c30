"""Events as bytes, for queues that keep them outside the process's memory
(the SQLite spool, Redis Streams) and bring them back exactly.

``encode`` writes one compact JSON array (a format version, then the event's
slots in order); ``decode`` rebuilds the :class:`~trackware._event.Event` with
the same id (so a redelivered or replayed event carries the same vendor
idempotency key), the same float timestamp and the same size. Events are
encoded after ``track()`` checked and redacted them: what is stored is what
would be sent. Values JSON has no type for (a ``datetime`` property, say) come
back as the text the exporters would have written for them.

With the optional ``orjson`` installed, both directions use it where it
gives exactly the standard library's values (about four times faster; the
spool and Redis Streams encode every event and read many back). ``encode``
falls back to the standard library for what orjson refuses (integers beyond
64 bits, dict keys that are not strings, types it does not know). A record
orjson wrote begins ``[1.0,`` (the same format number, 1, to every reader);
only those are parsed with orjson, which reads every integer it writes
exactly, but would read a larger one, as the standard library may write,
as a float. Other records (written before, or by the fall-back) are parsed
with ``json``. The text may differ (orjson writes ``1e-05`` as
``0.00001``); the values read back do not. Events reach the codec
validated (finite numbers only: orjson would write a NaN as ``null`` where
``json`` refuses it).
"""

from __future__ import annotations

import json
import typing as t

from ._event import Event, make_event
from ._json import ORJSON, ORJSON_OPTIONS, dumps, json_default
from ._json import orjson_module as _orjson

__all__ = ["FORMAT", "ORJSON", "decode", "encode"]

#: The first element of every encoded event; ``decode`` refuses others.
FORMAT = 1

_loads = json.loads
_OPTIONAL_TEXT = (str, type(None))

# The format number as orjson writes it: marks the records orjson may read.
_FAST_FORMAT = 1.0
_FAST_B = b"[1.0,"
_FAST_S = "[1.0,"


def encode(event: Event) -> bytes:
    """``event`` as UTF-8 JSON bytes (raises ``TypeError``/``ValueError`` for a
    value JSON cannot carry, e.g. a lone surrogate or NaN)."""
    if _orjson is not None:
        try:
            out: bytes = _orjson.dumps(
                [_FAST_FORMAT, event.event_id, *event[1:]],
                default=json_default,
                option=ORJSON_OPTIONS,
            )
        except Exception:  # beyond 64 bits, a non-str key...: the standard way
            pass
        else:
            # A copy of exactly its size: orjson's own buffers, held by the
            # thousands in a spool writer's batch, fragmented the heap (max
            # RSS grew ~1.5 KiB per event spooled; flat with the copy).
            return bytes(memoryview(out))
    return dumps([FORMAT, event.event_id, *event[1:]]).encode("utf-8", "strict")


def _parse(data: bytes | str) -> t.Any:
    if _orjson is not None and (
        data[:5] == _FAST_B if type(data) is bytes else data[:5] == _FAST_S
    ):
        try:
            return _orjson.loads(data)
        except Exception:  # what orjson refuses, json may still read
            pass
    return _loads(data)


def decode(data: bytes | str) -> Event:
    """The event ``encode`` wrote. Raises ``ValueError`` for anything else
    (a truncated record, garbage, another format): the caller counts it."""
    try:
        fields = _parse(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not an encoded event: {exc}") from None
    except TypeError as exc:  # not bytes or text
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
