"""How long one SLA sweep takes to find what is due among 1,000,000 tickets.

Fills a fresh SQLite database (the real schema, made by the migrations) with N
tickets of which a few hundred have a reminder or breach due, then times
`sweep.due_ticket_ids(now)` (the query every sweep runs, through the `sla_next_at`
index) and, separately, one full `sweep.sweep` that fires the due marks and queues
their mail.

    python bench/sla.py [--tickets 1000000] [--due 300]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from maildesk import store  # noqa: E402
from maildesk.config import parse_config  # noqa: E402
from maildesk.desk import sweep
from maildesk.service.runtime import Runtime  # noqa: E402

UTC = dt.UTC


def fill(n: int, due: int, now: dt.datetime) -> None:
    db = store.db.obj
    statuses = ["closed"] * 80 + ["resolved"] * 5 + ["open"] * 10 + ["in-progress"] * 5
    rnd = random.Random(7)
    due_ids = set(rnd.sample(range(1, n + 1), due))
    fmt = lambda t: t.isoformat(sep=" ", timespec="microseconds")  # noqa: E731
    sql = ("INSERT INTO ticket (id, subject, requester, requester_name, status, category, impact, urgency, priority, "
           "priority_set, \"group\", assignee, created_at, updated_at, sla_policy, response_due, resolution_due, "
           "paused_minutes, sla_next_at, reopen_count, escalation_count, is_major) "
           "VALUES (?, ?, ?, '', ?, 'General', 'medium', 'medium', 'medium', 0, 'service-desk', 'alice@example.test', "
           "?, ?, 'medium', ?, ?, 0, ?, 0, 0, 0)")
    chunk = []
    with db.atomic():
        for i in range(1, n + 1):
            created = now - dt.timedelta(minutes=rnd.randint(60, 60 * 24 * 400))
            status = statuses[i % len(statuses)]
            if i in due_ids:
                status, created = "open", now - dt.timedelta(hours=3)
                next_at = now - dt.timedelta(minutes=rnd.randint(1, 60))
            elif status in ("open", "in-progress"):
                next_at = now + dt.timedelta(minutes=rnd.randint(1, 60 * 24 * 10))
            else:
                next_at = None  # finished tickets have nothing pending
            chunk.append((i, f"ticket {i}", f"user{i % 5000}@example.org", status, fmt(created), fmt(created),
                          fmt(created + dt.timedelta(hours=1)), fmt(created + dt.timedelta(hours=8)),
                          fmt(next_at) if next_at else None))
            if len(chunk) == 20000:
                db.cursor().executemany(sql, chunk)
                chunk.clear()
        if chunk:
            db.cursor().executemany(sql, chunk)
    db.execute_sql("ANALYZE")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tickets", type=int, default=1_000_000)
    ap.add_argument("--due", type=int, default=300)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="maildesk-bench-sla-"))
    cfg = parse_config({
        "desk": {"address": "helpdesk@example.test", "timezone": "Europe/Berlin", "state_dir": str(tmp)},
        "database": {"url": f"sqlite:///{tmp / 'bench.db'}"},
        "imap": {"host": "127.0.0.1", "username": "u", "password": "p"},
        "smtp": {"host": "127.0.0.1"},
        "groups": [{"name": "service-desk"}],
        "technicians": [{"email": "alice@example.test", "groups": ["service-desk"]}],
        "security": {"secret": "bench: a signing secret of 32 bytes or more"},
    })
    store.open_database(cfg.database.url)
    store.migrate()
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    t0 = time.perf_counter()
    fill(args.tickets, args.due, now)
    print(f"filled {args.tickets:,} tickets ({args.due} due) in {time.perf_counter() - t0:.1f} s")

    plan = store.db.obj.execute_sql(
        "EXPLAIN QUERY PLAN SELECT id FROM ticket WHERE sla_next_at <= ? ORDER BY sla_next_at LIMIT 1000",
        (now.isoformat(sep=" ", timespec="microseconds"),)).fetchall()
    print("query plan:", "; ".join(str(r[-1]) for r in plan))
    timings = []
    for _ in range(30):
        t0 = time.perf_counter()
        ids = sweep.due_ticket_ids(now)
        timings.append((time.perf_counter() - t0) * 1000)
    assert len(ids) == args.due, len(ids)
    print(f"find due rows: {len(ids)} of {args.tickets:,} tickets: median {statistics.median(timings):.2f} ms, "
          f"best {min(timings):.2f} ms, worst {max(timings):.2f} ms (target: under 10 ms)")

    rt = Runtime.start(cfg)
    rt.calendar("business").is_open(now)  # load the holiday tables outside the timing
    t0 = time.perf_counter()
    fired = sweep.sweep(rt, now)
    full = (time.perf_counter() - t0) * 1000
    print(f"full sweep: fired {fired} marks on {len(ids)} tickets and queued their mail in {full:.0f} ms "
          f"({full / max(1, len(ids)):.2f} ms per due ticket)")
    t0 = time.perf_counter()
    again = sweep.sweep(rt, now)
    print(f"second sweep at the same time: fired {again} in {(time.perf_counter() - t0) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
