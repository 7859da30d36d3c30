"""TrackwareMiddleware: every cookie it reads back (visitor, session, MXO tid)
is signed and verified; forged ones are ignored, never trusted or echoed;
``cookie_secret`` takes several keys for rotation; no key, no start.

Cookies are signed by a reference implementation of the documented scheme
(README, "Cookies"), not by the engine under test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import typing as t
import uuid

import httpx
import hypothesis
import pytest
from _support import (
    COOKIE_OTHER_SECRET,
    COOKIE_RETIRED_SECRET,
    VICTIM_SID,
    VICTIM_TID,
    VICTIM_VID,
    cookie_forgeries,
    session_payload,
)
from _support import sign_cookie as sign
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import trackware
from trackware import ConfigurationError
from trackware.integrations._cookies import CookieSigner
from trackware.integrations.asgi import TrackwareMiddleware

SECRET = "asgi-cookie-secret-for-tests"
OTHER = COOKIE_OTHER_SECRET
OLD = "last-years-secret-key"
RETIRED = COOKIE_RETIRED_SECRET


def plain(name: str) -> str:
    return {"tw_vid": VICTIM_VID, "tw_tid": VICTIM_TID}.get(name) or session_payload()


FORGERIES = cookie_forgeries(SECRET)


def make_app() -> Starlette:
    async def home(request: Request) -> Response:
        trackware.track("home.viewed")
        return PlainTextResponse("home")

    return Starlette(routes=[Route("/", home)])


async def _send(
    app: t.Any, cookie: str | None, client: httpx.AsyncClient | None = None
) -> httpx.Response:
    headers = [(b"cookie", cookie.encode("latin-1"))] if cookie else []
    if client is not None:
        return await client.get("/", headers=headers)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
        return await c.get("/", headers=headers)


def send(app: t.Any, **cookies: str) -> httpx.Response:
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    return asyncio.run(_send(app, header or None))


def set_cookies(response: httpx.Response) -> dict[str, str]:
    out = {}
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        out[name] = rest
    return out


def value_of(rest: str) -> str:
    return rest.split(";", 1)[0]


def assert_not_echoed(forged: str, response: httpx.Response, recorder: t.Any) -> None:
    everything = " ".join(response.headers.get_list("set-cookie"))
    everything += " ".join(repr(e.to_dict()) for e in recorder.events())
    assert forged not in everything
    assert "<script>" not in everything and "\xe9" not in everything


def tracked(recorder: t.Any, **options: t.Any) -> TrackwareMiddleware:
    options.setdefault("cookie_secret", SECRET)
    return TrackwareMiddleware(make_app(), tracker=recorder.tracker, **options)


def test_genuine_cookies_signed_as_documented_are_accepted(recorder: t.Any) -> None:
    app = tracked(recorder, tid_source=lambda anonymous_id: None)
    response = send(
        app,
        tw_vid=sign(SECRET, "tw_vid", VICTIM_VID),
        tw_sid=sign(SECRET, "tw_sid", session_payload()),
        tw_tid=sign(SECRET, "tw_tid", VICTIM_TID),
    )
    events = recorder.events()
    assert [e.name for e in events] == ["home.viewed", "page"]
    for event in events:
        assert event.anonymous_id == VICTIM_VID
        assert event.context["session_id"] == VICTIM_SID
        assert event.context["mxo_tid"] == VICTIM_TID
    cookies = set_cookies(response)
    assert set(cookies) == {"tw_sid"}  # only the session's last-seen time
    renewed = value_of(cookies["tw_sid"])
    assert renewed == sign(SECRET, "tw_sid", renewed.rsplit(".", 1)[0])


def test_cookies_it_sets_are_signed_as_documented(recorder: t.Any) -> None:
    app = tracked(recorder, tid_source=lambda anonymous_id: VICTIM_TID)
    cookies = set_cookies(send(app))
    [page] = recorder.pages()
    assert page.anonymous_id is not None
    assert value_of(cookies["tw_vid"]) == sign(SECRET, "tw_vid", page.anonymous_id)
    assert value_of(cookies["tw_tid"]) == sign(SECRET, "tw_tid", VICTIM_TID)
    session = value_of(cookies["tw_sid"])
    assert session.startswith(page.context["session_id"] + ".")
    assert session == sign(SECRET, "tw_sid", session.rsplit(".", 1)[0])


@pytest.mark.parametrize("rotation", [False, True], ids=["one key", "rotated keys"])
@pytest.mark.parametrize("forgery", list(FORGERIES), ids=list(FORGERIES))
def test_forged_cookies_are_ignored_never_trusted_or_echoed(
    recorder: t.Any, forgery: str, rotation: bool
) -> None:
    """Each of the three cookies forged alone, with one key and with a key list
    (the forgeries' keys are none of the list's)."""
    keys = ["this-years-key", SECRET.upper(), OLD] if rotation else SECRET
    signing_key = keys[0] if isinstance(keys, list) else keys
    app = tracked(recorder, cookie_secret=keys, tid_source=lambda anonymous_id: None)
    genuine = {
        name: sign(signing_key, name, plain(name))
        for name in ("tw_vid", "tw_sid", "tw_tid")
    }
    for name in genuine:
        recorder.clear()
        forged = FORGERIES[forgery](name, plain(name))
        if rotation and forgery == "the signature of another cookie":
            forged = sign(OLD, "tw_tid" if name != "tw_tid" else "tw_vid", plain(name))
        response = send(app, **{**genuine, name: forged})
        events = recorder.events()
        cookies = set_cookies(response)
        if name == "tw_vid":
            [page] = recorder.pages()
            assert page.anonymous_id not in (VICTIM_VID, None)
            assert value_of(cookies["tw_vid"]) == sign(
                signing_key, "tw_vid", page.anonymous_id
            )
        elif name == "tw_sid":
            [start] = recorder.events("session_start")
            assert start.properties["session_id"] != VICTIM_SID
            assert "session_end" not in [e.name for e in events]
        else:
            for event in events:
                assert "mxo_tid" not in event.context
                assert VICTIM_TID not in repr(event.to_dict())
            assert cookies["tw_tid"].startswith("; Max-Age=0;")  # expired
        # The two genuine cookies beside the forged one still count.
        if name != "tw_vid":
            assert {e.anonymous_id for e in events} == {VICTIM_VID}
        if name != "tw_sid":
            assert {e.context["session_id"] for e in events} == {VICTIM_SID}
        assert_not_echoed(forged, response, recorder)


def test_cookies_a_fallback_key_signed_are_kept_and_re_signed(recorder: t.Any) -> None:
    app = tracked(
        recorder,
        cookie_secret=["this-years-key", OLD],
        tid_source=lambda anonymous_id: None,
    )
    jar = {
        "tw_vid": sign(OLD, "tw_vid", VICTIM_VID),
        "tw_sid": sign(OLD, "tw_sid", session_payload()),
        "tw_tid": sign(OLD, "tw_tid", VICTIM_TID),
    }
    first = send(app, **jar)
    jar.update({k: value_of(v) for k, v in set_cookies(first).items()})
    second = send(app, **jar)
    events = recorder.events()
    assert "session_start" not in [e.name for e in events]
    for event in events:
        assert event.anonymous_id == VICTIM_VID
        assert event.context["session_id"] == VICTIM_SID
        assert event.context["mxo_tid"] == VICTIM_TID
    cookies = set_cookies(first)
    assert value_of(cookies["tw_vid"]) == sign("this-years-key", "tw_vid", VICTIM_VID)
    assert value_of(cookies["tw_tid"]) == sign("this-years-key", "tw_tid", VICTIM_TID)
    session = value_of(cookies["tw_sid"])
    assert session == sign("this-years-key", "tw_sid", session.rsplit(".", 1)[0])
    assert not {"tw_vid", "tw_tid"} & set(set_cookies(second))


def test_a_key_dropped_from_the_list_no_longer_verifies(recorder: t.Any) -> None:
    app = tracked(recorder, cookie_secret=["this-years-key", OLD])
    send(app, tw_vid=sign(RETIRED, "tw_vid", VICTIM_VID))
    [page] = recorder.pages()
    assert page.anonymous_id != VICTIM_VID


def test_rejections_are_counted_and_logged_without_the_value(
    recorder: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = tracked(recorder)
    with caplog.at_level(logging.INFO, logger="trackware"):
        send(
            app,
            tw_vid=VICTIM_VID,
            tw_sid=sign(OTHER, "tw_sid", session_payload()),
            tw_tid=sign(OTHER, "tw_tid", VICTIM_TID),
        )
    assert app.engine.cookie_rejections() == {"visitor": 1, "session": 1, "tid": 1}
    for secret in (VICTIM_VID, VICTIM_SID, VICTIM_TID):
        assert secret not in caplog.text
    assert "tw_vid" in caplog.text and "tw_tid" in caplog.text


def test_old_unsigned_cookies_start_a_new_visitor_once(recorder: t.Any) -> None:
    """Cookies of trackware 0.1.0 (an unsigned visitor and tid) are replaced on
    the first request: the visitor gets a new id and keeps it."""
    app = tracked(recorder)
    jar = {"tw_vid": VICTIM_VID, "tw_tid": VICTIM_TID}
    for _ in range(3):  # as a browser: it keeps what it is sent, drops expired
        for name, rest in set_cookies(send(app, **jar)).items():
            jar[name] = value_of(rest)
            if "Max-Age=0" in rest:
                del jar[name]
    pages = recorder.pages()
    assert len({p.anonymous_id for p in pages}) == 1
    assert pages[0].anonymous_id != VICTIM_VID
    assert all("mxo_tid" not in p.context for p in pages)
    assert app.engine.cookie_rejections() == {"visitor": 1, "session": 0, "tid": 1}


# --- no key: refused at start-up, never silently unsigned ----------------------------


def test_no_secret_is_refused_naming_the_options(
    recorder: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRACKWARE_COOKIE_SECRET", raising=False)
    with pytest.raises(ConfigurationError) as info:
        TrackwareMiddleware(make_app(), tracker=recorder.tracker)
    for fix in ("cookie_secret=", "TRACKWARE_COOKIE_SECRET", "ephemeral_cookie_secret"):
        assert fix in str(info.value)
    with pytest.raises(ConfigurationError, match="cookie_secret"):
        TrackwareMiddleware(make_app(), tracker=recorder.tracker, sessions=False)
    with pytest.raises(ConfigurationError, match="cookie_secret"):
        TrackwareMiddleware(make_app(), tracker=recorder.tracker, cookie_secret="")
    with pytest.raises(ConfigurationError, match="non-empty"):
        TrackwareMiddleware(make_app(), cookie_secret=["key", ""])
    with pytest.raises(ConfigurationError, match="cookie_secret must be"):
        TrackwareMiddleware(make_app(), cookie_secret=12345)


def test_environment_secret(recorder: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKWARE_COOKIE_SECRET", "from-the-environment")
    app = TrackwareMiddleware(make_app(), tracker=recorder.tracker)
    cookies = set_cookies(send(app))
    [page] = recorder.pages()
    assert page.anonymous_id is not None
    expected = sign("from-the-environment", "tw_vid", page.anonymous_id)
    assert value_of(cookies["tw_vid"]) == expected
    # An explicit cookie_secret wins over the environment.
    explicit = tracked(recorder)
    recorder.clear()
    cookies = set_cookies(send(explicit))
    [page] = recorder.pages()
    assert page.anonymous_id is not None
    assert value_of(cookies["tw_vid"]) == sign(SECRET, "tw_vid", page.anonymous_id)


def test_ephemeral_key_only_when_asked_for_and_loudly(
    recorder: t.Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("TRACKWARE_COOKIE_SECRET", raising=False)
    with caplog.at_level(logging.WARNING, logger="trackware"):
        app = TrackwareMiddleware(
            make_app(), tracker=recorder.tracker, ephemeral_cookie_secret=True
        )
    assert "per-process" in caplog.text
    visitor = value_of(set_cookies(send(app))["tw_vid"])
    send(app, tw_vid=visitor)  # the process's own key verifies its cookies
    send(app, tw_vid=VICTIM_VID)
    first, second, third = recorder.pages()
    assert first.anonymous_id == second.anonymous_id
    assert third.anonymous_id not in (first.anonymous_id, VICTIM_VID)


def test_a_tid_bound_by_the_app_is_written_signed(recorder: t.Any) -> None:
    tid = str(uuid.uuid4())

    async def personalise(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        current = trackware.current_scope()
        assert current is not None
        current.bind(mxo_tid=tid)
        await PlainTextResponse("ok")(scope, receive, send)

    app = TrackwareMiddleware(
        personalise, tracker=recorder.tracker, cookie_secret=SECRET
    )
    cookies = set_cookies(send(app))
    assert value_of(cookies["tw_tid"]) == sign(SECRET, "tw_tid", tid)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    secrets=st.lists(st.binary(min_size=1, max_size=100), min_size=1, max_size=3),
    name=st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True),
    value=st.text(alphabet="0123456789abcdefABCDEF-.", min_size=1, max_size=80),
)
def test_the_signer_is_hmac_sha256_of_name_and_value(
    secrets: list[bytes], name: str, value: str
) -> None:
    """CookieSigner's precomputed HMAC states give exactly hmac's HMAC-SHA256;
    each key verifies what it signed, by its index."""
    signer = CookieSigner(secrets)
    for index, secret in enumerate(secrets):
        key = hmac.new(secret, b"trackware.cookie.v1", hashlib.sha256).digest()
        mac = hmac.new(key, f"{name}={value}".encode(), hashlib.sha256).digest()
        signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        if index == 0:
            assert signer.sign(name, value) == f"{value}.{signature}"
        assert signer.verify(name, value, signature) == secrets.index(secret)
    assert signer.verify(name, value, "A" * 43) == -1


def test_the_secrets_are_in_no_repr(recorder: t.Any) -> None:
    app = tracked(recorder, cookie_secret=["this-years-key", OLD])
    engine = app.engine
    shown = repr(engine.options) + repr(engine) + repr(engine.cookies.signer)
    assert "this-years-key" not in shown and OLD not in shown
    assert not re.search(r"\bcookie_secret=", repr(engine.options))
