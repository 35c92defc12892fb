"""What a fired SLA mark does: remind, escalate functionally, escalate hierarchically.

- warn: the assignee (or the group, when nobody is assigned) gets a reminder; an
  assignee who is away hands the ticket to their group first (routing.away_reason);
- breach: functional escalation: the ticket moves to its category's `escalates_to`
  group when the category names one (else it stays in its group), or along the group
  chain (`groups.escalates_to`) for categories without a path; it is reassigned by
  that group's strategy, and the new and previous assignees are told;
- level2: hierarchical escalation: the manager of the group that held the ticket when
  the target was missed, and the incident managers, get the ticket, its history and
  how late it is.

Every mail of the clock carries what the requester wrote (conversation.requester_words).

`escalate` is also what a technician's `#escalate [GROUP]` runs.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from ..mailout.queue import queue_mail
from ..store import Ticket, scalar
from . import lifecycle, routing
from .conversation import requester_words

if TYPE_CHECKING:
    from ..service.runtime import Runtime

log = logging.getLogger(__name__)


def late_by(now: dt.datetime, due: dt.datetime | None) -> str:
    if due is None or now < due:
        return "not late"
    minutes = int((now - due).total_seconds() // 60)
    if minutes == 0:
        return "less than a minute late"
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{mins}m"]
    return " ".join(parts) + " late"


def fire(rt: Runtime, ticket: Ticket, mark, now: dt.datetime) -> None:
    due = ticket.response_due if mark.target == "response" else ticket.resolution_due
    log.info("sla %s %s ticket=%s", mark.target, mark.level, rt.ref(ticket))
    if mark.level == "warn":
        hand_over_if_away(rt, ticket, now)
        lifecycle.event(ticket, now, "desk", "sla-reminder",
                        f"{mark.target} target due {due.astimezone(rt.cfg.desk.timezone):%Y-%m-%d %H:%M %Z}: reminder sent")
        words = requester_words(ticket)
        for rcpt in routing.staff_recipients(rt, ticket):
            queue_mail(rt, now, "reminder", rcpt=rcpt, ticket=ticket,
                       context={"target": mark.target, "due": due, "words": words})
    elif mark.level == "breach":
        escalate(rt, ticket, now, "desk", f"{mark.target} target breached ({late_by(now, due)})")
    elif mark.level == "level2":
        hierarchical(rt, ticket, now, mark.target, due)


def hand_over_if_away(rt: Runtime, ticket: Ticket, now: dt.datetime) -> None:
    """An assignee who is away (out of office, `away_until`) does not sit on a ticket
    until it breaches: at the reminder it goes to someone else in the group, or to the
    group's queue, and whoever takes it is told."""
    tech = rt.cfg.technician(ticket.assignee) if ticket.assignee else None
    if tech is None:
        return
    reason = routing.away_reason(rt, tech, now)
    if reason is None:
        return
    new, how = routing.pick_assignee(rt, ticket.group, now, exclude=(tech.email,))
    lifecycle.assign(rt, ticket, new.email if new else None, now, "desk",
                     f"handed over: {tech.email} is {reason}; {how}")
    for rcpt in ([new.email] if new else [t.email for t in rt.cfg.members(ticket.group) if t.email != tech.email]):
        queue_mail(rt, now, "assigned", rcpt=rcpt, ticket=ticket,
                   context={"by": "the desk", "handed_over_from": tech.email, "words": requester_words(ticket)})


def escalation_target(rt: Runtime, ticket: Ticket) -> str | None:
    """Where a functional escalation takes the ticket: the category's path when it
    has one (staying there once it arrived), else the group chain."""
    path = rt.cfg.category_escalation(ticket.category)
    if path:
        return path
    group = rt.cfg.group(ticket.group)
    return group.escalates_to if group and group.escalates_to else ticket.group


def escalate(rt: Runtime, ticket: Ticket, now: dt.datetime, actor: str, why: str, to_group: str | None = None,
             inbound=None) -> None:
    """Functional escalation: to `to_group`, else `escalation_target`; within the same
    group it is reassigned to someone else where there is someone else."""
    cfg = rt.cfg
    group = cfg.group(ticket.group)
    target = to_group or escalation_target(rt, ticket)
    previous = ticket.assignee
    ticket.escalation_count += 1
    lifecycle.event(ticket, now, actor, "escalated",
                    f"functional escalation to {target or 'the desk'}: {why}", inbound)
    lifecycle.set_group(ticket, target, now, actor, "escalation", inbound)
    exclude = (previous,) if previous and target == (group.name if group else None) else ()
    tech, how = routing.pick_assignee(rt, target, now, exclude=exclude)
    if tech is None and exclude:
        tech, how = routing.pick_assignee(rt, target, now)  # nobody else: keep whoever is there
    new = tech.email if tech else None
    if new != previous:
        lifecycle.assign(rt, ticket, new, now, actor, how, inbound)
    else:
        lifecycle.event(ticket, now, actor, "assigned", f"stays with {previous or 'nobody'} ({how})", inbound)
    ticket.updated_at = now
    context = {"why": why, "previous": previous, "group": target, "words": requester_words(ticket)}
    if new and new == previous:
        return  # nobody else to take it: the same technician is not "escalated to" again
    for rcpt in ([new] if new else [t.email for t in cfg.members(target)]):
        queue_mail(rt, now, "escalated", rcpt=rcpt, ticket=ticket, context=context | {"role": "new"})
    if previous and previous != new:
        queue_mail(rt, now, "escalated", rcpt=previous, ticket=ticket, context=context | {"role": "previous"})


def group_that_missed(ticket: Ticket, target: str) -> str | None:
    """The group that held the ticket when the target was missed: recorded on the
    target's breach mark before the functional escalation moved it."""
    recorded = scalar('SELECT "group" FROM "sla_mark" WHERE "ticket_id" = ? AND "target" = ? AND "level" = ?',
                      (ticket.id, target, "breach"))
    return recorded or ticket.group


def hierarchical(rt: Runtime, ticket: Ticket, now: dt.datetime, target: str, due) -> None:
    cfg = rt.cfg
    group = cfg.group(group_that_missed(ticket, target))
    rcpts = ([group.manager] if group and group.manager else []) + list(cfg.roles.incident_managers)
    late = late_by(now, due)
    ticket.escalation_count += 1
    told = ", ".join(rcpts) or "nobody (no manager or incident manager configured)"
    lifecycle.event(ticket, now, "desk", "escalated", f"hierarchical escalation: {target} target {late}; told {told}")
    history = list(ticket.events.order_by(ticket.events.model.at, ticket.events.model.id))
    for rcpt in dict.fromkeys(rcpts):
        queue_mail(rt, now, "escalation_l2", rcpt=rcpt, ticket=ticket,
                   context={"target": target, "due": due, "late": late, "history": history,
                            "group": group.name if group else None, "words": requester_words(ticket)})
