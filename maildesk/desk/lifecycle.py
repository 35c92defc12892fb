"""The status machine of an incident (docs/mail.md, the life cycle) and the changes that go with
it: assignment, group, resolution, closure, reopening. Every change is an `Event`
with its actor and time; the SLA clock follows the status (sla.py).

    new -> open (assigned) -> in-progress <-> on-hold -> resolved -> closed
    resolved/closed -> open (reopened within lifecycle.reopen_window)

These functions change the ticket and record events; they return nothing and never
send mail. Telling people is the callers' part: resolution.py and escalation.py (and
the pipeline stages) queue the mail that goes with each change.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from .. import store
from ..errors import MaildeskError
from ..store import Ticket
from . import routing, sla

if TYPE_CHECKING:
    from ..service.runtime import Runtime

ALLOWED = {
    "new": {"open", "in-progress", "on-hold", "resolved", "cancelled"},
    "open": {"in-progress", "on-hold", "resolved", "cancelled", "new"},
    "in-progress": {"open", "on-hold", "resolved", "cancelled"},
    "on-hold": {"open", "in-progress", "resolved", "cancelled"},
    "resolved": {"closed", "open"},
    "closed": {"open"},
    "cancelled": set(),
}


class NotAllowed(MaildeskError):
    """A change the status machine refuses; the message says why."""


def event(ticket: Ticket, now: dt.datetime, actor: str, kind: str, detail: str, inbound=None) -> None:
    store.add_event(ticket, now, actor, kind, detail, inbound)


def change_status(rt: Runtime, ticket: Ticket, new: str, now: dt.datetime, actor: str, why: str = "", inbound=None) -> None:
    old = ticket.status
    if new == old:
        return
    if new not in ALLOWED.get(old, ()):
        raise NotAllowed(f"a {old} ticket cannot become {new}")
    ticket.status = new
    ticket.updated_at = now
    event(ticket, now, actor, "status", f"{old} -> {new}" + (f": {why}" if why else ""), inbound)
    if old == "on-hold":
        sla.resume(rt, ticket, now, actor, f"left on-hold for {new}", inbound)
    if new == "on-hold":
        sla.pause(rt, ticket, now, actor, "on-hold", inbound)
    if new == "in-progress" and ticket.first_response_at is None:
        sla.record_first_response(rt, ticket, now, "status in-progress", actor, inbound)
    sla.refresh(rt, ticket)


def assign(rt: Runtime, ticket: Ticket, email: str | None, now: dt.datetime, actor: str, why: str, inbound=None) -> None:
    """Give the ticket to a technician (or to nobody); the group follows the technician."""
    old = ticket.assignee
    ticket.assignee = email
    ticket.updated_at = now
    if email:
        tech = rt.cfg.technician(email)
        if tech and tech.groups and ticket.group not in tech.groups:
            set_group(ticket, tech.groups[0], now, actor, f"follows {tech.display_name}", inbound)
        routing.note_assignment(rt, email, now)
        add_participant(ticket, email, "staff")
        if ticket.status == "new":
            ticket.status = "open"
            event(ticket, now, actor, "status", "new -> open: assigned", inbound)
    detail = f"{old or 'nobody'} -> {email or 'nobody'}" + (f" ({why})" if why else "")
    event(ticket, now, actor, "assigned", detail, inbound)


def set_group(ticket: Ticket, group: str | None, now: dt.datetime, actor: str, why: str, inbound=None) -> None:
    if group == ticket.group:
        return
    event(ticket, now, actor, "group", f"{ticket.group or 'none'} -> {group}" + (f" ({why})" if why else ""), inbound)
    ticket.group = group
    ticket.updated_at = now


# Participants one mail may add, opening a ticket or copying people in on a reply; the
# rest are refused (a technician may #cc them): one mail to thousands of addresses must
# not make the desk mail each of them every step of a ticket (no relay amplifier).
MAX_COPIED = 10


def add_participant(ticket: Ticket, email: str, role: str) -> None:
    store.write('INSERT INTO "participant" ("ticket_id", "email", "role") VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
                (ticket.id, email.lower(), role), prepare=True)


def is_participant(ticket: Ticket, email: str) -> bool:
    """Whether `email` takes part in `ticket`. No one is ever removed from a ticket, so an
    address among those read with it (Ticket.FETCHED_WITH, PostgreSQL) is one without
    asking again; any other is asked for, as it may have joined since (in this
    transaction: no other can add anyone to a ticket this one holds)."""
    email = email.lower()
    if email in getattr(ticket, "participants_read", ()):
        return True
    return store.scalar('SELECT 1 FROM "participant" WHERE "ticket_id" = ? AND "email" = ?',
                        (ticket.id, email), prepare=True) is not None


def resolve(rt: Runtime, ticket: Ticket, code: str, text: str, now: dt.datetime, actor: str, inbound=None) -> None:
    change_status(rt, ticket, "resolved", now, actor, f"code {code}", inbound)
    ticket.resolved_at = now
    ticket.closure_code = code
    ticket.resolution = text
    if ticket.first_response_at is None:
        sla.record_first_response(rt, ticket, now, "resolution", actor, inbound)
    met = "met" if ticket.resolution_due is None or now <= ticket.resolution_due else "missed"
    event(ticket, now, actor, "resolved", f"resolved with code {code}; resolution target {met}", inbound)
    sla.refresh(rt, ticket)


def close(rt: Runtime, ticket: Ticket, now: dt.datetime, actor: str, why: str, inbound=None) -> None:
    change_status(rt, ticket, "closed", now, actor, why, inbound)
    ticket.closed_at = now
    event(ticket, now, actor, "closed", why + (f"; code {ticket.closure_code}" if ticket.closure_code else ""), inbound)


def reopen(rt: Runtime, ticket: Ticket, now: dt.datetime, actor: str, why: str, inbound=None) -> None:
    """Back to open with the same assignee; the resolution clock resumes, the time
    spent resolved counting as paused."""
    since = ticket.resolved_at or ticket.closed_at or now
    old = ticket.status
    ticket.status = "open"
    ticket.updated_at = now
    ticket.reopen_count += 1
    ticket.resolved_at = ticket.closed_at = None
    event(ticket, now, actor, "status", f"{old} -> open: {why}", inbound)
    event(ticket, now, actor, "reopened", why, inbound)
    ticket.paused_at = since
    sla.resume(rt, ticket, now, actor, "reopened", inbound)


def within_reopen_window(rt: Runtime, ticket: Ticket, now: dt.datetime) -> bool:
    since = ticket.resolved_at or ticket.closed_at
    return since is not None and now - since <= rt.cfg.lifecycle.reopen_window.total
