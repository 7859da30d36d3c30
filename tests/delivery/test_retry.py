"""RetryPolicy (backoff, jitter bounds, floors, validation) and CircuitBreaker
(closed / open / half-open, with the clock passed in)."""

from __future__ import annotations

import random

import pytest

from trackware import ConfigurationError, RetryPolicy
from trackware._retry import CircuitBreaker


@pytest.fixture
def top_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jitter always draws the top of its range: backoff() returns its ceiling."""
    monkeypatch.setattr(random, "uniform", lambda a, b: b)


def test_backoff_ceiling_doubles_per_attempt_up_to_max_delay(
    top_of_range: None,
) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0)
    assert [policy.backoff(n) for n in range(1, 9)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]
    # A huge attempt number neither overflows nor passes the cap.
    assert policy.backoff(10_000) == 30.0


def test_backoff_is_full_jitter_between_zero_and_the_ceiling() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=100.0)
    random.seed(1234)
    delays = [policy.backoff(3) for _ in range(2000)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    # Spread over the whole range, not a constant.
    assert min(delays) < 0.5
    assert max(delays) > 3.5


def test_a_retry_after_floor_lifts_the_delay(top_of_range: None) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0, max_retry_after=300.0)
    assert policy.backoff(1, 10.0) == 10.0
    # The jittered delay wins when it is longer than the floor.
    assert policy.backoff(7, 10.0) == 30.0
    assert policy.backoff(1, 0.0) == 0.5


def test_a_retry_after_floor_is_capped_by_max_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "uniform", lambda a, b: a)
    policy = RetryPolicy(max_retry_after=300.0)
    assert policy.backoff(1, 86_400.0) == 300.0
    assert policy.backoff(1, 12.5) == 12.5
    assert policy.backoff(1) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_retry_time": -1}, "max_retry_time"),
        ({"base_delay": -0.1}, "base_delay"),
        ({"max_delay": -1}, "max_delay"),
        ({"open_for": -1}, "open_for"),
        ({"max_open_for": -1}, "max_open_for"),
        ({"failure_threshold": 0}, "failure_threshold"),
    ],
)
def test_bad_settings_are_configuration_errors_naming_the_field(
    kwargs: dict[str, float], field: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"RetryPolicy.{field}"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_unlimited_attempts_and_zero_delays_are_valid() -> None:
    policy = RetryPolicy(max_attempts=None, base_delay=0, max_delay=0)
    assert policy.max_attempts is None
    assert policy.backoff(5) == 0.0


# --- circuit breaker ------------------------------------------------------------------
POLICY = RetryPolicy(failure_threshold=3, open_for=5.0, max_open_for=18.0)


def test_the_circuit_opens_after_threshold_consecutive_failures() -> None:
    breaker = CircuitBreaker(POLICY)
    assert breaker.state == CircuitBreaker.CLOSED
    breaker.record_failure(100.0)
    breaker.record_failure(101.0)
    assert breaker.state == CircuitBreaker.CLOSED
    assert breaker.allow(101.0)
    breaker.record_failure(102.0)
    assert breaker.state == CircuitBreaker.OPEN
    assert breaker.open_until == 107.0
    assert not breaker.allow(102.0)
    assert not breaker.allow(106.999)


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(POLICY)
    breaker.record_failure(1.0)
    breaker.record_failure(2.0)
    breaker.record_success()
    breaker.record_failure(3.0)
    breaker.record_failure(4.0)
    assert breaker.state == CircuitBreaker.CLOSED
    assert breaker.failures == 2


def open_breaker(at: float) -> CircuitBreaker:
    breaker = CircuitBreaker(POLICY)
    for _ in range(POLICY.failure_threshold):
        breaker.record_failure(at)
    assert breaker.state == CircuitBreaker.OPEN
    return breaker


def test_when_the_open_period_ends_one_probe_is_allowed_half_open() -> None:
    breaker = open_breaker(0.0)
    assert breaker.allow(5.0)
    assert breaker.state == CircuitBreaker.HALF_OPEN


def test_a_successful_probe_closes_the_circuit() -> None:
    breaker = open_breaker(0.0)
    assert breaker.allow(5.0)
    breaker.record_success()
    assert breaker.state == CircuitBreaker.CLOSED
    assert breaker.failures == 0
    assert breaker.allow(5.0)
    # Closed again: it takes the full threshold to open, for open_for again.
    breaker.record_failure(10.0)
    breaker.record_failure(10.0)
    assert breaker.state == CircuitBreaker.CLOSED
    breaker.record_failure(10.0)
    assert breaker.open_until == 15.0


def test_each_failed_probe_doubles_the_open_period_up_to_the_cap() -> None:
    breaker = open_breaker(0.0)
    now = 0.0
    periods = []
    for _ in range(4):
        now = breaker.open_until
        assert breaker.allow(now)
        assert breaker.state == CircuitBreaker.HALF_OPEN
        breaker.record_failure(now)
        assert breaker.state == CircuitBreaker.OPEN
        assert not breaker.allow(now)
        periods.append(breaker.open_until - now)
    assert periods == [10.0, 18.0, 18.0, 18.0]
    # A success after all that starts over from open_for.
    assert breaker.allow(breaker.open_until)
    breaker.record_success()
    for _ in range(POLICY.failure_threshold):
        breaker.record_failure(1_000.0)
    assert breaker.open_until == 1_005.0


def test_blocked_until_is_the_end_of_the_open_period_only_while_open() -> None:
    breaker = CircuitBreaker(POLICY)
    assert breaker.blocked_until() == 0.0
    breaker = open_breaker(10.0)
    assert breaker.blocked_until() == 15.0
    assert breaker.allow(15.0)  # half-open: the probe may go
    assert breaker.blocked_until() == 0.0
    breaker.record_failure(15.0)
    assert breaker.blocked_until() == 25.0
