"""The steps of `classify`, in order (the first that recognises the mail wins), and
the public checks: `classify`, `is_out_of_office`, `bounce_info`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import Message

from ...signing import loop_value
from ...vocab import LOOP_HEADER
from .bounces import _original_message_ids, _unique, _verp_ids, delivery_status, find_bounce
from .view import (
    _AUTO_REPLY_PREFIX,
    _AWAY_SUBJECT,
    _DELAY_SUBJECT,
    _FAILURE_SUBJECT,
    _OUT_OF_OFFICE_PREFIX,
    _OUTLOOK_OOF_PREFIX,
    BounceInfo,
    Verdict,
    _addresses,
    _cap,
    _field,
    _Mail,
    _report_fields,
)

# --- the steps of classify, in order ---------------------------------------------------------


@dataclass(frozen=True)
class _Desk:
    addresses: frozenset[str]
    locals: frozenset[str]  # local parts of the desk addresses
    domains: frozenset[str]  # their domains, and own_domain
    loop_header: str
    loop_value: str | None  # the header's value on this desk's mail; None: any value


def _own_mail(mail: _Mail, desk: _Desk) -> Verdict | None:
    """The desk's own mail, come back: never answer it, or two desks answer each other forever.

    The loop header counts by its value: another maildesk's mail carries its own, and a
    person's reply relayed by that desk is a person's mail here."""
    if any(desk.loop_value is None or " ".join(v.split()).lower() == desk.loop_value
           for v in mail.headers(desk.loop_header.lower())):
        return Verdict("own", f"{desk.loop_header} header (the desk's own mail)")
    text = " ".join(v for _, v in mail.sender_fields).lower()
    if not any(local in text for local in desk.locals):
        return None  # address parsing is the slow part; most mail stops here
    for field, value in mail.sender_fields:
        for _, addr in _addresses([value]):
            if addr in desk.addresses:
                return Verdict("own", f"{field.title()} is the desk address {addr}")
            local, _, domain = addr.rpartition("@")
            if "+" in local and local.split("+", 1)[0] in desk.locals and domain in desk.domains:
                return Verdict("own", f"{field.title()} is a sub-address of the desk: {addr}")
    return None


def _report(mail: _Mail, desk: _Desk) -> Verdict | None:
    """RFC 6522 multipart/report: delivery status (RFC 3464), read receipt (RFC 8098), ARF."""
    parts, report_type = mail.report_parts, mail.report_type
    if "delivery-status" in parts or report_type in ("delivery-status", "global-delivery-status"):
        bounce = find_bounce(mail)
        if bounce is not None:
            return Verdict("bounce" if bounce.action == "failed" else "delay", bounce.reason)
        actions = _unique(r.action for r in delivery_status(mail))
        if actions:
            return Verdict("auto-generated", "delivery status notification (RFC 3464), action "
                           + ", ".join(actions))
        return Verdict("auto-generated",
                       "delivery status report (RFC 3464) without a readable Action")
    if "disposition-notification" in parts or report_type in ("disposition-notification",
                                                              "global-disposition-notification"):
        blocks = [b for p in parts.get("disposition-notification", []) for b in _report_fields(p)]
        disposition = next((v for v in (_field(b, "disposition") for b in blocks) if v), "")
        return Verdict("mdn", "disposition notification (RFC 8098)"
                       + (f": {_cap(disposition, 80)}" if disposition else ""))
    if "feedback-report" in parts or report_type == "feedback-report":
        blocks = [b for p in parts.get("feedback-report", []) for b in _report_fields(p)]
        feedback = next((v for v in (_field(b, "feedback-type") for b in blocks) if v), "")
        return Verdict("complaint", "feedback report (RFC 5965 ARF)"
                       + (f", Feedback-Type: {_cap(feedback, 40)}" if feedback else ""))
    return None


def _bounce(mail: _Mail, desk: _Desk) -> Verdict | None:
    """Bounces and delay warnings in the many formats that are not RFC 3464."""
    bounce = find_bounce(mail)
    if bounce is None:
        if mail.content_type == "multipart/report":
            report_type = f"; report-type={_cap(mail.report_type, 40)}" if mail.report_type else ""
            return Verdict("auto-generated", f"multipart/report (RFC 6522){report_type}")
        return None
    return Verdict("bounce" if bounce.action == "failed" else "delay", bounce.reason)


def _auto_submitted_value(mail: _Mail) -> tuple[str, str] | None:
    """(keyword, whole value) of the first Auto-Submitted that is not "no"."""
    for value in mail.headers("auto-submitted"):
        keyword = re.split(r"[\s(;]", value.strip().lower(), maxsplit=1)[0]
        if keyword and keyword != "no":
            return keyword, value
    return None


def _auto_submitted(mail: _Mail, desk: _Desk) -> Verdict | None:
    """RFC 3834 section 5: Auto-Submitted other than "no" marks automatic mail."""
    found = _auto_submitted_value(mail)
    if found is None:
        return None
    keyword, value = found
    reason = f"Auto-Submitted: {_cap(value, 60)} (RFC 3834)"
    if keyword == "auto-replied":
        return Verdict("auto-reply", reason)
    # Exchange marks its out-of-office replies auto-generated; their subject says what they are.
    sign = _auto_reply_sign(mail)
    if sign:
        return Verdict("auto-reply", f"{reason}, {sign}")
    return Verdict("auto-generated", reason)


def _auto_reply_sign(mail: _Mail) -> str | None:
    """Why this is an auto-reply that predates RFC 3834: vendor headers, subject prefixes.

    X-Auto-Response-Suppress alone is no sign: Outlook puts it on mail that people write.
    """
    for name in ("x-autoreply", "x-autorespond"):
        value = mail.header(name).strip()
        if value and value.lower() not in ("no", "false", "0"):
            return f"{name.title()}: {_cap(value, 40)}"
    if mail.header("x-autogenerated").strip().lower() == "reply":
        return "X-Autogenerated: Reply"
    if mail.header("precedence").strip().lower() == "auto_reply":
        return "Precedence: auto_reply"
    match = _AUTO_REPLY_PREFIX.search(mail.subject)
    if match:
        return f'subject starts with "{match.group("phrase")}:"'
    match = _OUT_OF_OFFICE_PREFIX.search(mail.subject)
    if match and (mail.has("x-auto-response-suppress") or mail.has("x-ms-exchange-inbox-rules-loop")
                  or mail.is_null_sender):
        return (f'subject starts with "{match.group("phrase")}:" and Outlook headers mark it '
                "as generated")
    return None


def _auto_reply_headers(mail: _Mail, desk: _Desk) -> Verdict | None:
    """Auto-replies without Auto-Submitted (Outlook, older vacation programs)."""
    sign = _auto_reply_sign(mail)
    return Verdict("auto-reply", sign) if sign else None


def _precedence(mail: _Mail, desk: _Desk) -> Verdict | None:
    """Precedence: bulk/junk/list (RFC 2076; RFC 3834 section 2 says not to answer them)."""
    value = mail.header("precedence").strip().lower()
    if value in ("bulk", "junk"):
        return Verdict("bulk", f"Precedence: {value}")
    if value == "list":
        return Verdict("list", "Precedence: list")
    return None


_LIST_HEADERS = ("list-id", "list-unsubscribe", "list-post", "list-help", "list-subscribe",
                 "list-owner", "list-archive", "mailing-list", "x-mailing-list",
                 "x-mailman-version")
_LIST_SENDER = re.compile(r"^(owner-[^@]+|[^@]+-(bounces(\+[^@]*)?|owner))@", re.IGNORECASE)


def _list_headers(mail: _Mail, desk: _Desk) -> Verdict | None:
    """Mailing-list mail: RFC 2919 List-Id, RFC 2369 List-* fields, Mailman, list senders."""
    for name in _LIST_HEADERS:
        if mail.has(name):
            return Verdict("list", f"{name.title()}: {_cap(mail.header(name), 80)}")
    if re.search(r"owner|bounces", mail.header("sender"), re.IGNORECASE):
        for _, addr in _addresses(mail.headers("sender")):
            if _LIST_SENDER.match(addr):
                return Verdict("list", f"Sender: {addr} (a mailing list)")
    return None


def _null_sender(mail: _Mail, desk: _Desk) -> Verdict | None:
    """Return-Path: <> means a notification (RFC 5321 section 4.5.5), never a person's mail."""
    if mail.is_null_sender:
        return Verdict("null-sender", "Return-Path: <> (null envelope sender)")
    return None


