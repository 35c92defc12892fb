"""Several desk processes on one PostgreSQL database (docs/operations.md, scale-out):
who works on what, so that each piece of work is done once.

SQLite serves one desk process: there, every claim below is granted at once. On
PostgreSQL:

- a **lease** (`try_lease`) is a session advisory lock held by the connection of
  the process that took it, and given up with that connection: the leases of a
  killed process pass to the others at once, those of a dead host once PostgreSQL's
  TCP keepalive (set on every connection, connection.py) gives up on it, within a
  minute. A mailbox is fetched, and a scheduled job run, under a lease;
- a **claim** lasts until its transaction ends: pending inbound rows are claimed
  `FOR UPDATE SKIP LOCKED` (`claim_pending`), a ticket `FOR UPDATE NOWAIT` whenever it
  is read in a transaction (sql.fetch_row), and a Message-ID by a transaction
  advisory lock (`claim_message`): the copies of one message are processed one after
  the other, and a reply waits until the mail it cites is committed;
- what another process holds raises `Busy`: the message it was for stays pending and
  is taken up again in the next round, the job skips that ticket until its next run.

    if claims.try_lease("mailbox:it"): ...fetch it...
    with claims.job_lease("job:sla_sweep") as mine:
        if mine: ...
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from peewee import DatabaseError

from ..errors import MaildeskError
from . import heldback
from .connection import db, is_sqlite

log = logging.getLogger(__name__)

# the first key of every advisory lock maildesk takes ("md" and a kind), so that
# another application's locks on the same database never collide with ours
# (connection.py takes 0x6D640004 while it migrates)
LEASE, MESSAGE = 0x6D640001, 0x6D640003

# SQLSTATEs of a lock another transaction holds: lock_not_available (NOWAIT,
# lock_timeout), deadlock_detected, serialization_failure
_BUSY_STATES = {"55P03", "40P01", "40001"}


class Busy(MaildeskError):
    """Another desk process holds what this one needs; try again in a while."""


class Held(Busy):
    """A message's Message-ID, or one it cites, is claimed by another desk process
    (`claim_message`). Raised before anything of the message is written: the batch it
    is in goes on without it, and it stays pending for the next round."""


def is_busy(error: BaseException) -> bool:
    """A database error that says another transaction holds a lock we waited for."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, Busy) or getattr(e, "pgcode", None) in _BUSY_STATES:
            return True
        inner = e.args[0] if e.args and isinstance(e.args[0], BaseException) else None  # peewee wraps the driver's
        e = inner or e.__cause__ or e.__context__
    return False


def key(name: str) -> int:
    """A lock's second key: a stable signed 32-bit hash of its name."""
    import hashlib  # here: OpenSSL's hashes are 2.5 ms of a command that takes no lock

    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


def lease_mark(name: str) -> int:
    """The lease `name` as a row can name it (outbox.claimed_by), and as pg_locks shows it."""
    return key(name) & 0xFFFFFFFF


# the leases held now on this database, as lease_mark numbers: SQL for a sub-select
LIVE_LEASES = ("SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
               f"AND classid = {LEASE}::bigint::oid "
               "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


# --- leases --------------------------------------------------------------------------


def try_lease(name: str) -> bool:
    """Take the lease `name` for this process's connection, or keep it; False when
    another process holds it."""
    if is_sqlite():
        return True
    return bool(db.obj.execute_sql("SELECT pg_try_advisory_lock(%s, %s)", (LEASE, key(name))).fetchone()[0])


def holds_lease(name: str) -> bool:
    """Whether this connection still holds the lease (a connection that was lost and
    opened again holds nothing)."""
    if is_sqlite():
        return True
    row = db.obj.execute_sql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted "
        "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 2",
        (LEASE, lease_mark(name))).fetchone()
    return bool(row and row[0])


def release_lease(name: str) -> None:
    if is_sqlite():
        return
    while db.obj.execute_sql("SELECT pg_advisory_unlock(%s, %s)", (LEASE, key(name))).fetchone()[0]:
        pass  # taken more than once (try_lease again): unlock each


