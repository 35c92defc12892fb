"""What parsing one mail yields: `ParsedMail`, its addresses and attachments, or
`MailRejected`.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ...errors import MaildeskError
from .quotes import strip_quoted
from .text import _text_of_raw, clean_header_text, decode_header_value
from .tree import STDLIB_PARSER as _PARSER


class MailRejected(MaildeskError):
    """The message breaks a limit or cannot be read at all; `reason` says which, in
    words fit for the quarantine log."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass
class Address:
    name: str  # display name, decoded, CR/LF/NUL removed
    addr: str  # lower-cased addr-spec, "" when unparseable


@dataclass
class AttachmentPart:
    filename: str  # safe: see safe_filename
    content_type: str
    data: bytes | None  # None once the contents are stored (attachments.write_contents)
    size: int
    sha256: str  # hex of data


# Headers a summary keeps, for the stages that read headers beyond the usual ones
# (sender authentication, urgency); anything else is read from the MIME tree.
SUMMARY_HEADERS = ("importance", "x-priority", "priority")
# Headers a summary keeps as they stand, never decoded from RFC 2047: the receiving
# server's authentication verdicts (mailin/authentication.py), top first, and the loop
# header (whose value says which desk wrote the mail).
RAW_HEADERS = ("authentication-results", "x-ms-exchange-organization-authas", "x-maildesk-loop")


@dataclass
class ParsedMail:
    msg: email.message.Message | None  # the compat32 tree; None when made from a summary (see tree())
    message_id: str | None  # without <>, whitespace removed; None if absent or empty
    in_reply_to: list[str]  # ids without <>, in order
    references: list[str]  # ids without <>, in order
    subject: str  # decoded, one line
    from_: list[Address]  # every address of every From header
    sender: Address | None  # the single sender when unambiguous
    sender_problem: str | None  # why there is none: "2 From headers", ...
    reply_to: list[Address]
    to: list[Address]
    cc: list[Address]
    date: datetime | None  # aware; None if absent or garbage
    text: str  # text/plain preferred, HTML-only mail converted; LF line ends
    html: str | None  # the HTML body, sanitized; None without an HTML part
    attachments: list[AttachmentPart] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)  # "CloseBoundaryNotFound", ...
    size: int = 0  # len(raw)
    raw: bytes = b""  # kept by from_summary, to build the tree when it is asked for
    raw_source: Callable[[], bytes] | None = None  # or how to read them then (from_summary)
    kept_headers: dict | None = None  # SUMMARY_HEADERS, when made from a summary
    kept_raw: dict | None = None  # RAW_HEADERS, when made from a summary that has them

    def tree(self) -> email.message.Message:
        """The compat32 MIME tree, parsed now if this mail was made from a summary."""
        if self.msg is None:
            if self.raw_source is not None:
                self.raw, self.raw_source = self.raw_source(), None
            self.msg = _PARSER.parsebytes(self.raw)
        return self.msg

    def header(self, name: str) -> str:
        """The first header of that name, RFC 2047 decoded, one line; "" if absent."""
        values = self.headers(name)
        return values[0] if values else ""

    def headers(self, name: str) -> list[str]:
        name = name.lower()
        if self.kept_headers is not None and name in SUMMARY_HEADERS:
            return list(self.kept_headers.get(name, []))
        return [
            clean_header_text(decode_header_value(str(value)))
            for key, value in self.tree().raw_items()
            if key.lower() == name
        ]

    def raw_headers(self, name: str) -> list[str]:
        """The values of the message's own fields of that name, topmost first, as they
        stand: unfolded, control characters gone, never decoded from RFC 2047."""
        name = name.lower()
        if self.kept_raw is not None and name in RAW_HEADERS:
            return list(self.kept_raw.get(name, []))
        return [clean_header_text(_text_of_raw(str(value))) for key, value in self.tree().raw_items()
                if key.lower() == name]

    def summary(self) -> dict:
        """What the desk process needs of this mail, as JSON-ready data: the mail
        process parses each message once and stores this beside its bytes."""
        pair = lambda a: [a.name, a.addr]  # noqa: E731
        return {
            "message_id": self.message_id, "in_reply_to": self.in_reply_to, "references": self.references,
            "subject": self.subject, "from": [pair(a) for a in self.from_],
            "sender": pair(self.sender) if self.sender else None, "sender_problem": self.sender_problem,
            "reply_to": [pair(a) for a in self.reply_to], "to": [pair(a) for a in self.to],
            "cc": [pair(a) for a in self.cc], "date": self.date.isoformat() if self.date else None,
            "text": self.text, "html": self.html, "defects": self.defects, "size": self.size,
            "attachments": [[p.filename, p.content_type, p.size, p.sha256] for p in self.attachments],
            "headers": {h: self.headers(h) for h in SUMMARY_HEADERS},
            "raw_headers": {h: self.raw_headers(h) for h in RAW_HEADERS},
            # the reply's new part, found here in the fetch process rather than by the desk
            # at its turn: as a length when it begins the text (it nearly always does)
            "reply": len(reply) if self.text.startswith(reply := self.reply_text) else reply,
        }

    @classmethod
    def from_summary(cls, d: dict, raw: bytes | Callable[[], bytes]) -> ParsedMail:
        """The mail a summary describes; `raw`, its bytes or how to read them (only the
        MIME tree needs them)."""
        addrs = lambda items: [Address(n, a) for n, a in items]  # noqa: E731
        mail = cls(
            msg=None, message_id=d["message_id"], in_reply_to=d["in_reply_to"], references=d["references"],
            subject=d["subject"], from_=addrs(d["from"]), sender=Address(*d["sender"]) if d["sender"] else None,
            sender_problem=d["sender_problem"], reply_to=addrs(d["reply_to"]), to=addrs(d["to"]), cc=addrs(d["cc"]),
            date=datetime.fromisoformat(d["date"]) if d["date"] else None, text=d["text"], html=d["html"],
            attachments=[AttachmentPart(f, t, None, n, h) for f, t, n, h in d["attachments"]],
            defects=d["defects"], size=d["size"], kept_headers=d["headers"],
            raw=raw if isinstance(raw, bytes) else b"", raw_source=None if isinstance(raw, bytes) else raw,
            kept_raw=d.get("raw_headers"),  # a summary stored before RAW_HEADERS: read from the bytes
        )
        reply = d.get("reply")  # a summary stored without it: found when first read
        if reply is not None:
            mail.__dict__["reply_text"] = mail.text[:reply] if isinstance(reply, int) else reply
        return mail

    @functools.cached_property
    def reply_text(self) -> str:
        return strip_quoted(self.text)
