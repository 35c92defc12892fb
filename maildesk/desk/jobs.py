"""Scheduled jobs: each a function of (runtime, now) that does what is due at `now`,
so that `maildesk run --once --now T` can run them all as if the clock said T.

    sla_sweep      reminders and escalations (sla.py, escalation.py)
    auto_close     resolved tickets close after lifecycle.auto_close_after
    fetch_stalled  the incident managers are told once when fetching stalls
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, cast

from .. import store
from ..mailout.queue import queue_mail
from ..store import MailboxState, Ticket
from . import resolution, sweep

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..service.runtime import Runtime

log = logging.getLogger(__name__)


def sla_sweep(rt: Runtime, now: dt.datetime) -> str:
    fired = sweep.sweep(rt, now)
    return f"sla marks fired={fired}"


def auto_close(rt: Runtime, now: dt.datetime) -> str:
    after = rt.cfg.lifecycle.auto_close_after
    cutoff = now - after.total
    rows = Ticket.select(Ticket.id).where(
        (Ticket.status == "resolved") & (Ticket.resolved_at <= cutoff)).order_by(Ticket.id).limit(1000).tuples()
    ids = [i for (i,) in cast("Iterable[tuple[int]]", rows)]
    for tid in ids:
        with store.write_transaction():
            t = Ticket.get_by_id(tid)
            if t.status != "resolved" or t.resolved_at > cutoff:
                continue
            resolution.close_ticket(rt, t, now, "desk",
                                    f"closed automatically: no objection within {after.text} of the resolution")
            t.save()
    return f"auto-closed={len(ids)}"


def fetch_stalled(rt: Runtime, now: dt.datetime) -> str:
    limit = rt.cfg.alerts.fetch_stalled_after
    for state in MailboxState.select().where(MailboxState.stall_alerted == False):  # noqa: E712
        last = state.last_success_at
        if last is None or now - last < limit.total:
            continue
        with store.write_transaction():
            MailboxState.update(stall_alerted=True).where(MailboxState.mailbox == state.mailbox).execute()
            for im in rt.cfg.roles.incident_managers:
                queue_mail(rt, now, "fetch_stalled", rcpt=im, automatic=False,
                           context={"mailbox": state.mailbox, "since": last, "after": limit.text,
                                    "error": store.get_setting("last_fetch_error", "")})
        log.error("fetching mailbox=%s has not succeeded since %s; incident managers told", state.mailbox, last)
    return "fetch checked"


JOBS = (sla_sweep, auto_close, fetch_stalled)