def _daemon_sender(mail: _Mail, desk: _Desk) -> Verdict | None:
    """Mail from a mailer daemon or postmaster that was not recognised as anything more specific."""
    if mail.daemon_sender:
        return Verdict("mailer-daemon", f"sender {mail.daemon_sender} is a mail system")
    return None


STEPS: tuple[Callable[[_Mail, _Desk], Verdict | None], ...] = (
    _own_mail, _report, _bounce, _auto_submitted, _auto_reply_headers, _precedence, _list_headers,
    _null_sender, _daemon_sender)


# --- public functions ------------------------------------------------------------------------


def classify(msg: Message, *, desk_addresses: Iterable[str],
             own_loop_header: str = "X-Maildesk-Loop",
             own_domain: str | None = None, own_loop_value: str | None = None) -> Verdict | None:
    """The kind of automatic mail this is and why, or None for mail that a person wrote.

    The desk's own mail is recognised by own_loop_header (with the value own_loop_value,
    when given: `signing.loop_value`), by a From, Sender or Return-Path that
    is one of desk_addresses, or that is a sub-address (local+anything@domain) of one of them;
    own_domain, when given, is one more domain on which such sub-addresses (the VERP envelope
    sender) count as the desk's own.
    """
    desk = _desk(tuple(desk_addresses), own_loop_header, own_domain, own_loop_value)
    mail = _Mail(msg)
    for step in STEPS:
        verdict = step(mail, desk)
        if verdict is not None:
            return verdict
    return None


