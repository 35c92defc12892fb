"""What a bounce reports: RFC 3464 delivery status notifications, the bounces that
are not (or not only) RFC 3464, the ids and VERP addresses they cite, complaints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message

from ..mime.headers import getaddresses
from .view import (
    _BINARY_TYPES,
    _DAEMON_LOCAL,
    _DELAY_SUBJECT,
    _DELAY_TEXT,
    _FAILURE_SUBJECT,
    _FAILURE_TEXT,
    _FLUFL_TEXT,
    _MAX_DEPTH,
    _MAX_PARTS,
    _REPORT_SUBTYPES,
    _TEXT_BUDGET,
    Fields,
    _addresses,
    _cap,
    _field,
    _fields_in_text,
    _header,
    _headers,
    _is_address,
    _Mail,
    _one_line,
    _payload_text,
    _report_fields,
    _text,
)

# --- RFC 3464 delivery status notifications --------------------------------------------------


@dataclass(frozen=True)
class _Recipient:
    address: str
    action: str  # failed, delayed, delivered, relayed, expanded, or ""
    diagnostic: str


_ACTIONS = {"failed": "failed", "failure": "failed", "error": "failed",  # OpenSMTPD says "error"
            "delayed": "delayed", "delivered": "delivered", "relayed": "relayed",
            "expanded": "expanded"}


def _address_field(value: str) -> str:
    """'rfc822; user@example.com' -> 'user@example.com' (RFC 3464 section 2.3.2).

    Also reads 'rfc822; <user@example.com>' and 'Name <user@example.com>', which servers write.
    """
    value = value.rsplit(";", 1)[-1].strip()
    angle = re.search(r"<([^<>]*)>", value)
    return (angle.group(1) if angle else value).strip().lower()


_DSN_TEXT = re.compile(r"^(final|original)-recipient[ \t]*:", re.IGNORECASE | re.MULTILINE)


def _dsn_recipients(parts: Iterable[Message]) -> list[_Recipient]:
    return _dsn_blocks([block for part in parts for block in _report_fields(part)])


def _dsn_blocks(blocks: list[Fields]) -> list[_Recipient]:
    recipients = []
    for block in blocks:
        final = _field(block, "final-recipient")
        original = _field(block, "original-recipient")
        action_field = _field(block, "action").strip().lower()
        if not (final or original or action_field):
            continue  # the per-message block (Reporting-MTA, Arrival-Date)
        action = _ACTIONS.get(re.split(r"[\s(;]", action_field, maxsplit=1)[0], "")
        status = _field(block, "status").strip()
        code = re.match(r"([245])\.\d{1,3}\.\d{1,3}", status)
        if not action and code:  # RFC 3464 section 2.3.4: the class of the status code
            action = {"5": "failed", "4": "delayed", "2": "delivered"}[code.group(1)]
        address = ""
        for field in (original, final):  # the address the desk sent to, when reported
            candidate = _address_field(field)
            if _is_address(candidate):
                address = candidate
                break
        diagnostic = _one_line(_field(block, "diagnostic-code").split(";", 1)[-1])
        if code and code.group(0) not in diagnostic:
            diagnostic = f"{code.group(0)} {diagnostic}".strip()
        recipients.append(_Recipient(address, action, diagnostic))
    return recipients


# --- bounces that are not (or not only) RFC 3464 ---------------------------------------------


@dataclass(frozen=True)
class _Bounce:
    action: str  # failed or delayed
    recipients: tuple[str, ...]
    diagnostic: str
    reason: str


def _unique(values: Iterable) -> tuple:
    """The values in their first order, once each, without empty strings."""
    return tuple(dict.fromkeys(v for v in values if v != ""))


def _find_bounce(mail: _Mail) -> _Bounce | None:
    """A failure or delay report: DSN fields first, then flufl.bounce and the subject."""
    dsn = delivery_status(mail)
    for action in ("failed", "delayed"):
        hits = [r for r in dsn if r.action == action]
        if hits:
            return _Bounce(action, _unique(r.address for r in hits),
                           _cap("; ".join(_unique(r.diagnostic for r in hits))),
                           f"delivery status notification (RFC 3464), action {action}")
    if any(r.action for r in dsn):
        return None  # a success notice: delivered, relayed or expanded
    if not mail.may_be_bounce:
        return None
    temporary, permanent = _flufl_failures(mail.msg)
    failed_header = tuple(a for _, a in _addresses(mail.headers("x-failed-recipients"))
                          if _is_address(a))
    failure_subject = _FAILURE_SUBJECT.search(mail.subject)
    delay_subject = _DELAY_SUBJECT.search(mail.subject)
    subject = f'subject "{_cap(mail.subject, 80)}"'
    diagnostic = _diagnostic(mail)
    if delay_subject and not failed_header:
        # A delay warning is not a bounce, whatever the heuristics made of its recipients.
        return _Bounce("delayed", _plausible_recipients(mail, temporary + permanent), diagnostic,
                       f"delay warning, {subject}")
    if failed_header:
        return _Bounce("failed", failed_header, diagnostic, "X-Failed-Recipients header (Exim)")
    temporary = _plausible_recipients(mail, temporary)
    permanent = _plausible_recipients(mail, permanent)
    if permanent or temporary:
        if not failure_subject and _DELAY_TEXT.search(mail.text[:8192]):
            return _Bounce("delayed", _unique(temporary + permanent), diagnostic,
                           "delay warning found by flufl.bounce (the text says it will retry)")
        if permanent:
            return _Bounce("failed", permanent, diagnostic, "bounce found by flufl.bounce")
        return _Bounce("delayed", temporary, diagnostic, "delay warning found by flufl.bounce")
    failure_text = _FAILURE_TEXT.search(mail.notice[:4096]) if mail.daemon_sender else None
    if failure_text and not failure_subject:
        return _Bounce("failed", _recipients_in_text(mail), diagnostic,
                       f"failure notice from {mail.daemon_sender}: the text says "
                       f'"{failure_text.group(0)}"')
    # A failure subject alone could be a person reporting a mail problem; it takes a second sign
    # that a mail server wrote the mail.
    if failure_subject:
        sign = (f"from {mail.daemon_sender}" if mail.daemon_sender
                else "Return-Path: <>" if mail.is_null_sender
                else "multipart/report" if mail.content_type == "multipart/report"
                else "Auto-Submitted" if mail.has("auto-submitted") else None)
        if sign:
            return _Bounce("failed", _recipients_in_text(mail), diagnostic,
                           f"failure notice: {subject}, {sign}")
    return None


# Where the quoted original starts in a bounce's text: its first header line.
_RECIPIENT_LINES = (
    # an address alone on its line
    re.compile(r"^[ \t]*<?([^\s<>@:\"]+@[^\s<>@:\"]+?)>?[ \t]*:?[ \t]*$", re.MULTILINE),
    re.compile(r"^[ \t]*<([^\s<>@]+@[^\s<>@]+)>:", re.MULTILINE),  # Postfix: "<addr>: host said"
    re.compile(r"RCPT TO:[ \t]*<([^\s<>@]+@[^\s<>@]+)>", re.IGNORECASE),
)


def _recipients_in_text(mail: _Mail) -> tuple[str, ...]:
    """Failed addresses named in the text of a bounce that flufl.bounce did not understand.

    Only the text before the quoted original is read.
    """
    found = (m.lower() for pattern in _RECIPIENT_LINES for m in pattern.findall(mail.notice))
    return _plausible_recipients(mail, found)


def _plausible_recipients(mail: _Mail, addresses: Iterable[str]) -> tuple[str, ...]:
    """Heuristic finds without what cannot be a failed recipient.

    That is the bounce's own addresses (the desk it is sent to, the mail system it comes
    from), mail-system addresses, and Message-IDs of the returned original.
    """
    own = {addr for name in ("from", "to", "sender", "return-path", "delivered-to", "x-original-to",
                             "envelope-to") for _, addr in _addresses(mail.headers(name))}
    own.update(i.lower() for i in _original_message_ids(mail))
    return _unique(a for a in addresses if _is_address(a) and a not in own
                   and not _DAEMON_LOCAL.match(a.rsplit("@", 1)[0]))


_STATUS_CODE = re.compile(r"(?<![\w.])[45]\.\d{1,3}\.\d{1,3}(?![\w.-]*\w)")  # RFC 3463
_REPLY_CODE = re.compile(r"(^|[\s:(])[45][0-5]\d[ -][A-Za-z<#]")  # RFC 5321 reply code and text


def _diagnostic(mail: _Mail) -> str:
    """The first line of the bounce notice with a status code, else one with an SMTP reply code."""
    lines = mail.notice.splitlines()
    for pattern in (_STATUS_CODE, _REPLY_CODE):
        for line in lines:
            if pattern.search(line):
                return _cap(line)
    return ""


def _flufl_failures(msg: Message) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """flufl.bounce's temporary and permanent failures, lower-cased and checked as addresses."""
    from flufl.bounce import all_failures  # imported by the first bounce, not at start-up

    temporary, permanent = all_failures(_flufl_view(msg))

    def addresses(found: frozenset[bytes]) -> tuple[str, ...]:
        decoded = (a.decode("ascii", "replace").strip().strip("<>").lower() for a in found)
        return tuple(sorted(a for a in decoded if _is_address(a)))

    return addresses(temporary), addresses(permanent)


