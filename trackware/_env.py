"""The ``TRACKWARE_*`` environment variables trackware reads, in one registry,
and the check that warns, once per name, about the ones it does not read
(naming the closest known one). Only names are logged, never values.

Keys that are set elsewhere but look like variables (the Flask extension's
``app.config`` keys) are registered by their owner with
:func:`register_config_keys`, so that the warning says where they belong.
"""

from __future__ import annotations

import difflib
import os
import threading
import typing as t

from . import _log

__all__ = [
    "KNOWN_VARIABLES",
    "check_environment",
    "closest",
    "config_keys",
    "register_config_keys",
]

PREFIX = "TRACKWARE_"


def _names(vendor: str, *suffixes: str) -> tuple[str, ...]:
    return tuple(f"{PREFIX}{vendor}_{suffix}" for suffix in suffixes)


#: Every environment variable trackware reads. A ``from_env()`` that reads a
#: new one adds it here (tests/core/test_env_names.py fails on a name read but
#: missing here, or listed here and read by none).
KNOWN_VARIABLES: frozenset[str] = frozenset(
    (
        # The core and the integrations.
        "TRACKWARE_DISABLED",  # Tracker(enabled=...)
        "TRACKWARE_DEAD_LETTER_PATH",  # the default dead-letter file
        "TRACKWARE_COOKIE_SECRET",  # the integrations' cookie key
        # Tracker.from_env() / trackware.init() (trackware/_config.py)
        "TRACKWARE_FLUSH_INTERVAL",
        "TRACKWARE_MAX_QUEUE_SIZE",
        "TRACKWARE_MAX_BATCH_SIZE",
        "TRACKWARE_SHUTDOWN_TIMEOUT",
        "TRACKWARE_QUEUE_FULL_POLICY",
        "TRACKWARE_STRICT",
        "TRACKWARE_HTTP_URL",
        "TRACKWARE_SPOOL",
        "TRACKWARE_SPOOL_DURABILITY",
        "TRACKWARE_SPOOL_COMMIT_INTERVAL",
        "TRACKWARE_SPOOL_MAX_BYTES",
        "TRACKWARE_SPOOL_FSYNC",
        "TRACKWARE_REDIS_URL",
        "TRACKWARE_REDIS_NAMESPACE",
        "TRACKWARE_REDIS_MAXLEN",
        # Tracker(inspector=..., inspector_token=...) defaults
        "TRACKWARE_INSPECTOR",
        "TRACKWARE_INSPECTOR_TOKEN",
        # The vendor emulators' address, read by the example apps and the
        # test helpers (not by the library).
        "TRACKWARE_EMULATOR_URL",
        # ClientEventExporter.from_env()
        *_names(
            "CARDLYTICS",
            "BASE_URL",
            "CLIENT_ID",
            "CLIENT_SECRET",
            "CUSTOMER_ID_KEY",
            "CERT",
            "CERT_KEY",
            "CA_BUNDLE",
            "MAPPING",
            "SESSION_EVENT",
            "DEFAULT_CHANNEL",
            "DEFAULT_SECTION",
            "HEADER_STYLE",
            "SEND_ANONYMOUS",
            "REQUIRE_CERT",
            "MAX_BATCH_SIZE",
        ),
        # InteractionExporter.from_env() and LightweightExporter.from_env()
        *_names(
            "MXO",
            "BASE_URL",
            "CLIENT_ID",
            "CLIENT_SECRET",
            "SITE_KEY",
            "TOUCHPOINT",
            "CUSTOMER_KEY",
            "CUSTOMER_KEY_NAME",
            "TIMESTAMP_FIELD",
            "TOKEN_URL",
            "PROPERTIES_FORMAT",
        ),
        # SyneriseExporter.from_env()
        *_names(
            "SYNERISE",
            "API_KEY",
            "BASE_URL",
            "TRACKER_KEY",
            "WORKSPACE_GUID",
            "CLIENT_ID_TRAIT",
            "AI_ENDPOINT",
            "AI_PATH_PREFIX",
            "MAX_BATCH_SIZE",
        ),
        # CustomEventExporter.from_env() (Yotpo)
        *_names(
            "YOTPO",
            "STORE_ID",
            "SECRET",
            "BASE_URL",
            "SOURCE",
            "IDENTITY_PREFERENCE",
            "DEFAULT_COUNTRY_CODE",
            "DEFAULT_REGION",
            "NESTED_PROPERTIES",
            "EVENTS",
            "ALL_EVENTS",
            "EVENT_PATH",
            "EVENT_METHOD",
        ),
    )
)

#: How alike a name must be to a known one to be suggested (difflib's ratio,
#: compared without the common ``TRACKWARE_`` prefix, which would make every
#: name look alike).
_CUTOFF = 0.75

_warned: set[str] = set()
_warned_lock = threading.Lock()

#: Registered look-alike keys (``register_config_keys``) and what to say
#: about each one found in the environment.
_config_keys: dict[str, str] = {}


def register_config_keys(names: t.Iterable[str], hint: str) -> None:
    """Register ``TRACKWARE_*`` names that are keys of some other
    configuration (e.g. the Flask extension's ``app.config`` keys), not
    environment variables. One found in the environment is still reported,
    with ``hint`` (what it is and where it is read) instead of a guess.

    For the layers above the core, which the core may not import; call it
    when the module that defines the keys is imported. Calling it again
    replaces the hint of the names given.
    """
    for name in names:
        _config_keys[name] = hint


def config_keys() -> frozenset[str]:
    """The names registered with :func:`register_config_keys` so far."""
    return frozenset(_config_keys)


def closest(name: str, known: t.Iterable[str]) -> str | None:
    """The known name ``name`` most likely misspells, if one is close enough."""
    by_rest = {k[len(PREFIX) :] if k.startswith(PREFIX) else k: k for k in known}
    rest = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    match = difflib.get_close_matches(rest, list(by_rest), n=1, cutoff=_CUTOFF)
    return by_rest[match[0]] if match else None


def check_environment(environ: t.Mapping[str, str] | None = None) -> list[str]:
    """Warn about the ``TRACKWARE_*`` names in ``environ`` (default
    ``os.environ``) that trackware does not read; returns them, sorted.

    Each name is logged once per process (``trackware`` logger, WARNING),
    with the closest known name when there is one. Never raises.
    """
    try:
        env = os.environ if environ is None else environ
        unknown = sorted(
            name
            for name in env
            if name.startswith(PREFIX) and name not in KNOWN_VARIABLES
        )
        for name in unknown:
            with _warned_lock:
                if name in _warned:
                    continue
                _warned.add(name)
            _log.logger.warning(
                "trackware: the environment variable %s is not one trackware "
                "reads, so it has no effect; %s",
                name,
                _hint(name),
            )
        return unknown
    except Exception:  # pragma: no cover - an odd mapping: never fail on it
        _log.error("env-check", "trackware: could not check the environment")
        return []


def _hint(name: str) -> str:
    hint = _config_keys.get(name)
    if hint is not None:
        return hint
    match = closest(name, KNOWN_VARIABLES)
    if match is not None:
        return f"did you mean {match}?"
    return "the variables trackware reads are listed in docs/configuration.md"
