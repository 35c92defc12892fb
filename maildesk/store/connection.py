"""The connection: one `DatabaseProxy` bound at start-up by `open_database(url)`, the
stored time type, and the migrations runner.

SQLite runs in WAL mode with `synchronous=FULL`: a commit has reached the disk when it
returns (the WAL is synced), as a PostgreSQL commit has. Mail is flagged on the IMAP
server, and the mail a commit queued is sent, only after it: with NORMAL the WAL was
synced only at the next checkpoint, a quarter of a second later, and a power cut in
between lost mail already flagged, or undid a ticket whose acknowledgement had gone out
(then sent again with another Message-ID when the mail was processed again). A killed
process loses nothing either way; FULL costs about 4% of ingest (bench/ingest.py, 7
pairs: 745 -> 714 msg/s). PostgreSQL from a `postgresql://`
URL runs the same code, each connection named in `pg_stat_activity` after its process
(`maildesk host:pid`), with a lock timeout, and with TCP keepalives that make the server
drop the connection of a dead host, and with it its leases (claims.py), within a minute.
On PostgreSQL, where each statement is a round trip to the server, a write whose
result nobody reads can be deferred (`Pipelined.defer`): it goes to the server with
the next statement, in one message, so that a message's writes cost no waiting of
their own. The schema is created and changed only by the numbered scripts in
`maildesk/store/migrations/` (`migrate()`), never by `create_tables` at run time.
Times are stored as UTC and handed back as aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from peewee import (
    DatabaseProxy,
    Field,
    PostgresqlDatabase,
    SqliteDatabase,
)

from ..errors import MaildeskError

log = logging.getLogger(__name__)

db = DatabaseProxy()
MIGRATIONS = Path(__file__).parent / "migrations"

UTC = dt.UTC


def host_name() -> str:
    """This host's name, as gethostname(2) gives it (uname(2)'s node name), read without
    the `socket` module, which every command would load for this alone: what a desk
    process is named by (workers.worker_id) and what its connections say they are."""
    return os.uname().nodename


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


class UtcDateTimeField(Field):
    """An aware datetime, stored as naive UTC text (SQLite) or timestamp (PostgreSQL)."""

    field_type = "DATETIME"

    _last: tuple = (None, None, None)  # (value, database, result): one message's `now`, again and again

    def db_value(self, value):
        if value is None:
            return None
        last = UtcDateTimeField._last
        if value is last[0] and db.obj is last[1]:
            return last[2]
        original = value
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        if is_sqlite():  # text that sorts in time order
            value = value.isoformat(sep=" ", timespec="microseconds")
        UtcDateTimeField._last = (original, db.obj, value)
        return value

    def python_value(self, value):
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)


# --- connection --------------------------------------------------------------------


class DatabaseUnavailable(MaildeskError):
    pass


def open_database(url: str):
    """Bind the proxy to the database at `url` and return it."""
    stop_checkpointing()
    if db.obj is not None:
        db.obj.close()
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        database: SqliteDatabase | PostgresqlDatabase = SqliteDatabase(
            path,
            pragmas={
                "journal_mode": "wal",
                "synchronous": "full",  # module docstring
                "foreign_keys": 1,
                "busy_timeout": 30000,
                "cache_size": -32000,
            },
            timeout=30,
        )
    else:
        scheme, _, rest = url.partition("://")
        if scheme not in ("postgresql", "postgres", "postgresext"):  # maildesk needs none of the latter's extras
            raise DatabaseUnavailable(f"database.url: unsupported database {url.split(':', 1)[0]}")
        params: dict[str, Any] = {**_pg_target("postgresql://" + rest), **_PG_SESSION, "autorollback": False,
                                  "application_name": f"maildesk {host_name()}:{os.getpid()}"[:63]}
        database = Pipelined(**params)
    db.initialize(database)
    try:
        database.connect(reuse_if_open=True)
    except Exception as e:  # the driver's own error type varies
        raise DatabaseUnavailable(f"cannot open the database at {redact(url)}: {e}".strip()) from e
    return database


class Pipelined(PostgresqlDatabase):
    """PostgreSQL, where each statement is a round trip, and where parsing and planning
    a small statement costs the server more than running it.

    A write whose result nobody reads waits (`defer`) and goes to the server with the
    next statement, in one round trip (psycopg2 sends several statements in one query,
    and they run in order; the next statement may be the COMMIT). The statements keep
    their order, so whatever runs next sees their effect; an error in one of them is
    raised by the statement they went with, inside the same transaction and savepoint,
    which is then undone as before. Deferred writes are dropped with a rollback
    (`rollback`, `discard_deferred` before a ROLLBACK TO SAVEPOINT of a savepoint taken
    after them) and with the connection.

    A statement run with `prepare=True` (the hot path's, store/sql.py: their
    parameters' types follow from the columns they meet) is prepared on this connection
    the second time it is seen (PREPARE), and from then on sent as an EXECUTE of it, which
    the server neither parses nor plans again. Prepared statements outlive rollbacks
    and go with the connection."""

    def init(self, *args, **kwargs):
        self._later = threading.local()  # like peewee's connection state: one of each a thread
        super().init(*args, **kwargs)

    def _deferred(self) -> list:
        later = getattr(self._later, "items", None)
        if later is None:
            later = self._later.items = []
        return later

    def defer(self, sql: str, params=(), prepare: bool = False) -> None:
        """Run `sql` with the next statement (at once outside a transaction)."""
        if not self.in_transaction():
            self.execute_sql(sql, params, prepare=prepare)
            return
        text, made = self._as_prepared(sql, params) if prepare else (sql, None)
        self._deferred().append((text, params, made))

    def discard_deferred(self) -> None:
        later = self._deferred()
        self._forget([made for _, _, made in later if made])
        later.clear()

    def execute_sql(self, sql, params=None, prepare: bool = False):
        later = self._deferred()
        made = []
        if prepare:
            sql, new = self._as_prepared(sql, params)
            made = [new] if new else []
        if later:
            # every statement here is written for interpolation (a literal % doubled):
            # peewee hands psycopg2 a sequence of parameters even when it is empty
            texts = [text for text, _, _ in later]
            values = [v for _, p, _ in later for v in p]
            made += [m for _, _, m in later if m]
            later.clear()
            texts.append(sql)
            values.extend(params or ())
            sql, params = ";\n".join(texts), values
        try:
            return super().execute_sql(sql, params)
        except BaseException:
            self._forget(made)  # perhaps prepared, perhaps not: never named again
            raise

    # --- prepared statements -----------------------------------------------------------

    _MAX_PREPARED = 300  # a connection's; past it, statements are sent as they are

    def _statements(self) -> dict:
        """{SQL text: the name it is prepared under, or how often it was seen} of this
        thread's connection."""
        conn = self._state.conn  # type: ignore[attr-defined]  # peewee sets it in __init__
        known = getattr(self._later, "prepared", None)
        if known is None or known[0] is not conn:
            known = self._later.prepared = (conn, {})
        return known[1]

    def _as_prepared(self, sql: str, params) -> tuple[str, str | None]:
        """The text to send for `sql`, and the name it prepares now (None if none)."""
        statements = self._statements()
        entry = statements.get(sql)
        args = f"({', '.join(['%s'] * len(params))})" if params else ""
        if isinstance(entry, str):
            return f"EXECUTE {entry}{args}", None
        if entry is None or len(statements) >= self._MAX_PREPARED:
            statements[sql] = 1
            return sql, None
        name = statements[sql] = f"md_{next(_names)}"  # a new name each time: a failed PREPARE leaves no doubt
        return f"PREPARE {name} AS {_numbered(sql)};\nEXECUTE {name}{args}", sql

    def _forget(self, made) -> None:
        statements = self._statements()
        for sql in made:
            statements.pop(sql, None)

    def commit(self):
        if self._deferred():
            self.execute_sql("COMMIT")
            return
        super().commit()

    def rollback(self):
        self.discard_deferred()
        super().rollback()

    def close(self):
        self.discard_deferred()
        self._later.prepared = None
        return super().close()


_names = itertools.count(1)


def _numbered(sql: str) -> str:
    """psycopg2's placeholders (`%s`, `%%`) as PREPARE's (`$1`, `%`)."""
    n = itertools.count(1)
    return re.sub(r"%[s%]", lambda m: "%" if m.group() == "%%" else f"${next(n)}", sql)


class Checkpointer:
    """SQLite, in the one process that writes (the desk): the WAL is copied back into
    the database file (a checkpoint) by a thread of its own, on a connection of its
    own, rather than by whichever commit finds the WAL full. On a big database each
    checkpoint writes and syncs thousands of scattered index pages: done by the
    committing process, that was a third of the time of ingest on a database of a
    million tickets (bench/ingest.py --prefill); here it runs on another core while
    the desk goes on (a PASSIVE checkpoint blocks no reader and no writer). The
    desk's own connection still checkpoints past `FALLBACK` pages, should this thread
    fall behind. No connection may cross a fork: the thread stops before the desk
    forks a mail process and starts again after."""

    EVERY = 0.25  # seconds between checkpoints
    FALLBACK = 16000  # pages (64 MB) of WAL before a commit checkpoints after all

    def __init__(self, path: str):
        self.path = path
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def start(self) -> None:
        if self.thread is None:
            self.stopping.clear()
            self.thread = threading.Thread(target=self._run, name="maildesk-checkpoint", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.stopping.set()
            self.thread.join()
            self.thread = None

    def _run(self) -> None:
        import sqlite3

        conn = None
        while not self.stopping.wait(self.EVERY):
            try:
                if conn is None:
                    conn = sqlite3.connect(self.path, timeout=30)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as e:
                log.warning("WAL checkpoint of %s: %s", self.path, e)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


_checkpointer: list[Checkpointer] = []  # this process's, running (at most one)


def checkpoint_in_background() -> None:
    """Hand this process's WAL checkpoints to a thread (`Checkpointer`; SQLite only)."""
    database = db.obj
    if not isinstance(database, SqliteDatabase) or database.database in ("", ":memory:") or _checkpointer:
        return
    database.pragma("wal_autocheckpoint", Checkpointer.FALLBACK, permanent=True)
    checkpointer = Checkpointer(database.database)
    _checkpointer.append(checkpointer)
    checkpointer.start()


def stop_checkpointing() -> None:
    while _checkpointer:
        _checkpointer.pop().stop()


def _before_fork() -> None:
    for checkpointer in _checkpointer:
        checkpointer.stop()


def _after_fork_in_parent() -> None:
    for checkpointer in _checkpointer:
        checkpointer.start()


def _after_fork_in_child() -> None:
    _checkpointer.clear()  # the thread stayed with the parent


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


# A lock wait this long is given up (claims.Busy): the work waits for the next round.
# The keepalives (server side: the options; client side: libpq's own) detect a peer
# that is gone without closing its connection within 20 + 3 x 10 seconds.
# No JIT compilation: the desk's statements are short, and PostgreSQL decides on JIT
# by the planner's cost estimate, which the batch claim's flood counts push over
# `jit_above_cost` once the tables are big. On a million tickets JIT spent half a
# second compiling each batch claim that then ran in 20 ms: ingest at a quarter of
# its rate (bench/ingest.py --prefill).
_PG_SESSION: dict[str, Any] = {
    "options": "-c lock_timeout=10s -c jit=off "
               "-c tcp_keepalives_idle=20 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3",
    "keepalives": 1, "keepalives_idle": 20, "keepalives_interval": 10, "keepalives_count": 3,
}


def _pg_target(url: str) -> dict[str, Any]:
    """The connection URL handed to libpq as it is (`dsn`: libpq reads it, its
    percent-escapes and its `?sslmode=...` parameters), with the database's name apart,
    which peewee wants too. Not playhouse.db_url: it imports every database peewee
    knows (7 ms of each command's start), and leaves a percent-escaped password escaped."""
    from urllib.parse import unquote, urlsplit

    return {"database": unquote(urlsplit(url).path[1:]), "dsn": url}


def redact(url: str) -> str:
    """A URL for logs: the password replaced."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


def is_sqlite() -> bool:
    return isinstance(db.obj, SqliteDatabase)


def migrate() -> list[str]:
    """Create or bring the schema up to date; returns the names applied. Desk
    processes that start together on one PostgreSQL database migrate one at a time."""
    from playhouse.migrations import Runner

    if is_sqlite():
        return Runner(db.obj, str(MIGRATIONS)).up()
    db.obj.execute_sql("SELECT pg_advisory_lock(%s, 0)", (_MIGRATION_LOCK,))
    try:
        return Runner(db.obj, str(MIGRATIONS)).up()
    finally:
        db.obj.execute_sql("SELECT pg_advisory_unlock(%s, 0)", (_MIGRATION_LOCK,))


_MIGRATION_LOCK = 0x6D640004  # an advisory lock key of maildesk's own (claims.py has the others)


def pending_migrations() -> list[str]:
    """The migrations not applied yet, in order. Read from the history `migrate()`'s
    runner keeps (playhouse.migrations: its table `schema_migration`, one row per
    script applied) without importing that runner: every command asks this, and
    the runner's imports cost more than the question (issue 15)."""
    # the scripts' names are zero-padded numbers first: name order is their order
    # (listed by name, not with Path.glob, which compiles a pattern: half a millisecond)
    scripts = sorted(name[:-3] for name in os.listdir(MIGRATIONS) if name[:1].isdigit() and name.endswith(".py"))
    if not _history_exists():
        return scripts
    applied = {name for (name,) in db.obj.execute_sql(f'SELECT "name" FROM "{_HISTORY}"')}
    return [name for name in scripts if name not in applied]


_HISTORY = "schema_migration"  # playhouse.migrations.Runner's table_name, by default


def _history_exists() -> bool:
    """Whether the history table is there. On PostgreSQL by the name as the next
    statement resolves it (`to_regclass`, the search path), not by peewee's listing
    of every table in the current schema, which was a millisecond more of each
    command's first statement."""
    database = db.obj
    if isinstance(database, SqliteDatabase):
        return database.table_exists(_HISTORY)
    return bool(database.execute_sql("SELECT to_regclass(%s) IS NOT NULL", (f'"{_HISTORY}"',)).fetchone()[0])
