"""One bad event never fails its batch-mates, at any vendor (hardening item 14).

Each vendor takes some batches all-or-nothing (MXO ``/interactions/offline``,
Synerise ``/v4/events/batch`` and ``/v4/transactions/batch``, Cardlytics
``clientEvents``): one event the contract forbids would make the vendor
refuse the whole request. Every exporter checks each event against the
contract before it joins a batch; an event that fails is rejected alone, with
the rule it broke, and its batch-mates are delivered. These tests put a bad
event beside good ones and send them to the strict emulators over real HTTP.
"""

from __future__ import annotations

import io
import json
import logging
import pathlib
import time
import typing as t
import uuid

import pytest

from trackware import Event
from trackware.exporters import ConsoleExporter, HTTPExporter, JSONLinesExporter
from trackware.exporters._base import ExportResult
from trackware.exporters.cardlytics import ClientEventExporter
from trackware.exporters.mxo import InteractionExporter, LightweightExporter
from trackware.exporters.synerise import SyneriseExporter
from trackware.exporters.yotpo import CustomEventExporter
from trackware.testing.emulators import VendorEmulator

SITE_KEY = "ONE-NX8P2RSAAU-1813"
VISITOR = "5f0c3a1e-2b4d-4c6e-8f10-1a2b3c4d5e6f"


class Unencodable:
    """A value no JSON encoder takes."""


def unchecked(
    name: str,
    properties: dict[str, t.Any] | None = None,
    *,
    timestamp: float | None = None,
    **identity: t.Any,
) -> Event:
    """An event holding what ``Event()`` and ``track()`` refuse (a value JSON
    cannot encode, a time outside the years vendors can write). Exporters must
    not trust the checks on the caller's side (an event can come from a
    custom builder, a hook or a replay), so these tests build one the way the
    integrations' fast path builds page events: the tuple, unchecked."""
    fields = list(Event(name, **identity))
    if properties is not None:
        fields[2] = properties
    if timestamp is not None:
        fields[9] = timestamp
    return t.cast(Event, tuple.__new__(Event, tuple(fields)))


@pytest.fixture
def emu() -> t.Iterator[VendorEmulator]:
    with VendorEmulator() as emulator:
        emulator.yotpo.rate_limit = None
        yield emulator


def mxo(emu: VendorEmulator, **kw: t.Any) -> InteractionExporter:
    return InteractionExporter(
        base_url=emu.url,
        client_id="mxo-client-id",
        client_secret="mxo-client-secret",
        site_key=SITE_KEY,
        default_touchpoint="web://shop",
        **kw,
    )


def synerise(emu: VendorEmulator, **kw: t.Any) -> SyneriseExporter:
    return SyneriseExporter(
        "test-synerise-api-key",
        base_url=emu.url,
        tracker_key="test-tracker-key-0001",
        **kw,
    )


def yotpo(emu: VendorEmulator, **kw: t.Any) -> CustomEventExporter:
    return CustomEventExporter(
        "yotpo-test-store",
        "yotpo-test-secret-0001",
        base_url=emu.url,
        all_events=True,
        rate_limit=None,
        **kw,
    )


def cardlytics(emu: VendorEmulator, **kw: t.Any) -> ClientEventExporter:
    return ClientEventExporter(
        base_url=emu.url,
        client_id="cardlytics-test-client",
        client_secret="cardlytics-test-secret",
        customer_id_key="hmac-key",
        mapping={"offer.viewed": "AdViewableImpression"},
        **kw,
    )


def only_rejected(result: ExportResult, bad: Event) -> str:
    """The rule ``bad`` was rejected with, after checking it was the only one
    rejected, that the exporter (not the vendor) rejected it, and that no
    event is left to retry."""
    assert [r.event for r in result.rejected] == [bad], result.rejected
    assert not result.retry, result.error
    rejection = result.rejected[0]
    assert rejection.status is None, rejection  # before sending, not a 400
    return rejection.reason


# --- the three cases of the issue ---------------------------------------------------