@functools.lru_cache(maxsize=16)
def _desk(desk_addresses: tuple[str, ...], own_loop_header: str, own_domain: str | None,
          own_loop_value: str | None = None) -> _Desk:
    addresses = frozenset(addr for _, addr in _addresses(desk_addresses) if "@" in addr)
    domains = {a.rsplit("@", 1)[1] for a in addresses}
    if own_domain:
        domains.add(own_domain.strip().lower())
    return _Desk(addresses=addresses, locals=frozenset(a.rsplit("@", 1)[0] for a in addresses),
                 domains=frozenset(domains), loop_header=own_loop_header,
                 loop_value=" ".join(own_loop_value.split()).lower() if own_loop_value else None)


def is_out_of_office(msg: Message) -> bool:
    """Whether this is an automatic reply that says the person is away.

    Outlook's out-of-office prefixes ("Automatic reply:", "Abwesenheitsnotiz:", ...) are enough;
    otherwise the mail must be marked as an auto-reply (Auto-Submitted: auto-replied, X-Autoreply,
    X-Autorespond, Precedence: auto_reply, X-Autogenerated: Reply, an "AutoReply:" prefix, or a
    null return path) and its subject must speak of absence ("Out of Office", "vacation",
    "Abwesend", Sieve's "Auto:" ...). A person's mail titled "Vacation request" is not one.
    """
    mail = _Mail(msg)
    subject = mail.subject
    if _OUTLOOK_OOF_PREFIX.search(subject):
        return True
    if (_FAILURE_SUBJECT.search(subject) or _DELAY_SUBJECT.search(subject)
            or mail.content_type == "multipart/report"):
        return False  # "Undeliverable: Away day" is a bounce, whatever its null return path says
    auto_submitted = _auto_submitted_value(mail)
    marked = ((auto_submitted is not None and auto_submitted[0] == "auto-replied")
              or _auto_reply_sign(mail) is not None or mail.is_null_sender)
    return marked and bool(_AWAY_SUBJECT.search(subject))


def bounce_info(msg: Message, *, verp: re.Pattern[str]) -> BounceInfo | None:
    """What a bounce or delay warning reports; None when the mail is neither.

    original_message_ids come from the returned original (message/rfc822 or text/rfc822-headers
    part), then In-Reply-To, then References (newest first), then Message-ID lines in the text
    of a bounce that quotes the original inline. verp_ids come from the headers the delivering
    server adds (Delivered-To, X-Original-To, Envelope-To, X-Envelope-To, Received "for"), To,
    the returned original's Return-Path, and the bounce text.
    """
    mail = _Mail(msg)
    bounce = find_bounce(mail)
    if bounce is None:
        return None
    return BounceInfo(action=bounce.action, recipients=bounce.recipients,
                      original_message_ids=_original_message_ids(mail),
                      verp_ids=_verp_ids(mail, verp), diagnostic=bounce.diagnostic)


def classify_for_desk(desk, msg: Message, key: bytes | None = None, addresses: Iterable[str] = ()) -> Verdict | None:
    """`classify` with this desk's own address, domain and loop header (`desk` is the
    config's `Desk`) and its other `addresses` (those of its mailboxes); with the signing
    `key`, the loop header counts only with this desk's own value."""
    return classify(msg, desk_addresses=tuple(dict.fromkeys([desk.address, *addresses])), own_loop_header=LOOP_HEADER,
                    own_domain=desk.domain,
                    own_loop_value=loop_value(key, desk.address) if key is not None else None)
