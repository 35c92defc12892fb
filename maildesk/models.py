"""The database: peewee models, the connection, and migrations.

One `DatabaseProxy` is bound at start-up by `open_database(url)`; SQLite runs in
WAL mode with `synchronous=NORMAL`, PostgreSQL from a `postgresql://` URL runs the
same code. The schema is created and changed only by the numbered scripts in
`maildesk/migrations/` (`migrate()`), never by `create_tables` at run time.

Times are stored as UTC and handed back as aware UTC datetimes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path

from peewee import (
    SQL,
    AutoField,
    BlobField,
    BooleanField,
    CharField,
    DatabaseProxy,
    DateTimeField,
    Field,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    PostgresqlDatabase,
    SqliteDatabase,
    TextField,
)

log = logging.getLogger(__name__)

db = DatabaseProxy()
MIGRATIONS = Path(__file__).parent / "migrations"

UTC = dt.timezone.utc


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


class BaseModel(Model):
    """Writes go through statements whose text is built once (`insert`,
    `save_changes` below): peewee's own save builds the SQL anew on every call."""

    class Meta:
        database = db
        legacy_table_names = False

    def save(self, force_insert=False, only=None):
        pk_field = self._meta.primary_key
        if force_insert or self._pk is None:
            values = {k: v for k, v in self.__data__.items() if not (k == pk_field.name and v is None)}
            new = insert(type(self), **values)
            if isinstance(pk_field, AutoField):
                self._pk = new
            self._dirty.clear()
            return 1
        names = [f.name if isinstance(f, Field) else f for f in only] if only else None
        save_changes(self, names)
        return 1

    @classmethod
    def get_by_id(cls, pk):
        row = fetch_row(cls, pk)
        if row is None:
            raise cls.DoesNotExist(f"{cls.__name__} {pk} does not exist")
        return row

    @classmethod
    def get_or_none_by_id(cls, pk):
        return fetch_row(cls, pk)


class Ticket(BaseModel):
    id = AutoField()
    subject = TextField()
    requester = CharField()  # address, lower case
    requester_name = TextField(default="")
    status = CharField(default="new")
    category = CharField(null=True)
    impact = CharField(default="medium")
    urgency = CharField(default="medium")
    priority = CharField(default="medium")
    priority_set = BooleanField(default=False)  # set by #priority: the matrix no longer applies
    group = CharField(null=True)
    assignee = CharField(null=True)
    created_at = UtcDateTimeField()
    updated_at = UtcDateTimeField()
    # SLA (sla.py keeps these consistent)
    sla_policy = CharField(null=True)
    response_due = UtcDateTimeField(null=True)
    resolution_due = UtcDateTimeField(null=True)
    first_response_at = UtcDateTimeField(null=True)
    paused_at = UtcDateTimeField(null=True)
    paused_minutes = FloatField(default=0)
    sla_next_at = UtcDateTimeField(null=True)  # the next reminder or breach; null when none pending
    # resolution and closure
    resolved_at = UtcDateTimeField(null=True)
    closed_at = UtcDateTimeField(null=True)
    closure_code = CharField(null=True)
    resolution = TextField(null=True)
    reopen_count = IntegerField(default=0)
    escalation_count = IntegerField(default=0)
    # major incidents
    is_major = BooleanField(default=False)
    parent = ForeignKeyField("self", null=True, backref="children", on_delete="SET NULL")
    follows = ForeignKeyField("self", null=True, backref="followers", on_delete="SET NULL")
    # threading of the requester's conversation: their first Message-ID
    thread_root = TextField(null=True)

    # the fields mail templates see (render.snapshot)
    SNAPSHOT = ("id", "subject", "requester", "requester_name", "status", "category", "impact", "urgency",
                "priority", "group", "assignee", "created_at", "sla_policy", "response_due", "resolution_due",
                "first_response_at", "resolved_at", "closed_at", "closure_code", "resolution", "is_major",
                "reopen_count", "parent")

    class Meta:
        indexes = ((("sla_next_at",), False), (("status", "created_at"), False))

    def ref(self, prefix: str) -> str:
        return f"{prefix}-{self.id}"


class Participant(BaseModel):
    """Who may reach a ticket by its subject tag: requester, Cc'd people, staff."""

    ticket = ForeignKeyField(Ticket, backref="participants", on_delete="CASCADE")
    email = CharField()
    role = CharField()  # requester | cc | staff

    class Meta:
        indexes = ((("ticket", "email"), True),)