def test_mxo_future_timestamp_is_rejected_alone(emu: VendorEmulator) -> None:
    exporter = mxo(emu)
    now = time.time()
    good = [
        Event("cart.added", {"n": i}, anonymous_id=VISITOR, timestamp=now - 60 + i)
        for i in range(3)
    ]
    bad = Event("cart.added", {"n": 9}, anonymous_id=VISITOR, timestamp=now + 3600)
    try:
        result = exporter.export([*good[:2], bad, good[2]])
    finally:
        exporter.close()
    reason = only_rejected(result, bad)
    assert "timestamp" in reason and "future" in reason
    assert sorted(e.event_id for e in result.sent) == sorted(e.event_id for e in good)
    stored = emu.mxo.events_for("mxo.offline_batch")
    assert sorted(e["interaction"]["properties"][0]["value"] for e in stored) == [
        "0",
        "1",
        "2",
    ]


def test_mxo_slightly_future_timestamp_is_clamped_not_rejected(
    emu: VendorEmulator,
) -> None:
    """A time a few seconds ahead (an app clock slightly fast) is sent as now:
    MXO's skew allowance is not documented, so nothing in the future is sent."""
    exporter = mxo(emu)
    event = Event("cart.added", anonymous_id=VISITOR, timestamp=time.time() + 30)
    try:
        result = exporter.export([event])
    finally:
        exporter.close()
    assert result.sent == [event]
    (stored,) = emu.mxo.events_for("mxo.offline_batch")
    sent_at = stored["interaction"]["timestamp"]
    assert sent_at <= Event("x").to_dict()["timestamp"]


def test_synerise_transaction_without_products_is_rejected_alone(
    emu: VendorEmulator,
) -> None:
    exporter = synerise(emu)
    product = {"sku": "p-1", "name": "Beans", "quantity": 1, "price": 10.5}
    good = Event(
        "transaction.charge",
        {"order_id": "o-1", "revenue": 10.5, "currency": "EUR", "products": [product]},
        user_id="c-1",
    )
    bad = Event(
        "transaction.charge",
        {"order_id": "o-2", "revenue": 3.0, "currency": "EUR"},
        user_id="c-2",
    )
    try:
        result = exporter.export([good, bad])
    finally:
        exporter.close()
    reason = only_rejected(result, bad)
    assert "products" in reason and "required" in reason
    assert result.sent == [good]
    assert [t["orderId"] for t in emu.synerise.of_kind("transaction")] == ["o-1"]


