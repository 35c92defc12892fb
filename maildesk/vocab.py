"""The desk's words, defined once: statuses, priorities, levels, roles, mail kinds.

Each is a `StrEnum`: a member compares equal to its string and is stored as that
string, so the database and the JSON of the CLI read exactly as before.

    from maildesk.vocab import Status, ACTIVE
    if ticket.status in ACTIVE: ...
    ticket.status = Status.RESOLVED
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Where an incident is in its life cycle (docs: the life cycle)."""

    NEW = "new"
    OPEN = "open"
    IN_PROGRESS = "in-progress"
    ON_HOLD = "on-hold"
    RESOLVED = "resolved"
    CLOSED = "closed"
    CANCELLED = "cancelled"


ACTIVE = (Status.NEW, Status.OPEN, Status.IN_PROGRESS, Status.ON_HOLD)  # someone still works on it
STOPPED = (Status.RESOLVED, Status.CLOSED, Status.CANCELLED)  # no SLA clock runs


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Level(StrEnum):
    """Impact and urgency."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


PRIORITIES = tuple(Priority)  # most urgent first
LEVELS = tuple(Level)  # highest first


class Role(StrEnum):
    """Who the sender of a mail is to its ticket (the identity stage decides), and
    the role a participant row is stored with (requester, cc, staff)."""

    REQUESTER = "requester"
    CC = "cc"
    STAFF = "staff"
    PARTICIPANT = "participant"
    STRANGER = "stranger"


class Lane(StrEnum):
    """Whose allowance mail that a message causes uses (docs/mail.md, Floods: "a flood costs only the
    flooder"): the limits count the answers to authenticated and to unauthenticated
    mail apart, so that forged mail never uses up a real sender's allowance; mail from
    authenticated staff is never counted."""

    STAFF = "staff"
    AUTH = "auth"
    UNAUTH = "unauth"


COUNTED_LANES = (Lane.AUTH, Lane.UNAUTH)


class MarkLevel(StrEnum):
    """The three marks of an SLA target: a reminder, the functional escalation at the
    breach, the hierarchical escalation."""

    WARN = "warn"
    BREACH = "breach"
    LEVEL2 = "level2"


class MailKind(StrEnum):
    """What the desk sends; each kind is a template `templates/<kind>.txt.j2`."""

    ACK = "ack"
    ASSIGNED = "assigned"
    AUTOPAUSE = "autopause"
    CANCELLED = "cancelled"
    CLOSED = "closed"
    ESCALATED = "escalated"
    ESCALATION_L2 = "escalation_l2"
    FETCH_STALLED = "fetch_stalled"
    HELP = "help"
    HISTORY = "history"
    KB_SEARCH = "kb_search"
    LINKED = "linked"
    MAJOR_DECLARED = "major_declared"
    ON_HOLD = "on_hold"
    REFUSED = "refused"
    RELAY = "relay"
    REMINDER = "reminder"
    REOPENED = "reopened"
    REPORT = "report"
    REQUESTER_REPLY = "requester_reply"
    RESOLUTION = "resolution"
    REVIEW = "review"
    SELF_SERVICE = "self_service"
    STATUS = "status"
    SURVEY = "survey"
    SURVEY_THANKS = "survey_thanks"
    TASK_ASSIGNED = "task_assigned"
    TOO_LARGE = "too_large"
    UNAUTHENTICATED = "unauthenticated"
    UNVERIFIED = "unverified"
    WITHDRAWN = "withdrawn"


# The replies to an inbound mail: they count against the per-sender limits of
# automatic replies ([limits]) and say `Auto-Submitted: auto-replied` (RFC 3834).
AUTO_REPLIES = frozenset({
    MailKind.ACK, MailKind.REFUSED, MailKind.HELP, MailKind.TOO_LARGE, MailKind.SURVEY_THANKS,
    MailKind.UNAUTHENTICATED, MailKind.UNVERIFIED, MailKind.KB_SEARCH, MailKind.STATUS,
})
# Staff notices that mail from outside causes: they count against the desk-wide hourly
# cap like automatic replies (limits.auto_replies_per_hour), so that a flood of new
# tickets does not become a flood in the technicians' inboxes (issue 12).
COUNTED_NOTICES = frozenset({MailKind.ASSIGNED})
# Written by a person, relayed by the desk: no Auto-Submitted at all.
PERSONAL = frozenset({MailKind.RELAY, MailKind.RESOLUTION})


def auto_submitted(kind: str) -> str | None:
    """The Auto-Submitted value of a mail of this kind (RFC 3834), None for none."""
    if kind in PERSONAL:
        return None
    return "auto-replied" if kind in AUTO_REPLIES else "auto-generated"


# Desk mail a technician may answer in public: it carries the requester's words or
# went to the requester too (the assignment notice, relays, a reopening by the
# requester's reply). Every other desk mail to staff is staff-only (docs/mail.md, Commands
# "Commands": reminders, escalations, task mails, reviews, major-incident notices,
# answers to #history/#kb search/#help, refusals, reports, alerts, and whatever kind
# is added later): a reply to it is an internal note unless it starts with #public.
STAFF_REPLY_PUBLIC = frozenset({
    MailKind.ASSIGNED, MailKind.REQUESTER_REPLY, MailKind.REOPENED, MailKind.RELAY, MailKind.ACK,
    MailKind.RESOLUTION, MailKind.SURVEY, MailKind.SURVEY_THANKS,
})


def is_staff_only(kind: str) -> bool:
    """Whether a staff member's reply to desk mail of this kind stays internal. `kind`
    is the outbox kind of the mail answered; "message" (a mail of the conversation
    itself) and "" (no desk mail: the subject tag) are not desk mail."""
    return bool(kind) and kind != "message" and kind not in STAFF_REPLY_PUBLIC

# The closure code of a ticket the requester resolved with a knowledge-base article.
CLOSURE_SELF_SERVICE = "self-service"

# The header by which the desk knows its own mail when it comes back (loop prevention).
LOOP_HEADER = "X-Maildesk-Loop"
