"""Tickets, inbound mail and outbox rows as the CLI shows them: the JSON objects of
docs/operations.md (the CLI), and plain-text tables for people. Times are ISO-8601 with the
offset of the desk's time zone."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, cast

from peewee import SQL, fn

from ..store import (
    Attachment,
    Event,
    Inbound,
    KbArticle,
    KbOffer,
    KbVersion,
    Message,
    Outbox,
    Suppression,
    Survey,
    Task,
    Ticket,
    utcnow,
    workers,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..service.runtime import Runtime


def iso(t: dt.datetime | None, tz) -> str | None:
    return t.astimezone(tz).isoformat(timespec="seconds") if t else None


def ticket_summary(rt: Runtime, t: Ticket, message_count: int | None = None) -> dict:
    tz = rt.cfg.desk.timezone
    if message_count is None:
        message_count = Message.select().where(Message.ticket == t).count()
    return {
        "ref": rt.ref(t),
        "subject": t.subject,
        "requester": t.requester,
        "status": t.status,
        "category": t.category,
        "impact": t.impact,
        "urgency": t.urgency,
        "priority": t.priority,
        "group": t.group,
        "assignee": t.assignee,
        "created_at": iso(t.created_at, tz),
        "updated_at": iso(t.updated_at, tz),
        "response_due": iso(t.response_due, tz),
        "resolution_due": iso(t.resolution_due, tz),
        "first_response_at": iso(t.first_response_at, tz),
        "resolved_at": iso(t.resolved_at, tz),
        "closed_at": iso(t.closed_at, tz),
        "closure_code": t.closure_code,
        "message_count": message_count,
        "parent": rt.ref(t.parent_id) if t.parent_id else None,
        "is_major": t.is_major,
        "sla_policy": t.sla_policy,
        "reopen_count": t.reopen_count,
        "follows": rt.ref(t.follows_id) if t.follows_id else None,
        "mailbox": t.mailbox,
    }


PAGE = 50  # tickets a `tickets list` page holds unless --limit says otherwise


def newest(model, limit: int | None, before: int | None, where=None):
    """The rows of `model` (matching `where`), newest first: at most `limit` (None:
    all), with an id below `before` when given. Keyset paging: a page deep in millions
    of rows costs what the first does (the primary key, or an index that ends in it)."""
    q = model.select().order_by(model.id.desc()).limit(limit)
    if where is not None:
        q = q.where(where)
    if before is not None:
        q = q.where(model.id < before)
    return q


def ticket_list(rt: Runtime, status: str | None = None, limit: int = PAGE, before: int | None = None) -> list[dict]:
    """A page of tickets, newest first: at most `limit`, with a number below `before`
    when given. Newest is the highest number (numbers are given in the order tickets
    open); the next page is `before=` the last ref's number. Keyset paging: a page
    deep in a million tickets costs what the first does (the primary key, or the
    `(status, id)` index with --status)."""
    tickets = list(newest(Ticket, limit, before, Ticket.status == status if status else None))
    counts: dict[int, int] = dict(cast(
        "Iterable[tuple[int, int]]",
        Message.select(Message.ticket, fn.COUNT(Message.id)).where(Message.ticket.in_([t.id for t in tickets]))
        .group_by(Message.ticket).tuples()
    )) if tickets else {}
    return [ticket_summary(rt, t, counts.get(t.id, 0)) for t in tickets]


def conversation(rt: Runtime, t: Ticket, texts: bool = True) -> list[dict]:
    """Every mail of the ticket once: each that came in (internal notes included), and
    each the desk sent (acknowledgements, notices, relays, refusals), as its recipient
    read it. At the same moment, what came in comes before the desk's answer to it.

    `texts=False` leaves out the text of the desk's own mail (`body` None), which is
    rendered from its template again: the text view shows those mails by subject, and
    without them the command does not load jinja2, a fifth of its time as a process."""
    if texts:
        from ..mailout.render import row_text  # jinja2: only `tickets show` renders mail

    tz = rt.cfg.desk.timezone
    incoming = list(Message.select().where((Message.ticket == t) & (Message.direction == "in")))
    atts: dict[int, list] = {}
    for a in Attachment.select().where(Attachment.message.in_([m.id for m in incoming])):
        atts.setdefault(a.message_id, []).append(
            {"filename": a.filename, "content_type": a.content_type, "size": a.size, "sha256": a.sha256})
    rows = [((m.created_at, 0, m.id), {
        "direction": "in", "message_id": m.message_id, "from": m.from_addr, "from_name": m.from_name,
        "to": m.to, "subject": m.subject, "body": m.body, "internal": m.internal, "kind": m.kind,
        "created_at": iso(m.created_at, tz), "attachments": atts.get(m.id, []),
    }) for m in incoming]
    for o in Outbox.select().where(Outbox.ticket == t):
        body = None
        if texts:
            try:
                body = row_text(rt, o)
            except Exception as e:  # noqa: BLE001 - a broken template override shows as such, not as a crash
                body = f"(cannot render the {o.kind} template: {type(e).__name__})"
        rows.append(((o.created_at, 1, o.id), {
            "direction": "out", "message_id": o.message_id, "from": o.sender(rt.cfg.desk.address),
            "from_name": o.from_name or rt.cfg.desk.name, "to": o.rcpt, "subject": o.subject, "body": body,
            "internal": rt.cfg.is_staff(o.rcpt), "kind": o.kind, "created_at": iso(o.created_at, tz),
            "attachments": [], "delivery": o.status,
        }))
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def ticket_detail(rt: Runtime, t: Ticket, texts: bool = True) -> dict:
    """`texts`: as for `conversation`."""
    tz = rt.cfg.desk.timezone
    out = ticket_summary(rt, t)
    out["messages"] = conversation(rt, t, texts)
    out["tasks"] = [
        {"number": k.number, "title": k.title, "assignee": k.assignee, "done": k.done}
        for k in Task.select().where(Task.ticket == t).order_by(Task.number)
    ]
    out["events"] = [
        {"at": iso(e.at, tz), "actor": e.actor, "kind": e.kind, "detail": e.detail}
        for e in Event.select().where(Event.ticket == t).order_by(Event.at, Event.id)
    ]
    s = Survey.get_or_none(Survey.ticket == t)
    out["survey"] = (
        {"sent_at": iso(s.sent_at, tz), "rating": s.rating, "comment": s.comment, "answered_at": iso(s.answered_at, tz)}
        if s else None
    )
    out["children"] = [rt.ref(c.id) for c in Ticket.select(Ticket.id).where(Ticket.parent == t)]
    out["participants"] = [{"email": p.email, "role": p.role} for p in t.participants]
    return out


def inbound_row(rt: Runtime, ib: Inbound) -> dict:
    tz = rt.cfg.desk.timezone
    return {
        "id": ib.id, "message_id": ib.message_id, "from": ib.from_addr, "subject": ib.subject,
        "received_at": iso(ib.received_at, tz), "status": ib.status, "outcome": ib.outcome, "error": ib.error,
        "ticket": rt.ref(ib.ticket_id) if ib.ticket_id else None, "size": ib.size,
        "mailbox": ib.mailbox, "worker": ib.worker,
    }


def inbound_list(rt: Runtime, failed: bool = False, limit: int | None = None, before: int | None = None) -> list[dict]:
    """Newest first, a page at a time when asked (`newest`)."""
    return [inbound_row(rt, ib) for ib in newest(Inbound, limit, before, Inbound.status == "quarantined" if failed else None)]


def outbox_row(rt: Runtime, o: Outbox, suppressed: dict) -> dict:
    tz = rt.cfg.desk.timezone
    return {
        "id": o.id, "ticket": rt.ref(o.ticket_id) if o.ticket_id else None, "kind": o.kind, "to": o.rcpt,
        "subject": o.subject, "message_id": o.message_id, "status": o.status, "attempts": o.attempts,
        "next_attempt_at": iso(o.next_attempt_at, tz) if o.status in ("queued", "deferred") else None,
        "last_error": o.last_error, "created_at": iso(o.created_at, tz), "sent_at": iso(o.sent_at, tz),
        "automatic": o.automatic, "rcpt_undeliverable": suppressed.get(o.rcpt),
    }


def outbox_list(rt: Runtime, limit: int | None = None, before: int | None = None) -> list[dict]:
    """Newest first, a page at a time when asked (`newest`)."""
    rows = list(newest(Outbox, limit, before))
    now = utcnow()  # the wall clock, read in one place (store.utcnow)
    suppressed = {
        s.email: f"{s.reason} until {iso(s.until, rt.cfg.desk.timezone)}"
        for s in Suppression.select().where(Suppression.until > now)
    }
    return [outbox_row(rt, o, suppressed) for o in rows]


# --- the knowledge base (docs/mail.md, Knowledge base) ---------------------------------------------


def article_row(rt, a: KbArticle, offered: int | None = None) -> dict:
    tz = rt.cfg.desk.timezone
    if offered is None:
        offered = KbOffer.select().where(KbOffer.article == a).count()
    return {
        "number": a.id, "ref": f"KB-{a.id}", "title": a.title, "category": a.category,
        "ticket": rt.ref(a.ticket_id) if a.ticket_id else None, "version": a.version, "retired": a.retired,
        "use_count": a.use_count, "offered": offered, "created_at": iso(a.created_at, tz),
        "updated_at": iso(a.updated_at, tz), "retired_at": iso(a.retired_at, tz), "created_by": a.created_by,
        "updated_by": a.updated_by,
    }


def article_list(rt) -> list[dict]:
    """Every article, newest first, retired ones included (marked)."""
    rows = KbOffer.select(KbOffer.article, fn.COUNT(SQL("*"))).group_by(KbOffer.article).tuples()
    offered: dict[int, int] = dict(cast("Iterable[tuple[int, int]]", rows))
    return [article_row(rt, a, offered.get(a.id, 0)) for a in KbArticle.select().order_by(KbArticle.id.desc())]


def article_detail(rt, a: KbArticle) -> dict:
    tz = rt.cfg.desk.timezone
    out = article_row(rt, a)
    out["text"] = a.text
    out["key_terms"] = a.key_terms.split()
    out["versions"] = [
        {"version": v.version, "title": v.title, "text": v.text, "category": v.category,
         "created_at": iso(v.created_at, tz), "created_by": v.created_by}
        for v in KbVersion.select().where(KbVersion.article == a).order_by(KbVersion.version)
    ]
    return out


def workers_view(rt: Runtime) -> list[dict]:
    """The desk processes that share the database (`maildesk status`): each with its
    last heartbeat, whether it is alive, and the leases it holds (`mailbox:NAME`)."""
    tz = rt.cfg.desk.timezone
    return [{**w, "started_at": iso(w["started_at"], tz), "heartbeat_at": iso(w["heartbeat_at"], tz),
             "leases": [{"name": lease["name"], "since": iso(lease["since"], tz)} for lease in w["leases"]]}
            for w in workers.listing()]


# --- plain-text tables ---------------------------------------------------------------


def table(rows: list[list[str]], headers: list[str]) -> None:
    """Rows as plain-text columns, each at most 60 characters wide."""
    widths = [len(h) for h in headers]
    cells = [[("" if c is None else str(c)).replace("\n", " ") for c in row] for row in rows]
    for row in cells:
        widths = [min(max(w, len(c)), 60) for w, c in zip(widths, row, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*headers).rstrip())
    for row in cells:
        print(fmt.format(*(c if len(c) <= w else c[: w - 1] + "…" for c, w in zip(row, widths, strict=True))).rstrip())


def short(iso_time: str | None) -> str:
    """An ISO-8601 time of the JSON as a table shows it: to the minute, in the desk's
    zone (the JSON keeps the offset)."""
    return iso_time[:16].replace("T", " ") if iso_time else ""


def due(row: dict) -> str | None:
    """The target a ticket works towards now: the response, until one is given;
    then the resolution; nothing once resolved."""
    if row["status"] in ("resolved", "closed", "cancelled"):
        return None
    if row["first_response_at"] is None and row["response_due"]:
        return row["response_due"]
    return row["resolution_due"]
