"""Resolution, closure and reopening, with the mail each one sends (ITIL steps 7-8).

- `resolve_ticket`: the requester gets the resolution and two one-click `mailto:`
  links ("Yes, it is fixed" / "No, it is not fixed") whose subjects carry tokens
  signed for them and bound to this resolution (links.py); cc participants get the
  resolution without links (docs/mail.md: links go to the requester alone). A
  major incident's children are resolved the same way, each requester getting their
  own mail. `text` is what the requester reads; "" leaves the template's words (a
  resolution written in a reply to a staff-only mail).
- `close_ticket`: the survey goes out (survey.py); a major incident's children close
  with it, and the incident managers get the post-incident review.
- `reopen_ticket`: back to open with the same assignee, who is told.

The status changes themselves are lifecycle.py's; this module adds the mail.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from ..mailout.queue import queue_mail
from ..store import Event, Message, Survey, Ticket, claims, flush_events
from ..vocab import ACTIVE
from . import kbsearch, lifecycle, routing, survey
from .links import mailto

if TYPE_CHECKING:
    from ..service.runtime import Runtime


def _requester_side(ticket: Ticket) -> list[str]:
    return [ticket.requester] + [p.email for p in ticket.participants if p.role == "cc"]


def resolve_ticket(rt: Runtime, ticket: Ticket, code: str, text: str, now: dt.datetime, actor: str, inbound=None,
                   by_name: str = "") -> None:
    lifecycle.resolve(rt, ticket, code, text, now, actor, inbound)
    kbsearch.index_ticket(rt, ticket)  # a known fix for the next incident like it
    _send_resolution(rt, ticket, text, now, actor, by_name, inbound)
    for child in claims.locked(ticket.children.where(Ticket.status.in_(ACTIVE))):
        lifecycle.resolve(rt, child, code, text, now, actor, inbound)
        lifecycle.event(child, now, actor, "resolved", f"resolved with its major incident {rt.ref(ticket)}", inbound)
        kbsearch.index_ticket(rt, child)
        _send_resolution(rt, child, text, now, actor, by_name, inbound)
        child.save()


def _send_resolution(rt: Runtime, ticket, text, now, actor, by_name, inbound) -> None:
    Message.create(ticket=ticket, inbound=inbound, direction="out", from_addr=actor, from_name=by_name,
                   subject=ticket.subject, body=text, internal=False, kind="resolution", created_at=now)
    for rcpt in _requester_side(ticket):
        if "@" not in rcpt:
            continue
        links = {}
        if rcpt == ticket.requester:  # confirm and reject are the requester's alone
            links = {"fixed_link": mailto(rt, "fixed", ticket, rcpt, "Yes, it is fixed"),
                     "notfixed_link": mailto(rt, "notfixed", ticket, rcpt, "No, it is not fixed")}
        queue_mail(rt, now, "resolution", rcpt=rcpt, ticket=ticket, from_name=by_name or None, inbound=inbound,
                   context={
                       "resolution": text, "by": by_name, **links,
                       "auto_close_after": rt.cfg.lifecycle.auto_close_after.words,
                       "auto_close_at": now + rt.cfg.lifecycle.auto_close_after.total,
                   })


def close_ticket(rt: Runtime, ticket: Ticket, now: dt.datetime, actor: str, why: str, inbound=None) -> None:
    """Close a resolved ticket; the requester gets the survey, or, when no survey
    follows, a word that it is closed. A major incident's children are not closed
    with it: each was resolved with its own confirm links and closes by its own rules
    (its requester's confirmation, or auto-close)."""
    lifecycle.close(rt, ticket, now, actor, why, inbound)
    if not survey.maybe_send(rt, ticket, now, inbound) and "@" in ticket.requester:
        queue_mail(rt, now, "closed", rcpt=ticket.requester, rcpt_name=ticket.requester_name, ticket=ticket,
                   inbound=inbound, context={"why": why,
                                             "reopen_until": now + rt.cfg.lifecycle.reopen_window.total})
    if ticket.is_major:
        send_review(rt, ticket, now, inbound)


def reopen_ticket(rt: Runtime, ticket: Ticket, now: dt.datetime, actor: str, why: str, inbound=None, body: str = "",
                  by: dict | None = None) -> None:
    """Reopen a resolved or closed ticket and tell its staff; `by`: who really wrote the
    mail that reopened it (pipeline.messages.attribution: the address, whether it was
    verified, the warning for mail that failed authentication), for the notice."""
    lifecycle.reopen(rt, ticket, now, actor, why, inbound)
    for rcpt in routing.staff_recipients(rt, ticket):
        queue_mail(rt, now, "reopened", rcpt=rcpt, ticket=ticket, inbound=inbound,
                   context={"why": why, "body": body, **(by or {})})


def send_review(rt: Runtime, ticket: Ticket, now: dt.datetime, inbound=None) -> None:
    """The post-incident review of a major incident, to the incident managers."""
    flush_events()
    events = list(Event.select().where(Event.ticket == ticket).order_by(Event.at, Event.id))

    def first(kind, contains=""):
        return next((e for e in events if e.kind == kind and contains in e.detail), None)

    children = list(ticket.children)
    requesters = sorted({ticket.requester, *(c.requester for c in children)})
    ratings = [s.rating for s in Survey.select().where(Survey.ticket.in_([ticket.id] + [c.id for c in children]))
               if s.rating is not None]

    def versus(at, due):
        if at is None or due is None:
            return "not measured"
        delta = abs(at - due)
        hours, rest = divmod(int(delta.total_seconds() // 60), 60)
        return ("met, " if at <= due else "breached, ") + f"{hours}h{rest:02d}m {'early' if at <= due else 'late'}"

    timeline = [
        ("reported", ticket.created_at),
        ("first response", ticket.first_response_at),
        *[(f"escalated: {e.detail}", e.at) for e in events if e.kind == "escalated"],
        ("resolved", (first("resolved") or Event(at=None)).at),
        ("closed", ticket.closed_at),
    ]
    context = {
        "timeline": timeline,
        "response_sla": versus(ticket.first_response_at, ticket.response_due),
        "resolution_sla": versus((first("resolved") or Event(at=None)).at, ticket.resolution_due),
        "children": children, "requesters": requesters,
        "child_slas": [(rt.ref(c), c.requester, c.status,
                        versus(c.first_response_at, c.response_due), versus(c.resolved_at, c.resolution_due))
                       for c in children],
        "survey_count": len(ratings), "survey_mean": (sum(ratings) / len(ratings)) if ratings else None,
        "events": events,
    }
    lifecycle.event(ticket, now, "desk", "review", "post-incident review sent to the incident managers", inbound)
    for im in rt.cfg.roles.incident_managers:
        queue_mail(rt, now, "review", rcpt=im, ticket=ticket, context=context, inbound=inbound)
