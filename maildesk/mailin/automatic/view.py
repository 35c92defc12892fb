"""One message as the automatic-mail checks see it: headers read robustly, the MIME
tree walked within bounds, report fields, and the `_Mail` view with its cached facts.
"""

from __future__ import annotations

import email.header
import email.message
import email.parser
import email.policy
import email.utils
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.message import Message
from functools import cached_property

from ..mime.headers import getaddresses

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


_QUOTED_HEADER = re.compile(r"^(Received|Return-Path|Message-ID|MIME-Version|Content-Type|From|To"
                            r"|Subject|Date)[ \t]*:", re.IGNORECASE | re.MULTILINE)


class _Mail:
    """Facts about one message, each computed once and only when a step asks."""

    def __init__(self, msg: Message):
        self.msg = msg
        self.memo: dict = {}  # what bounces.py works out once per mail

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
