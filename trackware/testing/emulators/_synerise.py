"""A strict local emulator of the Synerise events APIs.

Routes (names are what :meth:`EmulatorServer.fault` and ``recorded`` take):

==============================  =============================================
``synerise.login``              ``POST /uauth/v2/auth/login/profile``
``synerise.custom``             ``POST /v4/events/custom``
``synerise.batch``              ``POST /v4/events/batch``
``synerise.dedicated``          ``POST /v4/events/<kebab-case type>``
``synerise.transaction``        ``POST /v4/transactions``
``synerise.transaction_batch``  ``POST /v4/transactions/batch``
``synerise.ai_single``          ``POST /events/v1/single/<eventType>`` and
                                ``POST [/ai]/v4/events/ai-compat/<eventType>``
``synerise.ai_batch``           ``POST /events/v1/batch``
==============================  =============================================

What it enforces (vendor-apis.md §3 and §7):

* **Auth.** v4 endpoints take ``Authorization: Bearer <JWT>`` issued by the
  login route, or ``Basic base64(GUID:apiKey)`` when the key is listed in
  ``basic_auth_keys``. An expired JWT is answered ``expired_status`` (401 by
  default; the docs also mention 403). AI endpoints take a tracker key (or a
  JWT) in the ``token`` query parameter, or a Bearer JWT; 401 otherwise.
* **Headers.** ``Api-Version: 4.4`` is required on ``/v4/*`` and ``/uauth/*``
  only (answered ``api_version_status``, 400 by default; vendor-apis §3.7.9).
  The ai-compat route lives under ``/v4`` but follows the §7 "AI single" row,
  which says Api-Version is not required there. ``Content-Type:
  application/json`` everywhere (else 415). Wrong method: 405.
* **Bodies.** Every rule of the §7 rows; a violation answers 400 with
  ``{"status": 400, "error": "Bad Request", "message": ..., "errors": [...]}``
  where each entry names the field and the rule it broke. The real error body
  format is not documented; this shape is our choice.
* **Batches are all-or-nothing.** ``/v4/events/batch``, ``/events/v1/batch``
  and ``/v4/transactions/batch`` reject the whole request when any element is
  invalid (not documented by Synerise; chosen so that a client can never
  believe an element was stored when it was not).
* **Time.** ``time``/``recordedAt`` must match the php-sdk regex. A future
  time is accepted but stored as the receive time, with the original string
  kept as ``snr-original-time``. AI ``eventTimestamp`` is an integer >= 0
  (epoch ms) in strict mode; lenient mode also takes ISO-8601 and notes a
  warning in :attr:`SyneriseAPI.warnings`. Future AI timestamps are kept.
* **Overwrite.** A v4 event (or transaction) with an ``eventSalt`` replaces
  an earlier one with the same (action or type, client, stored time, salt);
  anything else is appended, so a retry without a salt duplicates.

Success is ``202`` with an empty body (the documented code of the analogous
``/v4/transactions``; vendor-apis §3.5). Accepted items are kept in
:attr:`SyneriseAPI.events` as dicts: the element as sent, plus ``kind``
(``"event"``, ``"transaction"`` or ``"ai"``), the stored ``time`` in epoch ms
for v4 items (``storedTime``), ``eventCreateTime`` (ISO receive time), and
``eventType`` for AI events.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import json
import re
import secrets
import time
import typing as t
import uuid

from ._server import HTTPError, Reply, Request, VendorAPI

__all__ = ["AI_EVENT_TYPES", "RESERVED_ACTIONS", "SyneriseAPI"]

#: Event types the AI events API takes (and v4 custom/batch refuses).
AI_EVENT_TYPES = frozenset(
    {"recommendation.view", "recommendation.click", "item.search.click"}
)
#: Actions that have a dedicated route; strict mode refuses them on custom/batch.
RESERVED_ACTIONS = AI_EVENT_TYPES | {"transaction.charge"}

_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.?\d+)?"
    r"(([+-])(\d{2}):(\d{2})|Z)?",
    re.ASCII,
)
_LOWER_UUID_RE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
#: strict action rule: lowercase segments separated by dots ("dog.bark").
_ACTION_RE = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+")
_KEBAB_RE = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_CURRENCY_RE = re.compile(r"[A-Za-z]{3}")
_API_VERSION = "4.4"

_Errors: t.TypeAlias = "list[str]"


def parse_time(value: str) -> float | None:
    """Epoch seconds of a php-sdk-regex ISO-8601 string (no zone: UTC), or None."""
    m = _TIME_RE.fullmatch(value)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = m.group(7) or ""
    digits = frac.lstrip(".")
    fraction = float("0." + digits) if digits else 0.0
    offset = 0
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60
        if m.group(9) == "-":
            offset = -offset
    try:
        moment = _dt.datetime(
            year, month, day, hour, minute, second, tzinfo=_dt.timezone.utc
        )
    except ValueError:
        return None
    return moment.timestamp() + fraction - offset


def _iso(unix: float) -> str:
    moment = _dt.datetime.fromtimestamp(unix, _dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class SyneriseAPI(VendorAPI):
    """The Synerise v4 events, transactions, AI events and workspace-login APIs.

    Args:
        api_keys: known workspace API keys, mapped to their workspace GUID.
        basic_auth_keys: API keys for which ``Basic GUID:apiKey`` is enabled.
        tracker_keys: tracker keys accepted as ``?token=`` on AI endpoints.
        token_ttl: lifetime of issued JWTs, seconds.
        token_exp_claim: put ``exp`` in issued JWTs (turn off to test a
            client's fallback lifetime).
        expired_status: the answer to an expired or unknown JWT (401 or 403).
        api_version_status: the answer to a missing/wrong ``Api-Version``
            (400 or 415).
        strict: enforce the rules marked "strict" in vendor-apis.md §7 (action
            format and reserved actions, ``type``/``action`` coupling, integer
            ``client.id``, integer ``eventTimestamp``).
        max_batch: most elements in ``/v4/events/batch`` and
            ``/v4/transactions/batch``.
        max_ai_batch: most items in ``/events/v1/batch``.

    All of these are plain attributes that tests may change. :attr:`clock`
    (default ``time.time``) is the emulator's notion of now, for tests that
    need tokens to expire or times to be in the future.

    Recorded state: :attr:`events` (accepted items, in order), :attr:`logins`
    (successful logins), :attr:`overwrites` (items replaced via ``eventSalt``),
    :attr:`warnings` (lenient-mode notes).
    """

    vendor = "synerise"

    def __init__(
        self,
        *,
        api_keys: t.Mapping[str, str] | None = None,
        basic_auth_keys: t.Iterable[str] = (),
        tracker_keys: t.Iterable[str] = ("test-tracker-key-0001",),
        token_ttl: float = 3600.0,
        token_exp_claim: bool = True,
        expired_status: int = 401,
        api_version_status: int = 400,
        strict: bool = True,
        max_batch: int = 1000,
        max_ai_batch: int = 1000,
    ) -> None:
        super().__init__()
        self.api_keys: dict[str, str] = dict(
            api_keys
            if api_keys is not None
            else {"test-synerise-api-key": "6f1c1e36-1d5b-4b8e-9d3a-5d2f0c9b7a11"}
        )
        self.basic_auth_keys: set[str] = set(basic_auth_keys)
        self.tracker_keys: set[str] = set(tracker_keys)
        self.token_ttl = token_ttl
        self.token_exp_claim = token_exp_claim
        self.expired_status = expired_status
        self.api_version_status = api_version_status
        self.strict = strict
        self.max_batch = max_batch
        self.max_ai_batch = max_ai_batch
        self.clock: t.Callable[[], float] = time.time
        self._signing_key = secrets.token_bytes(32)
        self.events: list[dict[str, t.Any]] = []
        self.tokens: dict[str, tuple[str, float]] = {}
        self.logins = 0
        self.overwrites = 0
        self.warnings: list[str] = []
        self._index: dict[tuple[str, ...], int] = {}

        self.route(
            "synerise.login", "POST", r"/uauth/v2/auth/login/profile", self._login
        )
        self.route("synerise.custom", "POST", r"/v4/events/custom", self._custom)
        self.route("synerise.batch", "POST", r"/v4/events/batch", self._batch)
        self.route(
            "synerise.ai_single",
            "POST",
            r"/events/v1/single/(?P<type>[^/]+)",
            self._ai_single,
        )
        self.route(
            "synerise.ai_single",
            "POST",
            r"(?:/ai)?/v4/events/ai-compat/(?P<type>[^/]+)",
            self._ai_single,
        )
        self.route("synerise.ai_batch", "POST", r"/events/v1/batch", self._ai_batch)
        self.route(
            "synerise.dedicated",
            "POST",
            r"/v4/events/(?P<type>[^/]+)",
            self._dedicated,
        )
        self.route(
            "synerise.transaction", "POST", r"/v4/transactions", self._transaction
        )
        self.route(
            "synerise.transaction_batch",
            "POST",
            r"/v4/transactions/batch",
            self._transaction_batch,
        )

    def reset(self) -> None:
        with self.lock:
            self.events.clear()
            self.tokens.clear()
            self._index.clear()
            self.warnings.clear()
            self.logins = 0
            self.overwrites = 0

    # --- helpers for tests ---------------------------------------------------------
    def expire_tokens(self) -> None:
        """Make every issued JWT expired (as if its lifetime had passed)."""
        with self.lock:
            self.tokens = {k: (v[0], 0.0) for k, v in self.tokens.items()}

    def of_kind(self, kind: str) -> list[dict[str, t.Any]]:
        """Accepted items of one kind: ``"event"``, ``"transaction"`` or ``"ai"``."""
        with self.lock:
            return [e for e in self.events if e["kind"] == kind]

    # --- errors ----------------------------------------------------------------------
    @staticmethod
    def _error(status: int, errors: list[str]) -> HTTPError:
        titles = {
            400: "Bad Request",
            401: "Unauthorized",
            403: "Forbidden",
            415: "Unsupported Media Type",
        }
        return HTTPError(
            status,
            {
                "status": status,
                "error": titles.get(status, "Error"),
                "message": "; ".join(errors)[:2000],
                "errors": errors[:100],
            },
        )

    def _reject(self, errors: _Errors) -> None:
        """400 listing ``errors``, if there are any."""
        if errors:
            raise self._error(400, errors)

    @classmethod
    def _json(cls, request: Request) -> t.Any:
        """The body as JSON, or 400 in Synerise's error shape."""
        try:
            return request.json()
        except HTTPError as exc:
            raise cls._error(400, [f"body: {exc.reply.body['error']}"]) from None

    # --- auth ------------------------------------------------------------------------
    def _issue(self, api_key: str) -> str:
        now = self.clock()
        claims: dict[str, t.Any] = {
            "sub": self.api_keys[api_key],
            "iat": int(now),
            "jti": uuid.uuid4().hex,
        }
        if self.token_exp_claim:
            claims["exp"] = int(now + self.token_ttl)
        head = _b64(json.dumps({"alg": "HS512", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(
            self._signing_key, f"{head}.{body}".encode(), hashlib.sha512
        ).digest()
        token = f"{head}.{body}.{_b64(signature)}"
        with self.lock:
            self.tokens[token] = (api_key, now + self.token_ttl)
        return token

    def _jwt_valid(self, token: str) -> bool:
        with self.lock:
            entry = self.tokens.get(token)
        return entry is not None and self.clock() < entry[1]

    def _check_bearer(self, token: str) -> None:
        if not self._jwt_valid(token):
            raise self._error(
                self.expired_status,
                ["Authorization: token missing, expired or invalid"],
            )

    def _check_v4_auth(self, request: Request) -> None:
        bearer = request.credentials("bearer")
        if bearer is not None:
            self._check_bearer(bearer)
            return
        basic = request.credentials("basic")
        if basic is not None:
            try:
                decoded = base64.b64decode(basic, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            guid, _, key = decoded.partition(":")
            if (
                key in self.api_keys
                and self.api_keys[key] == guid
                and key in self.basic_auth_keys
            ):
                return
            raise self._error(
                401,
                [
                    "Authorization: Basic credentials unknown, or Basic auth "
                    "is not enabled for this API key"
                ],
            )
        raise self._error(
            401, ["Authorization: a Bearer JWT (or enabled Basic auth) is required"]
        )

    def _check_ai_auth(self, request: Request) -> None:
        token = request.query.get("token")
        if token is not None:
            if token in self.tracker_keys or self._jwt_valid(token):
                return
            raise self._error(401, ["token: unknown tracker key"])
        bearer = request.credentials("bearer")
        if bearer is not None:
            self._check_bearer(bearer)
            return
        raise self._error(
            401, ["auth: a 'token' query parameter or a Bearer JWT is required"]
        )

    def _check_headers(self, request: Request, *, api_version: bool) -> None:
        if api_version and request.headers.get("Api-Version") != _API_VERSION:
            raise self._error(
                self.api_version_status,
                [f"Api-Version: header required and must be {_API_VERSION!r}"],
            )
        if request.content_type != "application/json":
            raise self._error(415, ["Content-Type: must be application/json"])

    # --- validation ------------------------------------------------------------------
    def _check_client(self, client: object, where: str, errors: _Errors) -> None:
        if not isinstance(client, dict):
            errors.append(f"{where}client: required, an object")
            return
        known = [k for k in ("id", "customId", "uuid", "email") if k in client]
        if not known:
            errors.append(
                f"{where}client: at least one of id, customId, uuid, email is required"
            )
        if "id" in client:
            cid = client["id"]
            # Lenient mode also takes a string id.
            if not (_is_int(cid) or (not self.strict and isinstance(cid, str))):
                errors.append(f"{where}client.id: must be an integer")
        if "customId" in client and (
            not isinstance(client["customId"], str) or not client["customId"]
        ):
            errors.append(f"{where}client.customId: must be a non-empty string")
        if "email" in client and (
            not isinstance(client["email"], str) or not client["email"]
        ):
            errors.append(f"{where}client.email: must be a non-empty string")
        if "uuid" in client and (
            not isinstance(client["uuid"], str)
            or not _LOWER_UUID_RE.fullmatch(client["uuid"])
        ):
            errors.append(f"{where}client.uuid: must be a lowercase UUID")

    def _check_time(
        self, item: dict[str, t.Any], field: str, where: str, errors: _Errors
    ) -> None:
        if field not in item:
            return
        value = item[field]
        if not isinstance(value, str) or parse_time(value) is None:
            errors.append(
                f"{where}{field}: must be an ISO-8601 string "
                "(YYYY-MM-DDThh:mm:ss[.fff][Z|+hh:mm])"
            )

    def _check_event(
        self, item: object, where: str, errors: _Errors, *, batch: bool
    ) -> None:
        """One v4 event; ``batch`` adds the ``type``/``action`` coupling rules."""
        if not isinstance(item, dict):
            errors.append(f"{where}: each event must be an object")
            return
        etype: object = "custom"
        if batch:
            etype = item.get("type")
            if not isinstance(etype, str) or not _KEBAB_RE.fullmatch(etype):
                errors.append(f"{where}type: required, a non-empty kebab-case string")
                etype = "custom"
        if etype == "custom":
            self._check_action(item, where, errors)
        elif "action" in item and self.strict:
            errors.append(
                f"{where}action: must be absent when type is not 'custom' "
                "(dedicated events carry their type instead)"
            )
        self._check_common(item, where, errors)

    def _check_action(
        self, item: dict[str, t.Any], where: str, errors: _Errors
    ) -> None:
        action = item.get("action")
        if not isinstance(action, str) or not action:
            errors.append(f"{where}action: required, a non-empty string")
            return
        if self.strict and not _ACTION_RE.fullmatch(action):
            errors.append(
                f"{where}action: must be dot-separated lowercase "
                f"(like 'dog.bark'), got {action[:100]!r}"
            )
        if self.strict and action in RESERVED_ACTIONS:
            route = (
                "/v4/transactions"
                if action == "transaction.charge"
                else "the AI events API"
            )
            errors.append(
                f"{where}action: {action!r} must be sent to {route}, "
                "not to custom/batch"
            )

    def _check_common(
        self, item: dict[str, t.Any], where: str, errors: _Errors
    ) -> None:
        label = item.get("label")
        if not isinstance(label, str) or not label:
            errors.append(f"{where}label: required, a non-empty string")
        self._check_client(item.get("client"), where, errors)
        if "params" in item and not isinstance(item["params"], dict):
            errors.append(f"{where}params: must be an object")
        self._check_time(item, "time", where, errors)
        if "eventSalt" in item and not isinstance(item["eventSalt"], str):
            errors.append(f"{where}eventSalt: must be a string")

    def _check_money(
        self, value: object, field: str, where: str, errors: _Errors
    ) -> None:
        if not isinstance(value, dict):
            errors.append(f"{where}{field}: required, an object {{amount, currency}}")
            return
        if not _is_number(value.get("amount")):
            errors.append(f"{where}{field}.amount: required, a number")
        currency = value.get("currency")
        if not isinstance(currency, str) or not _CURRENCY_RE.fullmatch(currency):
            errors.append(f"{where}{field}.currency: required, a 3-letter code")

    def _check_transaction(self, item: object, where: str, errors: _Errors) -> None:
        """The transaction contract (php-sdk ``TransactionValidator`` and
        ``ProductValidator``; the body schema is not in the seed).

        Required: ``client``, ``orderId`` (non-empty string), ``revenue`` and
        ``value`` (``{amount: number, currency: 3 letters}``), ``products``
        (a non-empty array; each with non-empty ``sku`` and ``name`` strings and a
        ``finalUnitPrice`` money object; ``quantity`` a number > 0 if present;
        ``regularPrice``/``discountPrice``/``netUnitPrice`` money objects if
        present). Optional: ``recordedAt`` (php-sdk time regex),
        ``discountAmount`` (money), ``paymentInfo`` (object with a string
        ``method``), ``source`` (string), ``metadata`` (object),
        ``eventSalt`` (string).
        """
        if not isinstance(item, dict):
            errors.append(f"{where}: each transaction must be an object")
            return
        self._check_client(item.get("client"), where, errors)
        order_id = item.get("orderId")
        if not isinstance(order_id, str) or not order_id:
            errors.append(f"{where}orderId: required, a non-empty string")
        self._check_money(item.get("revenue"), "revenue", where, errors)
        self._check_money(item.get("value"), "value", where, errors)
        if "discountAmount" in item:
            self._check_money(item["discountAmount"], "discountAmount", where, errors)
        products = item.get("products")
        # Choice: products are required, and an empty array is no products
        # (each product becomes a product.buy event; a transaction without
        # any is what the library must never send).
        if not isinstance(products, list) or not products:
            errors.append(f"{where}products: required, a non-empty array")
            products = []
        for i, product in enumerate(products):
            at = f"{where}products[{i}]."
            if not isinstance(product, dict):
                errors.append(f"{at[:-1]}: must be an object")
                continue
            for key in ("sku", "name"):
                if not isinstance(product.get(key), str) or not product.get(key):
                    errors.append(f"{at}{key}: required, a non-empty string")
            self._check_money(
                product.get("finalUnitPrice"), "finalUnitPrice", at, errors
            )
            for key in ("regularPrice", "discountPrice", "netUnitPrice"):
                if key in product:
                    self._check_money(product[key], key, at, errors)
            if "quantity" in product and not (
                _is_number(product["quantity"]) and product["quantity"] > 0
            ):
                errors.append(f"{at}quantity: must be a number > 0")
        self._check_time(item, "recordedAt", where, errors)
        if "paymentInfo" in item:
            info = item["paymentInfo"]
            if not isinstance(info, dict) or not isinstance(info.get("method"), str):
                errors.append(f"{where}paymentInfo: must be an object with a method")
        if "source" in item and not isinstance(item["source"], str):
            errors.append(f"{where}source: must be a string")
        if "metadata" in item and not isinstance(item["metadata"], dict):
            errors.append(f"{where}metadata: must be an object")
        if "eventSalt" in item and not isinstance(item["eventSalt"], str):
            errors.append(f"{where}eventSalt: must be a string")

    def _check_ai_item(self, item: object, where: str, errors: _Errors) -> None:
        if not isinstance(item, dict):
            errors.append(f"{where}: body must be an object")
            return
        correlation = item.get("correlationId")
        if not isinstance(correlation, str) or not correlation:
            errors.append(f"{where}correlationId: required, a non-empty string")
        client_uuid = item.get("clientUUID")
        if not isinstance(client_uuid, str) or not _UUID_RE.fullmatch(client_uuid):
            errors.append(f"{where}clientUUID: required, a UUID")
        items = item.get("items")
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            errors.append(f"{where}items: required, an array of item-ID strings")
        if "eventTimestamp" in item:
            stamp = item["eventTimestamp"]
            if _is_int(stamp) and stamp >= 0:
                pass
            elif (
                not self.strict
                and isinstance(stamp, str)
                and parse_time(stamp) is not None
            ):
                with self.lock:
                    self.warnings.append(
                        f"{where}eventTimestamp: ISO-8601 accepted in lenient mode; "
                        "the documented type is integer epoch ms"
                    )
            else:
                errors.append(
                    f"{where}eventTimestamp: must be an integer >= 0 "
                    "(Unix time in milliseconds)"
                )
        if "campaignId" in item and not isinstance(item["campaignId"], str):
            errors.append(f"{where}campaignId: must be a string")

    # --- storage ---------------------------------------------------------------------
    def _store(
        self, kind: str, name: str, item: dict[str, t.Any], time_field: str | None
    ) -> None:
        """Append ``item``, or overwrite an earlier one with the same key."""
        now = self.clock()
        record = dict(item)
        record["kind"] = kind
        record["eventCreateTime"] = _iso(now)
        key: tuple[str, ...] | None = None
        if time_field is not None:
            sent = item.get(time_field)
            stored = now
            if isinstance(sent, str):
                when = parse_time(sent)
                if when is not None and when > now:
                    # Documented: a future time is rejected and replaced by the
                    # receive time; the original stays as snr-original-time.
                    record["snr-original-time"] = sent
                    record[time_field] = _iso(now)
                else:
                    stored = t.cast(float, when)
            record["storedTime"] = int(round(stored * 1000))
            salt = item.get("eventSalt")
            if isinstance(salt, str):
                client = json.dumps(item.get("client"), sort_keys=True)
                key = (kind, name, client, str(record["storedTime"]), salt)
        with self.lock:
            if key is not None and key in self._index:
                self.events[self._index[key]] = record
                self.overwrites += 1
                return
            if key is not None:
                self._index[key] = len(self.events)
            self.events.append(record)

    # --- handlers --------------------------------------------------------------------
    def _login(self, request: Request) -> Reply:
        if request.content_type != "application/json":
            raise self._error(415, ["Content-Type: must be application/json"])
        if self.strict and request.headers.get("Api-Version") != _API_VERSION:
            raise self._error(
                self.api_version_status,
                [f"Api-Version: header required and must be {_API_VERSION!r}"],
            )
        body = self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("apiKey"), str):
            raise self._error(400, ["apiKey: required, a string"])
        key = body["apiKey"]
        if key not in self.api_keys:
            raise self._error(401, ["apiKey: invalid API key"])
        token = self._issue(key)
        with self.lock:
            self.logins += 1
        return Reply(200, {"token": token})

    def _v4_prelude(self, request: Request) -> t.Any:
        self._check_v4_auth(request)
        self._check_headers(request, api_version=True)
        return self._json(request)

    def _v4_array(
        self, body: t.Any, noun: str, check: t.Callable[[object, str, _Errors], None]
    ) -> list[dict[str, t.Any]]:
        """A v4 batch body: 1..``max_batch`` elements, all valid (or 400)."""
        if not isinstance(body, list):
            raise self._error(400, [f"body: must be a JSON array of {noun}"])
        if not 1 <= len(body) <= self.max_batch:
            raise self._error(
                400,
                [f"body: a batch holds 1..{self.max_batch} {noun}, got {len(body)}"],
            )
        errors: _Errors = []
        for i, item in enumerate(body):
            check(item, f"[{i}].", errors)
        self._reject(errors)
        return body

    def _custom(self, request: Request) -> Reply:
        body = self._v4_prelude(request)
        errors: _Errors = []
        self._check_event(body, "", errors, batch=False)
        self._reject(errors)
        self._store("event", body["action"], {"type": "custom", **body}, "time")
        return Reply(202)

    def _dedicated(self, request: Request) -> Reply:
        etype = request.params["type"]
        body = self._v4_prelude(request)
        if not _KEBAB_RE.fullmatch(etype):
            raise self._error(400, [f"path: unknown event endpoint {etype[:100]!r}"])
        if not isinstance(body, dict):
            raise self._error(400, ["body: must be an object"])
        errors: _Errors = []
        if "action" in body and self.strict:
            errors.append(
                "action: not used on a dedicated endpoint; the endpoint is the type"
            )
        self._check_common(body, "", errors)
        self._reject(errors)
        self._store("event", etype, {**body, "type": etype}, "time")
        return Reply(202)

    def _batch(self, request: Request) -> Reply:
        body = self._v4_array(
            self._v4_prelude(request),
            "events",
            lambda item, where, errors: self._check_event(
                item, where, errors, batch=True
            ),
        )
        for item in body:
            name = item["action"] if item["type"] == "custom" else item["type"]
            self._store("event", name, item, "time")
        return Reply(202)

    def _transaction(self, request: Request) -> Reply:
        body = self._v4_prelude(request)
        errors: _Errors = []
        self._check_transaction(body, "", errors)
        self._reject(errors)
        self._store("transaction", "transaction.charge", body, "recordedAt")
        return Reply(202)

    def _transaction_batch(self, request: Request) -> Reply:
        body = self._v4_array(
            self._v4_prelude(request), "transactions", self._check_transaction
        )
        for item in body:
            self._store("transaction", "transaction.charge", item, "recordedAt")
        return Reply(202)

    def _check_event_type(self, value: object, where: str) -> str:
        if value not in AI_EVENT_TYPES:
            raise self._error(
                400,
                [
                    f"{where}: must be one of {sorted(AI_EVENT_TYPES)}, "
                    f"got {str(value)[:100]!r}"
                ],
            )
        return str(value)

    def _ai_single(self, request: Request) -> Reply:
        self._check_ai_auth(request)
        self._check_headers(request, api_version=False)
        etype = self._check_event_type(request.params.get("type"), "eventType (path)")
        body = self._json(request)
        errors: _Errors = []
        self._check_ai_item(body, "", errors)
        self._reject(errors)
        self._store("ai", etype, {**body, "eventType": etype}, None)
        return Reply(202)

    def _ai_batch(self, request: Request) -> Reply:
        self._check_ai_auth(request)
        self._check_headers(request, api_version=False)
        body = self._json(request)
        if not isinstance(body, dict):
            raise self._error(400, ["body: must be an object {eventType, items}"])
        etype = self._check_event_type(body.get("eventType"), "eventType")
        items = body.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= self.max_ai_batch:
            raise self._error(
                400, [f"items: required, an array of 1..{self.max_ai_batch} events"]
            )
        errors: _Errors = []
        for i, item in enumerate(items):
            self._check_ai_item(item, f"items[{i}].", errors)
        self._reject(errors)
        for item in items:
            self._store("ai", etype, {**item, "eventType": etype}, None)
        return Reply(202)
