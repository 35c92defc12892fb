"""What the stages of the pipeline share about one inbound message, and the two ways
a stage can stop it: `Discard` (done: nothing more to do, not an error) and `Reject`
(quarantine it with a reason)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..mailin import authentication
from ..store import Inbound, Message, Ticket, add_event, scalar
from ..vocab import Lane

if TYPE_CHECKING:
    from ..service.runtime import Runtime


class Discard(Exception):
    """Stop here; the message is processed, with this outcome."""

    def __init__(self, outcome: str, reason: str):
        self.outcome, self.reason = outcome, reason
        super().__init__(reason)


class Reject(Exception):
    """Stop here; the message is quarantined with this reason."""

    def __init__(self, reason: str, tell_sender: bool = False):
        self.reason, self.tell_sender = reason, tell_sender
        super().__init__(reason)


@dataclass
class Intent:
    """A mail a stage decided to send; the notify stage renders and queues it."""

    kind: str
    rcpt: str
    rcpt_name: str = ""
    context: dict = field(default_factory=dict)
    ticket: Ticket | None = None
    from_name: str | None = None
    automatic: bool | None = None
    thread: Any = None
    public: Message | None = None  # the conversation message this mail carries


def read_raw(inbound_id: int) -> bytes:
    """The bytes of an inbound message, as the fetch stored them."""
    data = scalar('SELECT "data" FROM "inbound_raw" WHERE "inbound_id" = ?', (inbound_id,))
    return bytes(data) if data is not None else b""


@dataclass
class Context:
    rt: Runtime
    now: dt.datetime
    inbound: Inbound
    raw: bytes | None  # None until first asked for (`raw_bytes`): a mail the fetch read ahead needs its
    # bytes only for what its summary does not hold (the MIME tree of a bounce, a quarantine)
    mail: Any = None  # mime.ParsedMail
    summary: str | None = None  # what the fetch process read of it (parse.summarize), as JSON
    reading: Any = None  # or what this process read ahead of processing (parse.Reading)
    verdict: Any = False  # automatic.Verdict or None, from the summary; False: not known yet
    claimed: tuple[bool, int | None] | None = None  # claimed with its batch: (got, earlier copy's ticket)
    anchors: list | None = None  # the stored mail its Message-IDs cite, read with its batch (correlate.read_ahead)
    automatic: Any = None  # automatic.Verdict
    ticket: Ticket | None = None
    how: str = ""  # how the ticket was found
    reply_to_kind: str = ""  # the kind of desk mail this one answers (ack, survey, ...)
    new_ticket: bool = False
    follows: Ticket | None = None  # the closed ticket a late reply follows up
    logged_for: str = ""  # set by commands (#for): the caller a technician logs the incident for
    cites: Ticket | None = None  # a ticket whose mail a non-participant cited (correlate): mentioned, not joined
    subject: str = ""  # the subject of the ticket this mail opens, when not the mail's own (a follow-up by link)
    sender: str = ""  # the one unambiguous sender address, lower case, or ""
    sender_name: str = ""
    role: str = "stranger"  # requester | staff | participant | stranger
    is_staff: bool = False  # a technician or incident manager, whatever their role here
    authenticated: bool = False
    auth_reason: str = ""
    domain_authenticated: bool = False  # Authentication-Results (or trust_sender_address) vouch for From
    domain_auth_reason: str = ""
    auth_warning: str = ""  # for staff notices: requester-side mail that failed authentication (identity)
    verified: bool = False  # requester side: authenticated, a valid one-click link, or a signed desk id for the sender
    verified_reason: str = ""
    block: list = field(default_factory=list)  # the command lines of a reply (commands)
    spoofed_reference: bool = False
    passed: authentication.Result | None = None  # whether the mail passed authentication (see `passed_authentication`)
    retried: bool = False  # an admin ran `maildesk inbound retry`: past the per-sender cap
    token: Any = None  # signing.Token of a one-click link whose signature is valid for `token_rcpt` (correlate)
    token_rcpt: str = ""  # whom that link was made for; it acts only when they sent it
    body: str = ""  # the text after the command block, quoted history stripped
    commands: list = field(default_factory=list)
    internal: bool = False  # a #note, or a refused command mail
    message: Message | None = None  # the stored conversation message
    outcome: str = ""
    intents: list[Intent] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)

    @property
    def cfg(self):
        return self.rt.cfg

    def raw_bytes(self) -> bytes:
        """The message's bytes, read from the database the first time they are asked for."""
        if self.raw is None:
            self.raw = read_raw(self.inbound.id)
        return self.raw

    @property
    def ref(self) -> str:
        return self.rt.ref(self.ticket) if self.ticket else "-"

    def passed_authentication(self) -> authentication.Result:
        """Whether the mail passed authentication (mailin/authentication.py): its topmost
        Authentication-Results, read raw, from a trusted server. Worked out once, by the
        first stage that asks."""
        if self.passed is None:
            if self.mail is None:
                self.passed = authentication.Result(False, "the mail could not be read")
            else:
                self.passed = authentication.check(
                    self.sender, self.mail.raw_headers("authentication-results"),
                    self.mail.raw_headers("x-ms-exchange-organization-authas"),
                    authentication.Policy.of(self.cfg.security))
        return self.passed

    @property
    def lane(self) -> Lane:
        """Whose allowance this mail's answers use (vocab.Lane): authenticated staff are
        never counted; authenticated and unauthenticated mail are counted apart."""
        passed = self.passed_authentication().passed
        if passed and self.sender and self.cfg.is_staff(self.sender):
            return Lane.STAFF
        return Lane.AUTH if passed else Lane.UNAUTH

    def decide(self, text: str) -> None:
        """One line of `maildesk why`."""
        self.decisions.append(text)

    def event(self, kind: str, detail: str, actor: str | None = None, ticket: Ticket | None = None) -> None:
        ticket = ticket or self.ticket
        assert ticket is not None  # an event is a line of a ticket's history
        add_event(ticket, self.now, actor or self.sender or "desk", kind, detail, self.inbound)
        self.decide(f"{self.rt.ref(ticket)}: {kind}: {detail}")

    def send(self, kind: str, rcpt: str, **kw) -> Intent:
        intent = Intent(kind=kind, rcpt=rcpt, **kw)
        self.intents.append(intent)
        return intent