def _flufl_view(msg: Message, depth: int = 0) -> Message:
    """A copy of the message that flufl.bounce can read quickly and without raising.

    Every header becomes a str (compat32 hands back Header objects for 8-bit bytes, and
    flufl.bounce calls .lower() on them); From gets a placeholder when it has no address (its
    Yale detector indexes the first address); attachments keep their headers but lose their
    body, an attached original loses its content; text parts are cut to _FLUFL_TEXT characters.
    """
    view = Message()
    for name, value in msg.items():
        view[name] = _text(value)
    if depth == 0 and not any(addr for _, addr in getaddresses([_header(msg, "from")])):
        del view["from"]
        view["From"] = "unknown@invalid"
    view.set_default_type(msg.get_default_type())
    maintype = msg.get_content_maintype()
    if msg.is_multipart():
        parts = msg.get_payload()
        assert isinstance(parts, list)  # what is_multipart() means
        if maintype == "multipart" and depth < _MAX_DEPTH:
            view.set_payload([_flufl_view(p, depth + 1) for p in parts[:_MAX_PARTS] if isinstance(p, Message)])
            view.preamble, view.epilogue = msg.preamble, msg.epilogue
        elif msg.get_content_subtype() in _REPORT_SUBTYPES:
            view.set_payload([_flufl_view(p, depth + 1) for p in parts if isinstance(p, Message)])
        else:  # a returned original, which says nothing about the failure
            view.set_payload("")
    elif maintype in _BINARY_TYPES:
        view.set_payload("")
    else:  # text, or a part whose multipart or message/* structure could not be parsed
        payload = msg.get_payload()
        view.set_payload(payload[:_FLUFL_TEXT] if isinstance(payload, str) else "")
    return view