@contextlib.contextmanager
def job_lease(name: str) -> Iterator[bool]:
    """A scheduled job's lease for one run: True when this process is to run it,
    False when another one is running it now."""
    mine = try_lease(name)
    try:
        yield mine
    finally:
        if mine:
            with contextlib.suppress(DatabaseError):  # a lost connection has given it up anyway
                release_lease(name)


# --- claims, for one transaction ---------------------------------------------------------


def claim_pending(limit: int) -> tuple[list[int], int]:
    """The ids of up to `limit` pending inbound rows, oldest first, for this
    transaction alone, and how many more it claimed but must leave pending. On
    PostgreSQL rows another desk process is working on are skipped, and each row's
    Message-ID (stored when it was fetched) is claimed with it (`claim_message`): a row
    whose Message-ID another process holds (a copy of a message it is processing) is
    left for the next round, and no other process can process a reply to one of these
    before this transaction commits."""
    sql = 'SELECT "id" FROM "inbound" WHERE "status" = %s ORDER BY "id" LIMIT %s'
    if is_sqlite():
        return [i for (i,) in db.obj.execute_sql(sql.replace("%s", "?"), ("pending", limit))], 0
    rows = db.obj.execute_sql(
        'WITH c AS (SELECT "id", "message_id" FROM "inbound" WHERE "status" = %s ORDER BY "id" LIMIT %s '
        'FOR UPDATE SKIP LOCKED) '
        'SELECT "id", "message_id" IS NULL OR pg_try_advisory_xact_lock(%s, hashtext("message_id")) FROM c ORDER BY "id"',
        ("pending", limit, MESSAGE)).fetchall()
    ids = [i for i, mine in rows if mine]
    return ids, len(rows) - len(ids)


def claim_message(message_id: str | None, cited: Sequence[str], sender: str,
                  inbound_id: int | None = None, also: Also | None = None) -> tuple[bool, int | None]:
    """Claim a message for this transaction and look for an earlier copy of it: the
    ticket on which a message of this Message-ID from this sender is stored, if any.

    On PostgreSQL the claim is a transaction advisory lock on the Message-ID
    (exclusive) and on each id it cites (shared): two copies of one message are not
    processed at once, and a reply is not processed while the mail it cites is being
    processed by another desk process (it would start a ticket of its own). Nor while
    the mail it cites waits, still pending, before it (`inbound_id`): a batch skips the
    rows another transaction has locked (the fetch process flagging them, say), and
    would otherwise take a reply before the mail it answers. False: either.

    `also` (PostgreSQL): scalar sub-selects a later stage will read, written with `?`, read
    in the same statement, and what takes the values they read."""
    if is_sqlite():
        if not message_id:
            return True, None
        row = db.obj.execute_sql('SELECT "ticket_id" FROM "message" WHERE "message_id" = ? AND "direction" = ? '
                                 'AND "from_addr" = ? LIMIT 1', (message_id, "in", sender)).fetchone()
        return True, row[0] if row else None
    claim = Claim(message_id, cited, sender, inbound_id, also)
    if not claim.message_id and not _cited(claim):
        return True, None
    return _claim([claim], prepare=True)[0]


class Claim(NamedTuple):
    """One message's claim_message, to claim with others (claim_messages)."""

    message_id: str | None
    cited: Sequence[str]
    sender: str
    inbound_id: int | None = None
    also: Also | None = None


def claim_messages(claims: Sequence[Claim]) -> list[tuple[bool, int | None]]:
    """claim_message for each of a batch's messages, in one statement on PostgreSQL:
    a round trip for the batch instead of one for each message. The caller leaves out
    a message that is a copy of, or cites, another message of the same batch: it is
    claimed at its turn (claim_message), once the one before it is stored."""
    if is_sqlite() or not claims:
        return [claim_message(*c) for c in claims]
    return _claim(claims, prepare=False)


def _cited(claim: Claim) -> list[str]:
    return [c for c in dict.fromkeys(claim.cited) if c and c != claim.message_id]


