"""Which inbound mail was written by a machine, and what a bounce is about.

The desk never answers automatic mail (DESIGN.md section 4, RFC 3834 section 2). This module
decides, from one parsed message, whether a mail is automatic and of which kind, and for bounces
which outgoing mail and which recipient they report. It is pure: no database, no network, no
clock. It works on the ``compat32`` message tree that the parse stage builds once::

    import email, email.policy
    from maildesk import automatic

    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    verdict = automatic.classify(msg, desk_addresses=["helpdesk@example.test"])
    if verdict is None:
        ...                                   # a person wrote it: thread it, acknowledge it
    elif verdict.kind in ("bounce", "delay"):
        verp = automatic.verp_pattern("{local}+bounce-{id}@{domain}", "helpdesk", "example.test")
        info = automatic.bounce_info(msg, verp=verp)
        # info.verp_ids name the outbox rows; info.original_message_ids the stored Message-IDs;
        # info.recipients the addresses that failed (or were only delayed: info.action).
    elif verdict.kind == "complaint":
        automatic.complaint_recipients(msg)   # who pressed "this is spam"
    log.info("automatic kind=%s reason=%s", verdict.kind, verdict.reason)

``classify`` runs the steps of ``STEPS`` in order and the first that recognises the mail wins,
so the most specific kind is reported: a delivery report that also carries ``Auto-Submitted``
and mailing-list headers is a "bounce", not "auto-generated" or "list".

``is_out_of_office`` is separate: it says whether an automatic reply announces that the person
is away, which the desk uses to mark a technician absent.

Costs: mail that a person wrote takes about 0.1 ms (header checks only; addresses are parsed
only when a cheap search says they may matter). Only mail that looks like a bounce (sender is
a mailer daemon, subject is a failure notice, ``multipart/report``, ``Return-Path: <>``,
``X-Failed-Recipients``) is handed to ``flufl.bounce``, and then only a trimmed copy whose
attachments and returned original have no body: its heuristics read every line of every part
and take seconds on a bounce that returns a large attachment. A bounce costs 0.5 to 10 ms,
and ``bounce_info`` does that work again.
"""

from __future__ import annotations

import email.header
import email.message
import email.parser
import email.policy
import email.utils
import functools
import re
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.message import Message
from email.utils import getaddresses
from functools import cached_property


KINDS = ("bounce", "delay", "mdn", "complaint", "auto-reply", "auto-generated", "bulk", "list",
         "own", "mailer-daemon", "null-sender")


@dataclass(frozen=True)
class Verdict:
    """Why a mail must not be answered."""

    kind: str  # one of KINDS
    reason: str  # a sentence for the decision log


@dataclass(frozen=True)
class BounceInfo:
    """What a bounce or delay warning reports."""

    action: str  # "failed" or "delayed"
    recipients: tuple[str, ...]  # lower-cased addresses that failed (or were delayed)
    original_message_ids: tuple[str, ...]  # without <>, the most reliable first
    verp_ids: tuple[int, ...]  # outbox ids from VERP addresses
    diagnostic: str  # status code and diagnostic, at most DIAGNOSTIC_LENGTH characters


DIAGNOSTIC_LENGTH = 300

# Bounds that keep one hostile or huge message from costing more than a few milliseconds.
_MAX_PARTS = 500  # parts looked at in one message
_MAX_DEPTH = 32  # multipart nesting followed
_TEXT_BUDGET = 256 * 1024  # characters of bounce text searched for diagnostics and VERP
_FLUFL_TEXT = 128 * 1024  # characters of each text part that flufl.bounce reads

_REPORT_SUBTYPES = {
    "delivery-status": "delivery-status",
    "global-delivery-status": "delivery-status",  # RFC 6533
    "disposition-notification": "disposition-notification",
    "global-disposition-notification": "disposition-notification",  # RFC 6533
    "feedback-report": "feedback-report",
}
_ORIGINAL_SUBTYPES = ("rfc822", "global", "rfc822-headers", "global-headers")
_BINARY_TYPES = ("application", "image", "audio", "video", "font", "model")


# --- reading headers robustly ----------------------------------------------------------------


