"""Synerise: v4 events, transactions and the AI (recommendation) events API.

:class:`SyneriseExporter` routes, batches and authenticates; ``_mapping`` builds
each event's body against Synerise's rules. docs/architecture/vendors.md records the
choices where Synerise's documents leave room.
"""

from __future__ import annotations

import base64
import json
import re
import time
import typing as t

from ... import _log
from ..._auth import CachedToken, Credentials, TokenCache, no_credentials
from ..._event import Event
from ...exceptions import ConfigurationError, ContractViolation
from .._base import ExportResult, encode_event, env_options
from .._http import BaseHTTPExporter, HTTPRequest
from .._urls import redact_url
from ._login import API_VERSION, LOGIN_PATH, WorkspaceLogin
from ._mapping import (
    ACTION_RE,
    AI_EVENT_TYPES,
    DEFAULT_ACTIONS,
    TRANSACTION_ACTION,
    SyneriseMapping,
)

if t.TYPE_CHECKING:
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from .._options import ExporterOptions

__all__ = ["AI_EVENT_TYPES", "DEFAULT_ACTIONS", "SyneriseExporter"]

DEFAULT_BASE_URL = "https://api.synerise.com"
AI_ENDPOINTS = ("events/v1", "ai-compat")

_ENV_PREFIX = "TRACKWARE_SYNERISE_"

_KEBAB_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*\Z")


