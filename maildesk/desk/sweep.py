"""The sweep: every due SLA mark fired once, in its own transaction (guarantee 6).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, cast

from ..store import SlaMark, Ticket, write_transaction
from .sla import _fired, marks, next_mark_time

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..service.runtime import Runtime

# --- the sweep -----------------------------------------------------------------------


def due_ticket_ids(now: dt.datetime, limit: int = 1000) -> list[int]:
    """The tickets with a mark due: one range scan of the `sla_next_at` index."""
    rows = (Ticket.select(Ticket.id)
            .where(Ticket.sla_next_at <= now)
            .order_by(Ticket.sla_next_at)
            .limit(limit)
            .tuples())
    return [tid for (tid,) in cast("Iterable[tuple[int]]", rows)]


def sweep(rt: Runtime, now: dt.datetime) -> int:
    """Fire every due mark; returns how many fired."""
    from . import escalation  # the mails and moves an escalation makes

    fired = 0
    for tid in due_ticket_ids(now):
        with write_transaction():
            ticket = Ticket.get_or_none_by_id(tid)
            if ticket is None:
                continue
            done = _fired(ticket)
            for mark in sorted(marks(rt, ticket), key=lambda m: m.at):
                if mark.at > now or (mark.target, mark.level) in done:
                    continue
                inserted = (SlaMark.insert(ticket=ticket, target=mark.target, level=mark.level, fired_at=now)
                            .on_conflict_ignore().execute())
                if not inserted:
                    continue
                done.add((mark.target, mark.level))
                escalation.fire(rt, ticket, mark, now)
                fired += 1
            ticket.sla_next_at = next_mark_time(rt, ticket, fired=done)
            ticket.save()
    return fired
