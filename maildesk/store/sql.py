"""Transactions and the hot-path SQL: statements whose text is built once, events
written in one INSERT per transaction (and on PostgreSQL what else a processed mail
leaves that nothing reads, heldback.py), writes whose result nobody reads sent with
the next statement on PostgreSQL (`write`), and small durable settings.
"""

from __future__ import annotations

import contextlib
import datetime as dt

from peewee import (
    AutoField,
    BooleanField,
    CharField,
    DatabaseError,
    IntegerField,
    TextField,
)

from . import claims, heldback
from .connection import UtcDateTimeField, db, is_sqlite


@contextlib.contextmanager
def write_transaction():
    """A write transaction. On SQLite, IMMEDIATE: a deferred transaction that reads
    then writes fails at once if another writer committed in between. The events
    added in it are written just before it commits (add_event)."""
    mark = _held_mark()
    try:
        with db.obj.atomic("IMMEDIATE") if is_sqlite() else db.obj.atomic():
            yield
            flush_held()
    except BaseException:
        _drop_held(mark)
        raise
    finally:
        if not db.obj.in_transaction():
            _ids.clear()
            _drawn.clear()
            _expected[0] = 0
            _ahead.clear()


@contextlib.contextmanager
def savepoint():
    """A savepoint inside a write transaction: on an exception it undoes what was
    done in it, events and held-back writes (heldback.py) included, and lets the
    exception go on. Those added before it are written first (on PostgreSQL with the
    SAVEPOINT statement): else a flush within it (resolution.py reads a ticket's
    history; a claim reads whether the mail it cites is pending) would write them
    inside it, and its undoing would take along what earlier messages of the batch
    recorded. (One name serves all: SQL undoes and releases the innermost savepoint
    of a name; peewee's own would draw a random name from the OS for each message.)"""
    flush_held()
    mark = _held_mark()
    database = db.obj
    database.execute_sql('SAVEPOINT "md"')
    try:
        yield
        database.execute_sql('RELEASE SAVEPOINT "md"')
    except BaseException:
        _drop_held(mark)
        _ahead.clear()  # (some may have been read before it: read again, as they were)
        discard = getattr(database, "discard_deferred", None)
        if discard is not None:  # PostgreSQL: the SAVEPOINT went out after every earlier write
            discard()
        database.execute_sql('ROLLBACK TO SAVEPOINT "md"')
        database.execute_sql('RELEASE SAVEPOINT "md"')
        raise


# --- hot-path SQL -------------------------------------------------------------------
# peewee builds the SQL text of every query anew, which costs 20 times more than
# SQLite takes to run a small insert (bench/ingest.py --profile). The pipeline's
# hot path writes through these helpers instead: the statement text is made once
# per (model, columns, database kind), values still go through each field's db_value.

_STATEMENTS: dict = {}


def _sql(text: str) -> str:
    return text if is_sqlite() else text.replace("?", "%s")


def execute(text: str, params=(), prepare: bool = False):
    """Run SQL written with `?` placeholders on either database. `prepare`: a statement
    of the hot path that PostgreSQL keeps prepared (connection.Pipelined); every
    parameter's type must follow from what it meets (a column, a function's argument)."""
    return (_hot if prepare else db.obj.execute_sql)(_sql(text), params)


def _hot(text: str, params):
    """Run a statement of the hot path (its text in this database's placeholders): on
    PostgreSQL kept prepared on the connection."""
    return db.obj.execute_sql(text, params) if is_sqlite() else db.obj.execute_sql(text, params, prepare=True)


def write(text: str, params=(), prepare: bool = False) -> None:
    """Run a write (`?` placeholders) whose result nobody reads. On PostgreSQL it goes to
    the server with the next statement, in one round trip (connection.Pipelined), so
    its error, if any, is raised there, in the same transaction and savepoint."""
    database = db.obj
    defer = getattr(database, "defer", None)
    if defer is None:
        database.execute_sql(_sql(text), params)
    else:
        defer(_sql(text), params, prepare=prepare)


def scalar(text: str, params=(), prepare: bool = False):
    row = execute(text, params, prepare).fetchone()
    return row[0] if row else None


