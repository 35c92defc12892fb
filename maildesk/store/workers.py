"""The desk processes that share the database, as `maildesk status` lists them: each
registers itself (`host:pid`) when it starts, beats every HEARTBEAT seconds while it
runs and notes a clean stop; the process that takes a lease (claims.py) writes which
worker holds it. A worker whose last beat is older than ALIVE is gone (killed, or its
host is down); its leases have passed to the others.

On PostgreSQL the times are the database server's clock, the one clock that all
hosts share.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, cast

from .connection import UTC, host_name, is_sqlite, utcnow
from .schema import Lease, Worker
from .sql import execute

if TYPE_CHECKING:
    from collections.abc import Iterable

HEARTBEAT = 15  # seconds between two beats of a running desk process
ALIVE = 60  # a worker whose last beat is older than this is gone
LISTED = 86400  # a gone worker is listed this long after its last beat, then forgotten


def worker_id(pid: int) -> str:
    """How a desk process names itself: host:pid."""
    return f"{host_name()}:{pid}"


def _now_sql() -> tuple[str, tuple]:
    """The current time as SQL: the database server's on PostgreSQL."""
    if is_sqlite():
        return "?", (Worker.heartbeat_at.db_value(utcnow()),)
    return "(now() AT TIME ZONE 'UTC')", ()


def register(worker: str) -> None:
    """This desk process starts (again, if a pid was reused)."""
    host, _, pid = worker.rpartition(":")
    now, args = _now_sql()
    execute(f'INSERT INTO "worker" ("id", "host", "pid", "started_at", "heartbeat_at", "stopped_at") '
            f'VALUES (?, ?, ?, {now}, {now}, NULL) ON CONFLICT ("id") DO UPDATE SET "started_at" = excluded."started_at", '
            '"heartbeat_at" = excluded."heartbeat_at", "stopped_at" = NULL', (worker, host, int(pid), *args, *args))


def beat(worker: str) -> None:
    now, args = _now_sql()
    execute(f'UPDATE "worker" SET "heartbeat_at" = {now} WHERE "id" = ?', (*args, worker))


def stopped(worker: str) -> None:
    now, args = _now_sql()
    execute(f'UPDATE "worker" SET "stopped_at" = {now} WHERE "id" = ?', (*args, worker))
    execute('DELETE FROM "lease" WHERE "worker" = ?', (worker,))


def took_lease(name: str, worker: str) -> None:
    now, args = _now_sql()
    execute(f'INSERT INTO "lease" ("name", "worker", "since") VALUES (?, ?, {now}) '
            'ON CONFLICT ("name") DO UPDATE SET "worker" = excluded."worker", "since" = excluded."since"',
            (name, worker, *args))


def listing() -> list[dict]:
    """Every worker not stopped cleanly and heard of in the last day (LISTED), newest
    first, with `alive` (its last beat is recent) and the leases it holds
    (`mailbox:NAME`, ...)."""
    now = execute("SELECT (now() AT TIME ZONE 'UTC')").fetchone()[0] if not is_sqlite() else None
    now = now.replace(tzinfo=UTC) if now is not None else utcnow()
    leases: dict[str, list[tuple[str, dt.datetime]]] = {}
    for lease in Lease.select().order_by(Lease.name):
        leases.setdefault(lease.worker, []).append((lease.name, lease.since))
    recent = Worker.stopped_at.is_null() & (Worker.heartbeat_at > now - dt.timedelta(seconds=LISTED))
    rows = cast("Iterable[Worker]", Worker.select().where(recent).order_by(Worker.started_at.desc()))
    return [{"worker": w.id, "host": w.host, "pid": w.pid, "started_at": w.started_at, "heartbeat_at": w.heartbeat_at,
             "alive": (now - w.heartbeat_at).total_seconds() <= ALIVE,
             "leases": [{"name": n, "since": since} for n, since in leases.get(w.id, [])]}
            for w in rows]