def test_synerise_emulator_requires_products(emu: VendorEmulator) -> None:
    """The emulator refuses a transaction with an empty products array (the
    contract requires products; the library must never send one)."""
    import httpx

    login = httpx.post(
        emu.url + "/uauth/v2/auth/login/profile",
        json={"apiKey": "test-synerise-api-key"},
        headers={"Api-Version": "4.4"},
    )
    token = login.json()["token"]
    money = {"amount": 1.0, "currency": "EUR"}
    response = httpx.post(
        emu.url + "/v4/transactions",
        json={
            "client": {"customId": "c-1"},
            "orderId": "o-1",
            "revenue": money,
            "value": money,
            "products": [],
        },
        headers={"Api-Version": "4.4", "Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400
    assert "products" in response.text


def test_yotpo_non_uuid_event_id_becomes_a_stable_uuid(emu: VendorEmulator) -> None:
    exporter = yotpo(emu)
    bad_id = Event("order.shipped", user_id="c-1", event_id="order-42-shipped")
    good = Event("order.shipped", user_id="c-2")
    try:
        first = exporter.export([bad_id, good])
        again = exporter.export([bad_id])  # a retry: the same Yotpo id (upsert)
    finally:
        exporter.close()
    assert first.sent == [bad_id, good] and not first.rejected
    assert again.sent == [bad_id]
    ids = [e["id"] for e in emu.yotpo.events]
    assert len(ids) == 2 and emu.yotpo.upserts == 1
    derived = ids[0]
    assert str(uuid.UUID(derived)) == derived and derived != "order-42-shipped"
    assert ids[1] == good.event_id
    # The same derivation as Cardlytics' clientEventId: one id per event everywhere.
    card = cardlytics(emu)
    assert (
        card.message(
            Event(
                "offer.viewed",
                {"serveToken": "st", "section": "LatestOffers"},
                event_id="order-42-shipped",
            )
        )["clientEventId"]
        == derived
    )


# --- every event is JSON-encodable alone before it joins a batch --------------------


def test_synerise_unencodable_event_is_rejected_alone(emu: VendorEmulator) -> None:
    exporter = synerise(emu)
    good = [Event("dog.bark", {"n": i}, user_id="c-1") for i in range(2)]
    bad = unchecked("dog.bark", {"n": Unencodable()}, user_id="c-1")
    try:
        result = exporter.export([good[0], bad, good[1]])
    finally:
        exporter.close()
    assert "JSON" in only_rejected(result, bad)
    assert result.sent == good
    assert len(emu.synerise.of_kind("event")) == 2


def test_mxo_unencodable_property_is_rejected_alone(emu: VendorEmulator) -> None:
    exporter = mxo(emu)
    good = Event("cart.added", {"n": 1}, anonymous_id=VISITOR)
    bad = unchecked("cart.added", {"n": Unencodable()}, anonymous_id=VISITOR)
    try:
        result = exporter.export([bad, good])
    finally:
        exporter.close()
    assert "JSON" in only_rejected(result, bad)
    assert result.sent == [good]


def test_lightweight_non_finite_number_is_rejected_alone(emu: VendorEmulator) -> None:
    exporter = LightweightExporter(
        base_url=emu.url,
        site_key=SITE_KEY,
        default_touchpoint="web://shop",
        properties_format="object",
    )
    good = Event("cart.added", {"n": 1.5})
    bad = unchecked("cart.added", {"n": float("nan")})
    try:
        result = exporter.export([bad, good])
    finally:
        exporter.close()
    assert "JSON" in only_rejected(result, bad)
    assert result.sent == [good]


def test_cardlytics_unencodable_metadata_is_rejected_alone(
    emu: VendorEmulator,
) -> None:
    exporter = cardlytics(emu)
    meta = {"serveToken": "st-1", "section": "LatestOffers"}
    good = Event("offer.viewed", meta, user_id="c-1")
    bad = unchecked("offer.viewed", {**meta, "serveToken": "st-2\ud800"}, user_id="c-1")
    try:
        result = exporter.export([good, bad])
    finally:
        exporter.close()
    assert "JSON" in only_rejected(result, bad)
    assert result.sent == [good]
    assert [e["clientEventId"] for e in emu.cardlytics.events] == [good.event_id]


def test_http_exporter_unencodable_event_is_rejected_alone(sink: t.Any) -> None:
    for body in ("batch", "array"):
        exporter = HTTPExporter(sink.url, body=body)
        good = [Event("a", {"n": i}) for i in range(2)]
        bad = unchecked("a", {"n": Unencodable()})
        try:
            result = exporter.export([good[0], bad, good[1]])
        finally:
            exporter.close()
        assert "JSON" in only_rejected(result, bad), body
        assert result.sent == good, body
    assert len(sink.ids) == 4
    # One request per event: the bad one is decided before any request is made.
    single = HTTPExporter(sink.url, body="single")
    requests, decided = single.build_requests([good[0], bad])
    assert [r.events for r in requests] == [[good[0]]]
    assert "JSON" in only_rejected(decided, bad)


def test_local_exporters_reject_an_unencodable_event_alone(
    tmp_path: pathlib.Path,
) -> None:
    good = [Event("a", {"n": i}) for i in range(2)]
    bad = unchecked("a", {"n": Unencodable()})
    stream = io.StringIO()
    console = ConsoleExporter(stream)
    result = console.export([good[0], bad, good[1]])
    assert "JSON" in only_rejected(result, bad)
    assert result.sent == good
    assert [
        json.loads(line)["event_id"] for line in stream.getvalue().splitlines()
    ] == [e.event_id for e in good]
    path = tmp_path / "events.jsonl"
    jsonl = JSONLinesExporter(path)
    result = jsonl.export([good[0], bad, good[1]])
    assert "JSON" in only_rejected(result, bad)
    assert result.sent == good
    assert len(path.read_text().splitlines()) == 2


# --- timestamp windows --------------------------------------------------------------


def test_synerise_ai_event_before_1970_is_rejected_alone(emu: VendorEmulator) -> None:
    """AI ``eventTimestamp`` is epoch ms >= 0; an older event cannot be sent."""
    exporter = synerise(emu)
    props = {"correlationId": "frame-1", "items": ["sku-1"]}
    good = [Event("recommendation.view", props, anonymous_id=VISITOR) for _ in range(2)]
    bad = unchecked(
        "recommendation.view", props, anonymous_id=VISITOR, timestamp=-86400.0
    )
    try:
        result = exporter.export([good[0], bad, good[1]])
    finally:
        exporter.close()
    assert "eventTimestamp" in only_rejected(result, bad)
    assert result.sent == good
    assert len(emu.synerise.of_kind("ai")) == 2


@pytest.mark.parametrize("vendor", ["mxo", "yotpo", "cardlytics"])
def test_a_time_outside_four_digit_years_is_rejected_alone(
    emu: VendorEmulator, vendor: str
) -> None:
    """ISO-8601 timestamps need a four-digit year; a year-50000 time (a
    millisecond value passed as seconds, say) cannot be written as one.
    (Synerise clamps every future time to now, so it sends such an event.)"""
    make = {"mxo": mxo, "yotpo": yotpo, "cardlytics": cardlytics}
    exporter = make[vendor](emu)
    name = "offer.viewed" if vendor == "cardlytics" else "dog.bark"
    props = {"serveToken": "st", "section": "LatestOffers"}
    good = Event(name, props, user_id="c-1", anonymous_id=VISITOR)
    bad = unchecked(
        name,
        props,
        user_id="c-1",
        anonymous_id=VISITOR,
        timestamp=time.time() * 1000,
    )
    try:
        result = exporter.export([bad, good])
    finally:
        exporter.close()
    assert "time" in only_rejected(result, bad).lower()
    assert result.sent == [good]


# --- phone numbers (hardening item 12) ----------------------------------------------

from trackware.exporters import yotpo as yotpo_module  # noqa: E402


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+44 (0) 7700 900999", None, "+447700900999"),
        ("06 1234 5678", "IT", "+390612345678"),
        ("+39 06 1234 5678", None, "+390612345678"),
        ("+49 030 123456", None, "+4930123456"),
        ("07700 900123", "GB", "+447700900123"),
        ("07700 900123", "44", "+447700900123"),
        ("0044 20 7946 0018", None, "+442079460018"),
        ("+999 123", None, None),
        ("12", "GB", None),
        ("12", "IT", None),
        ("07700 900123", None, None),
        ("call me", "GB", None),
    ],
)
def test_phone_numbers_with_libphonenumber(
    raw: str, region: str | None, expected: str | None
) -> None:
    pytest.importorskip("phonenumbers")
    assert yotpo_module.normalize_phone_libphonenumber(raw, region) == expected
    assert yotpo_module.normalize_phone is yotpo_module.normalize_phone_libphonenumber


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+447700900999", None, "+447700900999"),
        ("+44 7700 900999", None, "+447700900999"),
        ("+1-415-555-2671", None, "+14155552671"),
        ("+44 (0) 7700 900999", None, None),
        ("06 1234 5678", "IT", None),
        ("0044 20 7946 0018", None, None),
        ("+999 123", None, None),
        ("12", "GB", None),
        ("+0123456789", None, None),
        ("+1234567890123456", None, None),
    ],
)
def test_phone_numbers_without_libphonenumber(
    raw: str, region: str | None, expected: str | None
) -> None:
    """The documented fallback: only numbers already in E.164 (formatting
    spaces, dashes and dots aside) are accepted; nothing is guessed."""
    assert yotpo_module.normalize_phone_strict(raw, region) == expected