class Inbound(BaseModel):
    """A fetched message, raw and durable, with what became of it."""

    id = AutoField()
    mailbox = CharField(default="INBOX")
    uidvalidity = IntegerField(null=True)
    uid = IntegerField(null=True)
    sha256 = CharField(unique=True)
    size = IntegerField(default=0)
    message_id = TextField(null=True, index=True)
    from_addr = TextField(default="")
    subject = TextField(default="")
    received_at = UtcDateTimeField()
    status = CharField(default="pending", index=True)  # pending | processed | quarantined
    outcome = CharField(null=True)  # new-ticket | reply | automatic | bounce | duplicate | ...
    error = TextField(null=True)
    ticket = ForeignKeyField(Ticket, null=True, backref="inbound", on_delete="SET NULL")
    decisions = TextField(default="")  # the `maildesk why` log, one line per decision
    processed_at = UtcDateTimeField(null=True)
    server_done = BooleanField(default=False)  # flagged \Seen or moved on the IMAP server

    class Meta:
        indexes = ((("server_done", "mailbox"), False),)


class InboundRaw(BaseModel):
    """The bytes of an inbound message, apart from the row whose status changes:
    SQLite rewrites a whole record on UPDATE, blob included."""

    inbound = ForeignKeyField(Inbound, primary_key=True, backref="raw_row", on_delete="CASCADE")
    data = BlobField()
    # what the fetch process read of it (pipeline/parse.py summarize): JSON, or null
    # when the desk process must parse the bytes itself
    summary = TextField(null=True)


class Message(BaseModel):
    """One mail of a ticket's conversation, in or out, or an internal note."""

    id = AutoField()
    ticket = ForeignKeyField(Ticket, backref="messages", on_delete="CASCADE")
    inbound = ForeignKeyField(Inbound, null=True, backref="messages", on_delete="SET NULL")
    direction = CharField()  # in | out
    message_id = TextField(null=True, index=True)
    from_addr = TextField(default="")
    from_name = TextField(default="")
    to = TextField(default="")
    cc = TextField(default="")
    subject = TextField(default="")
    body = TextField(default="")
    html = TextField(null=True)  # sanitized
    internal = BooleanField(default=False)
    kind = CharField(default="mail")  # mail | reply | note | automatic | bounce | resolution | ...
    created_at = UtcDateTimeField()

    SNAPSHOT = ("id", "direction", "from_addr", "from_name", "subject", "body", "internal", "kind", "created_at")


class Attachment(BaseModel):
    message = ForeignKeyField(Message, backref="attachments", on_delete="CASCADE")
    filename = TextField()
    content_type = CharField()
    size = IntegerField()
    sha256 = CharField(index=True)


class Blob(BaseModel):
    """Attachment contents when `attachments.store = "database"`."""

    sha256 = CharField(primary_key=True)
    data = BlobField()


class Event(BaseModel):
    """The history of a ticket: every change, with who did it and when."""

    id = AutoField()
    ticket = ForeignKeyField(Ticket, backref="events", on_delete="CASCADE")
    at = UtcDateTimeField()
    actor = CharField()
    kind = CharField()
    detail = TextField(default="")
    inbound = ForeignKeyField(Inbound, null=True, backref="events", on_delete="SET NULL")

    class Meta:
        indexes = ((("ticket", "kind"), False),)


class Task(BaseModel):
    ticket = ForeignKeyField(Ticket, backref="tasks", on_delete="CASCADE")
    number = IntegerField()
    title = TextField()
    assignee = CharField(null=True)
    done = BooleanField(default=False)
    created_at = UtcDateTimeField()
    done_at = UtcDateTimeField(null=True)

    class Meta:
        indexes = ((("ticket", "number"), True),)


class Outbox(BaseModel):
    """One outgoing mail to one recipient: signed and threaded when queued, its
    template rendered from `context` when it is sent."""

    id = AutoField()
    ticket = ForeignKeyField(Ticket, null=True, backref="outbox", on_delete="SET NULL")
    kind = CharField()  # the template: ack, assigned, relay, reminder, ...
    automatic = BooleanField(default=False)  # counted against the automatic-reply limits
    rcpt = CharField()
    message_id = TextField(index=True)
    subject = TextField(default="")
    rcpt_name = TextField(default="")
    from_name = TextField(default="")  # "Alice" makes "Alice via <desk name>"
    context = TextField(default="{}")  # the template's context as JSON; rendered when sent
    status = CharField(default="queued")  # queued | deferred | sent | failed | suppressed | bounced
    attempts = IntegerField(default=0)
    next_attempt_at = UtcDateTimeField(null=True)
    last_error = TextField(null=True)
    created_at = UtcDateTimeField()
    sent_at = UtcDateTimeField(null=True)
    inbound = ForeignKeyField(Inbound, null=True, backref="outbox", on_delete="SET NULL")

    class Meta:
        indexes = (
            (("status", "next_attempt_at"), False),
            (("rcpt", "created_at"), False),
        )


