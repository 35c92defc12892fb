"""What the requester wrote, for the staff mails that must carry it (reminders,
escalations, task mails, hand-overs): a technician who gets a ticket late should not
have to ask what it is about.
"""

from __future__ import annotations

from ..store import Message, Participant, Ticket

MAX_MESSAGES = 3  # the first request and the latest replies
MAX_CHARS = 2000  # per message


def requester_words(ticket: Ticket) -> list[dict]:
    """The requester side's own mails on the ticket (the requester and cc participants;
    never internal notes), oldest first: the first one and the latest ones, each cut
    to MAX_CHARS."""
    side = [ticket.requester] + [p.email for p in Participant.select(Participant.email)
                                 .where((Participant.ticket == ticket) & (Participant.role == "cc"))]
    rows = list(Message.select(Message.created_at, Message.from_addr, Message.from_name, Message.body)
                .where((Message.ticket == ticket) & (Message.direction == "in") & (Message.internal == False)  # noqa: E712
                       & (Message.from_addr.in_(side) | (Message.kind == "mail")))  # the opening mail, also by #for
                .order_by(Message.created_at, Message.id))
    if len(rows) > MAX_MESSAGES:
        rows = rows[:1] + rows[-(MAX_MESSAGES - 1):]
    return [{"at": m.created_at, "from": m.from_addr, "name": m.from_name or "",
             "body": _cut(m.body or "")} for m in rows]


def history(ticket: Ticket, limit: int = 30) -> list[dict]:
    """Every mail that came in on the ticket, internal notes included, oldest first
    (the latest `limit`), for `#history`: staff only."""
    rows = list(Message.select(Message.created_at, Message.from_addr, Message.from_name, Message.body,
                               Message.internal, Message.kind)
                .where((Message.ticket == ticket) & (Message.direction == "in"))
                .order_by(Message.created_at.desc(), Message.id.desc()).limit(limit))
    return [{"at": m.created_at, "from": m.from_addr, "name": m.from_name or "", "internal": m.internal,
             "kind": m.kind, "body": _cut(m.body or "")} for m in reversed(rows)]


def _cut(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS].rstrip() + " [...]"
