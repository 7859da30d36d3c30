"""The MXO emulator: OAuth2 token, Interaction API and Lightweight API.

Routes ``mxo.token``, ``mxo.interaction``, ``mxo.offline``,
``mxo.offline_batch`` and ``mxo.lightweight``: methods, authentication,
site keys, tids and what was accepted. The body rules are in ``_mxo_rules``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
import typing as t
import urllib.parse
import uuid

from ._api import HTTPError, Reply, Request, VendorAPI
from ._mxo_rules import (
    SITE_KEY_RE,
    TID_RE,
    Checked,
    fail,
    interaction_problem,
    lightweight_body,
    parse_iso8601,
)

__all__ = ["MXOAPI", "parse_iso8601"]

_ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_PREFIX = "/one/oauth2/rt/api/2.0"
#: The canned optimization a real-time POST returns by default.
DEFAULT_OPTIMIZATIONS: list[dict[str, t.Any]] = [
    {
        "path": "api://my.touchpoint/customer/interaction",
        "data": base64.b64encode(
            json.dumps({"offer": "demo-offer", "headline": "Hello from MXO"}).encode()
        ).decode("ascii"),
        "dataMimeType": "application/json",
        "directives": "REPLACE",
        "responseId": "00000000-0000-4000-8000-000000000001",
        "narrative": "trackware-emulator",
    }
]


class _Call(t.NamedTuple):
    """An Interaction API call that passed the shared checks."""

    sk: str
    tid: str | None
    body: t.Any


class _Accepted(t.NamedTuple):
    """One accepted interaction and which of ``uri``/``url`` it used."""

    uri_field: str
    interaction: dict[str, t.Any]


def _json(request: Request) -> t.Any:
    """The body as JSON, or 400 in MXO's error shape."""
    try:
        return request.json()
    except HTTPError as exc:
        raise fail(400, "json", exc.reply.body["error"]) from None


