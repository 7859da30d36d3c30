"""Key-name redaction (trackware/_redact.py) on its own, and as the event
walk (trackware/_validate.py) applies it: which keys are caught, the
allow-list, nested values, the verdict cache and the sizes of redacted values.
Pure unit tests: no tracker, no server."""

from __future__ import annotations

import pytest

from trackware import _redact
from trackware._redact import (
    DEFAULT_REDACT_ALLOW,
    DEFAULT_REDACT_WORDS,
    MAX_KEY_LENGTH,
    PAGE_KEYS,
    REDACTED,
    Redactor,
)
from trackware._validate import TRAITS, Invalid, sanitize, valid_subset

CAUGHT = [
    "password",
    "Password",
    "PASSWORD",
    "userPassword",
    "user_password",
    "card_number",
    "cardNumber",
    "X-Api-Key",
    "api_key",
    "apiKey",
    "APIKey",
    "apikey",
    "private-key",
    "session.key",
    "access_token",
    "refreshTokens",
    "Authorization",
    "set cookie",
    "cvv2",
    "user.ssn",
    "pin",
    "iban_code",
    "db_passwd",
    "client-secret",
    "pass_word",  # the words run together
    "CVV-2",
]
SPARED = [
    "discard",
    "cardlytics_offer",
    "tokenizer",
    "spin",
    "keyboard",
    "api",
    "key",
    "session_id",
    "private_notes",
    "api_version",
    "pandas",
    "offer_id",
    "",
]


@pytest.mark.parametrize("key", CAUGHT)
def test_keys_with_a_sensitive_word_are_redacted(key: str) -> None:
    assert Redactor()(key) is True


@pytest.mark.parametrize("key", SPARED)
def test_keys_without_one_are_kept(key: str) -> None:
    assert Redactor()(key) is False


def test_the_default_allow_list_spares_cardlytics_serve_token() -> None:
    redactor = Redactor()
    assert {"serveToken", "serve_token"} == DEFAULT_REDACT_ALLOW
    assert redactor("serveToken") is False
    assert redactor("serve_token") is False
    # Exact keys only: the same words spelt otherwise are still caught.
    assert redactor("ServeToken") is True
    assert redactor("serve_tokens") is True


def test_a_custom_allow_list_replaces_the_default() -> None:
    redactor = Redactor(allow={"csrf_token"})
    assert redactor("csrf_token") is False
    assert redactor("serveToken") is True  # no longer allowed
    assert redactor("password") is True


def test_custom_words_replace_the_defaults_and_ignore_case() -> None:
    redactor = Redactor(["Internal", "MRN"])
    assert redactor.words == {"internal", "mrn"}
    assert redactor("internalNote") is True
    assert redactor("patient_mrn") is True
    assert redactor("patientMRN") is True
    assert redactor("password") is False  # not a default any more
    assert "password" in DEFAULT_REDACT_WORDS


def test_no_words_redact_nothing_sendable() -> None:
    redactor = Redactor([])
    assert redactor("password") is False
    assert redactor("api_key") is False
    # A key that cannot be sent still answers True: the full pass rejects it.
    assert redactor("bad\ud800key") is True


def test_keys_that_cannot_be_sent_answer_true_and_long_ones_are_not_cached() -> None:
    redactor = Redactor()
    long_key = "k" * (MAX_KEY_LENGTH + 1)
    assert redactor(long_key) is True
    assert long_key not in redactor.verdicts
    assert redactor("k" * MAX_KEY_LENGTH) is False
    assert redactor("caf\udce9") is True
    assert redactor("café") is False  # non-ASCII but valid text


def test_verdicts_are_cached_and_the_cache_is_consulted_first() -> None:
    redactor = Redactor()
    assert redactor("password") is True
    assert redactor("offer_id") is False
    assert redactor.verdicts["password"] is True
    assert redactor.verdicts["offer_id"] is False
    # The cache answers before the rule does (what track()'s lookup relies on).
    redactor.verdicts["offer_id"] = True
    assert redactor("offer_id") is True


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_redact, "_CACHE_MAX", 3)
    redactor = Redactor()
    keys = [f"key_{i}" for i in range(10)] + ["password"]
    for key in keys:
        redactor(key)
    assert len(redactor.verdicts) == 3
    # Past the bound the answers are still right, just not remembered.
    assert redactor("password") is True
    assert "password" not in redactor.verdicts


def test_page_keys_clear_says_whether_any_page_key_is_redacted() -> None:
    assert Redactor().page_keys_clear is True
    assert {"path", "route", "referrer", "status"} <= PAGE_KEYS
    assert Redactor(["route"]).page_keys_clear is False
    assert Redactor(["referrer", "password"]).page_keys_clear is False
    assert Redactor(["password"]).page_keys_clear is True


def test_the_walk_redacts_at_every_depth_and_leaves_the_input_alone() -> None:
    values = {
        "user": {"name": "Ada", "password": "hunter2"},
        "cards": [{"card_number": "4111111111111111", "last4": "1111"}],
        "nested": [[{"deep": {"api_key": "k-1", "ok": 1}}]],
        "token": {"whole": "subtree"},
        "plain": "kept",
    }
    out, _ = sanitize(values, Redactor())
    assert out == {
        "user": {"name": "Ada", "password": REDACTED},
        "cards": [{"card_number": REDACTED, "last4": "1111"}],
        "nested": [[{"deep": {"api_key": REDACTED, "ok": 1}}]],
        "token": REDACTED,  # a sensitive key's whole value goes
        "plain": "kept",
    }
    # The caller's data is not touched: the walk redacts a copy.
    assert values["user"] == {"name": "Ada", "password": "hunter2"}
    assert values["token"] == {"whole": "subtree"}


def test_a_redacted_value_is_sized_as_the_placeholder() -> None:
    redactor = Redactor()
    big = "x" * 5000
    _, redacted_size = sanitize({"password": big}, redactor)
    _, kept_size = sanitize({"passage": big}, redactor)
    assert redacted_size < 100 < 5000 < kept_size
    # So a huge secret does not make the event too large: it is not sent.
    sanitize({"password": big}, redactor, limit=1000)
    with pytest.raises(Invalid, match="too large"):
        sanitize({"passage": big}, redactor, limit=1000)


def test_a_redacted_value_is_not_checked() -> None:
    """Whatever a sensitive key holds is replaced, so it cannot break a rule."""
    out, _ = sanitize({"secret": float("nan"), "pin": object()}, Redactor())
    assert out == {"secret": REDACTED, "pin": REDACTED}
    with pytest.raises(Invalid, match="NaN"):
        sanitize({"secret": float("nan")}, Redactor([]))


def test_valid_subset_redacts_what_it_keeps() -> None:
    kept, reasons = valid_subset(
        {"email_token": "t-1", "plan": "pro", "bad": float("inf")},
        Redactor(),
        TRAITS,
    )
    assert kept == {"email_token": REDACTED, "plan": "pro"}
    (reason,) = reasons
    assert reason.startswith("trait 'bad'")