_MESSAGE_ID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
_INLINE_MESSAGE_ID = re.compile(r"^[ \t>]*Message-ID:[ \t]*<([^<>\s]+)>",
                                re.IGNORECASE | re.MULTILINE)


def _original_message_ids(mail: _Mail) -> tuple[str, ...]:
    ids = [m for original in mail.originals
           for m in _MESSAGE_ID.findall(_header(original, "message-id"))]
    ids += _MESSAGE_ID.findall(mail.header("in-reply-to"))
    ids += reversed(_MESSAGE_ID.findall(" ".join(mail.headers("references"))))
    if not ids:
        ids += _INLINE_MESSAGE_ID.findall(mail.text)
    return _unique(ids)


_VERP_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "received", "to")


def _verp_values(mail: _Mail) -> list[str]:
    values = [v for name in _VERP_HEADERS for v in mail.headers(name)]
    values += [v for original in mail.originals for v in _headers(original, "return-path")]
    values.append(mail.text)
    return values


def _verp_ids(mail: _Mail, verp: re.Pattern[str]) -> tuple[int, ...]:
    return _unique(int(m.group("id")) for v in _verp_values(mail) for m in verp.finditer(v))


def verp_addresses(msg: Message, verp: re.Pattern[str]) -> tuple[tuple[int, str], ...]:
    """The VERP addresses a bounce or report names, as (outbox id, signature or ""),
    once each, in the order `bounce_info` reads them (the delivering server's headers
    first). Anyone can write any of them: only a valid signature proves anything."""
    mail = _Mail(msg)
    return _unique((int(m.group("id")), (m.group("sig") or "").lower())
                   for v in _verp_values(mail) for m in verp.finditer(v))


def complaint_recipients(msg: Message) -> tuple[str, ...]:
    """The original recipients an ARF feedback report (RFC 5965) complains about.

    Original-Rcpt-To of the report when given, else the To of the attached original.
    """
    mail = _Mail(msg)
    found = [_address_field(v) for part in mail.report_parts.get("feedback-report", [])
             for block in _report_fields(part) for v in block.get("original-rcpt-to", [])]
    if not found:
        found = [addr for original in mail.originals
                 for _, addr in _addresses(_headers(original, "to"))]
    return _unique(a for a in found if _is_address(a))


def delivery_status(mail: _Mail) -> list[_Recipient]:
    """The per-recipient fields of an RFC 3464 report (worked out once per mail).

    From message/delivery-status parts; and, for mail sent by a mail system, from a report
    that a gateway wrapped in an attached message, or from DSN fields left in a text part
    by broken MIME (a missing boundary, a blank line inside a part's headers).
    """
    if "delivery_status" in mail.memo:
        return mail.memo["delivery_status"]
    found = mail.memo["delivery_status"] = _find_delivery_status(mail)
    return found


def _find_delivery_status(mail: _Mail) -> list[_Recipient]:
    found = _dsn_recipients(mail.report_parts.get("delivery-status", []))
    if found or not (mail.daemon_sender or mail.is_null_sender
                     or mail.content_type == "multipart/report"):
        return found
    for part in mail.parts[1:]:
        if (part.get_content_type() in ("message/rfc822", "message/global")
                and part.is_multipart()):
            inner = [p for p in part.get_payload() if isinstance(p, Message)]
            if inner:
                found = _dsn_recipients(_Mail(inner[0]).report_parts.get("delivery-status", []))
                if found:
                    return found
    for part in mail.parts:
        if not part.is_multipart() and part.get_content_maintype() not in _BINARY_TYPES:
            text = _payload_text(part, _TEXT_BUDGET)
            if _DSN_TEXT.search(text):
                found = _dsn_blocks(_fields_in_text(text))
                if found:
                    return found
    return found


def find_bounce(mail: _Mail) -> _Bounce | None:
    """The failure or delay this mail reports, or None (worked out once per mail)."""
    if "bounce" not in mail.memo:
        mail.memo["bounce"] = _find_bounce(mail)
    return mail.memo["bounce"]