def test_yotpo_phone_without_libphonenumber_is_rejected_with_the_fix(
    emu: VendorEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        yotpo_module, "normalize_phone", yotpo_module.normalize_phone_strict
    )
    exporter = yotpo(emu, default_region="IT")
    good = Event("order.shipped", phone="+39 06 1234 5678")
    bad = Event("order.shipped", phone="06 1234 5678")
    try:
        result = exporter.export([good, bad])
    finally:
        exporter.close()
    assert "trackware[phone]" in only_rejected(result, bad)
    assert result.sent == [good]
    assert [e["customer"] for e in emu.yotpo.events] == [
        {"phone_number": "+390612345678"}
    ]


def test_yotpo_phone_with_libphonenumber_and_a_default_region(
    emu: VendorEmulator,
) -> None:
    pytest.importorskip("phonenumbers")
    exporter = yotpo(emu, default_region="IT")
    events = [
        Event("order.shipped", phone="06 1234 5678"),
        Event("order.shipped", phone="+44 (0) 7700 900999"),
    ]
    bad = Event("order.shipped", phone="12")
    try:
        result = exporter.export([*events, bad])
    finally:
        exporter.close()
    assert "E.164" in only_rejected(result, bad)
    assert result.sent == events
    assert [e["customer"]["phone_number"] for e in emu.yotpo.events] == [
        "+390612345678",
        "+447700900999",
    ]


