"""`maildesk status`: the desk's health at a glance (docs/operations.md), read from
the database alone: whether a desk process runs, the last successful fetch of each
mailbox and who fetches it, pending and quarantined inbound mail, queued, deferred and
failed outgoing mail with the age of the oldest of each, the next SLA deadlines, and the
desk processes sharing the database with their leases.

    data = build(rt, now)      # a dict, as `status --json` prints it
    print(as_text(data))
"""

from __future__ import annotations

import datetime as dt

from peewee import fn

from .. import store
from ..service.lock import holder
from ..store import Inbound, MailboxState, Outbox, Ticket
from .views import iso, workers_view

NEXT_DEADLINES = 5


def build(rt, now: dt.datetime) -> dict:
    tz = rt.cfg.desk.timezone
    workers = workers_view(rt)
    pid = holder(rt.cfg.database.url) if store.is_sqlite() else None
    return {
        "now": iso(now, tz),
        "desk": {"running": pid is not None if store.is_sqlite() else None, "pid": pid if pid and pid > 0 else None},
        "mailboxes": _mailboxes(rt, now, workers),
        "last_fetch_error": store.get_setting("last_fetch_error"),
        "inbound": _inbound(rt, now),
        "outbox": _oldest(rt, now, Outbox, Outbox.created_at, ("queued", "deferred", "failed")),
        "next_deadlines": next_deadlines(rt, now),
        "workers": workers,
    }


def _age(now: dt.datetime, then: dt.datetime | None) -> int | None:
    return None if then is None else int((now - then).total_seconds())


def _mailboxes(rt, now: dt.datetime, workers: list[dict]) -> list[dict]:
    """Each configured mailbox (then any other the database remembers), its last
    successful fetch, and the live desk process that holds its lease (None: nobody
    fetches it now)."""
    states = {s.mailbox: s for s in MailboxState.select()}
    addresses = {box.name: box.address for box in rt.cfg.mailboxes}
    names = list(addresses) + sorted(n for n in states if n not in addresses)
    holders = {lease["name"]: w["worker"] for w in workers if w["alive"] for lease in w["leases"]}
    stall = rt.cfg.alerts.fetch_stalled_after.total
    out = []
    for name in names:
        s = states.get(name)
        last = s.last_success_at if s else None
        out.append({
            "mailbox": name,
            "address": addresses.get(name),
            "fetched_by": holders.get(f"mailbox:{name}"),
            "last_fetch_at": iso(last, rt.cfg.desk.timezone),
            "last_fetch_age_seconds": _age(now, last),
            "stalled": last is None or now - last > stall,
            "last_uid": s.last_uid if s else None,
        })
    return out


def _oldest(rt, now: dt.datetime, model, column, statuses: tuple[str, ...]) -> dict[str, dict]:
    """For each of `statuses`, how many rows have it and the oldest (`column`): one
    statement for them all, each a look-up in the status index."""
    found = {status: (count, oldest) for status, count, oldest in
             model.select(model.status, fn.COUNT(model.id), fn.MIN(column))
             .where(model.status.in_(statuses)).group_by(model.status).tuples()}
    out = {}
    for status in statuses:
        count, oldest = found.get(status, (0, None))
        oldest = column.python_value(oldest) if oldest is not None else None
        out[status] = {"count": count, "oldest_at": iso(oldest, rt.cfg.desk.timezone),
                       "oldest_age_seconds": _age(now, oldest)}
    return out


def _inbound(rt, now: dt.datetime) -> dict:
    found = _oldest(rt, now, Inbound, Inbound.received_at, ("pending", "quarantined"))
    pending, quarantined = found["pending"], found["quarantined"]
    return {"pending": pending["count"], "oldest_pending_at": pending["oldest_at"],
            "oldest_pending_age_seconds": pending["oldest_age_seconds"],
            "quarantined": quarantined["count"], "oldest_quarantined_at": quarantined["oldest_at"]}


