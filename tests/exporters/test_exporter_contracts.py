"""What every exporter promises the engine, checked for each vendor exporter:
a forked child gets working locks, ``events=`` is honoured, and credentials
that an ``auth`` callable returns never reach the logs."""

from __future__ import annotations

import logging
import os
import threading
import typing as t

import pytest

from trackware import Event, _log
from trackware.exporters import HTTPExporter
from trackware.exporters.mxo import InteractionExporter
from trackware.exporters.synerise import SyneriseExporter
from trackware.exporters.yotpo import CustomEventExporter


def _mxo() -> InteractionExporter:
    return InteractionExporter(
        base_url="http://127.0.0.1:9",
        client_id="mxo-client",
        client_secret="mxo-secret-for-fork",
        site_key="ONE-NX8P2RSAAU-1813",
        default_touchpoint="api://shop",
    )


def _synerise() -> SyneriseExporter:
    return SyneriseExporter("synerise-key-for-fork", base_url="http://127.0.0.1:9")


def _locks(exporter: t.Any) -> list[t.Any]:
    """The locks a parent thread may hold while the process forks."""
    locks = [exporter._tokens._lock]
    for name in ("_tids_lock", "_clamp_lock"):
        if hasattr(exporter, name):
            locks.append(getattr(exporter, name))
    return locks


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("make", [_mxo, _synerise], ids=["mxo", "synerise"])
def test_a_forked_child_gets_free_locks(make: t.Callable[[], t.Any]) -> None:
    exporter = make()
    held = _locks(exporter)
    release = threading.Event()
    holding = threading.Barrier(2)

    def holder() -> None:  # another thread in the middle of a token fetch
        for lock in held:
            lock.acquire()
        holding.wait()
        release.wait()
        for lock in held:
            lock.release()

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait()
    try:
        pid = os.fork()
        if pid == 0:  # the child: the holder thread does not exist here
            code = 1
            try:
                exporter.after_fork()
                if all(lock.acquire(timeout=2) for lock in _locks(exporter)):
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        thread.join()
    assert os.waitstatus_to_exitcode(status) == 0


def test_yotpo_honours_events_like_every_exporter() -> None:
    exporter = CustomEventExporter(
        "store-1",
        secret="yotpo-secret",
        all_events=True,
        events=["order.shipped"],
        base_url="http://127.0.0.1:9",
    )
    assert exporter.applies(Event("order.shipped"))
    assert not exporter.applies(Event("page"))  # all_events, but not listed


def test_a_token_from_the_auth_callable_is_scrubbed_from_logs() -> None:
    token = "tok-from-callable-3b9f1e"
    exporter = HTTPExporter(
        "http://127.0.0.1:9/events",
        auth=lambda: {"Authorization": f"Bearer {token}"},
    )
    credentials = exporter.credentials(None)  # type: ignore[arg-type]
    assert credentials is not None
    assert credentials(False) == {"Authorization": f"Bearer {token}"}
    scrubbed = _log.scrub(f"vendor said: invalid token {token}")
    assert token not in scrubbed


def test_formats_are_checked_to_the_very_end() -> None:
    """``$`` would also match before a final newline; ``\\Z`` does not."""
    from trackware.exporters.mxo._mapping import SITE_KEY_RE
    from trackware.exporters.synerise import _mapping as synerise
    from trackware.exporters.yotpo import _phone as yotpo
    from trackware.integrations import _cookies

    patterns = {
        SITE_KEY_RE: "ONE-NX8P2RSAAU-1813",
        synerise.ACTION_RE: "product.view",
        synerise._UUID_RE: "0f8fad5b-d9cb-469f-a165-70867728950e",
        yotpo._E164_RE: "+48123456789",
        _cookies.VISITOR_RE: "0123456789abcdef0123456789abcdef",
        _cookies.TID_RE: "0f8fad5b-d9cb-469f",
    }
    for pattern, good in patterns.items():
        assert pattern.match(good), pattern.pattern
        assert not pattern.match(good + "\n"), pattern.pattern
    assert not yotpo._E164_RE.match("+4812345678\u0669")  # an Arabic-Indic digit