class MXOAPI(VendorAPI):
    """Strict emulator of the MXO Interaction and Lightweight Event Listening APIs.

    Configuration (constructor keywords; also plain attributes tests may change):

    Args:
        client_id, client_secret: the API credentials the token endpoint accepts.
        token_ttl: seconds an issued access token stays valid.
        report_expires_in: include ``expires_in`` (= ``token_ttl``) in the token
            response. Off by default: MXO's real value is undocumented, so the
            client must cope without it.
        strict: strict mode (see each rule): ``uri`` only (``url`` refused),
            ``dataMimeType`` required on POST, UUID-like ``tid``, and on the
            Lightweight API ``customerKey``/``url`` refused.
        check_site_key: check ``sk`` against ``^ONE-[A-Z0-9]{10}-\\d{4}$`` (a
            heuristic taken from the documented examples; switch it off for
            other key shapes).
        site_keys: when set, the only site keys that exist (another one gets
            404 ``"unknown site key"``); ``None`` accepts any well-formed key.
        max_offline_batch: most interactions one ``/interactions/offline``
            call may carry (100, as documented).
        future_skew: how far in the future an offline ``timestamp`` may be,
            seconds (server clock skew allowance).
        optimizations: what a real-time POST returns in ``optimizations``
            (default: one canned optimization with base64 ``data`` and
            directive ``"REPLACE"``).
        tid_factory: makes new tids (default: random UUIDs).

    Recorded state:

    Attributes:
        events: accepted interactions, in order, as dicts with ``endpoint`` (the
            route name), ``method``, ``sk``, ``tid``, ``uri_field`` (``"uri"``
            or ``"url"``: which one the client sent), ``interaction`` (the body
            object) and ``query``.
        tokens: access tokens issued and their expiry (``time.monotonic()``).
        token_requests: how many token requests were answered 200.
        tids: tids MXO assigned or was told about.
        unknown_tids: tids clients sent that MXO never assigned (a client must
            never invent one).
    """

    vendor: t.ClassVar[str] = "mxo"

    def __init__(
        self,
        *,
        client_id: str = "mxo-client-id",
        client_secret: str = "mxo-client-secret",
        token_ttl: float = 3600.0,
        report_expires_in: bool = False,
        strict: bool = True,
        check_site_key: bool = True,
        site_keys: t.Iterable[str] | None = None,
        max_offline_batch: int = 100,
        future_skew: float = 300.0,
        optimizations: list[dict[str, t.Any]] | None = None,
        tid_factory: t.Callable[[], str] | None = None,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.report_expires_in = report_expires_in
        self.strict = strict
        self.check_site_key = check_site_key
        self.site_keys = set(site_keys) if site_keys is not None else None
        self.max_offline_batch = max_offline_batch
        self.future_skew = future_skew
        self.optimizations = (
            optimizations
            if optimizations is not None
            else [dict(o) for o in DEFAULT_OPTIMIZATIONS]
        )
        self.tid_factory = tid_factory or (lambda: str(uuid.uuid4()))
        self.events: list[dict[str, t.Any]] = []
        self.tokens: dict[str, float] = {}
        self.token_requests = 0
        self.tids: set[str] = set()
        self.unknown_tids: list[str] = []
        # Every method is routed to the handlers, so that a wrong method gets
        # MXO's 405 with the rule named rather than the generic one.
        self.route("mxo.token", _ALL_METHODS, r"/one/oauth2token", self._token)
        self.route(
            "mxo.interaction",
            _ALL_METHODS,
            rf"{_PREFIX}/interaction/?",
            self._interaction,
        )
        self.route(
            "mxo.offline",
            _ALL_METHODS,
            rf"{_PREFIX}/interaction/offline",
            self._offline,
        )
        self.route(
            "mxo.offline_batch",
            _ALL_METHODS,
            rf"{_PREFIX}/interactions/offline",
            self._offline_batch,
        )
        # ``[^/]*`` also matches the empty site key so that it can be answered
        # with a 404 that names the rule.
        self.route(
            "mxo.lightweight",
            _ALL_METHODS,
            r"/one/rt/track/(?P<sk>[^/]*)/events",
            self._lightweight,
        )

    def reset(self) -> None:
        with self.lock:
            self.events.clear()
            self.tokens.clear()
            self.token_requests = 0
            self.tids.clear()
            self.unknown_tids.clear()

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (the next call with one gets 401)."""
        with self.lock:
            self.tokens.clear()

    def events_for(self, endpoint: str) -> list[dict[str, t.Any]]:
        """Accepted interactions that came through ``endpoint`` (a route name)."""
        with self.lock:
            return [e for e in self.events if e["endpoint"] == endpoint]

    # --- token -------------------------------------------------------------------
    def _token(self, request: Request) -> Reply:
        _method(request, {"POST"})
        if request.content_type != "application/x-www-form-urlencoded":
            raise fail(
                415,
                "content_type",
                "Content-Type must be application/x-www-form-urlencoded",
            )
        value = request.credentials("basic")
        if value is None:
            raise fail(
                401,
                "client_authentication",
                "Authorization: Basic base64(client_id:client_secret) is required",
            )
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise fail(
                401, "client_authentication", "Basic credentials are not base64"
            ) from None
        client_id, sep, client_secret = decoded.partition(":")
        if not sep or not (
            secrets.compare_digest(client_id, self.client_id)
            and secrets.compare_digest(client_secret, self.client_secret)
        ):
            raise fail(401, "invalid_client", "unknown client id or wrong secret")
        try:
            form = urllib.parse.parse_qs(
                request.body.decode("utf-8"), keep_blank_values=True
            )
        except UnicodeDecodeError:
            form = {}
        if form.get("grant_type") != ["client_credentials"]:
            raise fail(
                400,
                "unsupported_grant_type",
                "form field grant_type=client_credentials is required",
            )
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = time.monotonic() + self.token_ttl
            self.token_requests += 1
        body: dict[str, t.Any] = {"access_token": token, "token_type": "Bearer"}
        if self.report_expires_in:
            ttl = self.token_ttl
            body["expires_in"] = int(ttl) if float(ttl).is_integer() else ttl
        return Reply(200, body)

    # --- Interaction API ----------------------------------------------------------
    def _authorize(self, request: Request) -> None:
        token = request.credentials("bearer")
        if token is None:
            raise fail(
                401,
                "bearer_token",
                "Invalid OAuth 2.0 token: Authorization: Bearer <token> is required",
            )
        with self.lock:
            expires = self.tokens.get(token)
        if expires is None or time.monotonic() >= expires:
            raise fail(401, "bearer_token", "Invalid OAuth 2.0 token")

    def _common(self, request: Request, methods: set[str]) -> _Call:
        """Checks shared by the Interaction API routes."""
        _method(request, methods)
        self._authorize(request)
        if request.content_type != "application/json":
            raise fail(415, "content_type", "Content-Type must be application/json")
        mime = request.headers.get("dataMimeType")
        if request.method == "POST" and self.strict and mime is None:
            raise fail(
                400,
                "dataMimeType",
                "header dataMimeType: application/json is required on POST",
            )
        # Tolerated on PUT (the SDKs send it everywhere; the docs say required).
        if mime is not None and mime.strip().lower() != "application/json":
            raise fail(400, "dataMimeType", "dataMimeType must be application/json")
        sk = self._site_key(request.query.get("sk"))
        tid = self._check_tid(request.query.get("tid"))
        return _Call(sk, tid, _json(request))

    def _site_key(self, sk: str | None) -> str:
        if not sk:
            raise fail(
                400, "sk", "query parameter sk (the Space's site key) is required"
            )
        if self.check_site_key and not SITE_KEY_RE.fullmatch(sk):
            raise fail(400, "sk", "site key does not look like ONE-XXXXXXXXXX-NNNN")
        if self.site_keys is not None and sk not in self.site_keys:
            raise fail(404, "sk", "unknown site key")
        return sk

    def _check_tid(self, tid: str | None) -> str | None:
        if tid is None:
            return None
        if not tid or (self.strict and not TID_RE.fullmatch(tid)):
            raise fail(400, "tid", "tid must be a UUID-like MXO identifier")
        return tid

    def _validate_item(self, item: t.Any, *, offline: bool, where: str = "") -> Checked:
        """Check one interaction object."""
        return interaction_problem(
            item,
            strict=self.strict,
            offline=offline,
            future_skew=self.future_skew,
            where=where,
        )

    def _assign_tid(self, tid: str | None) -> str:
        with self.lock:
            if tid is None:
                tid = self.tid_factory()
            elif tid not in self.tids:
                self.unknown_tids.append(tid)
            self.tids.add(tid)
        return tid

    def _record(
        self,
        request: Request,
        endpoint: str,
        sk: str,
        tid: str,
        items: list[_Accepted],
    ) -> None:
        with self.lock:
            for accepted in items:
                self.events.append(
                    {
                        "endpoint": endpoint,
                        "method": request.method,
                        "sk": sk,
                        "tid": tid,
                        "uri_field": accepted.uri_field,
                        "interaction": accepted.interaction,
                        "query": dict(request.query),
                    }
                )

    def _interaction(self, request: Request) -> Reply:
        sk, tid, body = self._common(request, {"POST", "PUT"})
        field, problem = self._validate_item(body, offline=False)
        if problem:
            raise fail(400, "interaction", problem)
        tid = self._assign_tid(tid)
        self._record(request, "mxo.interaction", sk, tid, [_Accepted(field, body)])
        # PUT updates the profile only: no optimizations.
        optimizations = self.optimizations if request.method == "POST" else []
        return Reply(
            200,
            {
                "statusCode": 200,
                "tid": tid,
                "trackers": [],
                "captures": [],
                "optimizations": optimizations,
            },
        )

    def _offline(self, request: Request) -> Reply:
        sk, tid, body = self._common(request, {"PUT"})
        field, problem = self._validate_item(body, offline=True)
        if problem:
            raise fail(400, "interaction", problem)
        tid = self._assign_tid(tid)
        self._record(request, "mxo.offline", sk, tid, [_Accepted(field, body)])
        return Reply(200, {"statusCode": 200, "tid": tid})

    def _offline_batch(self, request: Request) -> Reply:
        sk, tid, body = self._common(request, {"PUT"})
        if not isinstance(body, list) or not body:
            raise fail(400, "interactions", "body must be a non-empty JSON array")
        if len(body) > self.max_offline_batch:
            raise fail(
                400,
                "max_interactions",
                f"at most {self.max_offline_batch} offline interactions per call, "
                f"got {len(body)}",
            )
        # Choice: all-or-nothing. MXO does not document partial acceptance, so
        # one invalid element rejects the whole call and nothing is recorded;
        # every problem is listed.
        accepted: list[_Accepted] = []
        problems: list[str] = []
        for index, item in enumerate(body):
            field, problem = self._validate_item(
                item, offline=True, where=f"[{index}] "
            )
            if problem:
                problems.append(problem)
            else:
                accepted.append(_Accepted(field, item))
        if problems:
            raise HTTPError(
                400,
                {
                    "statusCode": 400,
                    "error": "interactions",
                    "message": "; ".join(problems[:20]),
                    "errors": problems,
                },
            )
        tid = self._assign_tid(tid)
        self._record(request, "mxo.offline_batch", sk, tid, accepted)
        return Reply(200, {"statusCode": 200, "tid": tid})

    # --- Lightweight Event Listening API ----------------------------------------------
    def _lightweight(self, request: Request) -> Reply:
        # No authentication: an Authorization header is ignored, never checked.
        _method(request, {"POST"})
        sk = request.params.get("sk", "")
        if not sk:
            raise fail(404, "sk", "the site key is missing from the path")
        # Choice: on this API the site key is a path segment, so a malformed or
        # unknown one is "not found" (404) rather than a bad parameter (400).
        if (self.check_site_key and not SITE_KEY_RE.fullmatch(sk)) or (
            self.site_keys is not None and sk not in self.site_keys
        ):
            raise fail(404, "sk", "unknown site key")
        value = request.headers.get("Content-Type") or ""
        media, _, params = value.partition(";")
        charset = ""
        for param in params.split(";"):
            key, _, val = param.partition("=")
            if key.strip().lower() == "charset":
                charset = val.strip().strip('"').lower()
        if media.strip().lower() != "application/json" or charset not in (
            "",
            "utf-8",
        ):
            raise fail(
                415,
                "content_type",
                "Content-Type must be application/json (optionally; charset=utf-8)",
            )
        tid = self._check_tid(request.query.get("tid"))
        # Any other query parameter (campaign codes ...) is allowed.
        body = lightweight_body(_json(request), strict=self.strict)
        tid = self._assign_tid(tid)
        self._record(request, "mxo.lightweight", sk, tid, [_Accepted("uri", body)])
        return Reply(200, {"statusCode": 200, "tid": tid})


def _method(request: Request, allowed: set[str]) -> None:
    if request.method not in allowed:
        raise HTTPError(
            405,
            {
                "statusCode": 405,
                "error": "method",
                "message": f"method {request.method} not allowed; use "
                + " or ".join(sorted(allowed)),
            },
            {"Allow": ", ".join(sorted(allowed))},
        )