def insert(model, **values) -> int:
    """INSERT one row; returns its primary key. On PostgreSQL, in a transaction, a
    model that asks for it (`DEFERRED_INSERT`: nothing reads its new row back before
    the next statement) takes its id from the table's sequence in advance (`_new_id`)
    and its INSERT goes with the next statement (`write`)."""
    sqlite = is_sqlite()
    deferred = not sqlite and model.DEFERRED_INSERT and db.obj.in_transaction()
    if deferred:
        values = {model._meta.primary_key.name: _new_id(model), **values}
    key = (model, tuple(values), sqlite, deferred)
    statement = _STATEMENTS.get(key)
    if statement is None:
        meta = model._meta
        fields = [meta.fields[name] for name in values]
        columns = ", ".join(f'"{f.column_name}"' for f in fields)
        text = f'INSERT INTO "{meta.table_name}" ({columns}) VALUES ({", ".join("?" * len(fields))})'
        if not sqlite and not deferred:
            text += f' RETURNING "{meta.primary_key.column_name}"'
        statement = _STATEMENTS[key] = (_sql(text), [(f.db_value, _plain(f)) for f in fields])
    text, converters = statement
    params = [v if v is None or type(v) is plain else convert(v)
              for (convert, plain), v in zip(converters, values.values(), strict=True)]
    if deferred:
        db.obj.defer(text, params, prepare=True)
        return params[0]
    cursor = _hot(text, params)
    return cursor.lastrowid if sqlite else cursor.fetchone()[0]


# Ids drawn in advance from a table's sequence (PostgreSQL), for this transaction:
# 1, then 2, 4, ... up to 128 at a time, so that a transaction of one insert wastes
# none and a batch of a hundred messages costs a handful of round trips, not a
# hundred; as many as the transaction expects at first, when it says (expect_rows):
# one round trip a table for a batch. Those a transaction leaves unused are gaps in
# the numbering of rows nobody counts (messages, outbox rows), never of tickets.
_ids: dict[str, list[int]] = {}
_drawn: dict[str, int] = {}
_expected = [0]


def expect_rows(n: int) -> None:
    """This transaction will insert about `n` rows of each table whose ids are drawn
    in advance (a batch of n mails: a message and an outbox row each, at most): the
    first draw of each takes that many, up to 128."""
    _expected[0] = n