# The running tickets (vocab.ACTIVE less on-hold) whose target is still ahead: the terms
# of the partial indexes of migration 0012, word for word, so that each branch reads its
# first rows from its index rather than every running ticket from the table. SQLite,
# which keeps no statistics here, would rather look the statuses up in (status, id), so
# it is told (`INDEXED BY`, an error if the index cannot answer).
RUNNING = "\"status\" IN ('new', 'open', 'in-progress')"
_DEADLINES = """
SELECT * FROM (SELECT 'response', "id", "priority", "subject", "response_due" FROM "ticket"{response}
               WHERE {running} AND "first_response_at" IS NULL AND "response_due" IS NOT NULL
               ORDER BY "response_due" LIMIT ?) AS "response"
UNION ALL
SELECT * FROM (SELECT 'resolution', "id", "priority", "subject", "resolution_due" FROM "ticket"{resolution}
               WHERE {running} AND "resolution_due" IS NOT NULL
               ORDER BY "resolution_due" LIMIT ?) AS "resolution"
"""


def deadlines_sql(sqlite: bool) -> str:
    return _DEADLINES.format(running=RUNNING, **{
        target: f' INDEXED BY "ticket_{target}_due_running"' if sqlite else "" for target in ("response", "resolution")})


def next_deadlines(rt, now: dt.datetime, limit: int = NEXT_DEADLINES) -> list[dict]:
    """The SLA targets due next on tickets whose clock runs (on-hold pauses it):
    a response not yet given, a resolution not yet reached; overdue ones first."""
    due = Ticket.response_due.python_value
    found = store.execute(deadlines_sql(store.is_sqlite()), (limit, limit)).fetchall()
    rows = [(target, number, priority, subject, due(at)) for target, number, priority, subject, at in found]
    rows.sort(key=lambda r: (r[4], r[0] != "response"))
    tz = rt.cfg.desk.timezone
    return [{"ticket": rt.ref(number), "priority": priority, "target": target, "due": iso(at, tz),
             "due_in_seconds": int((at - now).total_seconds()), "subject": subject}
            for target, number, priority, subject, at in rows[:limit]]


def _ago(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    sign, seconds = ("in ", -seconds) if seconds < 0 else ("", seconds)
    if seconds < 120:
        text = f"{seconds} s"
    elif seconds < 2 * 3600:
        text = f"{seconds // 60} min"
    elif seconds < 2 * 86400:
        text = f"{seconds // 3600} h"
    else:
        text = f"{seconds // 86400} d"
    return sign + text + ("" if sign else " ago")


def as_text(d: dict) -> str:
    lines = []
    desk = d["desk"]
    if desk["running"] is None:
        lines.append("desk        (PostgreSQL: see the workers)")
    else:
        lines.append("desk        " + (f"running (pid {desk['pid']})" if desk["running"] else "not running"))
    for m in d["mailboxes"]:
        state = "STALLED" if m["stalled"] else "ok"
        by = f", fetched by {m['fetched_by']}" if m["fetched_by"] else ""
        lines.append(f"mailbox     {m['mailbox']}: last fetch {_ago(m['last_fetch_age_seconds'])} ({state}){by}")
    if d["last_fetch_error"]:
        lines.append(f"            last fetch error: {d['last_fetch_error']}")
    ib = d["inbound"]
    lines.append(f"inbound     {ib['pending']} pending"
                 + (f" (oldest {_ago(ib['oldest_pending_age_seconds'])})" if ib["pending"] else "")
                 + f", {ib['quarantined']} quarantined" + (" (maildesk inbound list --failed)" if ib["quarantined"] else ""))
    parts = []
    for status, o in d["outbox"].items():
        parts.append(f"{o['count']} {status}" + (f" (oldest {_ago(o['oldest_age_seconds'])})" if o["count"] else ""))
    lines.append("outbox      " + ", ".join(parts))
    if d["next_deadlines"]:
        lines.append("next SLA deadlines")
        for n in d["next_deadlines"]:
            when = _ago(-n["due_in_seconds"])
            late = "OVERDUE " if n["due_in_seconds"] < 0 else ""
            lines.append(f"  {n['ticket']:<10} {n['priority']:<8} {n['target']:<10} {late}{n['due']} ({when})")
    else:
        lines.append("next SLA deadlines: none")
    if not d["workers"] and desk["running"] is None:  # SQLite has one desk process, shown above
        lines.append("workers     none running")
    for w in d["workers"]:
        leases = ", ".join(lease["name"] for lease in w["leases"]) or "no leases"
        lines.append(f"worker      {w['worker']}: {'alive' if w['alive'] else 'gone'}, started {w['started_at']}, "
                     f"last beat {w['heartbeat_at']}; {leases}")
    return "\n".join(lines)
