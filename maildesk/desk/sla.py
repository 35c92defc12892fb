"""SLA targets, the clock, and the sweep that fires reminders and escalations.

A ticket's policy (`[[sla]]` by priority, narrowed by category) gives a response and
a resolution target in a calendar (`24x7` or `business`). Due times are absolute and
stored; they are recomputed from the creation time whenever the priority changes,
keeping the business minutes the ticket spent on hold or resolved.

Each target has three marks: `warn` (at `escalation.warn_at` of the target), `breach`
(functional escalation), `level2` (hierarchical: the resolution breach, or the
response still unmet after a second period). A fired mark is a row in `SlaMark`
whose unique key makes it fire once, whatever the cycles or restarts (guarantee 6).
`Ticket.sla_next_at` holds the earliest unfired mark, so that the sweep reads only
the due rows through one index.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store import SlaMark, Ticket, add_event, execute, scalar
from ..vocab import ACTIVE, STOPPED

if TYPE_CHECKING:
    from ..service.runtime import Runtime

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Mark:
    target: str  # response | resolution
    level: str  # warn | breach | level2
    at: dt.datetime


def policy_of(rt: Runtime, ticket: Ticket):
    return rt.cfg.sla_for(ticket.priority, ticket.category)


def _minutes(rt: Runtime, policy, which: str) -> tuple:
    cal = rt.calendar(policy.calendar)
    return cal, getattr(policy, which).minutes(cal.day_minutes)


def apply_policy(rt: Runtime, ticket: Ticket, now: dt.datetime) -> None:
    """Set the policy and both due times from the creation time (and paused time)."""
    policy = policy_of(rt, ticket)
    cal, response = _minutes(rt, policy, "response")
    _, resolution = _minutes(rt, policy, "resolution")
    ticket.sla_policy = policy.label
    ticket.response_due = cal.add(ticket.created_at, response)
    ticket.resolution_due = cal.add(ticket.created_at, resolution + (ticket.paused_minutes or 0))
    ticket.sla_next_at = next_mark_time(rt, ticket, fired=_fired(ticket))
    ticket.marks_key = _marks_key(ticket)


def _marks_key(ticket: Ticket) -> tuple:
    """What the marks of a ticket on which nothing has fired yet depend on."""
    return (ticket.status, ticket.priority, ticket.category, ticket.created_at, ticket.response_due,
            ticket.resolution_due, ticket.first_response_at, ticket.paused_at, ticket.paused_minutes, ticket.parent_id)


def is_held(ticket: Ticket) -> bool:
    """A child of a major incident that is still being worked: its clock is held (no
    reminder, no escalation of its own) until the major incident resolves it."""
    if ticket.parent_id is None:
        return False
    return scalar('SELECT "status" FROM "ticket" WHERE "id" = ?', (ticket.parent_id,)) in ACTIVE


def marks(rt: Runtime, ticket: Ticket) -> list[Mark]:
    """Every mark that can still apply to the ticket in its present state."""
    if ticket.status in STOPPED or ticket.response_due is None or is_held(ticket):
        return []
    policy = policy_of(rt, ticket)
    warn = rt.cfg.escalation.warn_at
    out = []
    if ticket.first_response_at is None:
        cal, response = _minutes(rt, policy, "response")
        out += [
            Mark("response", "warn", cal.add(ticket.created_at, response * warn)),
            Mark("response", "breach", ticket.response_due),
            Mark("response", "level2", cal.add(ticket.created_at, 2 * response)),
        ]
    if ticket.paused_at is None:
        cal, resolution = _minutes(rt, policy, "resolution")
        paused = ticket.paused_minutes or 0
        out += [
            Mark("resolution", "warn", cal.add(ticket.created_at, resolution * warn + paused)),
            Mark("resolution", "breach", ticket.resolution_due),
            Mark("resolution", "level2", ticket.resolution_due),
        ]
    return out


def _fired(ticket: Ticket) -> set[tuple[str, str]]:
    if ticket.id is None or getattr(ticket, "is_new", False):
        return set()
    return set(execute('SELECT "target", "level" FROM "sla_mark" WHERE "ticket_id" = ?', (ticket.id,)).fetchall())


def next_mark_time(rt: Runtime, ticket: Ticket, fired=None) -> dt.datetime | None:
    fired = _fired(ticket) if fired is None else fired
    pending = [m.at for m in marks(rt, ticket) if (m.target, m.level) not in fired]
    return min(pending) if pending else None


def refresh(rt: Runtime, ticket: Ticket) -> None:
    """Recompute `sla_next_at` after a change of state."""
    if getattr(ticket, "is_new", False) and getattr(ticket, "marks_key", None) == _marks_key(ticket):
        return  # a ticket opened by this message, unchanged since apply_policy
    value = next_mark_time(rt, ticket)
    if value != ticket.sla_next_at:  # setting it marks it changed, an UPDATE
        ticket.sla_next_at = value


def retarget(rt: Runtime, ticket: Ticket, now: dt.datetime, actor: str, why: str, inbound=None) -> None:
    """Recompute both targets after the priority or category changed (from the creation
    time, as `apply_policy`). A mark that the new targets put in the past is not sent
    late: it is recorded as passed at the change, without a reminder for a moment
    already gone and without an escalation away from whoever just changed the ticket;
    a breached target counts as missed at the time of the change."""
    old = (ticket.response_due, ticket.resolution_due)
    apply_policy(rt, ticket, now)
    if (ticket.response_due, ticket.resolution_due) != old:
        add_event(ticket, now, "desk", "sla", f"targets recomputed from creation ({why}): " + describe_due(rt, ticket),
                  inbound)
    fired = _fired(ticket)
    for mark in marks(rt, ticket):
        if mark.at > now or (mark.target, mark.level) in fired:
            continue
        SlaMark.insert(ticket=ticket, target=mark.target, level=mark.level, fired_at=now,
                       group=ticket.group, assignee=ticket.assignee).on_conflict_ignore().execute()
        fired.add((mark.target, mark.level))
        if mark.level == "breach":
            add_event(ticket, now, "desk", "sla-missed",
                      f"{mark.target} target missed at the change ({why}): it became due {_fmt_time(rt, mark.at)}; "
                      "no reminder or escalation is sent for a moment already past", inbound)
    ticket.sla_next_at = next_mark_time(rt, ticket, fired=fired)


# --- the clock ---------------------------------------------------------------------


def record_first_response(rt: Runtime, ticket: Ticket, now: dt.datetime, how: str, actor: str, inbound=None) -> bool:
    if ticket.first_response_at is not None:
        return False
    ticket.first_response_at = now
    met = "met" if ticket.response_due is None or now <= ticket.response_due else "missed"
    add_event(ticket, now, actor, "sla-response", f"first response by {how}; response target {met}", inbound)
    refresh(rt, ticket)
    return True


def pause(rt: Runtime, ticket: Ticket, now: dt.datetime, actor: str, why: str, inbound=None) -> None:
    if ticket.paused_at is not None:
        return
    ticket.paused_at = now
    add_event(ticket, now, actor, "sla-paused", f"resolution clock paused: {why}", inbound)
    refresh(rt, ticket)


def resume(rt: Runtime, ticket: Ticket, now: dt.datetime, actor: str, why: str, inbound=None) -> None:
    """Add the business minutes spent paused to the resolution target."""
    if ticket.paused_at is None:
        return
    cal, _ = _minutes(rt, policy_of(rt, ticket), "resolution")
    paused = cal.between(ticket.paused_at, now)
    ticket.paused_minutes = (ticket.paused_minutes or 0) + paused
    ticket.paused_at = None
    old = ticket.resolution_due
    apply_policy(rt, ticket, now)
    add_event(ticket, now, actor, "sla-resumed",
              f"resolution clock resumed ({why}) after {_fmt_minutes(paused)} of paused time; "
              f"resolution due moved from {_fmt_time(rt, old)} to {_fmt_time(rt, ticket.resolution_due)}", inbound)


def _fmt_minutes(m: float) -> str:
    m = int(round(m))
    if m < 60:
        return f"{m} business minutes" if m != 1 else "1 business minute"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def _fmt_time(rt: Runtime, t: dt.datetime | None) -> str:
    return t.astimezone(rt.cfg.desk.timezone).strftime("%Y-%m-%d %H:%M %Z") if t else "-"


def describe_due(rt: Runtime, ticket: Ticket) -> str:
    return (f"policy {ticket.sla_policy}: response due {_fmt_time(rt, ticket.response_due)}, "
            f"resolution due {_fmt_time(rt, ticket.resolution_due)}")
