"""The Yotpo limiter shared through Redis (trackware worker): two limiters of
one store, as two worker processes would hold, share 5 requests/s and
Yotpo's pauses; without Redis each falls back to its own bucket."""

from __future__ import annotations

import threading
import typing as t
import uuid

import pytest

from trackware.exporters.yotpo import _limiter
from trackware.exporters.yotpo._limiter import StoreLimiter

if t.TYPE_CHECKING:
    import redis


@pytest.fixture
def shared(redis_client: redis.Redis, redis_namespace: str) -> t.Iterator[str]:
    _limiter.share_through_redis(redis_client, redis_namespace)
    try:
        yield f"store-{uuid.uuid4().hex[:8]}"
    finally:
        _limiter.stop_sharing()


def test_two_limiters_of_one_store_share_the_tokens(
    shared: str, redis_client: redis.Redis, redis_namespace: str
) -> None:
    one, two = StoreLimiter(shared), StoreLimiter(shared)
    never = threading.Event()
    tickets = [(one if i % 2 else two).acquire(5, 1.0, never) for i in range(5)]
    assert all(tickets)
    key = f"trackware:{redis_namespace}:limit:yotpo:{shared}"
    assert redis_client.zcard(key) == 5
    # The sixth waits (both limiters: the tokens are in flight), until stopped.
    stop = threading.Event()
    stop.set()
    assert one.acquire(5, 1.0, stop) is None
    assert two.acquire(5, 1.0, stop) is None
    for n, ticket in enumerate(tickets):
        assert ticket is not None
        (one if n % 2 else two).release(ticket)
    # Released tokens come back a period after their request ended: the next
    # acquire waited for the first to be a period old, which was then
    # forgotten; the new token is in flight (it counts until released, or
    # until its lease ends).
    assert one.acquire(5, 0.3, never) is not None
    ends = [end for _, end in redis_client.zrange(key, 0, -1, withscores=True)]
    assert len(ends) < 6  # at least one released token was forgotten
    end = max(ends)
    seconds, micros = redis_client.time()
    assert end - (seconds * 1000 + micros / 1000) > _limiter.SHARED_LEASE * 1000 - 5000


def test_a_pause_yotpo_asked_for_holds_for_every_limiter(shared: str) -> None:
    one, two = StoreLimiter(shared), StoreLimiter(shared)
    assert two.blocked_for() == 0.0
    one.block(2.0)
    assert 1.0 < two.blocked_for() <= 2.0
    stop = threading.Event()
    stop.set()
    assert two.acquire(5, 1.0, stop) is None


def test_without_redis_each_limiter_paces_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from _support import free_port

    from trackware._streams import connect

    dead = connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    _limiter.share_through_redis(dead, "nowhere")
    try:
        limiter = StoreLimiter("s")
        never = threading.Event()
        tickets = [limiter.acquire(2, 1.0, never) for _ in range(2)]
        assert all(tickets)
        stop = threading.Event()
        stop.set()
        assert limiter.acquire(2, 1.0, stop) is None  # its own bucket is full
    finally:
        _limiter.stop_sharing()
        dead.close()
    assert "could not reach Redis" in caplog.text