def test_auth_error_and_contract_violation_are_trackware_errors() -> None:
    """One ``except TrackwareError`` catches them; ContractViolation stays a
    ValueError; both live in trackware.exceptions (and AuthError is public)."""
    import trackware
    from trackware import TrackwareError
    from trackware.exceptions import AuthError, ContractViolation

    assert issubclass(AuthError, TrackwareError)
    assert issubclass(ContractViolation, TrackwareError)
    assert issubclass(ContractViolation, ValueError)
    assert trackware.AuthError is AuthError
    assert ContractViolation.__module__ == "trackware.exceptions"
    assert AuthError.__module__ == "trackware.exceptions"
    error = AuthError("refused", retryable=False, status=401, body="no")
    assert (error.retryable, error.status, error.body) == (False, 401, "no")


def test_the_http_retry_vocabulary() -> None:
    """Retryable statuses, ``Retry-After`` (seconds or HTTP date) and
    ``RateLimit-Reset`` (delta seconds or an epoch timestamp) as a floor."""
    import email.utils
    import time

    from trackware.exporters._http import (
        RETRYABLE_STATUSES,
        parse_retry_after,
        retry_floor,
    )

    assert {408, 425, 429, 500, 502, 503, 504} == RETRYABLE_STATUSES
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after(date, now=1_000_000.0) == 30.0
    assert parse_retry_after(date, now=2_000_000.0) == 0.0
    assert retry_floor({}) is None
    assert retry_floor({"retry-after": "5", "ratelimit-reset": "9"}) == 9.0
    assert retry_floor({"retry-after": "5", "x-ratelimit-reset": "2"}) == 5.0
    assert retry_floor({"ratelimit-reset": "later"}) is None
    epoch = retry_floor({"ratelimit-reset": str(time.time() + 60)})
    assert epoch is not None and 0 < epoch <= 60


def test_env_options_reads_prefixed_variables(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The one from_env helper: stripped values, empty as unset, overrides win,
    every missing required variable named, misspelt names reported."""
    from trackware.exceptions import ConfigurationError
    from trackware.exporters._base import env_options

    env = {
        "TRACKWARE_MXO_BASE_URL": " https://mxo.example ",
        "TRACKWARE_MXO_SITE_KEY": "   ",
        "TRACKWARE_MXO_CUSTOMER_KEY": "email",
        "TRACKWARE_MXO_SIET_KEY_FOR_TEST": "x",
    }
    with caplog.at_level(logging.WARNING, logger="trackware"):
        kwargs = env_options(
            "Vendor",
            env,
            prefix="TRACKWARE_MXO_",
            required={"BASE_URL": "base_url", "SITE_KEY": "site_key"},
            optional={"CUSTOMER_KEY": "customer_key", "TOKEN_URL": "token_url"},
            overrides={"site_key": "ONE-1", "name": "mine"},
        )
    assert kwargs == {
        "base_url": "https://mxo.example",
        "customer_key": "email",
        "site_key": "ONE-1",
        "name": "mine",
    }
    assert "TRACKWARE_MXO_SIET_KEY_FOR_TEST" in caplog.text
    with pytest.raises(ConfigurationError) as info:
        env_options(
            "Vendor",
            env,
            prefix="TRACKWARE_MXO_",
            required={"SITE_KEY": "site_key", "CLIENT_ID": "client_id"},
            overrides={"customer_key": "user_id"},
            hint=" (the Space's keys)",
        )
    message = str(info.value)
    assert message.startswith("Vendor.from_env: set the environment variable(s) ")
    assert "TRACKWARE_MXO_SITE_KEY, TRACKWARE_MXO_CLIENT_ID (the Space's" in message
