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
    ESCALATED = "escalated"
    ESCALATION_L2 = "escalation_l2"
    FETCH_STALLED = "fetch_stalled"
    HELP = "help"
    KB_SEARCH = "kb_search"
    MAJOR_DECLARED = "major_declared"
    REFUSED = "refused"
    RELAY = "relay"
    REMINDER = "reminder"
    REOPENED = "reopened"
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
    WITHDRAWN = "withdrawn"


# The replies to an inbound mail: they count against the per-sender limits of
# automatic replies ([limits]) and say `Auto-Submitted: auto-replied` (RFC 3834).
AUTO_REPLIES = frozenset({
    MailKind.ACK, MailKind.REFUSED, MailKind.HELP, MailKind.TOO_LARGE, MailKind.SURVEY_THANKS,
    MailKind.UNAUTHENTICATED, MailKind.KB_SEARCH, MailKind.STATUS,
})
# Written by a person, relayed by the desk: no Auto-Submitted at all.
PERSONAL = frozenset({MailKind.RELAY, MailKind.RESOLUTION})


def auto_submitted(kind: str) -> str | None:
    """The Auto-Submitted value of a mail of this kind (RFC 3834), None for none."""
    if kind in PERSONAL:
        return None
    return "auto-replied" if kind in AUTO_REPLIES else "auto-generated"


# The closure code of a ticket the requester resolved with a knowledge-base article.
CLOSURE_SELF_SERVICE = "self-service"

# The header by which the desk knows its own mail when it comes back (loop prevention).
LOOP_HEADER = "X-Maildesk-Loop"