def _new_id(model) -> int:
    meta = model._meta
    pool = _ids.setdefault(meta.table_name, [])
    if not pool:
        n = _drawn[meta.table_name] = min(2 * _drawn.get(meta.table_name, 0) or max(_expected[0], 1), 128)
        rows = db.obj.execute_sql("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                                  (f'"{meta.table_name}"', meta.primary_key.column_name, n)).fetchall()
        pool.extend(sorted((r[0] for r in rows), reverse=True))
    return pool.pop()


def _plain(field):
    """The Python type a field stores unconverted (its db_value would return it as
    is), or None."""
    for kind, plain in ((CharField, str), (TextField, str), (BooleanField, bool), (IntegerField, int)):
        if type(field) is kind or (kind is IntegerField and type(field) is AutoField):
            return plain
    return None


def _select(model, sqlite: bool, lock: bool, many: bool = False):
    """(text, fields) of the SELECT of one row by primary key (`many`: of the rows of a
    list of keys, those another process holds skipped), with what the model asks to be
    read along (FETCHED_WITH) last."""
    key = (model, "get", sqlite, lock, many)
    statement = _STATEMENTS.get(key)
    if statement is None:
        meta = model._meta
        also = None if sqlite else model.FETCHED_WITH
        fields = meta.sorted_fields
        columns = ", ".join([f'"{f.column_name}"' for f in fields] + ([also[0]] if also else []))
        pk = f'"{meta.primary_key.column_name}"'
        where = f"{pk} = ANY(?)" if many else f"{pk} = ?"
        locking = (" FOR UPDATE SKIP LOCKED" if many else " FOR UPDATE NOWAIT") if lock else ""
        statement = _STATEMENTS[key] = (_sql(f'SELECT {columns}{", " + pk if many else ""} FROM "{meta.table_name}" '
                                             f'WHERE {where}{locking}'), fields)
    return statement


# Rows of a batch read in one round trip (read_ahead), each handed out once by
# fetch_row in place of a round trip of its own. A row written since it was read
# (save_changes), or read in a savepoint since undone (its lock went with it), is not
# handed out: it is read again.
_ahead: dict[tuple, tuple] = {}


def read_ahead(model, pks) -> None:
    """PostgreSQL, in a transaction, for a model locked when read (a ticket): read and
    lock the rows `pks` now, for fetch_row to hand out at their turn. A row another desk
    process holds is skipped (SKIP LOCKED), not waited for: fetch_row reads it at its
    turn and meets the lock there (claims.Busy), as it would have."""
    if is_sqlite() or not (model.LOCKED_IN_TRANSACTION and db.obj.in_transaction()):
        return
    wanted = [pk for pk in dict.fromkeys(pks) if (model, pk) not in _ahead]
    if not wanted:
        return
    text, _ = _select(model, False, True, many=True)
    for row in _hot(text, (wanted,)).fetchall():
        _ahead[model, row[-1]] = row[:-1]


def fetch_row(model, pk):
    """SELECT one row by primary key into a model instance. On PostgreSQL a model that
    asks for it (`LOCKED_IN_TRANSACTION`: a ticket) is locked for the transaction that
    reads it, or `claims.Busy` is raised if another desk process holds it: two
    processes never change one ticket from two stale copies."""
    sqlite = is_sqlite()
    lock = not sqlite and model.LOCKED_IN_TRANSACTION and db.obj.in_transaction()
    text, fields = _select(model, sqlite, lock)
    row = _ahead.pop((model, pk), None) if lock and _ahead else None
    if row is None:
        try:
            row = _hot(text, (pk,)).fetchone()
        except DatabaseError as e:
            if lock and claims.is_busy(e):
                raise claims.Busy(f"{model.__name__.lower()} {pk} is being changed by another desk process") from None
            raise
        if row is None:
            return None
    instance = model(__no_default__=1, **{f.name: f.python_value(v) for f, v in zip(fields, row[:len(fields)], strict=True)})
    if len(row) > len(fields):
        setattr(instance, model.FETCHED_WITH[1], frozenset(row[-1]))
    instance._dirty.clear()
    return instance


def save_changes(instance, names=None, later: bool = False) -> None:
    """UPDATE the fields changed since the row was read or last saved (or `names`);
    `later`: with the next statement (`write`)."""
    wanted = set(names) if names is not None else instance._dirty
    dirty = [f for f in instance._meta.sorted_fields if f.name in wanted and not f.primary_key]
    if not dirty:
        return
    meta = instance._meta
    sqlite = is_sqlite()
    key = (type(instance), "update", tuple(f.name for f in dirty), sqlite)
    text = _STATEMENTS.get(key)
    if text is None:
        sets = ", ".join(f'"{f.column_name}" = ?' for f in dirty)
        text = _STATEMENTS[key] = _sql(f'UPDATE "{meta.table_name}" SET {sets} WHERE "{meta.primary_key.column_name}" = ?')
    params = [f.db_value(getattr(instance, f.name)) for f in dirty]
    params.append(getattr(instance, meta.primary_key.name))
    if _ahead:
        _ahead.pop((type(instance), params[-1]), None)
    if later and not sqlite:
        db.obj.defer(text, params, prepare=True)
    else:
        _hot(text, params)
    instance._dirty.clear()


# Events are written in one INSERT per transaction: a new ticket has half a dozen.
_events: list[tuple] = []
_AT = UtcDateTimeField()  # the type of event.at


def add_event(ticket, at: dt.datetime, actor: str, kind: str, detail: str, inbound=None) -> None:
    """One line of a ticket's history (`ticket` and `inbound` may be rows or ids),
    written when its transaction commits (write_transaction), or at once outside one."""
    _events.append((_id(ticket), _AT.db_value(at), actor, kind, detail, _id(inbound)))
    if not db.obj.in_transaction():
        flush_events()


def _id(row):
    return row if row is None or isinstance(row, int) else row.id


def flush_events() -> None:
    """Write the events added so far (before reading a ticket's history, say; on
    PostgreSQL they go with the next statement, `write`)."""
    if not _events:
        return
    rows, _events[:] = list(_events), []
    for i in range(0, len(rows), 1000):
        chunk = rows[i:i + 1000]
        write('INSERT INTO "event" ("ticket_id", "at", "actor", "kind", "detail", "inbound_id") VALUES '
                + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)), [v for row in chunk for v in row])


def flush_held() -> None:
    """Write the events and the rows held back (heldback.py) so far; on PostgreSQL
    with the next statement. The pipeline does at the end of a batch's (or a message's)
    savepoint, so that one that fails undoes the batch (or that message) and not the
    transaction: at the commit it would fail the whole of it, and every cycle after."""
    flush_events()
    heldback.flush()


def _held_mark() -> tuple:
    return len(_events), heldback.mark()


def _drop_held(mark: tuple) -> None:
    """Drop the events and held-back rows added since `mark`: their savepoint or
    transaction is undone."""
    del _events[mark[0]:]
    heldback.undo(mark[1])


def save_outcome(inbound) -> None:
    """Write a processed message's outcome (the fields of heldback.OUTCOME): on
    PostgreSQL with the others of its batch, in one statement (store/heldback.py); at
    once on SQLite, where a statement costs no round trip."""
    if heldback.holding():
        heldback.outcome(inbound)
    else:
        save_changes(inbound, heldback.OUTCOME)


# --- small durable settings -------------------------------------------------------


def get_setting(key: str, default: str | None = None) -> str | None:
    value = scalar('SELECT "value" FROM "setting" WHERE "key" = ?', (key,))
    return default if value is None else value


def put_setting(key: str, value: str) -> None:
    execute('INSERT INTO "setting" ("key", "value") VALUES (?, ?) '
            'ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value"', (key, value))