def _claim(claims: Sequence[Claim], prepare: bool) -> list[tuple[bool, int | None]]:
    """One statement: the locks of every claim first (a CTE, MATERIALIZED: taken before
    anything else is read), then each earlier copy, looked for by md_stored_copy
    (migration 0011) once the locks are granted: a sub-select here would read with the
    statement's snapshot, taken before them, and miss the copy whose process let go
    of the lock by committing in between.

    md_stored_copy is called from one place in the statement, over the claims as rows
    (unnest): PostgreSQL parses and plans an SQL function's body once for each place
    that calls it in a statement, which with a call written out for each claim was most
    of the time of a batch's claim (0.1 ms a message)."""
    # the cited rows are found by their Message-ID first (a few rows), then looked at:
    # left to the planner, it may go through every pending row instead (the status
    # index), which with a backlog of mail is a backlog per reply
    waiting = list(dict.fromkeys(c for claim in claims if claim.inbound_id is not None for c in _cited(claim)))
    ctes: list[str] = []
    params: list = []
    if waiting:
        heldback.flush()  # the mail cited may have been processed in this transaction: its status is read here
        ctes.append(f'"cited" AS MATERIALIZED (SELECT "id", "status", "message_id" FROM "inbound" '
                    f'WHERE "message_id" IN ({", ".join(["%s"] * len(waiting))}))')
        params += waiting
    columns: list[str] = []
    lookups: list[str] = []
    later: list = []
    shared = _shared_also(claims)
    for i, claim in enumerate(claims):
        cited = _cited(claim)
        locks = [_LOCK] if claim.message_id else []
        params += [MESSAGE, claim.message_id] if claim.message_id else []
        for cited_id in cited:
            locks.append(_SHARED_LOCK)
            params += [MESSAGE, cited_id]
        if cited and claim.inbound_id is not None:
            locks.append(f'NOT EXISTS (SELECT 1 FROM "cited" WHERE "message_id" IN ({", ".join(["%s"] * len(cited))}) '
                         'AND "status" = %s AND "id" < %s)')
            params += [*cited, "pending", claim.inbound_id]
        columns.append(f'{" AND ".join(locks) or "TRUE"} AS "got{i}"')
        lookups.append(f'"got{i}"')
        if claim.also is not None and claim.also.sql not in shared:
            lookups.append(f"ARRAY[{claim.also.sql.replace('?', '%s')}]")
            later += claim.also.params
    each = ", ".join(["%s"] * len(claims))
    gots = ", ".join(f'"got{i}"' for i in range(len(claims)))
    lookups.append('(SELECT array_agg(CASE WHEN "u"."got" AND "u"."mid" IS NOT NULL '
                   'THEN "md_stored_copy"("u"."mid", "u"."sender") END ORDER BY "u"."n") '
                   f'FROM unnest(ARRAY[{each}]::text[], ARRAY[{each}]::text[], ARRAY[{gots}]::boolean[]) '
                   'WITH ORDINALITY AS "u"("mid", "sender", "got", "n"))')
    later += [c.message_id for c in claims] + [c.sender for c in claims]
    for sql, (types, rows) in shared.items():
        lookups.append(_also_over_rows(sql, types))
        later += [list(column) for column in zip(*(also.params for also in rows), strict=True)]
    ctes.append(f'"claim" AS MATERIALIZED (SELECT {", ".join(columns)})')
    row = iter(db.obj.execute_sql(f'WITH {", ".join(ctes)} SELECT {", ".join(lookups)} FROM "claim"',
                                  params + later, prepare=prepare).fetchone())
    got = []
    for claim in claims:
        got.append(bool(next(row)))
        if claim.also is not None and claim.also.sql not in shared:
            claim.also.take(list(next(row)))
    copies = next(row)
    for _, rows in shared.values():
        for also, values in zip(rows, next(row), strict=True):
            also.take(list(values))
    return list(zip(got, copies, strict=True))