class MailboxState(BaseModel):
    """The fetch checkpoint of one IMAP mailbox."""

    mailbox = CharField(primary_key=True)
    uidvalidity = IntegerField(null=True)
    last_uid = IntegerField(default=0)
    last_success_at = UtcDateTimeField(null=True)
    stall_alerted = BooleanField(default=False)


class Setting(BaseModel):
    """Small durable state: the generated secret, round-robin pointers, alert flags."""

    key = CharField(primary_key=True)
    value = TextField()


class StaffState(BaseModel):
    email = CharField(primary_key=True)
    away_until = UtcDateTimeField(null=True)  # from their own out-of-office reply
    last_assigned_at = UtcDateTimeField(null=True)


class SlaMark(BaseModel):
    """A reminder or escalation that fired: the unique key makes it fire once."""

    ticket = ForeignKeyField(Ticket, backref="sla_marks", on_delete="CASCADE")
    target = CharField()  # response | resolution
    level = CharField()  # warn | breach | level2
    fired_at = UtcDateTimeField()

    class Meta:
        indexes = ((("ticket", "target", "level"), True),)


class Survey(BaseModel):
    ticket = ForeignKeyField(Ticket, backref="surveys", on_delete="CASCADE", unique=True)
    requester = CharField(index=True)
    sent_at = UtcDateTimeField()
    rating = IntegerField(null=True)
    comment = TextField(null=True)
    answered_at = UtcDateTimeField(null=True)


class Suppression(BaseModel):
    """An address the desk must not write to: it bounced, or it complained."""

    email = CharField(primary_key=True)
    reason = CharField()  # bounce | complaint
    detail = TextField(default="")
    until = UtcDateTimeField()
    created_at = UtcDateTimeField()
    outbox = ForeignKeyField(Outbox, null=True, on_delete="SET NULL")


MODELS = (
    Ticket, Participant, Inbound, InboundRaw, Message, Attachment, Blob, Event, Task, Outbox,
    MailboxState, Setting, StaffState, SlaMark, Survey, Suppression,
)


# --- connection --------------------------------------------------------------------


class DatabaseUnavailable(Exception):
    pass


def open_database(url: str):
    """Bind the proxy to the database at `url` and return it."""
    if db.obj is not None:
        db.obj.close()
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        database = SqliteDatabase(
            path,
            pragmas={
                "journal_mode": "wal",
                "synchronous": "normal",
                "foreign_keys": 1,
                "busy_timeout": 30000,
                "cache_size": -32000,
            },
            timeout=30,
        )
    else:
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        from playhouse.db_url import connect as url_connect

        database = url_connect(url, autorollback=False)
        if not isinstance(database, PostgresqlDatabase):
            raise DatabaseUnavailable(f"database.url: unsupported database {url.split(':', 1)[0]}")
    db.initialize(database)
    try:
        database.connect(reuse_if_open=True)
    except Exception as e:  # the driver's own error type varies
        raise DatabaseUnavailable(f"cannot open the database at {redact(url)}: {e}".strip()) from e
    return database


def redact(url: str) -> str:
    """A URL for logs: the password replaced."""
    import re

    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


def is_sqlite() -> bool:
    return isinstance(db.obj, SqliteDatabase)


@contextlib.contextmanager
def write_transaction():
    """A write transaction. On SQLite, IMMEDIATE: a deferred transaction that reads
    then writes fails at once if another writer committed in between. The events
    added in it are written just before it commits (add_event)."""
    mark = len(_events)
    try:
        with db.obj.atomic("IMMEDIATE") if is_sqlite() else db.obj.atomic():
            yield
            flush_events()
    except BaseException:
        del _events[mark:]
        raise


@contextlib.contextmanager
def savepoint():
    """A savepoint inside a write transaction: on an exception it undoes what was
    done in it, events added included, and lets the exception go on. (One name
    serves all: SQL undoes and releases the innermost savepoint of a name; peewee's
    own would draw a random name from the OS for each message.)"""
    mark = len(_events)
    database = db.obj
    database.execute_sql('SAVEPOINT "md"')
    try:
        yield
        database.execute_sql('RELEASE SAVEPOINT "md"')
    except BaseException:
        del _events[mark:]
        database.execute_sql('ROLLBACK TO SAVEPOINT "md"')
        database.execute_sql('RELEASE SAVEPOINT "md"')
        raise


def migrate() -> list[str]:
    """Create or bring the schema up to date; returns the names applied."""
    from playhouse.migrations import Runner

    return Runner(db.obj, str(MIGRATIONS)).up()


