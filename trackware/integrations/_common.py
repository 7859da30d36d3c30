"""Old home of the integrations' shared code, now in ``_options``, ``_cookies``
and ``_request`` (and ``trackware._page``).

renovation: re-export, remove at the end (once nothing imports it).
"""

from __future__ import annotations

from ._cookies import COOKIE_SECRET_ENV, CookieSigner, cookie_signer, secrets_of
from ._cookies import TID_RE as _TID_RE
from ._cookies import VISITOR_RE as _VISITOR_RE
from ._options import (
    DEFAULT_BOT_AGENTS,
    DEFAULT_EXCLUDED_PATHS,
    Identity,
    TrackingOptions,
    unknown_options,
)
from ._request import RequestState, RequestTracker

__all__ = [
    "COOKIE_SECRET_ENV",
    "DEFAULT_BOT_AGENTS",
    "DEFAULT_EXCLUDED_PATHS",
    "CookieSigner",
    "Identity",
    "RequestState",
    "RequestTracker",
    "TrackingOptions",
    "_TID_RE",
    "_VISITOR_RE",
    "cookie_signer",
    "secrets_of",
    "unknown_options",
]
