"""What a fired SLA mark does: remind, escalate functionally, escalate hierarchically.

- warn: the assignee (or the group, when nobody is assigned) gets a reminder;
- breach: functional escalation: the ticket moves to its group's `escalates_to`
  group (or stays), is reassigned by that group's strategy, and the new and previous
  assignees are told;
- level2: hierarchical escalation: the group's manager and the incident managers get
  the ticket, its history and how late it is.

`escalate` is also what a technician's `#escalate [GROUP]` runs.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from ..mailout.queue import queue_mail
from ..store import Ticket
from . import lifecycle, routing

if TYPE_CHECKING:
    from ..service.runtime import Runtime

log = logging.getLogger(__name__)


def late_by(now: dt.datetime, due: dt.datetime | None) -> str:
    if due is None or now < due:
        return "not late"
    minutes = int((now - due).total_seconds() // 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{mins}m"]
    return " ".join(parts) + " late"


def fire(rt: Runtime, ticket: Ticket, mark, now: dt.datetime) -> None:
    due = ticket.response_due if mark.target == "response" else ticket.resolution_due
    log.info("sla %s %s ticket=%s", mark.target, mark.level, rt.ref(ticket))
    if mark.level == "warn":
        lifecycle.event(ticket, now, "desk", "sla-reminder",
                        f"{mark.target} target due {due.astimezone(rt.cfg.desk.timezone):%Y-%m-%d %H:%M %Z}: reminder sent")
        for rcpt in routing.staff_recipients(rt, ticket):
            queue_mail(rt, now, "reminder", rcpt=rcpt, ticket=ticket, context={"target": mark.target, "due": due})
    elif mark.level == "breach":
        escalate(rt, ticket, now, "desk", f"{mark.target} target breached ({late_by(now, due)})")
    elif mark.level == "level2":
        hierarchical(rt, ticket, now, mark.target, due)


def escalate(rt: Runtime, ticket: Ticket, now: dt.datetime, actor: str, why: str, to_group: str | None = None,
             inbound=None) -> None:
    """Functional escalation: to `to_group`, else the group's `escalates_to`, else stay
    and be reassigned within the group."""
    cfg = rt.cfg
    group = cfg.group(ticket.group)
    target = to_group or (group.escalates_to if group and group.escalates_to else ticket.group)
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
    context = {"why": why, "previous": previous, "group": target}
    for rcpt in ([new] if new else [t.email for t in cfg.members(target)]):
        queue_mail(rt, now, "escalated", rcpt=rcpt, ticket=ticket, context=context | {"role": "new"})
    if previous and previous != new:
        queue_mail(rt, now, "escalated", rcpt=previous, ticket=ticket, context=context | {"role": "previous"})


def hierarchical(rt: Runtime, ticket: Ticket, now: dt.datetime, target: str, due) -> None:
    cfg = rt.cfg
    group = cfg.group(ticket.group)
    rcpts = ([group.manager] if group and group.manager else []) + list(cfg.roles.incident_managers)
    late = late_by(now, due)
    ticket.escalation_count += 1
    told = ", ".join(rcpts) or "nobody (no manager or incident manager configured)"
    lifecycle.event(ticket, now, "desk", "escalated", f"hierarchical escalation: {target} target {late}; told {told}")
    history = list(ticket.events.order_by(ticket.events.model.at, ticket.events.model.id))
    for rcpt in dict.fromkeys(rcpts):
        queue_mail(rt, now, "escalation_l2", rcpt=rcpt, ticket=ticket,
                   context={"target": target, "due": due, "late": late, "history": history})