def pending_migrations() -> list[str]:
    from playhouse.migrations import Runner

    return [m.name for m in Runner(db.obj, str(MIGRATIONS)).status() if not m.applied and m.path]


# --- hot-path SQL -------------------------------------------------------------------
# peewee builds the SQL text of every query anew, which costs 20 times more than
# SQLite takes to run a small insert (PERF-NOTES; bench/ingest.py). The pipeline's
# hot path writes through these helpers instead: the statement text is made once
# per (model, columns, database kind), values still go through each field's db_value.

_STATEMENTS: dict = {}


def _sql(text: str) -> str:
    return text if is_sqlite() else text.replace("?", "%s")


def execute(text: str, params=()):
    """Run SQL written with `?` placeholders on either database."""
    return db.obj.execute_sql(_sql(text), params)


def scalar(text: str, params=()):
    row = execute(text, params).fetchone()
    return row[0] if row else None


def insert(model, **values) -> int:
    """INSERT one row; returns its primary key."""
    sqlite = is_sqlite()
    key = (model, tuple(values), sqlite)
    statement = _STATEMENTS.get(key)
    if statement is None:
        meta = model._meta
        fields = [meta.fields[name] for name in values]
        columns = ", ".join(f'"{f.column_name}"' for f in fields)
        text = f'INSERT INTO "{meta.table_name}" ({columns}) VALUES ({", ".join("?" * len(fields))})'
        if not sqlite:
            text += f' RETURNING "{meta.primary_key.column_name}"'
        statement = _STATEMENTS[key] = (_sql(text), [(f.db_value, _plain(f)) for f in fields])
    text, converters = statement
    params = [v if v is None or type(v) is plain else convert(v)
              for (convert, plain), v in zip(converters, values.values())]
    cursor = db.obj.execute_sql(text, params)
    return cursor.lastrowid if sqlite else cursor.fetchone()[0]


def _plain(field):
    """The Python type a field stores unconverted (its db_value would return it as
    is), or None."""
    for kind, plain in ((CharField, str), (TextField, str), (BooleanField, bool), (IntegerField, int)):
        if type(field) is kind or (kind is IntegerField and type(field) is AutoField):
            return plain
    return None


def fetch_row(model, pk):
    """SELECT one row by primary key into a model instance."""
    sqlite = is_sqlite()
    key = (model, "get", sqlite)
    statement = _STATEMENTS.get(key)
    if statement is None:
        meta = model._meta
        fields = meta.sorted_fields
        columns = ", ".join(f'"{f.column_name}"' for f in fields)
        statement = _STATEMENTS[key] = (
            _sql(f'SELECT {columns} FROM "{meta.table_name}" WHERE "{meta.primary_key.column_name}" = ?'), fields)
    text, fields = statement
    row = db.obj.execute_sql(text, (pk,)).fetchone()
    if row is None:
        return None
    instance = model(__no_default__=1, **{f.name: f.python_value(v) for f, v in zip(fields, row)})
    instance._dirty.clear()
    return instance


def save_changes(instance, names=None) -> None:
    """UPDATE the fields changed since the row was read or last saved (or `names`)."""
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
    db.obj.execute_sql(text, params)
    instance._dirty.clear()


# Events are written in one INSERT per transaction: a new ticket has half a dozen.
_events: list[tuple] = []


def add_event(ticket, at: dt.datetime, actor: str, kind: str, detail: str, inbound=None) -> None:
    """One line of a ticket's history (`ticket` and `inbound` may be rows or ids),
    written when its transaction commits (write_transaction), or at once outside one."""
    _events.append((_id(ticket), Event.at.db_value(at), actor, kind, detail, _id(inbound)))
    if not db.obj.in_transaction():
        flush_events()


def _id(row):
    return row if row is None or isinstance(row, int) else row.id


def flush_events() -> None:
    """Write the events added so far (before reading a ticket's history, say)."""
    if not _events:
        return
    rows, _events[:] = list(_events), []
    for i in range(0, len(rows), 1000):
        chunk = rows[i:i + 1000]
        execute('INSERT INTO "event" ("ticket_id", "at", "actor", "kind", "detail", "inbound_id") VALUES '
                + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)), [v for row in chunk for v in row])


# --- small durable settings -------------------------------------------------------


def get_setting(key: str, default: str | None = None) -> str | None:
    value = scalar('SELECT "value" FROM "setting" WHERE "key" = ?', (key,))
    return default if value is None else value


def put_setting(key: str, value: str) -> None:
    execute('INSERT INTO "setting" ("key", "value") VALUES (?, ?) '
            'ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value"', (key, value))