# the element type of an array of parameters, by the Python type of its values (bool
# before int: a bool is an int; a StrEnum, such as a Lane, is text)
_ARRAY_TYPES = ((bool, "boolean"), (int, "bigint"), (float, "double precision"), (str, "text"))


def _shared_also(claims: Sequence[Claim]) -> dict[str, tuple[list[str], list[Also]]]:
    """The sub-selects (`Also`) that several claims of a batch read alike but with their
    own parameters (the flood counts of each new mail, floods.py), by their SQL: each is
    read once for all of them (_also_over_rows), so that PostgreSQL plans it once rather
    than once for every message (planning 250 sub-selects was most of a batch claim's
    time). With their parameters' SQL types; an Also whose parameters are not all of one
    known type at each place stays written out for its claim."""
    by_sql: dict[str, list[Also]] = {}
    for claim in claims:
        if claim.also is not None:
            by_sql.setdefault(claim.also.sql, []).append(claim.also)
    shared = {}
    for sql, rows in by_sql.items():
        if len(rows) < 2 or len({len(also.params) for also in rows}) != 1:
            continue
        types = [_array_type(column) for column in zip(*(also.params for also in rows), strict=True)]
        if None not in types:
            shared[sql] = ([t or "" for t in types], rows)
    return shared


def _array_type(values: Sequence) -> str | None:
    names = {_sql_type(v) for v in values if v is not None}
    return "text" if not names else names.pop() if len(names) == 1 else None


def _sql_type(value) -> str | None:
    if isinstance(value, dt.datetime):
        return "timestamp" if value.tzinfo is None else "timestamptz"
    return next((name for python, name in _ARRAY_TYPES if isinstance(value, python)), None)


def _also_over_rows(sql: str, types: list[str]) -> str:
    """`sql` (scalar sub-selects written with `?`) read for each row of its parameters,
    given as one array a place: an array of the arrays it reads, in the rows' order."""
    parts = sql.split("?")
    read = parts[0] + "".join(f'"p"."c{k}"' + part for k, part in enumerate(parts[1:]))
    names = ", ".join(f'"c{k}"' for k in range(len(types)))
    arrays = ", ".join(f"%s::{t}[]" for t in types)
    return (f'(SELECT array_agg(ARRAY[{read}] ORDER BY "p"."n") '
            f'FROM unnest({arrays}) WITH ORDINALITY AS "p"({names}, "n"))')


# The claim of a Message-ID, and of each one it cites (shared): taken at once or not at all.
_LOCK = "pg_try_advisory_xact_lock(%s, hashtext(%s))"
_SHARED_LOCK = "pg_try_advisory_xact_lock_shared(%s, hashtext(%s))"


class Also(NamedTuple):
    """Sub-selects to read with a claim (claim_message): their SQL, its parameters, and
    what takes the values they read, in order. Each parameter is a Python value of its
    SQL type (a time a datetime, not text): claims of a batch whose sub-selects are the
    same read them over arrays typed by those values (_shared_also)."""

    sql: str
    params: list
    take: Callable[[list], None]


# --- state every process must see at once ------------------------------------------------
# A write in a batch's transaction holds its row until the batch commits: a second
# desk process that wants the same row (the round-robin turn of a group, the time a
# technician was last assigned) would wait for the whole batch, or deadlock with it.
# On PostgreSQL these few writes go through a connection of their own, in autocommit.

class _OwnConnection:
    """A connection of this process's own beside the one its transactions use, in
    autocommit (peewee's own connect), opened on first use and again when the database
    was opened anew or the connection was lost; `setup` runs on each one opened."""

    def __init__(self, setup=None):
        self.setup = setup
        self.held: tuple | None = None  # (database, connection)

    def get(self):
        database = db.obj
        if self.held is not None and (self.held[0] is not database or self.held[1].closed):
            self.close()
        if self.held is None:
            conn = database._connect()
            if self.setup is not None:
                self.setup(conn)
            self.held = (database, conn)
        return self.held[1]

    def close(self) -> None:
        if self.held is not None:
            conn, self.held = self.held[1], None
            with contextlib.suppress(Exception):  # noqa: BLE001 - a connection being thrown away
                conn.close()


