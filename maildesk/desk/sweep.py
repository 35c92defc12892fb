"""The sweep: every due SLA mark fired once, in its own transaction (guarantee 6).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, cast

from peewee import DatabaseError

from ..store import Busy, SlaMark, Ticket, add_event, claims, write_transaction
from . import escalation  # the mails and moves a fired mark makes
from .sla import _fired, marks, next_mark_time

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..service.runtime import Runtime


log = logging.getLogger(__name__)


def due_ticket_ids(now: dt.datetime, limit: int = 1000) -> list[int]:
    """The tickets with a mark due: one range scan of the `sla_next_at` index."""
    rows = (Ticket.select(Ticket.id)
            .where(Ticket.sla_next_at <= now)
            .order_by(Ticket.sla_next_at)
            .limit(limit)
            .tuples())
    return [tid for (tid,) in cast("Iterable[tuple[int]]", rows)]


def sweep(rt: Runtime, now: dt.datetime) -> int:
    """Fire every due mark; returns how many fired.

    After downtime several marks of one target may be due at once: only those of the
    latest due moment fire (a breach supersedes its reminder; the hierarchical
    escalation its functional one); the earlier ones are recorded as superseded, so
    nobody gets a reminder for a deadline long gone next to its escalation."""
    fired = 0
    for tid in due_ticket_ids(now):
        try:
            fired += _sweep_one(rt, tid, now)
        except (Busy, DatabaseError) as e:
            if not claims.is_busy(e):
                raise
            log.info("sla sweep: ticket=%s is being changed by another desk process; next sweep", rt.ref(tid))
    return fired


def _sweep_one(rt: Runtime, tid: int, now: dt.datetime) -> int:
    """The due marks of one ticket, in a transaction that holds the ticket."""
    fired = 0
    with write_transaction():
        ticket = Ticket.get_or_none_by_id(tid)
        if ticket is None:
            return 0
        done = _fired(ticket)
        due = [m for m in sorted(marks(rt, ticket), key=lambda m: m.at)
               if m.at <= now and (m.target, m.level) not in done]
        latest = {m.target: m.at for m in due}  # sorted: the last one per target wins
        for mark in due:
            inserted = (SlaMark.insert(ticket=ticket, target=mark.target, level=mark.level, fired_at=now,
                                       group=ticket.group, assignee=ticket.assignee)
                        .on_conflict_ignore().execute())
            if not inserted:
                continue
            done.add((mark.target, mark.level))
            if mark.at < latest[mark.target]:
                add_event(ticket, now, "desk", "sla-superseded",
                          f"{mark.target} {mark.level} mark of {mark.at:%Y-%m-%d %H:%M} UTC not sent: "
                          "a later mark of the same target was due too")
                continue
            escalation.fire(rt, ticket, mark, now)
            fired += 1
        ticket.sla_next_at = next_mark_time(rt, ticket, fired=done)
        ticket.save()
    return fired