def test_core_imports_and_falls_back_without_phonenumbers() -> None:
    """phonenumbers is an extra: without it trackware imports, and Yotpo uses
    the strict fallback (checked in a fresh interpreter that cannot import it)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['phonenumbers'] = None\n"
        "import trackware\n"
        "from trackware.exporters import yotpo\n"
        "assert not yotpo.PHONE_LIBRARY\n"
        "assert yotpo.normalize_phone is yotpo.normalize_phone_strict\n"
        "assert yotpo.normalize_phone('+44 (0) 7700 900999', 'GB') is None\n"
        "assert yotpo.normalize_phone('+44 7700 900999', None) == '+447700900999'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


# --- credentials in an HTTPExporter URL (hardening item 8) --------------------------

URL_USER = "hook-user"
URL_PASSWORD = "pw-Zq81xLk0"
QUERY_KEY = "k+ey/With=odd&chars"  # percent-encoded in the URL httpx logs
QUERY_TOKEN = "tok-5a6b7c8d9e"


def credential_url(sink: t.Any) -> str:
    from urllib.parse import quote

    base = sink.url.replace("http://", f"http://{URL_USER}:{URL_PASSWORD}@")
    return f"{base}?api_key={quote(QUERY_KEY, safe='')}&token={QUERY_TOKEN}&v=2"


def test_url_credentials_never_reach_logs_reprs_or_errors(
    sink: t.Any, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Userinfo is sent as Basic auth, never in the URL; query values (all of
    them: any may be a key) are scrubbed from httpx's request line, reprs,
    errors and dead letters. Through a 200, a 401, a 500 and an echoing 400
    from a real loopback server, with httpx, httpcore and trackware at DEBUG."""
    import base64

    import trackware
    from trackware import JSONLinesDeadLetter, RetryPolicy

    for logger in ("httpx", "httpcore", "trackware"):
        caplog.set_level(logging.DEBUG, logger=logger)
    # e0: 200; e1: 401, and 401 again with re-fetched auth (rejected); e2: 500,
    # then 200 on retry; e3: a 400 whose body echoes the request (rejected).
    sink.script.extend([200, 401, 401, 500, 200, ("echo", 400)])
    exporter = HTTPExporter(credential_url(sink))
    dead = JSONLinesDeadLetter(tmp_path / "dead.jsonl")
    tracker = trackware.Tracker(
        [exporter],
        dead_letter=dead,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.02),
        flush_interval=0.01,
    )
    try:
        for i in range(4):
            tracker.track("e", {"i": i})
            assert tracker.flush(10)
        stats = str(tracker.stats())
    finally:
        tracker.shutdown(timeout=5)
    # What reached the server: Basic auth from the userinfo, the query intact.
    assert sink.requests == 6
    expected = base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode()
    assert all(h.get("Authorization") == f"Basic {expected}" for h in sink.headers)
    records = dead.read()
    assert [r["status"] for r in records] == [401, 400]
    # The echo really carried the query string and the header (so this test
    # can fail) ...
    assert "api_key=" in records[1]["response"]
    assert "Authorization" in records[1]["response"]
    # ... and nothing we produced holds a secret.
    assert any("HTTP Request:" in r.getMessage() for r in caplog.records)
    texts = [
        "\n".join(r.getMessage() for r in caplog.records),
        caplog.text,
        (tmp_path / "dead.jsonl").read_text(),
        repr(exporter),
        repr(tracker),
        stats,
    ]
    from urllib.parse import quote, quote_plus

    secrets = [URL_PASSWORD, QUERY_TOKEN, QUERY_KEY, quote(QUERY_KEY, safe="")]
    secrets += [quote_plus(QUERY_KEY), expected]
    for text in texts:
        for secret in secrets:
            assert secret not in text, (secret, text[:2000])
    assert "***" in repr(exporter) and "127.0.0.1" in repr(exporter)


def test_url_credentials_are_not_in_configuration_errors() -> None:
    from trackware.exceptions import ConfigurationError

    for url in (
        f"ftp://{URL_USER}:{URL_PASSWORD}@example.com/x?token={QUERY_TOKEN}",
        f"//{URL_USER}:{URL_PASSWORD}@example.com/x?token={QUERY_TOKEN}",
    ):
        with pytest.raises(ConfigurationError) as info:
            HTTPExporter(url)
        message = str(info.value)
        assert URL_PASSWORD not in message and QUERY_TOKEN not in message
        assert "https://" in message  # still says what to fix
    with pytest.raises(ConfigurationError) as info:
        HTTPExporter(
            f"https://{URL_USER}:{URL_PASSWORD}@example.com/x",
            headers={"Authorization": "Bearer other-token-123"},
        )
    assert URL_PASSWORD not in str(info.value)
    assert "Authorization" in str(info.value)


