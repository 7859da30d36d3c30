"""Phone numbers as E.164: libphonenumber when installed, else a strict fallback.

``normalize_phone`` is the choice made at import; ``trackware[phone]``
installs the ``phonenumbers`` package.
"""

from __future__ import annotations

import re
import typing as t

__all__ = [
    "PHONE_LIBRARY",
    "normalize_phone",
    "normalize_phone_libphonenumber",
    "normalize_phone_strict",
]

_E164_RE = re.compile(r"^\+[1-9][0-9]{1,14}\Z")
#: The fallback's E.164: ``+``, a country code not starting with 0, 8-15 digits.
_STRICT_E164_RE = re.compile(r"^\+[1-9][0-9]{7,14}\Z", re.ASCII)
#: Pure formatting the fallback removes (not parentheses: "(0)" is a guess).
_PHONE_SEPARATORS_RE = re.compile(r"[\s\-.]")


def normalize_phone_strict(value: str, default_region: str | None = None) -> str | None:
    """The fallback used without the ``phonenumbers`` library: ``value`` when it
    is already E.164, else ``None``.

    Only spaces, dashes and dots are removed; the rest must be ``+``, a
    country code not starting with 0, and 8 to 15 digits in all. Nothing is
    guessed: not a national number's country (``default_region`` is
    ignored), not a trunk ``0`` after the country code (``+44 (0) 7700...``,
    ``+49 030...``), not ``00`` for ``+``. Install ``trackware[phone]`` for
    real normalisation.
    """
    number = _PHONE_SEPARATORS_RE.sub("", value)
    return number if _STRICT_E164_RE.match(number) else None


def _region(default_region: str | int | None) -> str | None:
    """An ISO 3166 region (``"GB"``) from a region or a calling code (``"44"``)."""
    if default_region is None:
        return None
    text = str(default_region).strip().lstrip("+")
    if text.isdigit():
        import phonenumbers

        region = phonenumbers.region_code_for_country_code(int(text))
        return None if region == phonenumbers.UNKNOWN_REGION else region
    return text.upper() or None


def normalize_phone_libphonenumber(
    value: str, default_region: str | int | None = None
) -> str | None:
    """``value`` as E.164 using Google's libphonenumber data (the
    ``phonenumbers`` package, ``trackware[phone]``), or ``None``.

    International numbers (``+`` or ``00``) are parsed with their country's
    rules (``+44 (0) 7700 900999`` -> ``+447700900999``, ``+49 030 123456`` ->
    ``+4930123456``); national ones need ``default_region``, an ISO 3166 code
    (``"IT"``: ``06 1234 5678`` -> ``+390612345678``, Italy keeps its 0) or a
    calling code (``"44"``). A number must be *possible* for its country (the
    right length); whether a range is assigned is not checked (that data
    changes, and test ranges such as UK 07700 900xxx are unassigned).
    """
    import phonenumbers

    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, _region(default_region))
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164 if _E164_RE.match(e164) else None


try:
    import phonenumbers as _phonenumbers
except ImportError:  # pragma: no cover - exercised through normalize_phone_strict
    #: Whether the ``phonenumbers`` library is installed (``trackware[phone]``).
    PHONE_LIBRARY = False
else:
    PHONE_LIBRARY = True
    # libphonenumber imports a region's metadata module the first time it
    # parses a number of that region: here, on the worker thread, where a
    # fork in the middle of an import breaks the child (see exporters._http).
    # All of them are loaded now, on the importing thread (about 0.1 s).
    _phonenumbers.PhoneMetadata.load_all()

#: ``value`` as an E.164 number or ``None``: :func:`normalize_phone_libphonenumber`
#: when ``phonenumbers`` is installed (``pip install 'trackware[phone]'``),
#: else the strict fallback :func:`normalize_phone_strict`.
normalize_phone: t.Callable[[str, str | None], str | None] = (
    normalize_phone_libphonenumber if PHONE_LIBRARY else normalize_phone_strict
)