_side = _OwnConnection()


# --- new mail: a wake-up call for every desk process -------------------------------------
# A desk process learns of the mail its own fetch process stored over their pipe; the
# others (no lease on that mailbox, or on another host) hear it from PostgreSQL at once,
# instead of at their next look a second later.

NEW_MAIL = "maildesk_new_mail"


def _listen(conn) -> None:
    with conn.cursor() as cursor:
        cursor.execute(f"LISTEN {NEW_MAIL}")


_listening = _OwnConnection(setup=_listen)


def announce_new_mail() -> None:
    """Tell every listening desk process that new mail was committed (PostgreSQL)."""
    if not is_sqlite():
        db.obj.execute_sql(f"NOTIFY {NEW_MAIL}")


def new_mail_listener():
    """A connection of its own that listens for announce_new_mail (its `fileno()` for
    a select), opened on first use; None on SQLite."""
    return None if is_sqlite() else _listening.get()


def heard_new_mail() -> bool:
    """Whether new mail was announced since the last call (the listener's backlog is read)."""
    if _listening.held is None:
        return False
    conn = _listening.held[1]
    try:
        conn.poll()
    except Exception:  # noqa: BLE001 - a lost connection: open again on next use, and look anyway
        _listening.close()
        return True
    heard = bool(conn.notifies)
    conn.notifies.clear()
    return heard


def _before_fork() -> None:
    _side.close()
    _listening.close()


# no connection crosses a fork (the mail processes are forked from the desk process)
os.register_at_fork(before=_before_fork)


def write_at_once(sql: str, params: Sequence = ()) -> None:
    """Run a write (with `?` placeholders) that other desk processes must see at once,
    outside this process's transaction (SQLite: inside it; it has one writer)."""
    if is_sqlite():
        db.obj.execute_sql(sql, params)
        return
    with _side.get().cursor() as cursor:
        cursor.execute(sql.replace("?", "%s"), params)


def take_turn(name: str, choose: Callable[[str | None], str]) -> str:
    """Advance a turn kept in the settings (round robin): `choose(last)` names the
    next one, which is stored unless another process took a turn meanwhile, in which
    case it is asked again with the turn that one took. Returns the one stored."""
    sql = 'SELECT "value" FROM "setting" WHERE "key" = ?'
    if is_sqlite():
        row = db.obj.execute_sql(sql, (name,)).fetchone()
        chosen = choose(row[0] if row else None)
        db.obj.execute_sql('INSERT INTO "setting" ("key", "value") VALUES (?, ?) '
                           'ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value"', (name, chosen))
        return chosen
    import random  # here: only a lost race needs it

    with _side.get().cursor() as cursor:
        for attempt in range(50):
            if attempt:  # lost to another process: a random pause, longer each time, so that the two
                time.sleep(random.uniform(0, 0.001) * attempt)  # do not meet again at once, and again
            cursor.execute(sql.replace("?", "%s"), (name,))
            row = cursor.fetchone()
            last = row[0] if row else None
            chosen = choose(last)
            if last is None:
                cursor.execute('INSERT INTO "setting" ("key", "value") VALUES (%s, %s) ON CONFLICT ("key") DO NOTHING',
                               (name, chosen))
            else:  # compare and set: only if the turn is still the one read
                cursor.execute('UPDATE "setting" SET "value" = %s WHERE "key" = %s AND "value" = %s', (chosen, name, last))
            if cursor.rowcount == 1:
                return chosen
    log.warning("turn %s: taken by other processes 50 times in a row; taking %s anyway", name, chosen)
    return chosen


def locked(query):
    """A select of rows this transaction is about to change (the children of a major
    incident): on PostgreSQL, locked for it, NOWAIT (another process holding one of
    them makes the work wait for the next round, is_busy)."""
    if is_sqlite() or not db.obj.in_transaction():
        return query
    return query.for_update(nowait=True)