# --- more rules checked per event (vendor-apis.md §7) -------------------------------


def test_cardlytics_ids_differing_only_in_case_do_not_fail_the_batch(
    emu: VendorEmulator,
) -> None:
    """Cardlytics compares clientEventIds case-insensitively: two ids that
    differ only in case would be duplicates and fail the whole request."""
    exporter = cardlytics(emu)
    meta = {"serveToken": "st-1", "section": "LatestOffers"}
    base = "0b9c2c5e-4f4a-4c1e-9a43-6f2d1c7e8a90"
    upper = Event("offer.viewed", meta, user_id="c-1", event_id=base.upper())
    lower = Event("offer.viewed", meta, user_id="c-1", event_id=base)
    other = Event("offer.viewed", meta, user_id="c-1")
    try:
        result = exporter.export([upper, lower, other])
    finally:
        exporter.close()
    assert not result.rejected and not result.retry
    assert result.sent == [upper, lower, other]
    assert sorted(e["clientEventId"] for e in emu.cardlytics.events) == sorted(
        [base, other.event_id]
    )


def test_cardlytics_unhashable_enum_value_is_rejected_alone(
    emu: VendorEmulator,
) -> None:
    exporter = cardlytics(emu)
    good = Event("offer.viewed", {"serveToken": "st", "section": "Landing"})
    bad = Event("offer.viewed", {"serveToken": "st", "section": ["Landing"]})
    try:
        result = exporter.export([bad, good])
    finally:
        exporter.close()
    assert "section" in only_rejected(result, bad)
    assert result.sent == [good]


def test_synerise_non_ascii_digit_profile_id_is_rejected_alone(
    emu: VendorEmulator,
) -> None:
    exporter = synerise(emu, client_id_trait="synerise_id")
    good = Event("dog.bark", user_id="c-1", traits={"synerise_id": "12"})
    bad = Event("dog.bark", user_id="c-2", traits={"synerise_id": "\uff11\uff12"})
    try:
        result = exporter.export([bad, good])
    finally:
        exporter.close()
    assert "client.id" in only_rejected(result, bad)
    assert result.sent == [good]
    assert [e["client"]["id"] for e in emu.synerise.of_kind("event")] == [12]


def test_vendor_urls_with_credentials_are_redacted() -> None:
    """Every HTTP exporter's repr, and MXO's token_url error, hide what a URL
    may carry."""
    from trackware.exceptions import ConfigurationError

    exporter = LightweightExporter(
        base_url=f"https://{URL_USER}:{URL_PASSWORD}@mxo.example.com",
        site_key=SITE_KEY,
        default_touchpoint="web://shop",
    )
    assert URL_PASSWORD not in repr(exporter) and "***@mxo.example.com" in repr(
        exporter
    )
    with pytest.raises(ConfigurationError) as info:
        InteractionExporter(
            base_url="https://mxo.example.com",
            client_id="mxo-client-id",
            client_secret="mxo-client-secret",
            site_key=SITE_KEY,
            default_touchpoint="web://shop",
            token_url=f"ftp://{URL_USER}:{URL_PASSWORD}@mxo.example.com/t",
        )
    assert URL_PASSWORD not in str(info.value) and "token_url" in str(info.value)


def test_a_url_user_name_is_scrubbed_when_it_may_be_a_key() -> None:
    """A key passed as the user name (``https://sk_live_...:@host``) is
    scrubbed; a short user name beside a password (admin) is not, since
    scrubbing it would mangle every log line with the word."""
    from trackware import _log

    HTTPExporter("https://sk_live_Ab12Cd34Ef56:@hooks.example.com/in")
    HTTPExporter("https://admin:pw-7Hq2Lx9Kd4@hooks.example.com/in")
    assert _log.scrub("key sk_live_Ab12Cd34Ef56") == "key ***"
    assert _log.scrub("pw-7Hq2Lx9Kd4 for admin") == "*** for admin"