class SyneriseExporter(SyneriseMapping, BaseHTTPExporter):
    """Delivers events to Synerise.

    Routing, per event (after ``actions`` renames it):

    * ``recommendation.view``, ``recommendation.click``, ``item.search.click``
      go to the AI events API: ``POST /events/v1/single/{type}``, or
      ``POST /events/v1/batch`` (body ``{eventType, items}``) for several of
      the same type; with ``ai_endpoint="ai-compat"``, one
      ``POST /v4/events/ai-compat/{type}`` each (``ai_path_prefix="/ai"`` for
      a custom tracking domain). Body: ``correlationId`` (property
      ``correlationId``/``correlation_id``), ``clientUUID`` (property
      ``clientUUID``/``client_uuid``, else a UUID ``anonymous_id``), ``items``
      (property ``items``, as strings; ``[]`` if absent), ``eventTimestamp``
      (integer epoch ms), ``campaignId`` (property ``campaignId`` /
      ``campaign_id``). Authorised by ``?token=<tracker_key>`` when a tracker
      key is configured, else by the workspace JWT.
    * ``transaction.charge`` goes to ``POST /v4/transactions`` (or
      ``/v4/transactions/batch`` for several). Body from properties:
      ``orderId`` (``order_id``/``orderId``, required), ``revenue`` (a number
      with ``currency``, or ``{amount, currency}``; required), ``value``
      (default: ``revenue``), ``discountAmount`` (``discount``), ``products``
      (each: ``sku``, ``name``, ``quantity``, ``finalUnitPrice`` or ``price``
      with ``currency``; other product keys pass through), ``paymentInfo``
      (or ``payment_method``), ``source`` (default ``transaction_source``),
      ``metadata`` (default: the remaining properties); plus ``client``,
      ``recordedAt`` and ``eventSalt`` as below.
    * events named in ``dedicated`` are sent with ``type: <dedicated type>``
      and no ``action``;
    * everything else is a custom event: ``type: custom``, ``action`` = the
      mapped name (default: the event name).

    v4 events go in batches through ``POST /v4/events/batch`` (one request per
    ``max_batch_size`` events; ``batch_endpoint=False`` sends each to
    ``/v4/events/custom`` or ``/v4/events/<type>`` instead). Every v4 event
    has ``client`` (``customId`` = ``user_id``, ``email``, ``uuid`` =
    ``anonymous_id`` when it is a UUID (lowercased), ``id`` = the integer
    trait named by ``client_id_trait``; at least one is required, else the
    event is rejected for this destination), a non-empty ``label`` (from
    ``labels``, else the ``label_property`` property, else the action),
    ``params`` (the properties, only when there are any), an explicit
    ``time`` (ISO-8601, ms, ``Z``) and ``eventSalt`` = the event id, so that
    a retry overwrites the first copy instead of duplicating it. A time in the
    future is clamped to now (logged, throttled) before the body is built, and
    the clamped time is remembered per event id so that retries send the same
    time and salt.

    Authentication: a workspace JWT from ``POST /uauth/v2/auth/login/profile``
    with the API key, cached until ``token_refresh_margin`` seconds before its
    ``exp`` (``token_ttl`` when it has none) and refreshed after a 401 or 403.
    With ``workspace_guid``, v4 calls use ``Basic base64(GUID:apiKey)``
    instead (it must be enabled for the key in Synerise). Every v4 call
    carries ``Api-Version: 4.4``.

    Args:
        api_key: the workspace API key.
        base_url: the region's API host (``https://api.synerise.com``,
            ``https://api.azu.synerise.com``, ``https://api.geb.synerise.com``).
        tracker_key: tracker key for the AI events API (``?token=``).
        workspace_guid: use Basic auth for v4 calls.
        actions: event name -> Synerise action (merged over
            :data:`DEFAULT_ACTIONS`: ``page`` -> ``page.visit``,
            ``session_start`` -> ``session.start``, ``session_end`` ->
            ``session.end``). With ``send_unmapped=False`` only the events
            named here are sent, the defaults included only when named.
        dedicated: event name -> dedicated event type (kebab-case, e.g.
            ``hit-timer``).
        labels: event name -> label.
        label_property: a property whose string value becomes the label (and
            is left out of ``params``).
        send_unmapped: send events not named in ``actions``/``dedicated`` as
            custom events (default); ``False`` sends only mapped events and
            the AI/transaction events.
        client_id_trait: the trait holding the numeric Synerise profile id.
        strict: check actions against the strict rule (dot-separated
            lowercase, like ``dog.bark``) before sending.
        batch_endpoint: batch v4 events through ``/v4/events/batch``.
        transactions_batch: batch transactions through
            ``/v4/transactions/batch``.
        ai_endpoint: ``"events/v1"`` (default) or ``"ai-compat"``.
        ai_path_prefix: prefix of the AI paths (``"/ai"`` for a custom
            tracking domain).
        transaction_source: default ``source`` of transactions
            (e.g. ``"WEB_DESKTOP"``).
        token_ttl: JWT lifetime assumed when the token has no ``exp``.
        token_refresh_margin: refresh the JWT this many seconds early.
        max_batch_size: events per export call and per batch request.

    Other keyword arguments go to :class:`BaseHTTPExporter` (``name``,
    ``timeout``, ``retry``, ``events``, ``verify``, ``transport``...).

    Environment variables read by :meth:`from_env`:
    ``TRACKWARE_SYNERISE_API_KEY`` (required), ``TRACKWARE_SYNERISE_BASE_URL``,
    ``TRACKWARE_SYNERISE_TRACKER_KEY``, ``TRACKWARE_SYNERISE_WORKSPACE_GUID``,
    ``TRACKWARE_SYNERISE_CLIENT_ID_TRAIT``, ``TRACKWARE_SYNERISE_AI_ENDPOINT``,
    ``TRACKWARE_SYNERISE_AI_PATH_PREFIX``, ``TRACKWARE_SYNERISE_MAX_BATCH_SIZE``.
    """

    default_name = "synerise"
    # Synerise answers an expired or invalid JWT with 401 or 403.
    reauth_statuses = frozenset({401, 403})

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        tracker_key: str | None = None,
        workspace_guid: str | None = None,
        actions: t.Mapping[str, str] | None = None,
        dedicated: t.Mapping[str, str] | None = None,
        labels: t.Mapping[str, str] | None = None,
        label_property: str | None = None,
        send_unmapped: bool = True,
        client_id_trait: str | None = None,
        strict: bool = True,
        batch_endpoint: bool = True,
        transactions_batch: bool = True,
        ai_endpoint: str = "events/v1",
        ai_path_prefix: str = "",
        transaction_source: str | None = None,
        token_ttl: float = 3550.0,
        token_refresh_margin: float = 60.0,
        max_batch_size: int = 100,
        **options: Unpack[ExporterOptions],
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigurationError(
                "SyneriseExporter: api_key is required: pass the workspace API key "
                "(or set TRACKWARE_SYNERISE_API_KEY and use from_env())"
            )
        _log.register_secret(api_key)
        if tracker_key is not None:
            if not isinstance(tracker_key, str) or not tracker_key:
                raise ConfigurationError(
                    "SyneriseExporter: tracker_key must be a non-empty string or None"
                )
            # (_http.py scrubs the httpx logger, which logs the query string.)
            _log.register_secret(tracker_key)
        super().__init__(base_url=base_url, max_batch_size=max_batch_size, **options)
        self._tracker_key = tracker_key
        self._basic: str | None = None
        if workspace_guid is not None:
            if not isinstance(workspace_guid, str) or not workspace_guid:
                raise ConfigurationError(
                    "SyneriseExporter: workspace_guid must be the workspace GUID "
                    "(or None to use a JWT)"
                )
            encoded = base64.b64encode(f"{workspace_guid}:{api_key}".encode()).decode()
            _log.register_secret(encoded)
            self._basic = f"Basic {encoded}"
        if ai_endpoint not in AI_ENDPOINTS:
            raise ConfigurationError(
                f"SyneriseExporter: ai_endpoint must be one of {AI_ENDPOINTS}, "
                f"got {ai_endpoint!r}"
            )
        if ai_path_prefix and (
            not ai_path_prefix.startswith("/") or ai_path_prefix.endswith("/")
        ):
            raise ConfigurationError(
                "SyneriseExporter: ai_path_prefix must start with '/' and not end "
                f"with one (like '/ai'), got {ai_path_prefix!r}"
            )
        if token_ttl <= 0 or token_refresh_margin < 0:
            raise ConfigurationError(
                "SyneriseExporter: token_ttl must be > 0 and token_refresh_margin "
                ">= 0 seconds"
            )
        self.strict = strict
        self.actions: dict[str, str] = {**DEFAULT_ACTIONS, **(actions or {})}
        self.dedicated: dict[str, str] = dict(dedicated or {})
        self.labels: dict[str, str] = dict(labels or {})
        for name, action in self.actions.items():
            if not isinstance(action, str) or not action:
                raise ConfigurationError(
                    f"SyneriseExporter: actions[{name!r}] must be a non-empty string"
                )
            routed = action in AI_EVENT_TYPES or action == TRANSACTION_ACTION
            if strict and not routed and not ACTION_RE.match(action):
                raise ConfigurationError(
                    f"SyneriseExporter: actions[{name!r}] = {action!r} is not "
                    "dot-separated lowercase (like 'dog.bark'); rename it or pass "
                    "strict=False"
                )
        for name, etype in self.dedicated.items():
            if not isinstance(etype, str) or not _KEBAB_RE.match(etype):
                raise ConfigurationError(
                    f"SyneriseExporter: dedicated[{name!r}] must be the kebab-case "
                    f"name of a dedicated endpoint (like 'hit-timer'), got {etype!r}"
                )
            if etype == "custom":
                raise ConfigurationError(
                    f"SyneriseExporter: dedicated[{name!r}] = 'custom' is not a "
                    "dedicated type; map the event in actions= instead"
                )
        for name, label in self.labels.items():
            if not isinstance(label, str) or not label:
                raise ConfigurationError(
                    f"SyneriseExporter: labels[{name!r}] must be a non-empty string"
                )
        self.label_property = label_property
        self.send_unmapped = send_unmapped
        self.client_id_trait = client_id_trait
        self.batch_endpoint = batch_endpoint
        self.transactions_batch = transactions_batch
        self.ai_endpoint = ai_endpoint
        self.ai_path_prefix = ai_path_prefix
        self.transaction_source = transaction_source
        self.token_ttl = float(token_ttl)
        self.token_refresh_margin = float(token_refresh_margin)
        self._mapped = (
            frozenset(actions or {})
            | frozenset(self.dedicated)
            | AI_EVENT_TYPES
            | {TRANSACTION_ACTION}
        )
        # The margin is applied by WorkspaceLogin (TokenCache would cap it at ttl/4).
        self._login = WorkspaceLogin(
            lambda: self.client,
            self.base_url + LOGIN_PATH,
            api_key,
            ttl=self.token_ttl,
            refresh_margin=self.token_refresh_margin,
        )
        self._tokens: TokenCache[str] = TokenCache(
            self._login, refresh_margin=0.0, default_ttl=self.token_ttl
        )
        self._init_clamps()

    def after_fork(self) -> None:
        # Locks the parent's threads held at fork time stay held in the child:
        # a fresh token cache (the child logs in itself) and clamp lock.
        super().after_fork()
        self._tokens = self._tokens.fresh()
        self._clamps_after_fork()

    # --- construction from the environment --------------------------------------------
    @classmethod
    def from_env(
        cls, environ: t.Mapping[str, str] | None = None, **overrides: t.Any
    ) -> SyneriseExporter:
        """Build from ``TRACKWARE_SYNERISE_*`` variables (see the class docstring);
        keyword arguments override them."""
        options = env_options(
            cls.__name__,
            environ,
            prefix=_ENV_PREFIX,
            required={"API_KEY": "api_key"},
            optional={
                "BASE_URL": "base_url",
                "TRACKER_KEY": "tracker_key",
                "WORKSPACE_GUID": "workspace_guid",
                "CLIENT_ID_TRAIT": "client_id_trait",
                "AI_ENDPOINT": "ai_endpoint",
                "AI_PATH_PREFIX": "ai_path_prefix",
                "MAX_BATCH_SIZE": "max_batch_size",
            },
            overrides=overrides,
            hint=" (the workspace API key)",
        )
        size = options.get("max_batch_size")
        if "max_batch_size" not in overrides and size is not None:
            try:
                options["max_batch_size"] = int(size)
            except ValueError:
                raise ConfigurationError(
                    f"{_ENV_PREFIX}MAX_BATCH_SIZE must be an integer, got {size!r}"
                ) from None
        return cls(**options)

    # --- routing ----------------------------------------------------------------------
    def applies(self, event: Event, /) -> bool:
        only = self._only
        name = event.name
        if only is not None and name not in only:
            return False
        return self.send_unmapped or name in self._mapped

    # --- auth -------------------------------------------------------------------------
    @property
    def logins(self) -> int:
        """Workspace JWTs fetched so far."""
        return self._login.count

    def credentials(self, request: HTTPRequest) -> Credentials:
        """AI calls with a tracker key carry it in the query; v4 calls use Basic
        auth when a workspace GUID is set; the rest the workspace JWT."""
        if request.auth_key == "ai" and self._tracker_key is not None:
            return no_credentials
        basic = self._basic
        if request.auth_key == "v4" and basic is not None:
            return lambda refresh: {"Authorization": basic}
        return CachedToken(self._tokens, "jwt")

    # --- requests ---------------------------------------------------------------------
    def _request(
        self,
        items: list[tuple[Event, str]],
        path: str,
        *,
        array: bool,
        auth: str,
        wrap: str | None = None,
    ) -> HTTPRequest:
        """One POST of ``items`` ((event, encoded body) pairs) to ``path``."""
        text = ",".join(encoded for _, encoded in items)
        if array:
            text = f"[{text}]"
        if wrap is not None:
            text = f'{{"eventType":{json.dumps(wrap)},"items":[{text}]}}'
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        params: dict[str, str] | None = None
        if auth == "v4" or path.startswith(self.ai_path_prefix + "/v4/"):
            headers["Api-Version"] = API_VERSION
        if auth == "ai" and self._tracker_key is not None:
            params = {"token": self._tracker_key}
        return HTTPRequest(
            [event for event, _ in items],
            "POST",
            path,
            content=text.encode("utf-8"),
            headers=headers,
            auth_key=auth,
            params=params,
        )

    def _chunks(
        self, items: list[tuple[Event, str]]
    ) -> t.Iterator[list[tuple[Event, str]]]:
        size = self.max_batch_size
        for start in range(0, len(items), size):
            yield items[start : start + size]

    def build_requests(
        self, events: t.Sequence[Event]
    ) -> tuple[list[HTTPRequest], ExportResult]:
        result = ExportResult()
        now = time.time()
        v4: list[tuple[Event, str, str]] = []  # (event, encoded, type)
        transactions: list[tuple[Event, str]] = []
        ai: dict[str, list[tuple[Event, str]]] = {}
        for event in events:
            action = self.actions.get(event.name, event.name)
            try:
                # Each event is checked and encoded alone before it joins a
                # batch: Synerise refuses a whole batch for one bad element.
                if action in AI_EVENT_TYPES:
                    ai.setdefault(action, []).append(
                        (event, encode_event(self._ai_event(event)))
                    )
                elif not self._names_someone(event):
                    # Synerise keeps every v4 event and transaction on a
                    # profile: one naming nobody cannot be sent, by design.
                    result.skipped.append(event)
                elif action == TRANSACTION_ACTION:
                    transactions.append(
                        (event, encode_event(self._transaction(event, now)))
                    )
                else:
                    body = self._v4_event(event, now, action)
                    etype = body["type"]
                    if not self.batch_endpoint:
                        del body["type"]
                    v4.append((event, encode_event(body), etype))
            except ContractViolation as exc:
                result.reject(event, f"synerise contract: {exc}")
            except Exception as exc:
                result.reject_unmapped(event, exc, self.name, "synerise")
        requests: list[HTTPRequest] = []
        if self.batch_endpoint:
            for chunk in self._chunks([(e, s) for e, s, _ in v4]):
                requests.append(
                    self._request(chunk, "/v4/events/batch", array=True, auth="v4")
                )
        else:
            for event, text, etype in v4:
                requests.append(
                    self._request(
                        [(event, text)], f"/v4/events/{etype}", array=False, auth="v4"
                    )
                )
        for chunk in self._chunks(transactions):
            if self.transactions_batch and len(chunk) > 1:
                requests.append(
                    self._request(
                        chunk, "/v4/transactions/batch", array=True, auth="v4"
                    )
                )
            else:
                for item in chunk:
                    requests.append(
                        self._request(
                            [item], "/v4/transactions", array=False, auth="v4"
                        )
                    )
        prefix = self.ai_path_prefix
        for etype, items in ai.items():
            if self.ai_endpoint == "ai-compat":
                for item in items:
                    requests.append(
                        self._request(
                            [item],
                            f"{prefix}/v4/events/ai-compat/{etype}",
                            array=False,
                            auth="ai",
                        )
                    )
                continue
            for chunk in self._chunks(items):
                if len(chunk) == 1:
                    path, wrap = f"{prefix}/events/v1/single/{etype}", None
                else:
                    path, wrap = f"{prefix}/events/v1/batch", etype
                requests.append(
                    self._request(chunk, path, array=False, auth="ai", wrap=wrap)
                )
        return requests, result

    def __repr__(self) -> str:
        auth = "basic" if self._basic is not None else "jwt"
        return (
            f"<SyneriseExporter name={self.name!r} "
            f"base_url={redact_url(self.base_url)!r} "
            f"auth={auth}>"
        )
