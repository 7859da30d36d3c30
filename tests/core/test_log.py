"""The ``trackware`` logger on its own (trackware/_log.py): the secret
registry and scrubbing of every record, and the rate limit of warn()/error().
Pure unit tests: each starts with an empty registry and throttle, and the
throttle's clock is a fake one (no test waits)."""

from __future__ import annotations

import collections
import logging

import pytest

from trackware import _log


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_log, "_secrets", collections.OrderedDict())
    monkeypatch.setattr(_log, "_by_length", ())
    monkeypatch.setattr(_log, "_throttle", _log._Throttle())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(_log.time, "monotonic", fake)
    return fake


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trackware"]


def test_registered_secrets_are_scrubbed_longest_first() -> None:
    _log.register_secret("abcd1234")
    _log.register_secret("abcd1234-extended")
    _log.register_secret(b"bytes-secret")
    assert _log.scrub("a abcd1234-extended b abcd1234 c") == "a *** b *** c"
    assert _log.scrub("token=bytes-secret;") == "token=***;"
    assert _log.scrub("nothing here") == "nothing here"


def test_short_and_missing_values_are_not_registered() -> None:
    _log.register_secret(None)
    _log.register_secret("abc")  # under 4 characters: would mangle text
    _log.register_secret("")
    assert _log.scrub("abc abcdef") == "abc abcdef"
    _log.register_secret("abcd")
    assert _log.scrub("abc abcdef") == "abc ***ef"


def test_the_registry_is_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_log, "_MAX_SECRETS", 2)
    for value in ("first-secret", "second-secret", "third-secret"):
        _log.register_secret(value)
    _log.register_secret("second-secret")  # already known: no change
    assert list(_log._secrets) == ["second-secret", "third-secret"]
    assert _log.scrub("first-secret second-secret third-secret") == (
        "first-secret *** ***"
    )


def test_records_are_scrubbed_before_any_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _log.register_secret("s3cr3t-value")
    with caplog.at_level(logging.INFO, logger="trackware"):
        _log.logger.info("sending with %s to %s", "s3cr3t-value", "the vendor")
        try:
            raise ValueError("the vendor echoed s3cr3t-value")
        except ValueError:
            _log.logger.error("delivery failed", exc_info=True)
    first, second = caplog.records
    assert first.getMessage() == "sending with *** to the vendor"
    assert first.args is None  # formatted once, then scrubbed
    # The exception is reduced to its type and scrubbed message.
    assert second.getMessage() == "delivery failed (ValueError: the vendor echoed ***)"
    assert second.exc_info is None
    assert "s3cr3t-value" not in caplog.text


def test_records_are_left_alone_while_no_secret_is_registered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="trackware"):
        _log.logger.info("value %s", 42)
    (record,) = caplog.records
    assert record.args == (42,)
    assert record.getMessage() == "value 42"


def test_warn_logs_once_per_key_per_interval_and_counts_the_rest(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="trackware"):
        for _ in range(4):
            _log.warn("vendor-down", "trackware: vendor %s is down", "x")
        _log.warn("other-key", "trackware: another problem")
        clock.now += 29.0
        _log.warn("vendor-down", "trackware: vendor %s is down", "x")
        clock.now += 1.5  # 30.5 s after the first: allowed again
        _log.warn("vendor-down", "trackware: vendor %s is down", "x")
        _log.warn("vendor-down", "trackware: vendor %s is down", "x")
        clock.now += 31.0
        _log.warn("vendor-down", "trackware: vendor %s is down", "x")
    assert messages(caplog) == [
        "trackware: vendor x is down",
        "trackware: another problem",
        "trackware: vendor x is down (4 similar messages suppressed)",
        "trackware: vendor x is down (1 similar messages suppressed)",
    ]
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 4


def test_error_passes_the_traceback_and_its_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="trackware"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            _log.error("k", "trackware: failed", exc_info=True)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[1] is not None
    assert str(record.exc_info[1]) == "boom"


def test_a_disabled_level_does_not_use_up_the_interval(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="trackware"):
        _log.warn("k", "trackware: not shown")
    with caplog.at_level(logging.WARNING, logger="trackware"):
        _log.warn("k", "trackware: shown")
    assert messages(caplog) == ["trackware: shown"]


def test_the_throttle_table_is_bounded(clock: Clock) -> None:
    throttle = _log._Throttle()
    assert throttle.allow("a") == (True, 0)
    assert throttle.allow("a") == (False, 0)
    for i in range(1100):
        throttle.allow(f"key-{i}")
    assert len(throttle._last) <= 1025
    # Starting over forgets "a": it is allowed again at once, with no count.
    assert throttle.allow("a") == (True, 0)