def test_synerise_event_naming_nobody_is_not_applicable(emu: VendorEmulator) -> None:
    """Synerise keeps every event on a profile: one with no user id, email,
    visitor id or profile id (a background job's event) cannot be sent by
    design and is not_applicable; a visitor id that is not a UUID is a
    rejection (someone can fix it)."""
    exporter = synerise(emu)
    good = Event("dog.bark", user_id="c-1")
    nobody = Event("dog.bark", {"n": 1})
    not_uuid = Event("dog.bark", anonymous_id="visitor-7")
    try:
        result = exporter.export([nobody, not_uuid, good])
    finally:
        exporter.close()
    assert result.skipped == [nobody]
    assert "client" in only_rejected(result, not_uuid)
    assert result.sent == [good]


def test_a_404_from_the_token_endpoint_is_a_wrong_url_not_bad_credentials(
    tmp_path: t.Any,
) -> None:
    """A base URL with a wrong path makes the token endpoint answer 404: the
    dead letter says the URL is wrong, and does not blame the credentials."""
    import trackware
    from trackware import JSONLinesDeadLetter, RetryPolicy
    from trackware.exporters.synerise import SyneriseExporter
    from trackware.exporters.yotpo import CustomEventExporter
    from trackware.testing.emulators import VendorEmulator

    with VendorEmulator() as emu:
        wrong = emu.url + "/no-such-prefix"
        dead = JSONLinesDeadLetter(tmp_path / "dead.jsonl")
        tracker = trackware.Tracker(
            [
                CustomEventExporter(
                    "yotpo-test-store",
                    "yotpo-test-secret-0001",
                    base_url=wrong,
                    event_names={"order.shipped": "order_shipped"},
                    rate_limit=None,
                ),
                SyneriseExporter(api_key="test-synerise-api-key", base_url=wrong),
            ],
            dead_letter=dead,
            retry=RetryPolicy(base_delay=0.01, max_delay=0.02),
            flush_interval=0.01,
            register_atexit=False,
        )
        tracker.track("order.shipped", {"n": 1}, user_id="c-1")
        assert tracker.flush(10)
        tracker.shutdown(timeout=2)
    records = dead.read()
    assert {r["destination"] for r in records} == {"yotpo", "synerise"}
    for record in records:
        assert record["status"] == 404, record
        assert record["reason"].startswith("not found"), record["reason"]
        assert "authentication refused" not in record["reason"]
        assert "API secret" not in record["reason"]


@pytest.mark.parametrize("vendor", ["cardlytics", "synerise"])
def test_a_mapping_bug_costs_its_event_only_and_is_logged(
    vendor: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception while mapping one event (a bug, or a user
    mapping's surprise) rejects that event alone, named by vendor, with its
    traceback logged; the batch-mate is still built."""
    from trackware.exporters.cardlytics import ClientEventExporter
    from trackware.exporters.synerise import SyneriseExporter

    exporter: t.Any
    if vendor == "cardlytics":

        class BrokenCardlytics(ClientEventExporter):
            def message(self, event: Event) -> dict[str, t.Any]:
                if event.name == "offer.boom":
                    raise RuntimeError("mapping bug")
                return super().message(event)

        exporter = BrokenCardlytics(
            base_url="http://127.0.0.1:9",
            client_id="cardlytics-test-client",
            client_secret="cardlytics-test-secret",
            customer_id_key="hmac-key",
            mapping={"offer.fine": "ActivateOffer", "offer.boom": "ActivateOffer"},
            session_event=None,
        )
        props = {"serveToken": "st-1", "section": "LatestOffers"}
    else:

        class BrokenSynerise(SyneriseExporter):
            def _v4_event(self, event: Event, *args: t.Any) -> dict[str, t.Any]:
                if event.name == "offer.boom":
                    raise RuntimeError("mapping bug")
                return super()._v4_event(event, *args)

        exporter = BrokenSynerise(
            api_key="test-synerise-api-key",
            base_url="http://127.0.0.1:9",
            actions={"offer.fine": "offer.fine", "offer.boom": "offer.boom"},
        )
        props = {"n": 1}
    good = Event("offer.fine", props, user_id="c-1")
    boom = Event("offer.boom", props, user_id="c-1")
    with caplog.at_level(logging.ERROR, logger="trackware"):
        requests, result = exporter.build_requests([boom, good])
    assert [e for r in requests for e in r.events] == [good]
    (rejection,) = result.rejected
    assert rejection.event is boom
    assert rejection.reason == f"{vendor} mapping error: RuntimeError: mapping bug"
    assert "could not map event 'offer.boom'" in caplog.text
    exporter.close()
