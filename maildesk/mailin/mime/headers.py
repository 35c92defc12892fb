"""Addresses, Message-IDs and dates from header values.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils
import re
from datetime import UTC, datetime

from .mail import Address
from .text import _text_of_raw, clean_header_text, decode_header_value

# --- addresses, ids, dates ------------------------------------------------------------

_SIMPLE_ADDR = r"[^\s<>()\[\]\\,;:\"@]+@[^\s<>()\[\]\\,;:\"@]+"
_SIMPLE_ONE = re.compile(
    rf"\s*(?:({_SIMPLE_ADDR})|([^<>()\\,;:\"@]*)<({_SIMPLE_ADDR})>|\"([^\"\\]*)\"\s*<({_SIMPLE_ADDR})>)\s*"
)

_VALID_ADDR = re.compile(r"[^\s<>@]+@[^\s<>@]+")
_SOURCE_ROUTE = re.compile(r"<\s*@")


def parse_addresses(raw_values: list[str], fallback: str | None = None) -> list[Address]:
    """Every address in these raw header values, in order. Simple forms take a fast
    path; anything with quotes, comments or groups goes to email.utils.getaddresses.
    Raw 8-bit bytes that are not UTF-8 are read with the codec `fallback`, if given."""
    result: list[Address] = []
    for raw in raw_values:
        value = _text_of_raw(raw, fallback)
        pairs = _simple_addresses(value)
        if pairs is None:
            pairs = getaddresses([value])
        for name, addr in pairs:
            name = clean_header_text(decode_header_value(name)) if name else ""
            addr = clean_header_text(addr).lower()
            if not _VALID_ADDR.fullmatch(addr):
                name = name or addr
                addr = ""
            if name or addr:
                result.append(Address(name, addr))
    return result


def getaddresses(values: list[str]) -> list[tuple[str, str]]:
    """`email.utils.getaddresses`, lenient on every Python the desk runs on.

    Python releases with the fix for CVE-2023-27043 (3.11.10, 3.12.6, 3.13, and
    distributions' backports, Debian 12's 3.11.2 among them) parse strictly by default:
    a value with an unbalanced parenthesis, or with another count of addresses than its
    commas outside quotes suggest, yields `[('', '')]` as a whole, so that a Cc with a
    comma in a comment loses every address in it. Earlier releases have no `strict` and
    parse leniently. The desk asks for the lenient parse everywhere, so that the same
    mail is read the same whatever Python patch level the host has; what the strict
    parse guards against, a header read as naming someone it does not, the desk
    guards against itself: a From that yields more than one address names no sender
    (`_sender`), and an address on Cc joins a ticket only as docs/security.md says."""
    return email.utils.getaddresses(values, **_LENIENT)


# asked once, not by a failing call each time on a Python without the switch
try:
    email.utils.getaddresses([], strict=False)
    _LENIENT: dict[str, bool] = {"strict": False}
except TypeError:  # no `strict`: a release before the fix, lenient anyway
    _LENIENT = {}


def _simple_addresses(value: str) -> list[tuple[str, str]] | None:
    if "(" in value or ";" in value or "\\" in value or value.count('"') > 2:
        return None
    pieces = value.split(",") if '"' not in value else [value]
    pairs = []
    for piece in pieces:
        if not piece.strip():
            continue
        m = _SIMPLE_ONE.fullmatch(piece)
        if not m:
            return None
        if m.group(1):
            pairs.append(("", m.group(1)))
        elif m.group(3):
            pairs.append((m.group(2).strip(), m.group(3)))
        else:
            pairs.append((m.group(4), m.group(5)))
    return pairs


def _sender(from_values: list[str], from_: list[Address]) -> tuple[Address | None, str | None]:
    """The one sender, or why there is none that can be trusted to be unique."""
    if not from_values:
        return None, "no From header"
    if len(from_values) > 1:
        return None, f"{len(from_values)} From headers"
    if _SOURCE_ROUTE.search(from_values[0]):
        return None, "source-route address"
    if not from_:
        return None, "empty From" if not from_values[0].strip() else "unparseable From"
    if len(from_) > 1:
        return None, f"From holds {len(from_)} addresses"
    if not from_[0].addr:
        return None, "unparseable From"
    return from_[0], None


_BRACKETED_ID = re.compile(r"<([^<>]*)>")
_BARE_ID = re.compile(r"[^\s<>,;()\"]+")
_MAX_ID = 998  # RFC 5322 line length: longer ids are garbage, keep keys bounded


def _clean_id(s: str) -> str:
    return "".join(clean_header_text(s).split())[:_MAX_ID]


def parse_message_id(raw: str | None) -> str | None:
    if raw is None:
        return None
    value = _text_of_raw(raw)
    m = _BRACKETED_ID.search(value)
    if m and m.group(1).strip():
        return _clean_id(m.group(1)) or None
    m = _BARE_ID.search(value)
    return _clean_id(m.group(0)) or None if m else None


def parse_id_list(raw_values: list[str]) -> list[str]:
    """Message ids from In-Reply-To or References, in order, without brackets.
    Bracketed ids when there are any; otherwise bare tokens that look like ids."""
    value = " ".join(_text_of_raw(v) for v in raw_values)
    ids = [_clean_id(i) for i in _BRACKETED_ID.findall(value)]
    ids = [i for i in ids if i]
    if ids:
        return ids
    return [_clean_id(t) for t in _BARE_ID.findall(value) if "@" in t]


def parse_date(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        when = email.utils.parsedate_to_datetime(clean_header_text(_text_of_raw(raw)))
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000": time in UTC, zone unknown (RFC 5322 3.3)
        when = when.replace(tzinfo=UTC)
    return when
