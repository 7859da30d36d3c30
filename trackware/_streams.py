"""Redis Streams: the app process only appends; ``trackware worker`` delivers.

The stream format (shared with :mod:`trackware._stream_consumer`) is written
down in docs/architecture/streams.md; the constants and helpers below are its
single definition. ``redis`` is imported inside functions only: ``import
trackware`` never imports it.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    import redis

__all__ = [
    "DEAD_FIELD_ERROR",
    "EVENT_FIELD",
    "GROUP",
    "ID_FIELD",
    "connect",
    "dead_key",
    "stream_key",
    "trimmed_key",
]

#: Entry field holding ``trackware._codec.encode(event)``.
EVENT_FIELD = b"e"
#: Entry field holding the event id (UTF-8), for people and tools; the id
#: inside the encoded event is the authoritative one.
ID_FIELD = b"id"
#: The consumer group every worker joins (one per stream).
GROUP = "trackware"
#: Extra field of a dead-letter entry: the last error, text.
DEAD_FIELD_ERROR = b"error"


def stream_key(namespace: str, destination: str) -> str:
    """The stream of ``destination``'s events:
    ``trackware:{namespace}:{destination}``."""
    return f"trackware:{namespace}:{destination}"


def dead_key(namespace: str, destination: str) -> str:
    """The dead-letter stream of ``destination``: ``...:{destination}:dead``."""
    return f"{stream_key(namespace, destination)}:dead"


def trimmed_key(namespace: str, destination: str) -> str:
    """A counter (INCRBY) of entries trimmed before the group read them,
    fleet-wide: ``...:{destination}:trimmed``."""
    return f"{stream_key(namespace, destination)}:trimmed"


def connect(url: str, **options: t.Any) -> redis.Redis:
    """A ``redis.Redis`` client for ``url`` (``redis://``, ``rediss://``,
    ``unix://``). Defaults: 5 s socket and connect timeouts, no automatic
    retries (callers retry with their own backoff), bytes replies.
    ``options`` are passed to ``redis.Redis.from_url`` and win."""
    import redis as _redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    kwargs: dict[str, t.Any] = {
        "retry": Retry(NoBackoff(), 0),
        "socket_timeout": 5.0,
        "socket_connect_timeout": 5.0,
        "retry_on_timeout": False,
        "health_check_interval": 0,
        "client_name": "trackware",
    }
    kwargs.update(options)
    return _redis.Redis.from_url(url, **kwargs)