def _text(value: object) -> str:
    """A header value as str.

    compat32 hands back an email.header.Header for a header with raw 8-bit bytes (UTF-8 as
    RFC 6532 allows, or a legacy charset); its bytes are read as UTF-8, else as Latin-1.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, email.header.Header):
        return str(value)
    text = []
    for chunk, charset in email.header.decode_header(value):
        if isinstance(chunk, str):
            text.append(chunk)
            continue
        for codec in ([charset] if charset and charset != "unknown-8bit" else []) + ["utf-8"]:
            try:
                text.append(chunk.decode(codec))
                break
            except (LookupError, UnicodeDecodeError):
                continue
        else:
            text.append(chunk.decode("latin-1"))
    return "".join(text)


def _header(msg: Message, name: str) -> str:
    return _text(msg.get(name))


def _headers(msg: Message, name: str) -> list[str]:
    return [_text(v) for v in msg.get_all(name, [])]


def _decoded(value: str) -> str:
    """An RFC 2047 encoded header as readable text; the raw value when it cannot be decoded."""
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return value


def _addresses(values: Iterable[str]) -> list[tuple[str, str]]:
    """(display name, lower-cased address) pairs; an unparseable value yields nothing."""
    return [(name, addr.strip().lower()) for name, addr in getaddresses(list(values))]


_ADDRESS = re.compile(r"^[^@\s<>()\",;:]+@[^@\s<>()\",;:]+$")


def _is_address(value: str) -> bool:
    return bool(_ADDRESS.match(value))


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _cap(value: str, length: int = DIAGNOSTIC_LENGTH) -> str:
    value = _one_line(value)
    return value if len(value) <= length else value[: length - 1].rstrip() + "…"


# --- walking the MIME tree -------------------------------------------------------------------


def _parts(msg: Message) -> Iterator[Message]:
    """The parts of this message, not of messages attached to it.

    A forwarded bounce (a person's mail with a bounce attached as message/rfc822) is a person's
    mail, so the walk does not descend into message/* parts.
    """
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part
        if (part.get_content_maintype() == "multipart" and part.is_multipart()
                and depth < _MAX_DEPTH):
            children = [p for p in part.get_payload() if isinstance(p, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))


def _payload_text(part: Message, limit: int) -> str:
    """A non-multipart part's decoded text, at most limit characters."""
    if part.is_multipart():
        return ""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    data = data[: limit * 4]
    charset = _text(part.get_content_charset()) or "utf-8"
    try:
        text = data.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        text = data.decode("utf-8", "replace")
    return text[:limit]


Fields = dict[str, list[str]]  # one block of a report: lower-cased field name -> values

_FIELD_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")


def _fields_in_text(text: str) -> list[Fields]:
    """Blocks of "Name: value" lines separated by blank lines, read leniently.

    A line that is neither a field nor indented continues the previous field: mail servers
    write unfolded multi-line Diagnostic-Code values, which compat32 takes for the body.
    """
    blocks: list[Fields] = []
    block: Fields = {}
    last: list[str] | None = None
    for line in text.splitlines():
        if not line.strip():
            if block:
                blocks.append(block)
            block, last = {}, None
            continue
        match = _FIELD_LINE.match(line)
        if match:
            last = block.setdefault(match.group(1).lower(), [])
            last.append(match.group(2).strip())
        elif last:
            last[-1] = f"{last[-1]} {line.strip()}"
    if block:
        blocks.append(block)
    return blocks


def _report_fields(part: Message) -> list[Fields]:
    """The field blocks of a message/delivery-status, -disposition-notification or
    -feedback-report part.

    compat32 parses message/delivery-status into a list of header blocks and the other report
    types into one embedded message; a part with a transfer encoding stays text. All three
    are turned back into text and read by _fields_in_text.
    """
    if not part.is_multipart():
        return _fields_in_text(_payload_text(part, _TEXT_BUDGET))
    chunks = []
    for block in part.get_payload():
        if isinstance(block, Message):
            lines = [f"{name}: {_text(value)}" for name, value in block.items()]
            payload = block.get_payload()
            if isinstance(payload, str):
                lines.append(payload)
            chunks.append("\n".join(lines))
    return _fields_in_text("\n\n".join(chunks))


def _field(block: Fields, name: str) -> str:
    values = block.get(name)
    return values[0] if values else ""


def _original_headers(part: Message) -> Message | None:
    """The headers of a returned original (message/rfc822 or text/rfc822-headers part)."""
    if part.is_multipart():
        inner = [p for p in part.get_payload() if isinstance(p, Message)]
        return inner[0] if inner else None
    text = _payload_text(part, _TEXT_BUDGET)
    if not text.strip():
        return None
    head = re.split(r"\r?\n\r?\n", text.lstrip(), maxsplit=1)[0]
    return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(head + "\n")


# --- what one message looks like -------------------------------------------------------------

_DAEMON_LOCAL = re.compile(
    r"^(mailer[-_.]?daemon|postmaster|mail[-_.]?delivery[-_.]?(sub)?system|mdaemon"
    r"|(no[-_.]?reply[-_.]?)?dmarc([-_.]?(no[-_.]?reply|reports?|support))?"
    r"|noreply-dmarc-support)$", re.IGNORECASE)
_DAEMON_HINT = re.compile(r"daemon|postmaster|delivery|dmarc", re.IGNORECASE)
_DAEMON_NAME = re.compile(r"mailer[-_ ]?daemon|postmaster|mail delivery (sub)?system"
                          r"|mail delivery service", re.IGNORECASE)

# Subjects that mail servers put on failure notices and delay warnings. They are anchored at the
# start (after an optional "[tag]") so that "Fwd: Undelivered Mail" from a person does not match.
_SUBJECT_START = r"^\s*(\[[^\]]*\]\s*)*"
_FAILURE_SUBJECT = re.compile(_SUBJECT_START + r"(" + "|".join((
    r"undeliver(ed|able)\b",
    r"unzustellbar", r"non remis", r"non recapitabile", r"onbestelbaar", r"no se puede entregar",
    r"non[- ]?deliver(y|able)",
    r"(e-?mail |mail |message )?delivery (status notification \(failure\)|failed|failure"
    r"|report \(failure\)|problem|has failed)",
    r"delivery status notification:\s*(error|fail)",
    r"there was an error (sending|delivering) your (mail|message)",
    r"delivery notification: delivery has failed",
    r"failure notice",
    r"returned (mail|message)",
    r"mail system error",
    r"(mail|message) (could not|couldn't|cannot|can ?not) be delivered",
    r"(mail|message) not delivered",
    r"failed mail\b", r"mail failed\b", r"permanent (delivery )?failure\b",
    r"delivery status notification\s*$",
    r"your message to .* (could not|couldn't) be delivered",
)) + r")", re.IGNORECASE)
_DELAY_SUBJECT = re.compile(_SUBJECT_START + r"(" + "|".join((
    r"delayed mail",
    r"delivery status notification \((mail delivery )?delay(ed)?\)",
    r"delivery delayed",
    r"(mail|message) delayed",
    r"warning: (could not send message for past|message .*delayed"
    r"|message has not yet been delivered)",
)) + r")", re.IGNORECASE)
_FAILURE_TEXT = re.compile("|".join((
    r"\b(could not|couldn't|cannot|can't|was not|wasn't|unable to) be delivered\b",
    r"\bunable to deliver\b", r"\bundeliverable\b",
    r"\bpermanent(ly)? (fatal )?(error|failure)s?\b",
    r"\bdelivery (has )?failed\b", r"\bfailed permanently\b", r"\breturned permanent errors?\b",
)), re.IGNORECASE)
_DELAY_TEXT = re.compile("|".join((
    r"\bwill (continue to )?retry\b", r"\bwill be retried\b", r"\bstill being retried\b",
    r"\bhas not yet been delivered\b", r"\bno action is required on your part\b",
    r"\bthis is (just )?a warning\b", r"\bdelivery attempts will continue\b",
    r"\bdelivery (to the following recipients? )?has been delayed\b",
)), re.IGNORECASE)

# Subject prefixes that Outlook's out-of-office assistant writes, in the languages it speaks.
_OUTLOOK_OOF = (
    r"automatic reply", r"out of office auto[- ]?reply", r"abwesenheitsnotiz",
    r"automatische antwort",
    r"r[ée]ponse automatique", r"respuesta autom[áa]tica", r"risposta automatica",
    r"automatisch antwoord", r"resposta autom[áa]tica", r"autosvar", r"automatisk svar",
    r"automaattinen vastaus", r"automatyczna odpowied[źz]", r"automatick[áa] odpov[ěe]d[ťt]",
    r"automatikus v[áa]lasz", r"автоматический ответ", r"自動応答", r"自动回复", r"自動回覆",
)


def _prefix(phrases: Iterable[str]) -> re.Pattern[str]:
    return re.compile(_SUBJECT_START + r"(?P<phrase>" + "|".join(phrases) + r")\s*:", re.IGNORECASE)


# Prefixes that auto-reply software writes and people do not type; RT writes "AutoReply:" on
# its acknowledgements, which are auto-replies but say nothing about absence.
_AUTO_REPLY_PREFIX = _prefix(_OUTLOOK_OOF + (r"auto[- ]?reply", r"auto[- ]?response"))
_OUTLOOK_OOF_PREFIX = _prefix(_OUTLOOK_OOF)
# Older Exchange wrote "Out of Office:"; a person might too, so it needs an Outlook header.
_OUT_OF_OFFICE_PREFIX = _prefix((r"out of (the )?office",))
_AWAY_SUBJECT = re.compile("|".join((
    r"out of (the )?office", r"\booo\b", r"abwesen", r"\babsen(ce|t)\b", r"vacation", r"holiday",
    r"urlaub", r"\bcong[ée]s?\b", r"\bferie", r"vacaciones", r"fuera de la oficina",
    r"fuori (sede|ufficio)", r"afwezig", r"\baway\b", r"on leave", r"not in the office",
    r"^\s*auto:",  # Sieve vacation (Pigeonhole) default subject
)), re.IGNORECASE)


class _Mail:
    """Facts about one message, each computed once and only when a step asks."""

    def __init__(self, msg: Message):
        self.msg = msg

    @cached_property
    def fields(self) -> dict[str, list[str]]:
        """The top-level header fields by lower-cased name: one pass instead of one per lookup."""
        found: dict[str, list[str]] = {}
        for name, value in self.msg.items():
            found.setdefault(name.lower(), []).append(_text(value))
        return found

    def header(self, name: str) -> str:
        values = self.fields.get(name)
        return values[0] if values else ""

    def headers(self, name: str) -> list[str]:
        return self.fields.get(name, [])

    def has(self, name: str) -> bool:
        return name.lower() in self.fields

    @cached_property
    def subject(self) -> str:
        return _one_line(_decoded(self.header("subject")))

    @cached_property
    def sender_fields(self) -> list[tuple[str, str]]:
        """(field name, value) of From, Sender and Return-Path."""
        return [(name, v) for name in ("from", "sender", "return-path") for v in self.headers(name)]

    @cached_property
    def is_null_sender(self) -> bool:
        # RFC 5321 section 4.5.5: notifications are sent with a null reverse-path, which the
        # delivering server records as "Return-Path: <>".
        return any(re.fullmatch(r"\s*<\s*>\s*", v) for v in self.headers("return-path"))

    @cached_property
    def daemon_sender(self) -> str | None:
        """The From/Sender/Return-Path address that is a mailer daemon or postmaster, if any."""
        values = [v for _, v in self.sender_fields]
        if not _DAEMON_HINT.search(" ".join(values)):
            return None  # address parsing is the slow part; most mail stops here
        for name, addr in _addresses(values):
            local = addr.rsplit("@", 1)[0] if addr else ""
            if local and _DAEMON_LOCAL.match(local.strip('"')):
                return addr
            if _DAEMON_NAME.search(name):
                return f"{name} <{addr}>"
        return None

    @cached_property
    def content_type(self) -> str:
        return self.msg.get_content_type()

    @cached_property
    def report_type(self) -> str:
        """The report-type of a multipart/report, lower-cased; '' for anything else."""
        if self.content_type != "multipart/report":
            return ""
        value = email.utils.collapse_rfc2231_value(self.msg.get_param("report-type", ""))
        return _text(value).strip().lower()

    @cached_property
    def parts(self) -> list[Message]:
        return list(_parts(self.msg))

    @cached_property
    def report_parts(self) -> dict[str, list[Message]]:
        """message/delivery-status, -disposition-notification, -feedback-report parts by type.

        Looked for in RFC 6522 reports and in mail that may be a bounce; walking the parts of
        every ordinary multipart mail would cost more than all the other checks together.
        """
        found: dict[str, list[Message]] = {}
        if not (self.content_type == "multipart/report" or self.may_be_bounce
                or self.msg.get_content_maintype() == "message"):
            return found
        for part in self.parts:
            if part.get_content_maintype() == "message":
                kind = _REPORT_SUBTYPES.get(part.get_content_subtype())
                if kind:
                    found.setdefault(kind, []).append(part)
        return found

    @cached_property
    def originals(self) -> list[Message]:
        """Headers of the returned originals: attached message/rfc822 or text/rfc822-headers."""
        found = []
        for part in self.parts[1:]:
            if part.get_content_subtype() in _ORIGINAL_SUBTYPES and part.get_content_maintype() in (
                    "message", "text"):
                headers = _original_headers(part)
                if headers is not None:
                    found.append(headers)
        return found

    @cached_property
    def text(self) -> str:
        """The bounce's own text parts (not those of the returned original), bounded."""
        chunks, budget = [], _TEXT_BUDGET
        for part in self.parts:
            if budget <= 0:
                break
            if part.get_content_maintype() == "text" and part.get_content_subtype() in (
                    "plain", "html") and not part.is_multipart():
                chunk = _payload_text(part, budget)
                if part.get_content_subtype() == "html":
                    chunk = re.sub(r"<[^>]*>", " ", chunk)
                chunks.append(chunk)
                budget -= len(chunk)
        return "\n".join(chunks)

    @cached_property
    def notice(self) -> str:
        """The start of the bounce's text, up to the original that it quotes inline."""
        text = self.text[:16384]
        quoted = _QUOTED_HEADER.search(text)
        return text[: quoted.start()] if quoted else text

    @cached_property
    def may_be_bounce(self) -> bool:
        """The cheap signs that a mail server wrote this; only then is flufl.bounce asked."""
        return bool(self.daemon_sender or self.is_null_sender
                    or self.content_type == "multipart/report" or self.has("x-failed-recipients")
                    or _FAILURE_SUBJECT.search(self.subject) or _DELAY_SUBJECT.search(self.subject))

    @cached_property
    def delivery_status(self) -> list[_Recipient]:
        """The per-recipient fields of an RFC 3464 report.

        From message/delivery-status parts; and, for mail sent by a mail system, from a report
        that a gateway wrapped in an attached message, or from DSN fields left in a text part
        by broken MIME (a missing boundary, a blank line inside a part's headers).
        """
        found = _dsn_recipients(self.report_parts.get("delivery-status", []))
        if found or not (self.daemon_sender or self.is_null_sender
                         or self.content_type == "multipart/report"):
            return found
        for part in self.parts[1:]:
            if (part.get_content_type() in ("message/rfc822", "message/global")
                    and part.is_multipart()):
                inner = [p for p in part.get_payload() if isinstance(p, Message)]
                if inner:
                    found = _dsn_recipients(_Mail(inner[0]).report_parts.get("delivery-status", []))
                    if found:
                        return found
        for part in self.parts:
            if not part.is_multipart() and part.get_content_maintype() not in _BINARY_TYPES:
                text = _payload_text(part, _TEXT_BUDGET)
                if _DSN_TEXT.search(text):
                    found = _dsn_blocks(_fields_in_text(text))
                    if found:
                        return found
        return found

    @cached_property
    def bounce(self) -> _Bounce | None:
        return _find_bounce(self)


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
    dsn = mail.delivery_status
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
_QUOTED_HEADER = re.compile(r"^(Received|Return-Path|Message-ID|MIME-Version|Content-Type|From|To"
                            r"|Subject|Date)[ \t]*:", re.IGNORECASE | re.MULTILINE)
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
        if maintype == "multipart" and depth < _MAX_DEPTH:
            view.set_payload([_flufl_view(p, depth + 1) for p in msg.get_payload()[:_MAX_PARTS]
                              if isinstance(p, Message)])
            view.preamble, view.epilogue = msg.preamble, msg.epilogue
        elif msg.get_content_subtype() in _REPORT_SUBTYPES:
            view.set_payload([_flufl_view(p, depth + 1) for p in msg.get_payload()
                              if isinstance(p, Message)])
        else:  # a returned original, which says nothing about the failure
            view.set_payload("")
    elif maintype in _BINARY_TYPES:
        view.set_payload("")
    else:  # text, or a part whose multipart or message/* structure could not be parsed
        payload = msg.get_payload()
        view.set_payload(payload[:_FLUFL_TEXT] if isinstance(payload, str) else "")
    return view



# --- the steps of classify, in order ---------------------------------------------------------


@dataclass(frozen=True)
class _Desk:
    addresses: frozenset[str]
    locals: frozenset[str]  # local parts of the desk addresses
    domains: frozenset[str]  # their domains, and own_domain
    loop_header: str


def _own_mail(mail: _Mail, desk: _Desk) -> Verdict | None:
    """The desk's own mail, come back: never answer it, or two desks answer each other forever."""
    if mail.has(desk.loop_header):
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
        bounce = mail.bounce
        if bounce is not None:
            return Verdict("bounce" if bounce.action == "failed" else "delay", bounce.reason)
        actions = _unique(r.action for r in mail.delivery_status)
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
    bounce = mail.bounce
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
             own_domain: str | None = None) -> Verdict | None:
    """The kind of automatic mail this is and why, or None for mail that a person wrote.

    The desk's own mail is recognised by own_loop_header, by a From, Sender or Return-Path that
    is one of desk_addresses, or that is a sub-address (local+anything@domain) of one of them;
    own_domain, when given, is one more domain on which such sub-addresses (the VERP envelope
    sender) count as the desk's own.
    """
    desk = _desk(tuple(desk_addresses), own_loop_header, own_domain)
    mail = _Mail(msg)
    for step in STEPS:
        verdict = step(mail, desk)
        if verdict is not None:
            return verdict
    return None


@functools.lru_cache(maxsize=16)
def _desk(desk_addresses: tuple[str, ...], own_loop_header: str, own_domain: str | None) -> _Desk:
    addresses = frozenset(addr for _, addr in _addresses(desk_addresses) if "@" in addr)
    domains = {a.rsplit("@", 1)[1] for a in addresses}
    if own_domain:
        domains.add(own_domain.strip().lower())
    return _Desk(addresses=addresses, locals=frozenset(a.rsplit("@", 1)[0] for a in addresses),
                 domains=frozenset(domains), loop_header=own_loop_header)


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
    bounce = mail.bounce
    if bounce is None:
        return None
    return BounceInfo(action=bounce.action, recipients=bounce.recipients,
                      original_message_ids=_original_message_ids(mail),
                      verp_ids=_verp_ids(mail, verp), diagnostic=bounce.diagnostic)


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


def _verp_ids(mail: _Mail, verp: re.Pattern[str]) -> tuple[int, ...]:
    values = [v for name in _VERP_HEADERS for v in mail.headers(name)]
    values += [v for original in mail.originals for v in _headers(original, "return-path")]
    values.append(mail.text)
    return _unique(int(m.group("id")) for v in values for m in verp.finditer(v))


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


_VERP_FIELDS = ("local", "id", "domain")


def _verp_template(template: str) -> list[tuple[str, str | None]]:
    """The template as (literal text, field name or None) pairs; checks the fields."""
    try:
        pieces = [(literal, field) for literal, field, _, _ in string.Formatter().parse(template)]
    except ValueError as exc:
        raise ValueError(f"bounce address template {template!r}: {exc}") from None
    fields = [f for _, f in pieces if f is not None]
    unknown = [f for f in fields if f not in _VERP_FIELDS]
    if unknown:
        raise ValueError(
            f"bounce address template {template!r}: unknown placeholder {{{unknown[0]}}}")
    if fields.count("id") != 1:
        raise ValueError(f"bounce address template {template!r}: needs {{id}} exactly once")
    return pieces


def verp_pattern(template: str, local: str, domain: str) -> re.Pattern[str]:
    """A pattern that finds VERP addresses made from template anywhere in a header value.

    It ignores case and captures the outbox id as the group "id".
    """
    values = {"local": re.escape(local), "domain": re.escape(domain), "id": r"(?P<id>\d{1,18})"}
    body = "".join(re.escape(literal) + (values[field] if field else "")
                   for literal, field in _verp_template(template))
    return re.compile(r"(?<![\w.+-])" + body + r"(?!\.?[\w-])", re.IGNORECASE)


def verp_address(template: str, local: str, domain: str, outbox_id: int) -> str:
    """The envelope sender for outbox row outbox_id, e.g. helpdesk+bounce-42@example.test."""
    if isinstance(outbox_id, bool) or not isinstance(outbox_id, int) or outbox_id < 0:
        raise ValueError(f"outbox id must be a non-negative integer, not {outbox_id!r}")
    values = {"local": local, "domain": domain, "id": str(outbox_id)}
    return "".join(literal + (values[field] if field else "")
                   for literal, field in _verp_template(template))
