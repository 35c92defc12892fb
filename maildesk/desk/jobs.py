"""Scheduled jobs: each a function of (runtime, now) that does what is due at `now`,
so that `maildesk run --once --now T` can run them all as if the clock said T.

    sla_sweep      reminders and escalations (sla.py, escalation.py)
    auto_close     resolved tickets close after lifecycle.auto_close_after
    fetch_stalled  the incident managers are told once when fetching stalls
    weekly_report  the KPI report of the week before, to the process owners

Several desk processes on one PostgreSQL database each run the jobs: one at a time
runs a given job (a lease, store.claims.job_lease; the others skip that run), and
within a run each ticket is changed under its lock and each mark, alert and report
is claimed by a row or a setting, so that each fires once.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import TYPE_CHECKING, cast

from peewee import DatabaseError

from .. import store
from ..mailout.queue import queue_mail
from ..store import MailboxState, Ticket, claims
from . import kpis, resolution, sweep

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..service.runtime import Runtime

log = logging.getLogger(__name__)


def _one_at_a_time(job):
    """The job runs under its lease: while another desk process runs it, this run is skipped."""

    @functools.wraps(job)
    def run(rt: Runtime, now: dt.datetime) -> str:
        with claims.job_lease(f"job:{job.__name__}") as mine:
            if not mine:
                return f"{job.__name__}: another desk process is running it"
            return job(rt, now)

    return run


@_one_at_a_time
def sla_sweep(rt: Runtime, now: dt.datetime) -> str:
    fired = sweep.sweep(rt, now)
    return f"sla marks fired={fired}"


@_one_at_a_time
def auto_close(rt: Runtime, now: dt.datetime) -> str:
    after = rt.cfg.lifecycle.auto_close_after
    cutoff = now - after.total
    rows = Ticket.select(Ticket.id).where(
        (Ticket.status == "resolved") & (Ticket.resolved_at <= cutoff)).order_by(Ticket.id).limit(1000).tuples()
    ids = [i for (i,) in cast("Iterable[tuple[int]]", rows)]
    closed = 0
    for tid in ids:
        try:
            with store.write_transaction():
                t = Ticket.get_by_id(tid)
                if t.status != "resolved" or t.resolved_at > cutoff:
                    continue
                resolution.close_ticket(rt, t, now, "desk",
                                        f"closed automatically: no objection within {after.words} of the resolution")
                t.save()
                closed += 1
        except (claims.Busy, DatabaseError) as e:
            if not claims.is_busy(e):
                raise
            log.info("auto-close: ticket=%s is being changed by another desk process; next run", rt.ref(tid))
    return f"auto-closed={closed}"


@_one_at_a_time
def fetch_stalled(rt: Runtime, now: dt.datetime) -> str:
    limit = rt.cfg.alerts.fetch_stalled_after
    names = [m.name for m in rt.cfg.mailboxes]
    for state in MailboxState.select().where((MailboxState.stall_alerted == False)  # noqa: E712
                                             & MailboxState.mailbox.in_(names)):
        last = state.last_success_at
        if last is None or now - last < limit.total:
            continue
        with store.write_transaction():
            claimed = MailboxState.update(stall_alerted=True).where(
                (MailboxState.mailbox == state.mailbox) & (MailboxState.stall_alerted == False)).execute()  # noqa: E712
            if not claimed:
                continue  # told already, by another desk process
            for im in rt.cfg.roles.incident_managers:
                queue_mail(rt, now, "fetch_stalled", rcpt=im, automatic=False,
                           context={"mailbox": state.mailbox, "since": last, "after": limit.words,
                                    "error": store.get_setting("last_fetch_error", "")})
        log.error("fetching mailbox=%s has not succeeded since %s; incident managers told", state.mailbox, last)
    return "fetch checked"


def last_weekly_slot(rt: Runtime, now: dt.datetime) -> dt.datetime | None:
    """The latest `[reports] weekly` moment at or before `now` (desk time), or None."""
    weekly = rt.cfg.reports.weekly
    if weekly is None:
        return None
    weekday, at = weekly
    local = now.astimezone(rt.cfg.desk.timezone)
    day = local.date() - dt.timedelta(days=(local.weekday() - weekday) % 7)
    slot = dt.datetime.combine(day, at, tzinfo=rt.cfg.desk.timezone)
    if slot > local:
        slot -= dt.timedelta(days=7)
    return slot


@_one_at_a_time
def weekly_report(rt: Runtime, now: dt.datetime) -> str:
    """Once per `[reports] weekly` moment: the report of the tickets opened in the
    seven days before it, as text and HTML, to each process owner. Sent once per week
    (a setting remembers the last week sent), also when the desk was down at that
    moment and starts later in the week; a new desk starts with the next moment."""
    owners = rt.cfg.roles.process_owners
    slot = last_weekly_slot(rt, now)
    if slot is None or not owners:
        return "weekly report: none configured"
    key = slot.isoformat()
    if store.get_setting("weekly_report_sent_for") == key:
        return "weekly report: sent already"
    with store.write_transaction():
        last = store.get_setting("weekly_report_sent_for")
        if last == key:
            return "weekly report: sent already"
        store.put_setting("weekly_report_sent_for", key)
        if last is None:  # a new desk: its first report is the first whole week it saw
            return "weekly report: the first comes next week"
        since = slot - dt.timedelta(days=7)
        report = kpis.build(rt, since=since, now=now, until=slot)
        for owner in owners:
            queue_mail(rt, now, "report", rcpt=owner, automatic=False,
                       context={"report": report, "text": kpis.as_text(report),
                                "since": since, "until": slot})
    log.info("weekly report for %s to %s sent to %d process owners", since.date(), slot.date(), len(owners))
    return "weekly report: sent"


JOBS = (sla_sweep, auto_close, fetch_stalled, weekly_report)
